//! `kd sweep`: load the data, build the plan, claim OUT, write the resolved config (with what
//! this machine made of it), get the teacher, train every trial not finished before (in this
//! process or on the worker pool), rewriting the frames after each one, then the report.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kd_report::{ConfusionRecord, EpochRecord, Status, TrialRecord};
use serde::Serialize;

use crate::config::{self, Resolved};
use crate::data::{self, DataPlan, Tensors};
use crate::env::{self, Slot};
use crate::error::{io_err, RunError};
use crate::plan::{Plan, PlannedTrial, TeacherPlan};
use crate::pool;
use crate::progress::{trial_line, Progress};
use crate::resume::{self, Done, OutLock};
use crate::teacher;
use crate::train::Outcome;
use crate::trial::TrialContext;

/// Options that are not part of the experiment (so not part of any id).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Output folder; default `results/<name>/`.
    pub out: Option<PathBuf>,
    /// Ignore the results of earlier runs in OUT and train every trial again.
    pub fresh: bool,
}

/// What a finished sweep hands back to the CLI.
#[derive(Debug)]
pub struct Summary {
    pub out: PathBuf,
    pub trials: Vec<TrialRecord>,
    /// Trials whose status is not `ok`.
    pub unfinished: usize,
    /// The `expect:` claims, checked.
    pub verdicts: Vec<kd_report::Verdict>,
}

/// Read the config at `path`, apply `--set KEY=VALUE` overrides and resolve it.
pub fn load_config(path: &Path, sets: &[String]) -> Result<Resolved, RunError> {
    Ok(config::load(path)?.with_sets(sets)?.resolve()?)
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

/// One trial's rows in the frames: its record, its epochs and its confusion cells.
type Row = (TrialRecord, Vec<EpochRecord>, Vec<ConfusionRecord>);

/// The sweep's rows in plan order (the teacher first) as trials finish, written after each.
struct Book<'a> {
    plan: &'a Plan,
    out: &'a Path,
    rows: Vec<Option<Row>>,
    claims: &'a [kd_report::Claim],
}

impl Book<'_> {
    fn set(&mut self, position: usize, record: TrialRecord, outcome: Outcome) {
        let confusion = crate::records::confusion_records(
            &record.trial_id,
            &outcome.measures,
            self.plan.data.classes,
        );
        self.rows[position] = Some((record, outcome.epochs, confusion));
    }

    /// Record student trial `index` as `outcome` ended on `ran_on`, and rewrite the frames.
    fn finish(
        &mut self,
        index: usize,
        outcome: Outcome,
        ran_on: &Slot,
        progress: &mut Progress,
        slot: usize,
    ) -> Result<(), RunError> {
        let record = self
            .plan
            .trial_record(&self.plan.trials[index], &outcome, ran_on);
        progress.finish_trial(slot, &trial_line(&record));
        self.set(index + 1, record, outcome);
        self.write()
    }

    fn records(&self) -> (Vec<TrialRecord>, Vec<EpochRecord>, kd_report::Extras) {
        let rows = self.rows.iter().flatten();
        (
            rows.clone().map(|(r, _, _)| r.clone()).collect(),
            rows.clone()
                .flat_map(|(_, e, _)| e.iter().cloned())
                .collect(),
            kd_report::Extras {
                confusion: rows.flat_map(|(_, _, c)| c.iter().cloned()).collect(),
                claims: self.claims.to_vec(),
            },
        )
    }

    fn write(&self) -> Result<(), RunError> {
        let (rows, epochs, extras) = self.records();
        kd_report::write_frames(self.out, &rows, &epochs)?;
        Ok(kd_report::write_extras(self.out, &extras)?)
    }
}

/// The slot a kept trial recorded: its device and threads, in its planned class.
fn kept_on(done: &Done, class: &env::ExecClass) -> Slot {
    Slot {
        device: done.device.clone(),
        threads: done.threads,
        class: class.clone(),
    }
}

/// Run an already resolved config.
pub fn run_resolved(cfg: &Resolved, opts: &RunOptions) -> Result<Summary, RunError> {
    // The data and the plan come first: every listed device must exist, every model fit the
    // data, before anything is written.
    let data = data::load(&cfg.dataset)?;
    let plan = Plan::build(cfg, &data)?;
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(&cfg.name));
    std::fs::create_dir_all(&out).map_err(io_err(&out))?;
    let _lock = OutLock::acquire(&out)?;
    let (mut previous, unreadable) = if opts.fresh {
        (HashMap::new(), None)
    } else {
        resume::finished(&out)
    };
    // The resolved config goes first, so every result can be traced to its inputs.
    let resolved = ResolvedFile {
        config: cfg,
        execution: Execution {
            libtorch: env::LIBTORCH_VERSION,
            teacher: &plan.teacher,
            slots: &plan.slots,
            data: &plan.data,
        },
    };
    kd_report::write_atomic(
        &out.join("config.resolved.yaml"),
        serde_yaml::to_string(&resolved)
            .expect("the resolved config serialises")
            .as_bytes(),
    )?;
    let mut progress = Progress::new(plan.trials.len() as u64 + 1);
    if let Some(note) = unreadable {
        progress.note(&note);
    }
    let d = &plan.data;
    let slots: Vec<String> = plan
        .slots
        .iter()
        .map(|s| format!("{} ({})", s.device, s.class.describe()))
        .collect();
    progress.note(&format!(
        "{}: {} in {} ({} train / {} val / {} test images, {}x{}, fingerprint {}), libtorch {}, \
         teacher on {} ({}), students on {}",
        plan.name,
        d.name.as_str(),
        d.dir.display(),
        d.train,
        d.val,
        d.test,
        d.input.height,
        d.input.width,
        d.fingerprint,
        env::LIBTORCH_VERSION,
        plan.teacher.slot.device,
        plan.teacher.slot.class.describe(),
        slots.join(", ")
    ));
    if d.transfer_rows < d.train {
        progress.note(&format!(
            "students learn from {} of the {} training images (dataset.transfer_fraction {}); \
             the teacher saw all of them",
            d.transfer_rows, d.train, d.transfer_fraction
        ));
    }

    let mut book = Book {
        plan: &plan,
        out: &out,
        rows: vec![None; plan.trials.len() + 1],
        claims: &cfg.expect,
    };
    // Trials finished in an earlier run of this OUT with the same id are kept; their records are
    // re-derived from the plan (pairing, swept keys), their outcomes kept.
    let mut pending: Vec<usize> = Vec::new();
    let mut kept = 0;
    for t in &plan.trials {
        match previous.remove(&t.id) {
            Some(done) => {
                let on = kept_on(&done, &plan.classes[t.class]);
                let record = plan.trial_record(t, &done.outcome, &on);
                progress.finish_trial(
                    0,
                    &format!("{} (done before, skipped)", trial_line(&record)),
                );
                book.set(t.index + 1, record, done.outcome);
                kept += 1;
            }
            None => pending.push(t.index),
        }
    }
    // When every student trial is finished, the teacher is not needed either (its cache may be
    // gone): its row is kept like the others.
    let earlier_teacher = previous
        .remove(&plan.teacher.id)
        .filter(|_| pending.is_empty());
    let mut splits = None;
    let mut logits = None;
    match earlier_teacher {
        Some(done) => {
            let on = kept_on(&done, &plan.teacher.slot.class);
            let record = plan.teacher_record(&done.outcome, &on);
            progress.finish_trial(
                0,
                &format!("{} (done before, skipped)", trial_line(&record)),
            );
            book.set(0, record, done.outcome);
        }
        None => {
            let device = env::select_device(&plan.teacher.slot.device)?;
            tch::set_num_threads(plan.teacher.slot.threads as i32);
            let tensors = Tensors::new(&data, device);
            let t = teacher::obtain(&plan, &tensors, &mut progress)?;
            let outcome = Outcome {
                epochs: t.epochs.clone(),
                ..Outcome::empty(Status::Ok)
            };
            book.set(0, t.record.clone(), outcome);
            splits = Some(tensors);
            logits = Some(t);
        }
    }
    book.write()?;

    if let (false, Some(t)) = (pending.is_empty(), logits) {
        if plan.in_process() {
            let slot = &plan.slots[0];
            tch::set_num_threads(slot.threads as i32);
            let device = env::select_device(&slot.device)?;
            let splits = match splits {
                Some(s) if s.train.x.device() == device => s,
                _ => Tensors::new(&data, device),
            };
            let ctx = TrialContext::with_splits(splits, &data, &t.logits, Some(&t.files));
            for unit in plan.units(&pending) {
                let trials: Vec<&PlannedTrial> = unit.iter().map(|&i| &plan.trials[i]).collect();
                let epochs = trials[0].student.train.epochs as u64;
                progress.start_trial(0, &label(&trials), epochs);
                let outcomes = ctx.run_unit(&trials, |_, log| progress.epoch(0, log));
                for (t, outcome) in trials.iter().zip(outcomes) {
                    book.finish(t.index, outcome, slot, &mut progress, 0)?;
                }
            }
        } else {
            drop(splits);
            progress.note(&format!(
                "{} trials on {} workers: {}",
                pending.len(),
                plan.slots.len().min(pending.len()),
                plan.slots
                    .iter()
                    .map(|s| format!("{} ({} threads)", s.device, s.threads))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            let setup = |slot: &Slot| pool::Setup {
                data: plan.data.clone(),
                teacher: t.files.clone(),
                slot: slot.clone(),
            };
            pool::run(&plan, setup, &pending, |event| match event {
                pool::Event::Started { slot, unit } => {
                    let trials: Vec<&PlannedTrial> =
                        unit.iter().map(|&i| &plan.trials[i]).collect();
                    let epochs = trials[0].student.train.epochs as u64;
                    progress.start_trial(slot, &label(&trials), epochs);
                    Ok(())
                }
                pool::Event::Epoch { slot, log } => {
                    progress.epoch(slot, &log);
                    Ok(())
                }
                pool::Event::Done {
                    slot,
                    index,
                    outcome,
                    on,
                } => book.finish(index, *outcome, &on, &mut progress, slot),
            })?;
        }
    }
    if kept > 0 {
        progress.note(&format!(
            "{kept} trial(s) were finished before and kept; --fresh re-runs them"
        ));
    }
    book.write()?;
    progress.finish();
    let (trials, epochs, extras) = book.records();
    let (_, verdicts) = kd_report::write_report(&out, &cfg.name, &trials, &epochs, &extras)?;
    let unfinished = trials.iter().filter(|r| r.status != Status::Ok).count();
    Ok(Summary {
        out,
        trials,
        unfinished,
        verdicts,
    })
}

/// The progress label of a unit: `kd seed 0`, or `pack of 18 800-800`.
fn label(unit: &[&PlannedTrial]) -> String {
    match unit {
        [t] if t.exec == kd_report::Exec::Single => format!("{} seed {}", t.kind, t.seed),
        _ => format!(
            "pack of {} {}",
            unit.len(),
            unit.first()
                .map_or(String::new(), |t| t.student.model.shape_label())
        ),
    }
}
