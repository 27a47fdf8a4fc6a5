//! The units of a sweep trained, after the teacher: in the sweep's own process one after
//! another, or handed to the worker pool. Each finished trial's record is written at once, and
//! a unit's checkpoint removed once all its records are (never when its worker was lost: the
//! next run continues from it).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::config::search::Search;
use crate::data::{Data, Tensors};
use crate::env::{self, Slot};
use crate::error::RunError;
use crate::plan::{Plan, PlannedTrial};
use crate::run::checkpoint::{self, Checkpoints};
use crate::run::labels::{grouped, label, stopped_note};
use crate::run::models::ModelsOut;
use crate::run::pool;
use crate::run::teacher::Teacher;
use crate::run::trial::{Stopped, TrialContext};
use crate::track::Outputs;
use crate::train::Outcome;

use super::out_store::Store;

/// The student phase of a sweep.
pub(super) struct Units<'a> {
    pub plan: &'a Plan,
    pub store: &'a Store<'a>,
    pub checkpoints: &'a Checkpoints,
    /// Where and which students' weights are kept (`save:`).
    pub models: Option<ModelsOut>,
    /// The pending trials that ended in this run (a trial whose earlier run failed has a file
    /// already, so the files cannot tell which ones a stop left unrun).
    pub finished: HashSet<usize>,
}

impl Units<'_> {
    /// Record trial `index` as `outcome` ended on `on`.
    pub(super) fn finish(
        &mut self,
        index: usize,
        outcome: Outcome,
        on: &Slot,
        progress: &mut Outputs,
        slot: usize,
    ) -> Result<(), RunError> {
        self.finished.insert(index);
        self.store.finish(index, outcome, on, progress, slot)
    }

    pub(super) fn trials(&self, unit: &[usize]) -> Vec<&PlannedTrial> {
        unit.iter().map(|&i| &self.plan.trials[i]).collect()
    }

    /// Train the units of `pending` after the teacher: by successive halving (`search`, with the
    /// outcomes earlier runs of it recorded), else in this process or on the workers.
    pub fn train(
        &mut self,
        data: &Data,
        t: &Teacher,
        splits: Option<Tensors>,
        pending: &[usize],
        (search, recorded): (Search, HashMap<usize, Outcome>),
        progress: &mut Outputs,
    ) -> Result<(), RunError> {
        if !search.is_grid() {
            let ctx = self.context(data, t, splits)?;
            self.halving(&ctx, pending, recorded, search, progress)
        } else if self.plan.in_process() {
            self.in_process(data, t, splits, pending, progress)
        } else {
            drop(splits);
            self.on_workers(t, pending, progress)
        }
    }

    /// What this process's trials train on, on the plan's one slot: the teacher's splits where
    /// they are on its device.
    pub(super) fn context(
        &self,
        data: &Data,
        t: &Teacher,
        splits: Option<Tensors>,
    ) -> Result<TrialContext, RunError> {
        let slot = &self.plan.slots[0];
        tch::set_num_threads(slot.threads as i32);
        let device = env::select_device(&slot.device)?;
        let splits = match splits {
            Some(s) if s.train.x.device() == device => s,
            _ => Tensors::new(data, device),
        };
        Ok(
            TrialContext::with_splits(splits, data, &t.logits, Some(&t.files))
                .with_checkpoints(Some(self.checkpoints.clone()))
                .with_models(self.models.clone()),
        )
    }

    /// Train the units of `pending` in this process on the plan's one slot, with the teacher's
    /// splits where they are on that device; until a stop is asked for.
    pub fn in_process(
        &mut self,
        data: &Data,
        t: &Teacher,
        splits: Option<Tensors>,
        pending: &[usize],
        progress: &mut Outputs,
    ) -> Result<(), RunError> {
        let plan = self.plan;
        let slot = &plan.slots[0];
        let ctx = self.context(data, t, splits)?;
        for unit in plan.units(pending) {
            if crate::run::stop::requested() {
                break;
            }
            let trials = self.trials(&unit);
            let epochs = trials[0].student.train.epochs as u64;
            progress.start_trial(0, &label(&trials), epochs);
            let outcomes = ctx.run_unit(&trials, |_, log| progress.epoch(0, log));
            for note in ctx.take_notes() {
                progress.note(&note);
            }
            let outcomes = match outcomes {
                Ok(outcomes) => outcomes,
                Err(Stopped(at)) => {
                    progress.note(&stopped_note(&trials, &at));
                    break;
                }
            };
            for (t, outcome) in unit.iter().zip(outcomes) {
                self.finish(*t, outcome, slot, progress, 0)?;
            }
            // Its records are written: its checkpoint has served.
            let trials = self.trials(&unit);
            checkpoint::remove(&checkpoint::unit_file_of(&self.checkpoints.dir, &trials));
        }
        Ok(())
    }

    /// Train the units of `pending` on the worker pool, one worker per slot.
    pub fn on_workers(
        &mut self,
        t: &Teacher,
        pending: &[usize],
        progress: &mut Outputs,
    ) -> Result<(), RunError> {
        let plan = self.plan;
        progress.note(&format!(
            "{} trials on {} workers: {}",
            pending.len(),
            plan.slots.len().min(pending.len()),
            grouped(
                plan.slots
                    .iter()
                    .map(|s| format!("{} ({} threads)", s.device, s.threads))
            )
        ));
        let models = self.models.clone();
        let setup = |slot: &Slot| pool::Setup {
            data: plan.data.clone(),
            teacher: t.files.clone(),
            slot: slot.clone(),
            checkpoints: Some(self.checkpoints.clone()),
            models: models.clone(),
            device_name: None,
        };
        // Per trial in flight, its unit's checkpoint and how many of the unit's trials run.
        let mut in_flight: HashMap<usize, (PathBuf, std::rc::Rc<std::cell::Cell<usize>>)> =
            HashMap::new();
        let dir = self.checkpoints.dir.clone();
        pool::run(plan, setup, pending, |event| match event {
            pool::Event::Started { slot, unit } => {
                let trials = self.trials(&unit);
                let epochs = trials[0].student.train.epochs as u64;
                progress.start_trial(slot, &label(&trials), epochs);
                let left = std::rc::Rc::new(std::cell::Cell::new(unit.len()));
                let file = checkpoint::unit_file_of(&dir, &trials);
                for &i in &unit {
                    in_flight.insert(i, (file.clone(), left.clone()));
                }
                Ok(())
            }
            pool::Event::Epoch { slot, log } => {
                progress.epoch(slot, &log);
                Ok(())
            }
            pool::Event::Stopped { unit, at } => {
                progress.note(&stopped_note(&self.trials(&unit), &at));
                Ok(())
            }
            pool::Event::Done {
                slot,
                index,
                outcome,
                on,
                lost,
            } => {
                self.finish(index, *outcome, &on, progress, slot)?;
                // The unit's records are all written: its checkpoint has served (unless its
                // worker was lost: the next run continues from it).
                if let Some((file, left)) = in_flight.remove(&index).filter(|_| !lost) {
                    left.set(left.get() - 1);
                    if left.get() == 0 {
                        checkpoint::remove(&file);
                    }
                }
                Ok(())
            }
        })
    }
}
