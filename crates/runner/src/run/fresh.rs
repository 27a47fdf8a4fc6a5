//! `--fresh`: train a process's trials again without losing the results they replace, even to a
//! kill. Before anything trains, a marker (`OUT/.fresh-whole.json`, or `.fresh-shard-I-of-N.json`
//! for a shard) names the trials to re-run and when; then their record files move to
//! `OUT/replaced/<time>/records/` and their rows are copied to frames there. OUT's frames keep
//! each old row until its trial's new record replaces it, so a kill leaves every trial with the
//! previous run's row or this one's. While a marker stands, a plain resume takes a marked trial
//! as finished only from a record written after the marker (never from the old rows), so it
//! continues the fresh run; the marker goes when each of its trials has such a record.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use kd_report::store;
use serde::{Deserialize, Serialize};

use crate::error::{io_err, RunError};
use crate::plan::Shard;

/// A fresh run in progress: the trials it re-runs and when it began.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Marker {
    /// RFC 3339, UTC: a record of a marked trial counts once it finished at or after this.
    started: String,
    /// Where the replaced results were set aside.
    replaced: PathBuf,
    ids: Vec<String>,
}

fn marker_path(out: &Path, shard: Option<Shard>) -> PathBuf {
    match shard {
        None => out.join(".fresh-whole.json"),
        Some(s) => out.join(format!(".fresh-shard-{}-of-{}.json", s.index, s.count)),
    }
}

/// Every marker in OUT, with its file.
fn markers(out: &Path) -> Vec<(PathBuf, Marker)> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return vec![];
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(".fresh-") && name.ends_with(".json")
        })
        .filter_map(|p| {
            let m = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            Some((p, m))
        })
        .collect()
}

/// Begin a fresh run of `ids` in `out`: the marker first, then the earlier results set aside.
/// Returns the note to print.
pub(crate) fn begin(out: &Path, shard: Option<Shard>, ids: &[String]) -> Result<String, RunError> {
    let started = crate::env::now_rfc3339();
    let replaced = store::replaced_dir(out).join(started.replace(':', "-"));
    let marker = Marker {
        started,
        replaced: replaced.clone(),
        ids: ids.to_vec(),
    };
    let path = marker_path(out, shard);
    let json = serde_json::to_vec_pretty(&marker).expect("a marker serialises");
    kd_report::write_atomic(&path, &json)?;
    let set: HashSet<String> = ids.iter().cloned().collect();
    let n = store::set_aside(out, &set, &replaced)?;
    std::fs::create_dir_all(&replaced).map_err(io_err(&replaced))?;
    crate::run::models::set_aside(out, &set, &replaced)?;
    Ok(format!(
        "--fresh: {} trial(s) train again; the {n} earlier result(s) among them are kept in {} \
         (and in the frames until replaced)",
        ids.len(),
        replaced.display()
    ))
}

/// The trials that fresh runs in progress re-run, with when each run began: their earlier rows
/// do not count as finished, only records written since.
pub(crate) fn rerun(out: &Path) -> HashMap<String, String> {
    let mut ids = HashMap::new();
    for (_, m) in markers(out) {
        for id in m.ids {
            let e = ids.entry(id).or_insert_with(|| m.started.clone());
            if m.started > *e {
                *e = m.started.clone();
            }
        }
    }
    ids
}

/// Whether the record of `id`, finished at `finished_at`, belongs to the fresh run re-running
/// it (or no fresh run re-runs it).
pub(crate) fn counts(rerun: &HashMap<String, String>, id: &str, finished_at: &str) -> bool {
    rerun
        .get(id)
        .is_none_or(|started| finished_at >= started.as_str())
}

/// Remove each marker none of whose trials still has only an earlier row among the planned
/// `rows`; notes for the others. A marked trial with no row at all, or one the plan no longer
/// lists, leaves nothing to mistake for a result.
pub(crate) fn settle(out: &Path, rows: &[kd_report::TrialRecord]) -> Vec<String> {
    let finished_at: HashMap<&str, &str> = rows
        .iter()
        .map(|r| (r.trial_id.as_str(), r.finished_at.as_str()))
        .collect();
    let mut notes = vec![];
    for (path, m) in markers(out) {
        let left = m
            .ids
            .iter()
            .filter(|id| {
                finished_at
                    .get(id.as_str())
                    .is_some_and(|f| *f < m.started.as_str())
            })
            .count();
        if left == 0 {
            let _ = std::fs::remove_file(&path);
        } else {
            notes.push(format!(
                "the --fresh run begun {} has {left} trial(s) still to train; the same command \
                 or a plain `kd sweep` continues it (earlier results in {})",
                m.started,
                m.replaced.display()
            ));
        }
    }
    notes
}
