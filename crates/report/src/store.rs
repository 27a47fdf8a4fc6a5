//! The records of a sweep as files: one per finished trial under `OUT/records/`, and the plan's
//! trial ids in `OUT/plan.json`. Every sweep (one process, or many shards of one plan running at
//! once) writes a trial's file when the trial ends, through a temporary file and a rename, so a
//! file is whole or absent and no two writers ever share one. The frames (`trials.parquet`,
//! `epochs.parquet`, `confusion.parquet`) are assembled from these files in plan order by
//! [`merge`]; `kd report OUT` does that before it reports.
//!
//! Record files are YAML, which keeps the non-finite numbers of a diverged epoch (`.nan`). Each
//! opens with a comment line holding the SHA-256 of the YAML below it, checked on every read
//! with the record's own arithmetic ([`TrialRecord::contradiction`]): a record that fails either
//! is moved to `OUT/quarantine/` (never deleted) and its trial's row comes from the frames,
//! where that row agrees with itself, or the trial runs again. The digest guards against
//! accidents and edits by hand, not against someone who recomputes it; the frames
//! (`trials.parquet`) carry no digest and are trusted where no record file stands for a row.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::record_file::quarantine_dir;
use crate::record_file::{self, quarantine, read_record, RecordRead};
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

/// Write the file of one finished trial (replacing an earlier one of the same id): its digest
/// line, then its YAML, in one atomic write.
pub fn write_trial(out: &Path, file: &TrialFile) -> Result<()> {
    let dir = records_dir(out);
    std::fs::create_dir_all(&dir).map_err(|source| ReportError::Io {
        file: dir.clone(),
        source,
    })?;
    let text = serde_yaml::to_string(file).expect("a trial file serialises");
    let stamped = record_file::stamped(&text);
    crate::write_atomic(&trial_path(out, &file.record.trial_id), stamped.as_bytes())
}

/// Every usable trial file in OUT by id, and a note per file that could not be used: a file
/// that does not read, fails its digest or contradicts itself is moved to `OUT/quarantine/`,
/// so its trial's row comes from the frames (or the trial runs again). A file written before
/// records had digests is stamped with one.
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
        let (what, why) = match read_record(&path) {
            RecordRead::Good { file, stamped } => {
                if !stamped {
                    // Best effort: an unwritable folder keeps it as it was, still usable.
                    let _ = write_trial(out, &file);
                }
                files.insert(file.record.trial_id.clone(), *file);
                continue;
            }
            RecordRead::Unreadable(e) => ("unreadable", e),
            RecordRead::Tampered(e) => ("tampered or damaged", e),
        };
        let moved = match quarantine(out, &path) {
            Ok(to) => format!("moved to {}", to.display()),
            Err(e) => format!("could not be moved aside ({e})"),
        };
        notes.push(format!(
            "{}: {what} ({why}); {moved}; the frames' row of its trial is kept where they have \
             one that agrees with itself, else the trial runs again",
            path.display()
        ));
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

/// The folder `--fresh` sets the results it replaces aside in (`OUT/replaced/`, a folder per
/// run).
pub fn replaced_dir(out: &Path) -> PathBuf {
    out.join("replaced")
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
/// A row of a trial that `--fresh` re-runs stays until its new file replaces it.
pub fn merge(out: &Path, plan: &PlanFile) -> Merged {
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
                    framed.entry(id).or_insert(f);
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
            (None, Some(f)) if agrees(&f, &mut m.notes) => {
                m.from_frames.push(id.clone());
                m.planned.push(f);
            }
            (None, _) => m.missing.push(id.clone()),
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

/// Set the finished results of trials `ids` aside in `dir` (`OUT/replaced/<time>/` for
/// `--fresh`): their record files are moved to `dir/records/` and their rows (a file's where it
/// reads, else the frames') written to frames of their own in `dir`; OUT's frames keep their
/// rows until new results replace them. Returns how many trials had a result.
pub fn set_aside(out: &Path, ids: &std::collections::HashSet<String>, dir: &Path) -> Result<usize> {
    let mut kept: HashMap<String, TrialFile> = read_frame_files(out)
        .unwrap_or_default()
        .into_iter()
        .filter(|(id, _)| ids.contains(id))
        .collect();
    let records = dir.join("records");
    let io = |file: &Path| {
        let file = file.to_path_buf();
        move |source| ReportError::Io { file, source }
    };
    for id in ids {
        let path = trial_path(out, id);
        if !path.exists() {
            continue;
        }
        if let RecordRead::Good { file, .. } = read_record(&path) {
            kept.insert(id.clone(), *file);
        }
        std::fs::create_dir_all(&records).map_err(io(&records))?;
        std::fs::rename(&path, records.join(format!("{id}.yaml"))).map_err(io(&path))?;
    }
    let n = kept.len();
    if n > 0 {
        let mut frames = Frames::default();
        let mut sorted: Vec<TrialFile> = kept.into_values().collect();
        sorted.sort_by(|a, b| a.record.trial_id.cmp(&b.record.trial_id));
        sorted.into_iter().for_each(|f| frames.push(f));
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        write_frames_of(dir, &frames, vec![])?;
    }
    Ok(n)
}

/// Whether a row of the frames agrees with itself ([`TrialRecord::contradiction`]); a note
/// says why not (then it is not used: its trial runs again).
pub fn agrees(f: &TrialFile, notes: &mut Vec<String>) -> bool {
    match f.record.contradiction() {
        None => true,
        Some(why) => {
            notes.push(format!(
                "the frames' row of {} contradicts itself ({why}): not used, the trial runs again",
                f.record.trial_id
            ));
            false
        }
    }
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
    for dir in &m.unreadable {
        set_aside_unreadable(dir)?;
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
fn set_aside_unreadable(dir: &Path) -> Result<()> {
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
        let m = merge_and_write(out, &plan).unwrap();
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
        let first = merge_and_write(out, &p).unwrap();
        assert_eq!(ids(&first.planned.rows), ["a", "b", "c"]);

        // a's file deleted, b's damaged, c's rewritten with another loss.
        std::fs::remove_file(trial_path(out, "a")).unwrap();
        std::fs::write(trial_path(out, "b"), "").unwrap();
        write_trial(out, &file("c", 4.0)).unwrap();
        let m = merge_and_write(out, &p).unwrap();
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
            let m = merge_and_write(out, &p).unwrap();
            assert_eq!(ids(&m.planned.rows), ["a", "b", "c"]);
        }
        let (rows, epochs) = crate::read_frames(out).unwrap();
        assert_eq!((rows.len(), epochs.len()), (3, 3));
    }

    /// Issue 17: a rerun with a changed grid dropped earlier trials from the frames.
    #[test]
    fn trials_a_changed_plan_drops_are_kept_aside_and_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        for id in ["a", "b"] {
            write_trial(out, &file(id, 1.0)).unwrap();
        }
        merge_and_write(out, &plan(&["a", "b"])).unwrap();
        let m = merge_and_write(out, &plan(&["a"])).unwrap();
        assert_eq!(ids(&m.planned.rows), ["a"]);
        assert_eq!(ids(&m.unplanned.rows), ["b"]);
        assert_eq!(m.unplanned.epochs.len(), 1);
        // The aside rows survive their files.
        std::fs::remove_file(trial_path(out, "b")).unwrap();
        let m = merge_and_write(out, &plan(&["a"])).unwrap();
        assert_eq!(ids(&m.unplanned.rows), ["b"]);
        let extras = crate::read_extras(out).unwrap();
        assert_eq!(ids(&extras.unplanned), ["b"]);
        // Planned again: back in the frames, none aside.
        let m = merge_and_write(out, &plan(&["a", "b"])).unwrap();
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
        let m = merge_and_write(out, &plan(&["a"])).unwrap();
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
        merge_and_write(out, &plan(&["a"])).unwrap();
        assert_eq!(
            std::fs::read(out.join("trials.parquet.unreadable.2")).unwrap(),
            b"again"
        );
    }

    fn plan_of(ids: &[&str]) -> PlanFile {
        PlanFile {
            name: "t".into(),
            config_digest: "d".into(),
            planned_on: "cpu".into(),
            ids: ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Issue 32: `sed -i 's/test_acc: .*/test_acc: 0.9912/'` on a record made `kd report`
    /// report 99.12% for a trial with 2492 test errors and overwrote the right value in
    /// trials.parquet. The record fails its digest now: moved to quarantine/ (not deleted), the
    /// frames' row stands for its trial.
    #[test]
    fn a_hand_edited_record_is_quarantined_and_the_frames_row_kept() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        write_trial(out, &file("a", 0.5)).unwrap();
        let text = std::fs::read_to_string(trial_path(out, "a")).unwrap();
        assert!(text.starts_with("# sha256: "), "{text}");
        let p = plan_of(&["a"]);
        merge_and_write(out, &p).unwrap();
        let edited = text.replacen("test_acc: 0.4108", "test_acc: 0.9912", 1);
        assert_ne!(edited, text);
        std::fs::write(trial_path(out, "a"), &edited).unwrap();
        let m = merge_and_write(out, &p).unwrap();
        assert_eq!(
            m.planned.rows[0].test_acc,
            Some(0.4108),
            "the frames' value"
        );
        assert_eq!(m.from_frames, ["a"]);
        assert!(
            m.notes[0].contains("tampered or damaged (its content does not match its digest"),
            "{:?}",
            m.notes
        );
        assert!(!trial_path(out, "a").exists());
        let kept = quarantine_dir(out).join("a.yaml");
        assert_eq!(
            std::fs::read_to_string(&kept).unwrap(),
            edited,
            "moved, not deleted"
        );
        assert_eq!(crate::read_frames(out).unwrap().0[0].test_acc, Some(0.4108));

        // The digest line removed too (a record as older kd-sweeps wrote it): the numbers are
        // checked against each other, and this one contradicts itself.
        let body = edited.split_once('\n').unwrap().1;
        std::fs::write(trial_path(out, "a"), body).unwrap();
        let (read, notes) = read_trials(out);
        assert!(read.is_empty());
        assert!(
            notes[0].contains("its numbers contradict each other: test_acc 0.9912 (9912 of 10000 test images right) but test_errors 5892"),
            "{notes:?}"
        );
        assert!(
            quarantine_dir(out).join("a.yaml.2").exists(),
            "beside the first"
        );
    }

    /// A record written before records had digests is used and stamped with one.
    #[test]
    fn an_unstamped_record_that_agrees_with_itself_is_stamped() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let f = file("a", 0.5);
        std::fs::create_dir_all(records_dir(out)).unwrap();
        std::fs::write(trial_path(out, "a"), serde_yaml::to_string(&f).unwrap()).unwrap();
        let (read, notes) = read_trials(out);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(read["a"], f);
        let text = std::fs::read_to_string(trial_path(out, "a")).unwrap();
        assert!(text.starts_with("# sha256: "), "stamped: {text}");
        assert_eq!(read_trials(out).0["a"], f);
    }

    /// A frames row that contradicts itself (a hand-edited trials.parquet is otherwise trusted)
    /// does not stand for its trial: it is missing, so it runs again.
    #[test]
    fn a_frames_row_that_contradicts_itself_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let mut f = file("a", 0.5);
        f.record.val_acc = Some(0.4123);
        let mut rows = Frames::default();
        rows.push(f.clone());
        write_frames_of(out, &rows, vec![]).unwrap();
        let m = merge(out, &plan_of(&["a"]));
        assert_eq!(m.missing, ["a"]);
        assert!(
            m.notes[0].contains("val_acc 0.4123 is not a share of its 500 validation images"),
            "{:?}",
            m.notes
        );
        f.record.val_acc = Some(0.412);
        let mut rows = Frames::default();
        rows.push(f);
        write_frames_of(out, &rows, vec![]).unwrap();
        assert!(merge(out, &plan_of(&["a"])).missing.is_empty());
    }
}
