//! What a sweep keeps of the earlier runs of its OUT: the finished trials whose ids are still
//! planned (their records re-derived from the plan), the teacher's row, and the trials an
//! earlier successive-halving search pruned.

use std::collections::{HashMap, HashSet};

use kd_report::Status;

use super::out_store::Store;
use super::resume::Done;
use crate::config::search::Search;
use crate::env::{self, Slot};
use crate::error::RunError;
use crate::plan::Plan;
use crate::track::Outputs;
use crate::train::Outcome;

/// The slot a kept trial recorded: its device and threads, in its planned class.
pub(super) fn kept_on(done: &Done, class: &env::ExecClass) -> Slot {
    Slot {
        device: done.device.clone(),
        threads: done.threads,
        class: class.clone(),
    }
}

/// What [`keep_finished`] found.
pub(super) struct Kept {
    /// The trials of this process that train in this run.
    pub pending: Vec<usize>,
    /// How many of its trials' earlier results were kept.
    pub kept: usize,
    /// With `search: halving`, the outcomes of this process's trials that earlier runs
    /// recorded (finished, diverged, or pruned by the search, which stays pruned): the search
    /// ranks and packs with them as the uninterrupted search did. With `search: grid` a pruned
    /// trial trains to the end instead.
    pub recorded: HashMap<usize, Outcome>,
}

/// Keep the trials an earlier run of this OUT finished with the same id ([`Kept`]); `mine`: the
/// plan indices this process runs.
pub(super) fn keep_finished(
    plan: &Plan,
    previous: &mut HashMap<String, Done>,
    mine: &[usize],
    store: &Store,
    search: Search,
    progress: &mut Outputs,
) -> Result<Kept, RunError> {
    // Trials finished in an earlier run of this OUT with the same id are kept; their records are
    // re-derived from the plan (pairing, swept keys), their outcomes kept, and written to their
    // files (which also carries rows of older frames over into files). Every planned trial is,
    // not only this shard's: a frame rewritten from the files must not lose anyone's rows.
    let mut pending: Vec<usize> = Vec::new();
    let mut kept = 0;
    let mut recorded = HashMap::new();
    let mut unpruned = 0;
    let is_mine: HashSet<usize> = mine.iter().copied().collect();
    for t in &plan.trials {
        match previous.remove(&t.id) {
            Some(done)
                if done.outcome.status == Status::Pruned
                    && search.is_grid()
                    && is_mine.contains(&t.index) =>
            {
                pending.push(t.index);
                unpruned += 1;
            }
            Some(done) => {
                if !search.is_grid() && is_mine.contains(&t.index) {
                    recorded.insert(t.index, done.outcome.clone());
                }
                let on = kept_on(&done, &plan.classes[t.class]);
                let record = plan.trial_record(t, &done.outcome, &on);
                if is_mine.contains(&t.index) {
                    progress.kept_trial(&record, &done.outcome.epochs);
                    kept += 1;
                }
                store.keep(record, done)?;
            }
            None if is_mine.contains(&t.index) => pending.push(t.index),
            None => {}
        }
    }
    if unpruned > 0 {
        progress.note(&format!(
            "{unpruned} trial(s) that an earlier search (halving) pruned train to the end now \
             (search: grid)"
        ));
    }
    Ok(Kept {
        pending,
        kept,
        recorded,
    })
}

/// The teacher's earlier row and each ensemble member's, taken out of `previous`.
pub(super) fn earlier_teachers(
    plan: &Plan,
    previous: &mut std::collections::HashMap<String, Done>,
) -> std::collections::HashMap<String, Done> {
    std::iter::once(&plan.teacher)
        .chain(&plan.teacher.members)
        .filter_map(|t| previous.remove(&t.id).map(|d| (t.id.clone(), d)))
        .collect()
}

/// When every trial of this process is finished, the teacher is not needed either (its cache
/// may be gone): its row is kept like the others.
pub(super) fn keep_teacher(
    plan: &Plan,
    mut earlier: std::collections::HashMap<String, Done>,
    store: &Store,
    progress: &mut Outputs,
) -> Result<(), RunError> {
    // An ensemble's members first, each pointing to the ensemble.
    for m in &plan.teacher.members {
        if let Some(done) = earlier.remove(&m.id) {
            let on = kept_on(&done, &m.slot.class);
            store.keep(plan.teacher_record_of(m, &done.outcome, &on), done)?;
        }
    }
    if let Some(done) = earlier.remove(&plan.teacher.id) {
        let on = kept_on(&done, &plan.teacher.slot.class);
        let record = plan.teacher_record(&done.outcome, &on);
        progress.kept_trial(&record, &done.outcome.epochs);
        store.keep(record, done)?;
    }
    Ok(())
}
