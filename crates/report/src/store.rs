//! The records of a sweep as files: one per finished trial under `OUT/records/`, and the plan's
//! trial ids in `OUT/plan.json`. Every sweep (one process, or many shards of one plan running at
//! once) writes a trial's file when the trial ends, through a temporary file and a rename, so a
//! file is whole or absent and no two writers ever share one. The frames (`trials.parquet`,
//! `epochs.parquet`, `confusion.parquet`) are assembled from these files in plan order by
//! [`merge`]; `kd report OUT` does that before it reports.
//!
//! Record files are YAML, which keeps the non-finite numbers of a diverged epoch (`.nan`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{ConfusionRecord, EpochRecord, ReportError, Result, TrialRecord};

/// One finished trial: its record, its epochs and its test confusion counts (row-major,
/// `label * classes + predicted`; raw, and after the bias shift when one was fitted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialFile {
    pub record: TrialRecord,
    pub epochs: Vec<EpochRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confusion: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shifted_confusion: Vec<u64>,
}

impl TrialFile {
    /// Its rows of `confusion.parquet` (a matrix whose length is not a square is left out).
    pub fn confusion_records(&self) -> Vec<ConfusionRecord> {
        let mut out = Vec::new();
        for (shifted, counts) in [(false, &self.confusion), (true, &self.shifted_confusion)] {
            let classes = (counts.len() as f64).sqrt().round() as usize;
            if classes == 0 || classes * classes != counts.len() {
                continue;
            }
            for (i, &count) in counts.iter().enumerate() {
                out.push(ConfusionRecord {
                    trial_id: self.record.trial_id.clone(),
                    shifted,
                    label: (i / classes) as u32,
                    predicted: (i % classes) as u32,
                    count,
                });
            }
        }
        out
    }
}

/// `OUT/plan.json`: which trials the sweep in OUT plans, in report order (the teacher first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFile {
    pub name: String,
    /// SHA-256 of the resolved config: shards of one sweep share it.
    pub config_digest: String,
    /// What the ids were planned on (`cpu avx512 1 threads`, ...): shards must agree on it.
    pub planned_on: String,
    pub ids: Vec<String>,
}

pub fn records_dir(out: &Path) -> PathBuf {
    out.join("records")
}

fn plan_path(out: &Path) -> PathBuf {
    out.join("plan.json")
}

/// The file of trial `id`.
pub fn trial_path(out: &Path, id: &str) -> PathBuf {
    records_dir(out).join(format!("{id}.yaml"))
}

/// Write the file of one finished trial (replacing an earlier one of the same id).
pub fn write_trial(out: &Path, file: &TrialFile) -> Result<()> {
    let dir = records_dir(out);
    std::fs::create_dir_all(&dir).map_err(|source| ReportError::Io {
        file: dir.clone(),
        source,
    })?;
    let text = serde_yaml::to_string(file).expect("a trial file serialises");
    crate::write_atomic(&trial_path(out, &file.record.trial_id), text.as_bytes())
}

/// Every readable trial file in OUT by id, and a note per file that could not be read (it is
/// left out, so its trial runs again).
pub fn read_trials(out: &Path) -> (HashMap<String, TrialFile>, Vec<String>) {
    let mut files = HashMap::new();
    let mut notes = Vec::new();
    let Ok(entries) = std::fs::read_dir(records_dir(out)) else {
        return (files, notes);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let read = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_yaml::from_str::<TrialFile>(&t).map_err(|e| e.to_string()));
        match read {
            Ok(f) => {
                files.insert(f.record.trial_id.clone(), f);
            }
            Err(e) => notes.push(format!(
                "{}: unreadable ({e}); its trial will run again",
                path.display()
            )),
        }
    }
    (files, notes)
}

pub fn write_plan(out: &Path, plan: &PlanFile) -> Result<()> {
    let text = serde_json::to_string_pretty(plan).expect("a plan file serialises");
    crate::write_atomic(&plan_path(out), text.as_bytes())
}

/// `OUT/plan.json`, when there is one.
pub fn read_plan(out: &Path) -> Result<Option<PlanFile>> {
    let path = plan_path(out);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ReportError::Io { file: path, source }),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ReportError::Io {
            file: path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
}

/// The frames of OUT assembled from its trial files.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    pub rows: Vec<TrialRecord>,
    pub epochs: Vec<EpochRecord>,
    pub confusion: Vec<ConfusionRecord>,
    /// Planned ids without a file yet (not run, running, or lost with a killed shard).
    pub missing: Vec<String>,
    /// Files that could not be read.
    pub notes: Vec<String>,
}

/// The plan's trials that have a file, in plan order. Files of trials another plan made (an
/// earlier config in the same OUT) are left out, as the frames of one sweep always were.
pub fn merge(out: &Path, plan: &PlanFile) -> Merged {
    let (mut files, notes) = read_trials(out);
    let mut m = Merged {
        notes,
        ..Merged::default()
    };
    for id in &plan.ids {
        match files.remove(id) {
            Some(f) => {
                m.confusion.extend(f.confusion_records());
                m.epochs.extend(f.epochs);
                m.rows.push(f.record);
            }
            None => m.missing.push(id.clone()),
        }
    }
    m
}

/// Open (or create) the file at `path` that a `flock` is taken on, leaving its content: the
/// lock files of OUT, of the merge and of the teacher cache.
pub fn open_lock(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

/// Assemble OUT's frames from its trial files and write them (the claims stay as they are).
/// Merges are serialised by `OUT/.merge.lock`, so the last one to write saw every file written
/// before it started: concurrent shards never leave a frame without a trial whose file exists.
pub fn merge_and_write(out: &Path, plan: &PlanFile) -> Result<Merged> {
    let lock_path = out.join(".merge.lock");
    let lock = open_lock(&lock_path).map_err(|source| ReportError::Io {
        file: lock_path.clone(),
        source,
    })?;
    lock.lock().map_err(|source| ReportError::Io {
        file: lock_path,
        source,
    })?;
    let m = merge(out, plan);
    crate::write_frames(out, &m.rows, &m.epochs)?;
    let claims = crate::read_extras(out)
        .map(|e| e.claims)
        .unwrap_or_default();
    crate::write_extras(
        out,
        &crate::Extras {
            confusion: m.confusion.clone(),
            claims,
        },
    )?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: &str, loss: f64) -> TrialFile {
        let mut record: TrialRecord =
            serde_yaml::from_str(include_str!("../tests/trial.yaml")).expect("the fixture reads");
        record.trial_id = id.into();
        TrialFile {
            epochs: vec![EpochRecord {
                trial_id: id.into(),
                epoch: 1,
                train_loss: loss,
                soft_loss: None,
                hard_loss: loss,
                train_acc: 0.5,
                val_acc: None,
                test_acc: Some(0.25),
                lr: 0.1,
                seconds: 1.0,
            }],
            record,
            confusion: vec![3, 1, 0, 6],
            shifted_confusion: vec![],
        }
    }

    #[test]
    fn trial_files_round_trip_with_non_finite_numbers_and_merge_in_plan_order() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let (a, b) = (file("a", 0.5), file("b", f64::NAN));
        write_trial(out, &b).unwrap();
        write_trial(out, &a).unwrap();
        write_trial(out, &file("stale", 1.0)).unwrap();
        std::fs::write(records_dir(out).join("broken.yaml"), "record: [").unwrap();
        let (read, notes) = read_trials(out);
        assert_eq!(read["a"], a);
        assert!(read["b"].epochs[0].train_loss.is_nan());
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("broken.yaml"), "{notes:?}");

        let plan = PlanFile {
            name: "x".into(),
            config_digest: "d".into(),
            planned_on: "cpu".into(),
            ids: vec!["b".into(), "a".into(), "c".into()],
        };
        write_plan(out, &plan).unwrap();
        assert_eq!(read_plan(out).unwrap(), Some(plan.clone()));
        let m = merge_and_write(out, &plan).unwrap();
        let ids: Vec<&str> = m.rows.iter().map(|r| r.trial_id.as_str()).collect();
        assert_eq!(ids, ["b", "a"], "plan order, the stale file left out");
        assert_eq!(m.missing, ["c"]);
        assert_eq!(m.confusion.len(), 8);
        let c = &m.confusion[3];
        assert_eq!((c.label, c.predicted, c.count), (1, 1, 6));
        let (rows, epochs) = crate::read_frames(out).unwrap();
        assert_eq!(rows, m.rows);
        assert_eq!(epochs.len(), 2);
    }
}
