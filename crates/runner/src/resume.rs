//! Resume: the exclusive claim on an output folder, and the trials an earlier run of it finished.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kd_report::{EpochRecord, Status, TrialRecord};

use crate::error::{io_err, RunError};
use crate::measure::Measures;
use crate::train::Outcome;

/// An exclusive claim on an output folder (`OUT/.lock` holding our PID), released on drop. A lock
/// left by a process that no longer runs is taken over.
#[derive(Debug)]
pub struct OutLock(PathBuf);

impl OutLock {
    pub fn acquire(out: &Path) -> Result<OutLock, RunError> {
        let path = out.join(".lock");
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    let _ = write!(f, "{}", std::process::id());
                    return Ok(OutLock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let pid = std::fs::read_to_string(&path).unwrap_or_default();
                    let pid = pid.trim();
                    let alive = !pid.is_empty() && Path::new("/proc").join(pid).exists();
                    if alive {
                        return Err(RunError::Busy {
                            file: path,
                            pid: pid.to_string(),
                        });
                    }
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Err(RunError::Busy {
            file: path,
            pid: "?".into(),
        })
    }
}

impl Drop for OutLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A trial an earlier run finished (ok or diverged): how it ended and where it ran. The plan
/// re-derives everything else of its record.
#[derive(Debug, Clone)]
pub struct Done {
    pub outcome: Outcome,
    pub device: String,
    pub threads: usize,
}

/// The finished trials of an earlier run of `out`, by id, and a note when its files could not
/// be read (then nothing is reused).
pub fn finished(out: &Path) -> (HashMap<String, Done>, Option<String>) {
    if !out.join("trials.parquet").exists() {
        return (HashMap::new(), None);
    }
    let (rows, epochs) = match kd_report::read_frames(out) {
        Ok(frames) => frames,
        Err(e) => {
            return (
                HashMap::new(),
                Some(format!("{e}; none of its trials are reused")),
            )
        }
    };
    // Confusion matrices came later: a folder without them keeps its trials without matrices.
    let confusion = kd_report::read_extras(out)
        .map(|e| e.confusion)
        .unwrap_or_default();
    let mut matrices: HashMap<String, (Vec<u64>, Vec<u64>)> = HashMap::new();
    for c in confusion {
        let m = matrices.entry(c.trial_id.clone()).or_default();
        if c.shifted { &mut m.1 } else { &mut m.0 }.push(c.count);
    }
    let mut by_trial: HashMap<String, Vec<EpochRecord>> = HashMap::new();
    for e in epochs {
        by_trial.entry(e.trial_id.clone()).or_default().push(e);
    }
    let done = rows
        .into_iter()
        .filter(|r| r.status != Status::Failed)
        .map(|r: TrialRecord| {
            let epochs = by_trial.remove(&r.trial_id).unwrap_or_default();
            let (confusion, shifted_confusion) = matrices.remove(&r.trial_id).unwrap_or_default();
            let measures = Measures {
                teacher_agreement: r.teacher_agreement,
                teacher_kl: r.teacher_kl,
                confusion,
                bias_shift: r.bias_shift,
                shifted_test_errors: r.shifted_test_errors,
                shifted_confusion,
            };
            let done = Done {
                outcome: Outcome {
                    status: r.status,
                    epochs,
                    train_acc: r.train_acc,
                    val_acc: r.val_acc,
                    test_acc: r.test_acc,
                    test_errors: r.test_errors,
                    best_epoch: r.best_epoch,
                    wall_s: r.wall_s,
                    message: r.message,
                    finished_at: r.finished_at,
                    measures,
                },
                device: r.device,
                threads: r.threads as usize,
            };
            (r.trial_id, done)
        })
        .collect();
    (done, None)
}
