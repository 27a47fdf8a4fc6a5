//! `kd sweep`: load the data, build the plan, claim OUT (whole, or one shard of it), write the
//! plan's ids and the resolved config (with what this machine made of it), get the teacher
//! (trained once, under a lock in the cache), train every trial of this process not finished
//! before (in this process or on the worker pool), writing each one's record file and
//! reassembling the frames after each, then the report (a whole sweep) or nothing (a shard).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use kd_report::store;
use kd_report::{Status, TrialRecord};
use serde::Serialize;

use crate::config::{self, Resolved};
use crate::data::{self, Data, DataPlan, Tensors};
use crate::env::{self, Slot};
use crate::error::{io_err, RunError};
use crate::plan::Shard;
use crate::plan::{Plan, TeacherPlan};
use crate::run::checkpoint::{self, Checkpoints};
use crate::run::labels::grouped;
use crate::run::resume::{self, Done, OutLock};
use crate::run::teacher;
use crate::run::units::Units;
use crate::track::{Opening, Outputs};
use crate::train::Outcome;

use super::keep::{keep_finished, keep_teacher, kept_on};
use super::out_store::Store;
use super::plan_file::plan_file;

/// Options that are not part of the experiment (so not part of any id).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Output folder; default `results/<name>/`.
    pub out: Option<PathBuf>,
    /// Ignore the results of earlier runs in OUT and train every trial again.
    pub fresh: bool,
    /// Run only this share of the plan (`--shard I/N`), beside other shards in the same OUT.
    pub shard: Option<Shard>,
    /// Replace the plan OUT holds even where it is another config's (`--replan`); the rows of
    /// trials the new plan does not list are kept in `OUT/unplanned/`.
    pub replan: bool,
    /// Also write TensorBoard event files, one run per trial, to `OUT/tensorboard/`.
    pub tensorboard: bool,
    /// `--checkpoint-every` (inner none: `0`, off), over the config's `checkpoint_every`.
    pub checkpoint_every: Option<Option<std::time::Duration>>,
}

/// What a finished sweep hands back to the CLI.
#[derive(Debug)]
pub struct Summary {
    pub out: PathBuf,
    pub trials: Vec<TrialRecord>,
    /// Trials whose status is not `ok`.
    pub unfinished: usize,
    /// The `expect:` claims, checked (none for a shard: it writes no report).
    pub verdicts: Vec<kd_report::Verdict>,
    /// This process's trials left unrun because a stop was asked for (SIGUSR1).
    pub stopped: usize,
    /// Planned trials of the whole sweep with no result in OUT yet (other shards' included).
    pub missing: usize,
}

/// Read the config at `path`, apply `--set KEY=VALUE` overrides and resolve it.
pub fn load_config(path: &Path, sets: &[String]) -> Result<Resolved, RunError> {
    let raw = config::load(path)?.with_sets(sets)?;
    Ok(raw.resolve_on(&env::visible_gpus)?)
}

/// Run the sweep described by the config at `path`.
pub fn run_sweep(path: &Path, sets: &[String], opts: &RunOptions) -> Result<Summary, RunError> {
    run_resolved(&load_config(path, sets)?, opts)
}

/// The plan of `cfg` as text, with the ids the run will write; trains and writes nothing.
pub fn dry_run(cfg: &Resolved) -> Result<String, RunError> {
    let data = data::load(&cfg.dataset)?;
    Ok(Plan::build(cfg, &data)?.describe())
}

/// `OUT/config.resolved.yaml`: the resolved config, then what this machine made of it (every
/// fact that enters the trial ids).
#[derive(Serialize)]
struct ResolvedFile<'a> {
    #[serde(flatten)]
    config: &'a Resolved,
    execution: Execution<'a>,
}

#[derive(Serialize)]
struct Execution<'a> {
    libtorch: &'a str,
    teacher: &'a TeacherPlan,
    /// One slot trains in the sweep process; more are worker processes.
    slots: &'a [Slot],
    data: &'a DataPlan,
}

/// OUT, made: `--out`, or `results/<name>/`.
fn out_dir(cfg: &Resolved, opts: &RunOptions) -> Result<PathBuf, RunError> {
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(&cfg.name));
    std::fs::create_dir_all(&out).map_err(io_err(&out))?;
    Ok(out)
}

/// Run an already resolved config: every trial of its plan, or with `opts.shard` one share of
/// them. Each finished trial is written to its own file at once; a shard writes no report
/// (`kd report OUT` merges the shards' files and reports).
pub fn run_resolved(cfg: &Resolved, opts: &RunOptions) -> Result<Summary, RunError> {
    // The data and the plan come first: every listed device must exist, every model fit the
    // data, before anything is written.
    let data = data::load(&cfg.dataset)?;
    let plan = Plan::build(cfg, &data)?;
    super::halving::check(cfg, &plan, opts.shard.is_some())?;
    let out = out_dir(cfg, opts)?;
    let _lock = OutLock::acquire(&out, opts.shard)?;
    crate::run::stop::install();
    let (index, replanned) = plan_file(cfg, &plan, &out, opts.shard, opts.replan)?;
    // The trials this process runs: all of them, or its shard's.
    let mine: Vec<usize> = match opts.shard {
        None => (0..plan.trials.len()).collect(),
        Some(s) => plan.shard_trials(s),
    };
    let (mut previous, notes) = earlier_results(&plan, &out, opts, &mine)?;
    write_resolved(cfg, &plan, &out)?;
    kd_report::write_claims(&out, &cfg.expect)?;
    let mut progress = Outputs::for_sweep(
        mine.len() as u64 + 1,
        &Opening {
            out: &out,
            tensorboard: opts.tensorboard,
        },
    );
    let notes = replanned
        .into_iter()
        .chain(notes)
        .chain(plan.merged.clone());
    notes.for_each(|note| progress.note(&note));
    header_notes(&plan, opts.shard, mine.len(), &mut progress);

    let checkpoints = Checkpoints {
        dir: checkpoint::students_dir(&out),
        every: opts.checkpoint_every.unwrap_or(cfg.checkpoint_every),
    };
    let store = Store {
        plan: &plan,
        out: &out,
        index,
    };
    let kept = keep_finished(
        &plan,
        &mut previous,
        &mine,
        &store,
        cfg.search,
        &mut progress,
    )?;
    let (pending, recorded) = (kept.pending, kept.recorded);
    let earlier_teachers = super::keep::earlier_teachers(&plan, &mut previous);
    let (teacher, splits) = if pending.is_empty() {
        keep_teacher(&plan, earlier_teachers, &store, &mut progress)?;
        (None, None)
    } else {
        let (t, splits) = teacher_phase(
            &plan,
            &data,
            earlier_teachers,
            &store,
            &checkpoints,
            &mut progress,
        )?;
        (Some(t), Some(splits))
    };
    store.merge()?;

    // The pending trials that ended in this run (a trial whose earlier run failed has a file
    // already, so the files cannot tell which ones a stop left unrun).
    let mut units = Units {
        plan: &plan,
        store: &store,
        checkpoints: &checkpoints,
        models: crate::run::models::ModelsOut::of_sweep(cfg.save, &out),
        finished: HashSet::new(),
    };
    if let Some(t) = teacher {
        let search = (cfg.search, recorded);
        units.train(&data, &t, splits, &pending, search, &mut progress)?;
    }
    let finished = units.finished;
    if kept.kept > 0 {
        progress.note(&format!(
            "{} trial(s) were finished before and kept; --fresh re-runs them",
            kept.kept
        ));
    }
    let stopped = pending.iter().filter(|i| !finished.contains(i)).count();
    conclude(
        cfg,
        opts,
        &plan,
        &mine,
        &store,
        &checkpoints,
        stopped,
        progress,
    )
}

/// The end of a sweep: the frames merged a last time, leftover checkpoints cleared when nothing
/// is in flight, the closing notes, the report (a whole sweep), and the summary.
#[allow(clippy::too_many_arguments)]
fn conclude(
    cfg: &Resolved,
    opts: &RunOptions,
    plan: &Plan,
    mine: &[usize],
    store: &Store,
    checkpoints: &Checkpoints,
    stopped: usize,
    mut progress: Outputs,
) -> Result<Summary, RunError> {
    let out = store.out;
    let merged = store.merge()?;
    // Nothing is in flight any more, no trial will run again (a failed one continues from its
    // checkpoint next time), and no other shard shares the folder.
    let failed = merged
        .planned
        .rows
        .iter()
        .any(|r| r.status == Status::Failed);
    if stopped == 0 && !failed && opts.shard.is_none() {
        checkpoint::clear_stale(&checkpoints.dir);
    }
    for note in end_notes(out, &merged) {
        progress.note(&note);
    }
    if stopped > 0 {
        progress.note(&format!(
            "stopped on request (SIGUSR1 or SIGTERM) with {stopped} trial(s) not finished; the \
             same command continues them from their checkpoints"
        ));
    }
    progress.finish();
    let mut verdicts = vec![];
    if opts.shard.is_none() {
        let extras = kd_report::Extras {
            confusion: merged.planned.confusion.clone(),
            claims: cfg.expect.clone(),
            unplanned: merged.unplanned.rows.clone(),
            missing: None,
            deployment: footprints(out, plan, stopped)?,
            notes: vec![],
        };
        let p = &merged.planned;
        verdicts = kd_report::write_report(out, &cfg.name, &p.rows, &p.epochs, &extras)?.1;
    }
    let mine_ids: std::collections::HashSet<&str> =
        mine.iter().map(|&i| plan.trials[i].id.as_str()).collect();
    let unfinished = merged
        .planned
        .rows
        .iter()
        .filter(|r| r.kind == kd_report::Kind::Teacher || mine_ids.contains(r.trial_id.as_str()))
        .filter(|r| r.status != Status::Ok && r.status != Status::Pruned)
        .count();
    Ok(Summary {
        out: out.to_path_buf(),
        trials: merged.planned.rows,
        unfinished,
        verdicts,
        stopped,
        missing: merged.missing.len(),
    })
}

/// The models' footprints ([`super::footprint`]): measured and written to
/// `OUT/deployment.json` by a sweep that ran to its end, else those an earlier run wrote.
fn footprints(
    out: &Path,
    plan: &Plan,
    stopped: usize,
) -> Result<Vec<kd_report::deployment::Footprint>, RunError> {
    if stopped > 0 {
        return Ok(kd_report::deployment::read(out).unwrap_or_else(|e| {
            eprintln!("warning: {e}; the report leaves out What the student buys");
            vec![]
        }));
    }
    let (measured, notes) = super::footprint::measure(plan);
    for note in notes {
        eprintln!("warning: {note}");
    }
    kd_report::deployment::write(out, &measured)?;
    Ok(measured)
}

/// The results of earlier runs that this one keeps, by id, and what to say about them; with
/// `--fresh` none (the earlier results are set aside, never deleted, and stay in the frames
/// until replaced; a marker makes a resume after a kill continue the fresh run).
fn earlier_results(
    plan: &Plan,
    out: &Path,
    opts: &RunOptions,
    mine: &[usize],
) -> Result<(HashMap<String, Done>, Vec<String>), RunError> {
    Ok(if opts.fresh {
        // The earlier results are set aside, never deleted, and stay in the frames until
        // replaced; a marker makes a resume after a kill continue the fresh run.
        let ids: Vec<String> = mine.iter().map(|&i| plan.trials[i].id.clone()).collect();
        // Nor does it continue from checkpoints written before it (by other code, perhaps).
        let dir = checkpoint::students_dir(out);
        match opts.shard {
            None => checkpoint::clear_stale(&dir),
            Some(_) => checkpoint::remove_holding(&dir, &ids.iter().map(String::as_str).collect()),
        }
        (
            HashMap::new(),
            vec![super::fresh::begin(out, opts.shard, &ids)?],
        )
    } else {
        resume::finished(out)
    })
}

/// `OUT/config.resolved.yaml`, first, so every result can be traced to its inputs.
fn write_resolved(cfg: &Resolved, plan: &Plan, out: &Path) -> Result<(), RunError> {
    let resolved = ResolvedFile {
        config: cfg,
        execution: Execution {
            libtorch: env::LIBTORCH_VERSION,
            teacher: &plan.teacher,
            slots: &plan.slots,
            data: &plan.data,
        },
    };
    Ok(kd_report::write_atomic(
        &out.join("config.resolved.yaml"),
        serde_yaml::to_string(&resolved)
            .expect("the resolved config serialises")
            .as_bytes(),
    )?)
}

/// What the sweep says first: the data, where the teacher and students run, the transfer set,
/// the shard.
fn header_notes(plan: &Plan, shard: Option<Shard>, mine: usize, progress: &mut Outputs) {
    let d = &plan.data;
    let slots = grouped(
        plan.slots
            .iter()
            .map(|s| format!("{} ({})", s.device, s.class.describe())),
    );
    progress.note(&format!(
        "{}: {} in {} ({} train / {} val / {} test images, {}{}x{}, fingerprint {}), libtorch {}, \
         teacher on {} ({}), students on {}",
        plan.name,
        d.name.as_str(),
        d.dir.display(),
        d.train,
        d.val,
        d.test,
        // Colour images say their channels (3x32x32); grey ones read as before (28x28).
        if d.input.channels > 1 {
            format!("{}x", d.input.channels)
        } else {
            String::new()
        },
        d.input.height,
        d.input.width,
        d.fingerprint,
        env::LIBTORCH_VERSION,
        plan.teacher.slot.device,
        plan.teacher.slot.class.describe(),
        slots
    ));
    if d.transfer_rows < d.train {
        progress.note(&format!(
            "students learn from {} of the {} training images (dataset.transfer_fraction {}); \
             the teacher saw all of them",
            d.transfer_rows, d.train, d.transfer_fraction
        ));
    }
    if let Some(s) = shard {
        progress.note(&format!(
            "shard {s}: {} of the plan's {} student trials",
            mine,
            plan.trials.len()
        ));
    }
}

/// The teacher, trained or reused under the cache's lock (one sweep or shard at a time trains
/// it; the others wait, then reuse it), its row written; and the splits on its device.
fn teacher_phase(
    plan: &Plan,
    data: &Data,
    mut earlier: HashMap<String, Done>,
    store: &Store,
    checkpoints: &Checkpoints,
    progress: &mut Outputs,
) -> Result<(teacher::Teacher, Tensors), RunError> {
    let _teacher_lock = teacher::lock_cache(plan, progress)?;
    let device = env::select_device(&plan.teacher.slot.device)?;
    tch::set_num_threads(plan.teacher.slot.threads as i32);
    let tensors = Tensors::new(data, device);
    let every = checkpoints.every;
    let t = match plan.teacher.ensemble {
        None => teacher::obtain(plan, &tensors, every, progress)?,
        Some(_) => super::ensemble::obtain(plan, &tensors, every, progress, |m, member| {
            member_row(plan, store, (m, member), earlier.remove(&m.id))
        })?,
    };
    let earlier = earlier.remove(&plan.teacher.id);
    // The row of a teacher trained here replaces any; a reused teacher keeps the row of the run
    // that trained it where OUT has one (it says more: epochs, wall time).
    let fresh_row = || Outcome {
        epochs: t.epochs.clone(),
        ..Outcome::empty(Status::Ok)
    };
    match earlier {
        Some(done) if !t.trained => {
            let on = kept_on(&done, &plan.teacher.slot.class);
            store.keep(plan.teacher_record(&done.outcome, &on), done)?;
        }
        _ if t.trained || !store::trial_path(store.out, &plan.teacher.id).exists() => {
            store.save(t.record.clone(), fresh_row())?;
        }
        _ => {}
    }
    Ok((t, tensors))
}

/// An ensemble member's row, pointing to its ensemble: the row of the run that trained it where
/// OUT has one and it did not train here (that row says more: epochs, wall time), else this
/// run's.
fn member_row(
    plan: &Plan,
    store: &Store,
    (m, member): (&crate::plan::TeacherPlan, &teacher::Teacher),
    earlier: Option<Done>,
) -> Result<(), RunError> {
    match earlier {
        Some(done) if !member.trained => {
            let on = kept_on(&done, &m.slot.class);
            store.keep(plan.teacher_record_of(m, &done.outcome, &on), done)
        }
        _ => {
            let row = Outcome {
                epochs: member.epochs.clone(),
                ..Outcome::empty(Status::Ok)
            };
            store.save(member.record.clone(), row)
        }
    }
}

/// What the last merge of a sweep has to say: rows kept aside as unplanned, files that could not
/// be used, and a `--fresh` run still unfinished (its marker settled when it is not).
fn end_notes(out: &Path, merged: &store::Merged) -> Vec<String> {
    let mut notes = Vec::new();
    if !merged.unplanned.rows.is_empty() {
        notes.push(format!(
            "{} trial(s) in {} are not in this plan (an earlier grid or config planned them): \
             their rows are kept in {}, out of the report",
            merged.unplanned.rows.len(),
            out.display(),
            store::unplanned_dir(out).display()
        ));
    }
    notes.extend(merged.notes.iter().cloned());
    notes.extend(super::fresh::settle(out, &merged.planned.rows));
    notes
}
