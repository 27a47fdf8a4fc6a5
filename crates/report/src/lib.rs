//! report: the records of a sweep, their Parquet frames, the analysis and the Markdown report, as
//! pure functions of records and Parquet files.
//!
//! Owns the schema of `trials` and `epochs` ([`record`]: one definition per record, from which
//! the columns, the frame and the decoder are derived), the analysis under the report
//! ([`analysis`]: cells keyed by every setting except the seed), the tables ([`markdown`]) and
//! the figures ([`figures`]), and the per-trial record files the frames are assembled from
//! ([`store`]). It must not depend on libtorch or train anything: `kd report OUT` regenerates
//! every report from the Parquet files alone.

pub mod analysis;
pub mod claims;
pub mod deployment;
pub mod figures;
pub mod markdown;
pub mod missing;
pub mod record;
mod record_file;
pub mod stats;
pub mod store;

use std::path::{Path, PathBuf};

use polars::prelude::*;

pub use claims::{Claim, Verdict};
pub use markdown::{kd_vs_baseline, render_report, trials_table};
pub use record::{ConfusionRecord, EpochRecord, Exec, Kind, Status, TrialRecord, Value};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Polars {
        file: PathBuf,
        #[source]
        source: PolarsError,
    },
    #[error("{file}: cannot draw the figure: {source}")]
    Plot {
        file: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{file}: column `{column}` {problem}")]
    Column {
        file: PathBuf,
        column: String,
        problem: String,
    },
}

pub type Result<T> = std::result::Result<T, ReportError>;

/// A temporary name beside `path` that no other process or thread uses: `path.<pid>.<n>.tmp`.
pub fn temp_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    path.with_file_name(name)
}

/// Write `bytes` to `path` through a temporary file of its own in the same folder and a rename,
/// so a reader (or a crash, or a concurrent writer) never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e| ReportError::Io {
        file: path.to_path_buf(),
        source: e,
    };
    let tmp = temp_path(path);
    // On any failure (a full disk mid-write included) the temporary file goes too.
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
}

/// Write `df` as Parquet, atomically.
pub fn write_parquet(df: &DataFrame, path: &Path) -> Result<()> {
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf)
        .finish(&mut df.clone())
        .map_err(|e| ReportError::Polars {
            file: path.to_path_buf(),
            source: e,
        })?;
    write_atomic(path, &buf)
}

/// Write `df` as CSV with a header, atomically.
pub fn write_csv(df: &DataFrame, path: &Path) -> Result<()> {
    let mut buf = Vec::new();
    CsvWriter::new(&mut buf)
        .include_header(true)
        .finish(&mut df.clone())
        .map_err(|e| ReportError::Polars {
            file: path.to_path_buf(),
            source: e,
        })?;
    write_atomic(path, &buf)
}

pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let file = std::fs::File::open(path).map_err(|e| ReportError::Io {
        file: path.to_path_buf(),
        source: e,
    })?;
    ParquetReader::new(file)
        .finish()
        .map_err(|e| ReportError::Polars {
            file: path.to_path_buf(),
            source: e,
        })
}

/// Write `trials.parquet`, `trials.csv` and `epochs.parquet` into `out`.
pub fn write_frames(out: &Path, trials: &[TrialRecord], epochs: &[EpochRecord]) -> Result<()> {
    let t = record::trials_frame(trials);
    write_parquet(&t, &out.join("trials.parquet"))?;
    write_csv(&t, &out.join("trials.csv"))?;
    write_parquet(&record::epochs_frame(epochs), &out.join("epochs.parquet"))
}

/// Read `OUT/trials.parquet` and `OUT/epochs.parquet` back into records.
pub fn read_frames(out: &Path) -> Result<(Vec<TrialRecord>, Vec<EpochRecord>)> {
    let file = out.join("trials.parquet");
    let trials = record::trial_records(&read_parquet(&file)?, &file)?;
    let efile = out.join("epochs.parquet");
    let epochs = record::epoch_records(&read_parquet(&efile)?, &efile)?;
    Ok((trials, epochs))
}

/// What a sweep writes besides trials and epochs: the students' confusion matrices
/// (`confusion.parquet`) and the claims of its config (`claims.parquet`).
#[derive(Debug, Clone, Default)]
pub struct Extras {
    pub confusion: Vec<ConfusionRecord>,
    pub claims: Vec<Claim>,
    /// Rows of trials OUT holds that its plan no longer lists (`OUT/unplanned/trials.parquet`):
    /// not in the report, named by it.
    pub unplanned: Vec<TrialRecord>,
    /// What [`missing::missing_text`] says of planned trials without a result, when some are:
    /// a section right after the report's title.
    pub missing: Option<String>,
    /// Each model's size and speed (`OUT/deployment.json`, [`deployment`]).
    pub deployment: Vec<deployment::Footprint>,
    /// What reading them found wrong (an optional file that could not be read).
    pub notes: Vec<String>,
}

/// Write `OUT/confusion.parquet` and `OUT/claims.parquet` (each claim as its JSON).
pub fn write_extras(out: &Path, extras: &Extras) -> Result<()> {
    write_parquet(
        &record::confusion_frame(&extras.confusion),
        &out.join("confusion.parquet"),
    )?;
    write_claims(out, &extras.claims)
}

/// Write `OUT/claims.parquet` (each claim as its JSON).
pub fn write_claims(out: &Path, claims: &[Claim]) -> Result<()> {
    let extras = Extras {
        claims: claims.to_vec(),
        ..Extras::default()
    };
    let specs: Vec<String> = extras
        .claims
        .iter()
        .map(|c| serde_json::to_string(c).expect("a claim serialises"))
        .collect();
    let names: Vec<&str> = extras.claims.iter().map(Claim::name).collect();
    let df = DataFrame::new(
        specs.len(),
        vec![
            Column::new("claim".into(), names),
            Column::new("spec".into(), specs),
        ],
    )
    .expect("columns have equal length");
    write_parquet(&df, &out.join("claims.parquet"))
}

/// Read `OUT/confusion.parquet`, `OUT/claims.parquet` and the rows of `OUT/unplanned/`; a
/// folder written before they existed has none of them (no confusion matrices, no claims).
pub fn read_extras(out: &Path) -> Result<Extras> {
    let mut extras = Extras::default();
    // An optional section: an unreadable file leaves it out, with a note.
    match deployment::read(out) {
        Ok(d) => extras.deployment = d,
        Err(e) => extras
            .notes
            .push(format!("{e}; the report leaves out What the student buys")),
    }
    let file = store::unplanned_dir(out).join("trials.parquet");
    if file.exists() {
        extras.unplanned = record::trial_records(&read_parquet(&file)?, &file)?;
    }
    let file = out.join("confusion.parquet");
    if file.exists() {
        extras.confusion = ConfusionRecord::decode(&read_parquet(&file)?, &file)?;
    }
    let file = out.join("claims.parquet");
    if file.exists() {
        let df = read_parquet(&file)?;
        for spec in record::read_column::<String>(&df, "spec", &file)? {
            let claim = serde_json::from_str(&spec).map_err(|e| ReportError::Column {
                file: file.clone(),
                column: "spec".into(),
                problem: format!("holds a claim this kd-sweep cannot read ({e}): {spec}"),
            })?;
            extras.claims.push(claim);
        }
    }
    Ok(extras)
}

/// Write `OUT/report.md` and `OUT/figures/*` from records; returns the report's path and the
/// claims' verdicts.
pub fn write_report(
    out: &Path,
    name: &str,
    all_rows: &[TrialRecord],
    epochs: &[EpochRecord],
    extras: &Extras,
) -> Result<(PathBuf, Vec<Verdict>)> {
    // Trials pruned by successive halving have their own section and no part in the rest.
    let rows: Vec<TrialRecord> = all_rows
        .iter()
        .filter(|r| r.status != Status::Pruned)
        .cloned()
        .collect();
    let rows = rows.as_slice();
    let a = analysis::Analysis::new(rows);
    // The report is written even when a figure cannot be (a full disk): then without figures,
    // and the figure's error is returned after it.
    let drawn = figures::render_figures(&out.join("figures"), &a, epochs).and_then(|mut f| {
        f.extend(figures::confusion_figures(
            &out.join("figures"),
            rows,
            &extras.confusion,
        )?);
        if let Some(fig) = deployment::figure(rows, &extras.deployment) {
            f.extend(figures::draw_figure(&out.join("figures"), &fig)?);
        }
        Ok(f)
    });
    let (figures, figure_error) = match drawn {
        Ok(f) => (f, None),
        Err(e) => (vec![], Some(e)),
    };
    let pruned: Vec<TrialRecord> = all_rows
        .iter()
        .filter(|r| r.status == Status::Pruned)
        .cloned()
        .collect();
    let verdicts = claims::check_with_pruned(&extras.claims, rows, &pruned, &extras.confusion);
    let path = out.join("report.md");
    let mut text = render_report(name, rows, epochs, &figures, out);
    if let Some(m) = &extras.missing {
        missing::insert_section(&mut text, m);
    }
    let insert = text.find("\n## Distillation against").unwrap_or(text.len());
    let mut head = markdown::unplanned_section(&extras.unplanned);
    head.push_str(&markdown::halving_section(all_rows, epochs));
    head.push_str(&claims::claims_section(&verdicts));
    head.push_str(&markdown::fidelity_section(rows, &extras.confusion));
    head.push_str(&markdown::teachers_section(rows));
    text.insert_str(insert, &head);
    let buys = deployment::section(rows, &extras.deployment);
    let at = ["\n## Figures\n", "\n## Trials\n"]
        .iter()
        .find_map(|h| text.find(h))
        .map_or(text.len(), |i| i + 1);
    text.insert_str(at, &buys);
    write_atomic(&path, text.as_bytes())?;
    if let Some(e) = figure_error {
        return Err(e);
    }
    Ok((path, verdicts))
}

/// Regenerate `OUT/report.md` and its figures from the files of `OUT`: its Parquet frames and,
/// where OUT has trial files (`records/`, `plan.json`), those files too, merged into the frames
/// first (that is how the shards of one sweep become one report; a row whose file is gone is
/// kept). Returns the report's path.
pub fn regenerate(out: &Path, name: &str) -> Result<Regenerated> {
    let plan = store::read_plan(out)?;
    let planned = plan.as_ref().map_or(0, |p| p.ids.len());
    let merged = match &plan {
        Some(plan) if store::records_dir(out).is_dir() => Some(store::merge_and_write(out, plan)?),
        _ => None,
    };
    let (rows, epochs) = read_frames(out)?;
    let mut extras = read_extras(out)?;
    let (missing, from_frames, mut notes) = match merged {
        Some(m) => (m.missing, m.from_frames, m.notes),
        // No trial files (a shard that trained nothing): the planned trials the frames lack.
        None => (missing::unreported(plan.as_ref(), &rows), vec![], vec![]),
    };
    extras.missing =
        (!missing.is_empty()).then(|| missing::missing_text(out, missing.len(), planned));
    let (report, verdicts) = write_report(out, name, &rows, &epochs, &extras)?;
    notes.append(&mut extras.notes);
    let unplanned = extras.unplanned.len();
    Ok(Regenerated {
        report,
        verdicts,
        missing,
        planned,
        from_frames,
        unplanned,
        notes,
    })
}

/// What [`regenerate`] did.
#[derive(Debug)]
pub struct Regenerated {
    pub report: PathBuf,
    pub verdicts: Vec<Verdict>,
    /// Planned trials with no record file (when OUT has `records/`): unfinished shards.
    pub missing: Vec<String>,
    /// The trials of OUT's plan (the teacher included); 0 without `plan.json`.
    pub planned: usize,
    /// Planned trials whose row was kept from the frames, their record file missing or unreadable.
    pub from_frames: Vec<String>,
    /// Trials in `OUT/unplanned/` (an earlier plan's), not in the report.
    pub unplanned: usize,
    /// Record files that could not be read.
    pub notes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_belong_to_one_process_and_one_call() {
        let p = Path::new("/x/teachers/abc.ot");
        let (a, b) = (temp_path(p), temp_path(p));
        assert_ne!(a, b);
        let pid = std::process::id().to_string();
        for t in [&a, &b] {
            let name = t.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                name.starts_with("abc.ot.") && name.ends_with(".tmp"),
                "{name}"
            );
            assert!(name.contains(&format!(".{pid}.")), "{name}");
            assert_eq!(t.parent(), p.parent());
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f.txt");
        write_atomic(&f, b"one").unwrap();
        write_atomic(&f, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "two");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }
}
