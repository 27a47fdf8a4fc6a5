//! The records of a sweep as files: one per finished trial under `OUT/records/`, and the plan's
//! trial ids in `OUT/plan.json`. Every sweep (one process, or many shards of one plan running at
//! once) writes a trial's file when the trial ends, through a temporary file and a rename, so a
//! file is whole or absent and no two writers ever share one. The frames (`trials.parquet`,
//! `epochs.parquet`, `confusion.parquet`) are assembled from these files in plan order by
//! [`merge`]; `kd report OUT` does that before it reports.
//!
//! Record files are YAML, which keeps the non-finite numbers of a diverged epoch (`.nan`).

use std::collections::{HashMap, HashSet};
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
                "{}: unreadable ({e}); the frames' row of its trial is kept where they have one, \
                 else the trial runs again",
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

/// The folder beside the frames where rows of trials the plan no longer lists are kept
/// (`OUT/unplanned/`, with frames of the same schema): a changed grid never drops a row.
pub fn unplanned_dir(out: &Path) -> PathBuf {
    out.join("unplanned")
}

/// The trials the frames in `dir` hold (`trials.parquet`, `epochs.parquet` and, where it exists,
/// `confusion.parquet`) as trial files, by id; none where `dir` has no `trials.parquet`.
pub fn read_frame_files(dir: &Path) -> Result<HashMap<String, TrialFile>> {
    let mut files: HashMap<String, TrialFile> = HashMap::new();
    if !dir.join("trials.parquet").exists() {
        return Ok(files);
    }
    let (rows, epochs) = crate::read_frames(dir)?;
    // Confusion matrices came later: a folder without them keeps its trials without.
    let confusion = crate::read_extras(dir)
        .map(|e| e.confusion)
        .unwrap_or_default();
    for r in rows {
        files.insert(
            r.trial_id.clone(),
            TrialFile {
                record: r,
                epochs: vec![],
                confusion: vec![],
                shifted_confusion: vec![],
            },
        );
    }
    for e in epochs {
        if let Some(f) = files.get_mut(&e.trial_id) {
            f.epochs.push(e);
        }
    }
    for c in confusion {
        if let Some(f) = files.get_mut(&c.trial_id) {
            if c.shifted {
                &mut f.shifted_confusion
            } else {
                &mut f.confusion
            }
            .push(c.count);
        }
    }
    Ok(files)
}

/// Rows, epochs and confusion counts of some trials, as the frames hold them.
#[derive(Debug, Clone, Default)]
pub struct Frames {
    pub rows: Vec<TrialRecord>,
    pub epochs: Vec<EpochRecord>,
    pub confusion: Vec<ConfusionRecord>,
}

impl Frames {
    fn push(&mut self, f: TrialFile) {
        self.confusion.extend(f.confusion_records());
        self.epochs.extend(f.epochs);
        self.rows.push(f.record);
    }
}

/// The frames of OUT assembled from its trial files and its earlier frames.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    /// The plan's trials, in plan order.
    pub planned: Frames,
    /// Planned ids with neither a file nor a row yet (not run, running, or lost with a killed
    /// shard).
    pub missing: Vec<String>,
    /// Planned ids whose row came from the earlier frames: their file is missing or unreadable.
    pub from_frames: Vec<String>,
    /// Trials OUT holds that the plan does not list (an earlier config's), kept aside in
    /// `OUT/unplanned/`.
    pub unplanned: Frames,
    /// Frame files that could not be read (moved aside by [`merge_and_write`]).
    pub unreadable: Vec<PathBuf>,
    /// Files that could not be read, and what was done about them.
    pub notes: Vec<String>,
}

/// The plan's trials in plan order, from the union of the trial files and the rows of the
/// earlier frames (`OUT/*.parquet` and `OUT/unplanned/*.parquet`): a file wins where it exists
/// and reads, a row is kept where its file is missing or unreadable, so a lost or damaged
/// `records/` never drops a row. Trials the plan does not list go to [`Merged::unplanned`].
/// The rows of `stale` ids (re-run on request) are not taken from the frames.
pub fn merge(out: &Path, plan: &PlanFile, stale: &HashSet<String>) -> Merged {
    let (mut files, notes) = read_trials(out);
    let mut m = Merged {
        notes,
        ..Merged::default()
    };
    let mut framed: HashMap<String, TrialFile> = HashMap::new();
    for dir in [out.to_path_buf(), unplanned_dir(out)] {
        match read_frame_files(&dir) {
            Ok(rows) => {
                for (id, f) in rows {
                    if !stale.contains(&id) {
                        framed.entry(id).or_insert(f);
                    }
                }
            }
            Err(e) => {
                m.notes.push(format!(
                    "{e}; its rows cannot be read, so the frames are rebuilt from records/ \
                     and the unreadable files are kept aside as *.parquet.unreadable"
                ));
                m.unreadable.push(dir);
            }
        }
    }
    for id in &plan.ids {
        let framed_row = framed.remove(id);
        match (files.remove(id), framed_row) {
            (Some(f), _) => m.planned.push(f),
            (None, Some(f)) => {
                m.from_frames.push(id.clone());
                m.planned.push(f);
            }
            (None, None) => m.missing.push(id.clone()),
        }
    }
    let mut rest: Vec<TrialFile> = framed.into_values().collect();
    rest.retain(|f| !files.contains_key(&f.record.trial_id));
    rest.extend(files.into_values());
    rest.sort_by(|a, b| a.record.trial_id.cmp(&b.record.trial_id));
    for f in rest {
        m.unplanned.push(f);
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

/// Assemble OUT's frames from its trial files and earlier frames ([`merge`]) and write them, and
/// the rows of unplanned trials to `OUT/unplanned/` (the claims stay as they are). A frame file
/// that could not be read is first renamed to `*.parquet.unreadable` (never deleted). Merges
/// are serialised by `OUT/.merge.lock`, so the last one to write saw every file written before
/// it started: concurrent shards never leave a frame without a trial whose file exists.
pub fn merge_and_write(out: &Path, plan: &PlanFile, stale: &HashSet<String>) -> Result<Merged> {
    let lock_path = out.join(".merge.lock");
    let lock = open_lock(&lock_path).map_err(|source| ReportError::Io {
        file: lock_path.clone(),
        source,
    })?;
    lock.lock().map_err(|source| ReportError::Io {
        file: lock_path,
        source,
    })?;
    let m = merge(out, plan, stale);
    for dir in &m.unreadable {
        set_aside(dir)?;
    }
    let claims = crate::read_extras(out)
        .map(|e| e.claims)
        .unwrap_or_default();
    write_frames_of(out, &m.planned, claims)?;
    let aside = unplanned_dir(out);
    if !m.unplanned.rows.is_empty() {
        std::fs::create_dir_all(&aside).map_err(|source| ReportError::Io {
            file: aside.clone(),
            source,
        })?;
        write_frames_of(&aside, &m.unplanned, vec![])?;
    } else if aside.join("trials.parquet").exists() {
        // Its trials are planned again: their rows are in OUT's frames now.
        write_frames_of(&aside, &Frames::default(), vec![])?;
    }
    Ok(m)
}

/// Write the frames of `f` (and `claims`) into `dir`.
fn write_frames_of(dir: &Path, f: &Frames, claims: Vec<crate::Claim>) -> Result<()> {
    crate::write_frames(dir, &f.rows, &f.epochs)?;
    crate::write_extras(
        dir,
        &crate::Extras {
            confusion: f.confusion.clone(),
            claims,
            ..crate::Extras::default()
        },
    )
}

/// Rename the frame files of `dir` (whose set did not read) to `NAME.parquet.unreadable` (or
/// `.unreadable.2`, ... beside earlier ones), so rebuilding the frames never overwrites them.
fn set_aside(dir: &Path) -> Result<()> {
    for name in ["trials.parquet", "epochs.parquet", "confusion.parquet"] {
        let file = dir.join(name);
        if !file.exists() {
            continue;
        }
        let mut n = 1;
        let target = loop {
            let suffix = if n == 1 {
                "unreadable".to_string()
            } else {
                format!("unreadable.{n}")
            };
            let t = dir.join(format!("{name}.{suffix}"));
            if !t.exists() {
                break t;
            }
            n += 1;
        };
        std::fs::rename(&file, &target).map_err(|source| ReportError::Io { file, source })?;
    }
    Ok(())
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
        let m = merge_and_write(out, &plan, &HashSet::new()).unwrap();
        let ids: Vec<&str> = m.planned.rows.iter().map(|r| r.trial_id.as_str()).collect();
        assert_eq!(ids, ["b", "a"], "plan order, the stale file kept aside");
        assert_eq!(m.missing, ["c"]);
        assert!(m.from_frames.is_empty());
        assert_eq!(m.planned.confusion.len(), 8);
        let c = &m.planned.confusion[3];
        assert_eq!((c.label, c.predicted, c.count), (1, 1, 6));
        let (rows, epochs) = crate::read_frames(out).unwrap();
        assert_eq!(rows, m.planned.rows);
        assert_eq!(epochs.len(), 2);
        let (aside, _) = crate::read_frames(&unplanned_dir(out)).unwrap();
        assert_eq!(aside.len(), 1);
        assert_eq!(aside[0].trial_id, "stale");
    }

    fn ids(rows: &[TrialRecord]) -> Vec<&str> {
        rows.iter().map(|r| r.trial_id.as_str()).collect()
    }

    fn plan(ids: &[&str]) -> PlanFile {
        PlanFile {
            name: "x".into(),
            config_digest: "d".into(),
            planned_on: "cpu".into(),
            ids: ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Issue 17: `rm OUT/records/*` then `kd report OUT` took a folder from 8 rows to 0.
    #[test]
    fn a_row_whose_record_is_deleted_or_damaged_is_kept_from_the_frames() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let p = plan(&["a", "b", "c"]);
        for (id, loss) in [("a", 0.5), ("b", 0.25), ("c", 0.125)] {
            write_trial(out, &file(id, loss)).unwrap();
        }
        let none = HashSet::new();
        let first = merge_and_write(out, &p, &none).unwrap();
        assert_eq!(ids(&first.planned.rows), ["a", "b", "c"]);

        // a's file deleted, b's damaged, c's rewritten with another loss.
        std::fs::remove_file(trial_path(out, "a")).unwrap();
        std::fs::write(trial_path(out, "b"), "").unwrap();
        write_trial(out, &file("c", 4.0)).unwrap();
        let m = merge_and_write(out, &p, &none).unwrap();
        assert_eq!(ids(&m.planned.rows), ["a", "b", "c"], "no row dropped");
        assert_eq!(m.from_frames, ["a", "b"]);
        assert!(m.missing.is_empty());
        assert_eq!(m.notes.len(), 1, "{:?}", m.notes);
        assert!(m.notes[0].contains("b.yaml"), "{:?}", m.notes);
        let loss: Vec<f64> = m.planned.epochs.iter().map(|e| e.train_loss).collect();
        assert_eq!(
            loss,
            [0.5, 0.25, 4.0],
            "frames where the file is gone, files win"
        );
        assert_eq!(m.planned.confusion.len(), 12, "confusion counts kept too");

        // Every file gone: the frames alone still give all three, again and again.
        std::fs::remove_dir_all(records_dir(out)).unwrap();
        std::fs::create_dir(records_dir(out)).unwrap();
        for _ in 0..2 {
            let m = merge_and_write(out, &p, &none).unwrap();
            assert_eq!(ids(&m.planned.rows), ["a", "b", "c"]);
        }
        let (rows, epochs) = crate::read_frames(out).unwrap();
        assert_eq!((rows.len(), epochs.len()), (3, 3));

        // Re-run on request (--fresh): the stale rows leave the frames until they run again.
        let stale: HashSet<String> = ["b".to_string()].into();
        let m = merge_and_write(out, &p, &stale).unwrap();
        assert_eq!(ids(&m.planned.rows), ["a", "c"]);
        assert_eq!(m.missing, ["b"]);
    }

    /// Issue 17: a rerun with a changed grid dropped earlier trials from the frames.
    #[test]
    fn trials_a_changed_plan_drops_are_kept_aside_and_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        for id in ["a", "b"] {
            write_trial(out, &file(id, 1.0)).unwrap();
        }
        let none = HashSet::new();
        merge_and_write(out, &plan(&["a", "b"]), &none).unwrap();
        let m = merge_and_write(out, &plan(&["a"]), &none).unwrap();
        assert_eq!(ids(&m.planned.rows), ["a"]);
        assert_eq!(ids(&m.unplanned.rows), ["b"]);
        assert_eq!(m.unplanned.epochs.len(), 1);
        // The aside rows survive their files.
        std::fs::remove_file(trial_path(out, "b")).unwrap();
        let m = merge_and_write(out, &plan(&["a"]), &none).unwrap();
        assert_eq!(ids(&m.unplanned.rows), ["b"]);
        let extras = crate::read_extras(out).unwrap();
        assert_eq!(ids(&extras.unplanned), ["b"]);
        // Planned again: back in the frames, none aside.
        let m = merge_and_write(out, &plan(&["a", "b"]), &none).unwrap();
        assert_eq!(ids(&m.planned.rows), ["a", "b"]);
        assert!(m.unplanned.rows.is_empty());
        assert!(crate::read_extras(out).unwrap().unplanned.is_empty());
    }

    #[test]
    fn unreadable_frames_are_moved_aside_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        write_trial(out, &file("a", 1.0)).unwrap();
        std::fs::write(out.join("trials.parquet"), b"not parquet").unwrap();
        let m = merge_and_write(out, &plan(&["a"]), &HashSet::new()).unwrap();
        assert_eq!(ids(&m.planned.rows), ["a"]);
        assert!(
            m.notes.iter().any(|n| n.contains("unreadable")),
            "{:?}",
            m.notes
        );
        assert_eq!(
            std::fs::read(out.join("trials.parquet.unreadable")).unwrap(),
            b"not parquet"
        );
        assert_eq!(crate::read_frames(out).unwrap().0.len(), 1);
        // A second damaged file goes beside the first.
        std::fs::write(out.join("trials.parquet"), b"again").unwrap();
        merge_and_write(out, &plan(&["a"]), &HashSet::new()).unwrap();
        assert_eq!(
            std::fs::read(out.join("trials.parquet.unreadable.2")).unwrap(),
            b"again"
        );
    }
}
