//! Where a sweep's results go: one file per finished trial, the frames rewritten after each.

use std::path::Path;

use kd_report::store::{self, PlanFile, TrialFile};
use kd_report::{Status, TrialRecord};

use super::resume::Done;
use crate::env::Slot;
use crate::error::RunError;
use crate::plan::Plan;
use crate::track::Outputs;
use crate::train::Outcome;

/// Where a sweep's results go: one file per finished trial (`OUT/records/<id>.yaml`), and the
/// frames assembled from those files in plan order after each one.
pub(super) struct Store<'a> {
    pub plan: &'a Plan,
    pub out: &'a Path,
    pub index: PlanFile,
}

impl Store<'_> {
    pub(super) fn save(&self, record: TrialRecord, outcome: Outcome) -> Result<(), RunError> {
        let m = outcome.measures;
        Ok(store::write_trial(
            self.out,
            &TrialFile {
                record,
                epochs: outcome.epochs,
                confusion: m.confusion,
                shifted_confusion: m.shifted_confusion,
            },
        )?)
    }

    /// Keep a trial an earlier run finished, under the `record` the plan re-derives for it: its
    /// file is written only when it holds another record (or none: a row of older frames).
    pub(super) fn keep(&self, record: TrialRecord, done: Done) -> Result<(), RunError> {
        if done.stored.as_ref() == Some(&record) {
            return Ok(());
        }
        self.save(record, done.outcome)
    }

    /// Record student trial `index` as `outcome` ended on `ran_on`, and rewrite the frames.
    pub(super) fn finish(
        &self,
        index: usize,
        outcome: Outcome,
        ran_on: &Slot,
        progress: &mut Outputs,
        slot: usize,
    ) -> Result<(), RunError> {
        let record = self
            .plan
            .trial_record(&self.plan.trials[index], &outcome, ran_on);
        progress.finish_trial(slot, &record, &outcome.epochs);
        if let Some(w) = chance_warning(&record, self.plan.data.classes) {
            progress.note(&w);
        }
        self.save(record, outcome)?;
        self.merge()?;
        abort_for_tests();
        Ok(())
    }

    pub(super) fn merge(&self) -> Result<store::Merged, RunError> {
        Ok(store::merge_and_write(self.out, &self.index)?)
    }
}

/// Fault injection for the tests: with `KD_TEST_ABORT_AFTER_TRIALS=N`, the process ends with
/// exit status 137 once it has recorded N trials, as a `kill -9` would end it there: no
/// unwinding, no destructors, no report (a deterministic kill for the fault tests).
fn abort_for_tests() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static DONE: AtomicUsize = AtomicUsize::new(0);
    let Some(n) = std::env::var("KD_TEST_ABORT_AFTER_TRIALS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    if DONE.fetch_add(1, Ordering::SeqCst) + 1 >= n {
        eprintln!("KD_TEST_ABORT_AFTER_TRIALS={n}: ending the process");
        std::process::exit(137);
    }
}

/// A warning for a trial that finished (its loss finite) at or below chance accuracy on the
/// test set: it learned nothing, which its `ok` status would hide (T = 1e9, a learning rate far
/// too small or too large).
fn chance_warning(r: &TrialRecord, classes: usize) -> Option<String> {
    let chance = 1.0 / classes.max(1) as f64;
    let acc = r.test_acc?;
    (r.status == Status::Ok && acc <= chance).then(|| {
        format!(
            "warning: {} finished at {:.2}% test accuracy, at or below chance ({:.2}%, {classes} \
             classes), though its loss stayed finite: it learned nothing; check its settings \
             (temperature, alpha/beta, learning rate)",
            r.trial_id,
            100.0 * acc,
            100.0 * chance
        )
    })
}
