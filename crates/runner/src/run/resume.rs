//! Resume: the claim on an output folder (whole, or one shard of it), and the trials earlier
//! runs of it finished.

use std::collections::HashMap;
use std::path::Path;

use kd_report::store::{self, TrialFile};
use kd_report::Status;

use crate::error::{io_err, RunError};
use crate::plan::Shard;
use crate::train::measure::Measures;
use crate::train::Outcome;

/// A claim on an output folder, held with `flock` so the kernel releases it when the process
/// ends however it ends (a killed run never blocks the next), on one machine or across the nodes
/// of a cluster's shared file system. A whole sweep holds `OUT/.lock` exclusively; a shard holds
/// it shared (shards run side by side) and its own `OUT/.shard-I-of-N.lock` exclusively (one
/// process per shard). The lock files stay; they hold the PID of their last holder.
#[derive(Debug)]
pub struct OutLock {
    _files: Vec<std::fs::File>,
}

impl OutLock {
    /// Claim `out` for a whole sweep, or for `shard` of one.
    pub fn acquire(out: &Path, shard: Option<Shard>) -> Result<OutLock, RunError> {
        let main = out.join(".lock");
        match shard {
            None => Ok(OutLock {
                _files: vec![lock_file(&main, false)?],
            }),
            Some(s) => {
                let own = out.join(format!(".shard-{}-of-{}.lock", s.index, s.count));
                Ok(OutLock {
                    _files: vec![lock_file(&main, true)?, lock_file(&own, false)?],
                })
            }
        }
    }
}

/// Take `path`'s lock without waiting (shared or exclusive); busy names the holder's PID.
fn lock_file(path: &Path, shared: bool) -> Result<std::fs::File, RunError> {
    use std::io::Write;
    let mut f = store::open_lock(path).map_err(io_err(path))?;
    let taken = if shared {
        f.try_lock_shared()
    } else {
        f.try_lock()
    };
    match taken {
        Ok(()) => {
            if !shared {
                let _ = f.set_len(0);
                let _ = write!(f, "{}", std::process::id());
            }
            Ok(f)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(path).unwrap_or_default();
            Err(RunError::Busy {
                file: path.to_path_buf(),
                pid: if pid.trim().is_empty() {
                    "?".into()
                } else {
                    pid.trim().to_string()
                },
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(path)(e)),
    }
}

/// A trial an earlier run finished (ok or diverged): how it ended and where it ran. The plan
/// re-derives everything else of its record.
#[derive(Debug, Clone)]
pub struct Done {
    pub outcome: Outcome,
    pub device: String,
    pub threads: usize,
    /// The record as its trial file holds it (none when it came from the frames): a sweep
    /// rewrites the file only when the plan re-derives another record.
    pub stored: Option<kd_report::TrialRecord>,
}

/// The finished trials of an earlier run of `out`, by id: the rows of its frames (and of
/// `OUT/unplanned/`), and over them its trial files (every trial a shard or sweep finished, also
/// after the last frame was written). Notes say what could not be read or contradicts itself
/// (then it is not reused). A trial an interrupted `--fresh` run re-runs counts only with a
/// record of that run.
pub fn finished(out: &Path) -> (HashMap<String, Done>, Vec<String>) {
    let mut notes = Vec::new();
    let mut files: HashMap<String, TrialFile> = HashMap::new();
    // Trials an interrupted --fresh run re-runs: only records of that run count.
    let rerun = super::fresh::rerun(out);
    // The unplanned rows too: a grid changed back finds its trials again.
    for dir in [store::unplanned_dir(out), out.to_path_buf()] {
        match store::read_frame_files(&dir) {
            Ok(rows) => files.extend(rows.into_iter().filter(|(id, _)| !rerun.contains_key(id))),
            Err(e) => notes.push(format!("{e}; none of its trials are reused")),
        }
    }
    let (mut written, unreadable) = store::read_trials(out);
    notes.extend(unreadable);
    written.retain(|id, f| super::fresh::counts(&rerun, id, &f.record.finished_at));
    // A row stands for its trial only where no file does, and only if it agrees with itself.
    files.retain(|id, f| written.contains_key(id) || store::agrees(f, &mut notes));
    let again = rerun.keys().filter(|id| !written.contains_key(*id)).count();
    if again > 0 {
        notes.push(format!(
            "{again} trial(s) of an interrupted --fresh run train again (their earlier results \
             are in {})",
            store::replaced_dir(out).display()
        ));
    }
    let in_files: std::collections::HashSet<String> = written.keys().cloned().collect();
    files.extend(written);
    let done = files
        .into_values()
        .filter(|f| f.record.status != Status::Failed)
        // A pruned row is kept: `keep_finished` keeps it pruned (search: halving) or trains it.
        .map(|f| {
            let stored = in_files.contains(&f.record.trial_id);
            done_of(f, stored)
        })
        .collect();
    (done, notes)
}

/// A finished trial as resume keeps it, by id: its outcome from its record, epochs and confusion
/// counts; `stored` when it came from its record file (not the frames).
fn done_of(f: TrialFile, stored: bool) -> (String, Done) {
    let stored = stored.then(|| f.record.clone());
    let r = f.record;
    let measures = Measures {
        teacher_agreement: r.teacher_agreement,
        teacher_kl: r.teacher_kl,
        confusion: f.confusion,
        bias_shift: r.bias_shift,
        shifted_test_errors: r.shifted_test_errors,
        shifted_confusion: f.shifted_confusion,
    };
    let done = Done {
        outcome: Outcome {
            status: r.status,
            epochs: f.epochs,
            train_acc: r.train_acc,
            val_acc: r.val_acc,
            test_acc: r.test_acc,
            test_errors: r.test_errors,
            best_epoch: r.best_epoch,
            wall_s: r.wall_s,
            message: r.message,
            finished_at: r.finished_at,
            measures,
            resumed: r.resumed,
            cpu: r.cpu,
            model_file: r.model_file,
        },
        device: r.device,
        threads: r.threads as usize,
        stored,
    };
    (r.trial_id, done)
}
