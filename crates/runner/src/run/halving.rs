//! Successive halving (`search: halving`; its keys and rungs: `config/search.rs`), run in the
//! sweep's own process. Every unit of the plan is formed as for the full grid, so a pack holds
//! the members it would hold there and a survivor trains as the very trial of the full grid:
//! it pauses at each rung with its checkpoint written and continues from it. At a rung, each
//! group of KD cells (one student model and schedule: a 30-30 cell never competes with an
//! 800-800 one) is ranked by its cells' validation accuracy at that epoch, the mean over seeds
//! (a seed that diverged counts 0); the best `ceil(n / eta)` go on and the others are recorded
//! `pruned` with their epochs so far. A pruned member of a pack trains on masked out, as a
//! diverged one. Baselines and the teacher train in full and are never ranked.
//!
//! A run stopped and started again keeps the earlier run's pruned rows (its cuts stand) and
//! continues the others from their checkpoints; the cuts it makes again are the same, since
//! the validation accuracies at a rung are in the checkpoints' epoch records.

use std::collections::{HashMap, HashSet};

use kd_report::{Kind, Status};

use crate::config::search::{self, Search};
use crate::config::{invalid, Resolved};
use crate::error::RunError;
use crate::plan::{Plan, PlannedTrial};
use crate::run::checkpoint;
use crate::run::labels::{label, stopped_note};
use crate::run::trial::{Stopped, TrialContext, UnitEnd};
use crate::track::Outputs;
use crate::train::snapshot::Rung;
use crate::train::Outcome;

use super::units::Units;

/// The KD cells of one group, the group's rungs, and where each trial stands.
struct Race {
    eta: usize,
    /// Per group (a student model and schedule, in plan order): its rungs and its cells, each
    /// the plan indices of its seeds.
    groups: Vec<(Vec<u32>, Vec<Vec<usize>>)>,
    /// Pruned trials and the epoch they were pruned at.
    pruned: HashMap<usize, u32>,
    /// Trials with a final outcome: recorded by an earlier run, or in this one (diverged before
    /// a rung, or finished).
    done: HashSet<usize>,
    /// The outcomes earlier runs recorded: their epoch records rank their cells at a rung as
    /// the uninterrupted search ranked them.
    recorded: HashMap<usize, Outcome>,
    /// Units (by their first member) this run paused at a rung: their continuing from it is
    /// the search's, not a resume, and their records do not say `resumed`.
    paused: HashSet<usize>,
}

/// The key trials of one group share: the student model, its epochs and validation schedule,
/// and its execution class.
fn group_key(t: &PlannedTrial) -> String {
    let train = &t.student.train;
    serde_json::to_string(&(&t.student.model, train.epochs, train.eval_every, t.class))
        .expect("a student serialises")
}

/// The key the seeds of one cell share.
fn cell_key(t: &PlannedTrial) -> String {
    serde_json::to_string(&(&t.student, &t.weights, &t.swept)).expect("a cell serialises")
}

/// A cell in words: `T=4 alpha=0.9 ce student.train.lr=0.01`.
fn cell_text(t: &PlannedTrial) -> String {
    let w = &t.weights;
    let mut s = format!(
        "T={} alpha={} beta={} {}",
        w.temperature,
        w.alpha,
        w.beta,
        w.soft_loss.as_str()
    );
    for (k, v) in &t.swept {
        s.push_str(&format!(" {k}={v}"));
    }
    s
}

impl Race {
    fn new(
        trials: &[PlannedTrial],
        all: &[usize],
        search: Search,
        recorded: HashMap<usize, Outcome>,
    ) -> Race {
        // Per group: its key, its rungs and its cells (each keyed, with its seeds).
        type Cells = Vec<(String, Vec<usize>)>;
        let mut groups: Vec<(String, Vec<u32>, Cells)> = Vec::new();
        for &i in all.iter().filter(|&&i| trials[i].kind == Kind::Kd) {
            let t = &trials[i];
            let (g, c) = (group_key(t), cell_key(t));
            let at = match groups.iter().position(|(k, ..)| *k == g) {
                Some(at) => at,
                None => {
                    let train = &t.student.train;
                    groups.push((
                        g,
                        search::rungs(search, train.epochs, train.eval_every),
                        vec![],
                    ));
                    groups.len() - 1
                }
            };
            let cells = &mut groups[at].2;
            match cells.iter_mut().find(|(k, _)| *k == c) {
                Some((_, seeds)) => seeds.push(i),
                None => cells.push((c, vec![i])),
            }
        }
        let (mut pruned, mut done) = (HashMap::new(), HashSet::new());
        for (&i, o) in &recorded {
            if o.status == Status::Pruned {
                pruned.insert(i, o.epochs.last().map_or(0, |e| e.epoch));
            } else {
                done.insert(i);
            }
        }
        let eta = match search {
            Search::Halving { eta, .. } => eta,
            Search::Grid => 1,
        };
        Race {
            eta,
            groups: groups
                .into_iter()
                .map(|(_, rungs, cells)| (rungs, cells.into_iter().map(|(_, s)| s).collect()))
                .collect(),
            pruned,
            done,
            recorded,
            paused: HashSet::new(),
        }
    }

    /// Trial `i`'s validation accuracy at `epoch`: from this run's pause there, else from its
    /// recorded epochs; none where it diverged before.
    fn val_at(&self, i: usize, epoch: u32, at_rung: &HashMap<usize, Outcome>) -> Option<f64> {
        match at_rung.get(&i) {
            Some(o) => o.val_acc,
            None => self
                .recorded
                .get(&i)
                .and_then(|o| o.epochs.iter().find(|e| e.epoch == epoch))
                .and_then(|e| e.val_acc),
        }
        .filter(|v| v.is_finite())
    }

    /// Whether trial `i` still trains.
    fn live(&self, i: usize) -> bool {
        !self.pruned.contains_key(&i) && !self.done.contains(&i)
    }

    /// The epoch of rung `r` for trial `i`'s group; none when its group has no such rung (or
    /// `i` is not a KD trial).
    fn rung_of(&self, i: usize, r: usize) -> Option<u32> {
        self.groups
            .iter()
            .find(|(_, cells)| cells.iter().any(|c| c.contains(&i)))
            .and_then(|(rungs, _)| rungs.get(r).copied())
    }

    /// The members of `unit` retired: pruned now or before.
    fn mask(&self, unit: &[usize]) -> Vec<bool> {
        unit.iter().map(|i| self.pruned.contains_key(i)).collect()
    }
}

impl Units<'_> {
    /// Train the units of `pending` by successive halving, until a stop is asked for;
    /// `recorded`: the outcomes of this process's other trials, which earlier runs of the search
    /// recorded (its cuts stand, and its packs form as they did).
    pub fn halving(
        &mut self,
        ctx: &TrialContext,
        pending: &[usize],
        recorded: HashMap<usize, Outcome>,
        search: Search,
        progress: &mut Outputs,
    ) -> Result<(), RunError> {
        let plan = self.plan;
        let mut all: Vec<usize> = pending.iter().chain(recorded.keys()).copied().collect();
        all.sort_unstable();
        all.dedup();
        let units = plan.units(&all);
        let mut race = Race::new(&plan.trials, &all, search, recorded);
        let rungs = race.groups.iter().map(|(r, _)| r.len()).max().unwrap_or(0);
        for r in 0..rungs {
            let Some(at_rung) = self.stage(ctx, &units, &mut race, Some(r), progress)? else {
                return Ok(());
            };
            self.cut(&mut race, r, at_rung, progress)?;
        }
        self.stage(ctx, &units, &mut race, None, progress)?;
        Ok(())
    }

    /// Train every unit with a live KD member whose group has rung `r` to that rung, or with
    /// `r` none every unit with a live member to the end (then the units' checkpoints have
    /// served). Returns each live KD trial's state at the rung (none: a stop was asked for). A
    /// member that diverged before the rung, or finished, is recorded as it ended.
    fn stage(
        &mut self,
        ctx: &TrialContext,
        units: &[Vec<usize>],
        race: &mut Race,
        r: Option<usize>,
        progress: &mut Outputs,
    ) -> Result<Option<HashMap<usize, Outcome>>, RunError> {
        let mut at_rung = HashMap::new();
        for unit in units {
            if crate::run::stop::requested() {
                return Ok(None);
            }
            let until = match r {
                Some(r) => match unit
                    .iter()
                    .filter(|&&i| race.live(i))
                    .find_map(|&i| race.rung_of(i, r))
                {
                    Some(until) => Some(until),
                    None => continue,
                },
                None => None,
            };
            if unit.iter().any(|&i| race.live(i))
                && !self.run_unit(ctx, unit, race, until, &mut at_rung, progress)?
            {
                return Ok(None);
            }
            if r.is_none() {
                // Every member is finished or pruned: the unit's checkpoint has served.
                let trials = self.trials(unit);
                checkpoint::remove(&checkpoint::unit_file_of(&self.checkpoints.dir, &trials));
            }
        }
        Ok(Some(at_rung))
    }

    /// Train `unit` to epoch `until` (none: the end), its pruned members masked; the live KD
    /// members' states at the rung go to `at_rung`, every other live member's outcome is
    /// recorded. False when a stop was asked for.
    fn run_unit(
        &mut self,
        ctx: &TrialContext,
        unit: &[usize],
        race: &mut Race,
        until: Option<u32>,
        at_rung: &mut HashMap<usize, Outcome>,
        progress: &mut Outputs,
    ) -> Result<bool, RunError> {
        let plan = self.plan;
        let trials = self.trials(unit);
        let rung = Rung {
            until,
            pruned: race.mask(unit),
        };
        let (what, epochs) = match until {
            Some(u) => (format!("{} to epoch {u}", label(&trials)), u as u64),
            None => (label(&trials), trials[0].student.train.epochs as u64),
        };
        progress.start_trial(0, &what, epochs);
        let end = ctx.run_unit_to(&trials, &rung, |_, log| progress.epoch(0, log));
        for note in ctx.take_notes() {
            progress.note(&note);
        }
        let (paused, mut outcomes) = match end {
            Ok(UnitEnd::Paused(o)) => (true, o),
            Ok(UnitEnd::Finished(o)) => (false, o),
            Err(Stopped(at)) => {
                progress.note(&stopped_note(&trials, &at));
                return Ok(false);
            }
        };
        if !race.paused.insert(unit[0]) {
            // It continued from this run's own pause: no resume to report.
            for o in &mut outcomes {
                o.resumed = None;
            }
        }
        for (&i, o) in unit.iter().zip(outcomes) {
            if !race.live(i) {
                continue;
            }
            if paused && o.status == Status::Ok {
                if plan.trials[i].kind == Kind::Kd {
                    at_rung.insert(i, o);
                }
            } else {
                self.finish(i, o, &plan.slots[0], progress, 0)?;
                race.done.insert(i);
            }
        }
        Ok(true)
    }

    /// The cut at rung `r`: per group, its cells still in the race ranked by their mean
    /// validation accuracy; all but the best `ceil(n / eta)` are recorded pruned.
    fn cut(
        &mut self,
        race: &mut Race,
        r: usize,
        mut at_rung: HashMap<usize, Outcome>,
        progress: &mut Outputs,
    ) -> Result<(), RunError> {
        let plan = self.plan;
        for g in 0..race.groups.len() {
            let Some(&epoch) = race.groups[g].0.get(r) else {
                continue;
            };
            // In the race: cells none of whose seeds was pruned at an earlier rung, and with a
            // seed that reached this one (every seed diverged before: recorded, out).
            let mut ranked: Vec<(f64, usize)> = Vec::new();
            for (c, seeds) in race.groups[g].1.iter().enumerate() {
                if seeds
                    .iter()
                    .any(|i| race.pruned.get(i).is_some_and(|&e| e < epoch))
                {
                    continue;
                }
                let vals: Vec<Option<f64>> = seeds
                    .iter()
                    .map(|&i| race.val_at(i, epoch, &at_rung))
                    .collect();
                if vals.iter().all(Option::is_none) {
                    continue;
                }
                let mean = vals.iter().map(|v| v.unwrap_or(0.0)).sum::<f64>() / seeds.len() as f64;
                ranked.push((mean, c));
            }
            // Best first; ties in plan order.
            ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let keep = ranked.len().div_ceil(race.eta).max(1);
            let Some(&(last_kept, _)) = ranked.get(keep - 1) else {
                continue;
            };
            let mut cut_cells = Vec::new();
            for &(mean, c) in &ranked[keep..] {
                let seeds = race.groups[g].1[c].clone();
                for i in seeds {
                    let Some(mut o) = at_rung.remove(&i).filter(|_| race.live(i)) else {
                        continue;
                    };
                    o.status = Status::Pruned;
                    o.message = Some(format!(
                        "pruned at epoch {epoch} (rung {} of successive halving, eta {}): its \
                         cell's validation accuracy there, {:.2}% (mean over its seeds), was \
                         not among the best {keep} of {} cells of its student (the last kept: \
                         {:.2}%)",
                        r + 1,
                        race.eta,
                        mean * 100.0,
                        ranked.len(),
                        last_kept * 100.0
                    ));
                    self.finish(i, o, &plan.slots[0], progress, 0)?;
                    race.pruned.insert(i, epoch);
                }
                cut_cells.push(cell_text(&plan.trials[race.groups[g].1[c][0]]));
            }
            let first = &plan.trials[race.groups[g].1[0][0]];
            progress.note(&format!(
                "halving, {} at epoch {epoch} (rung {}): {keep} of {} cells go on (validation \
                 accuracy, mean over seeds; the last kept {:.2}%){}",
                first.student.model.shape_label(),
                r + 1,
                ranked.len(),
                last_kept * 100.0,
                if cut_cells.is_empty() {
                    String::new()
                } else {
                    format!("; pruned: {}", cut_cells.join("; "))
                }
            ));
        }
        Ok(())
    }
}

/// Successive halving cuts each student's cells with all of them in view, in one process: it
/// refuses a shard and workers with a clear error.
pub(super) fn check(cfg: &Resolved, plan: &Plan, shard: bool) -> Result<(), RunError> {
    if cfg.search.is_grid() {
        return Ok(());
    }
    let why = if shard {
        "--shard: a rung's cut ranks every cell of a student, which a shard does not hold; run \
         the halving search whole (one process), or shard a search: grid"
    } else if !plan.in_process() {
        "it trains its students in the sweep's own process for now; set workers: 1 (one \
         device), or use search: grid to spread a sweep over workers"
    } else {
        return Ok(());
    };
    Err(invalid("search.method", format!("halving cannot run with {why}")).into())
}
