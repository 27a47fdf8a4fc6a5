//! report: the metrics frames and the Markdown report, as pure functions of plain rows and Parquet.
//!
//! Owns the column layout of `trials` and `epochs` (Polars frames, written as Parquet and CSV,
//! atomically) and the rendering of the summary table and `report.md`. It must not depend on
//! libtorch or train anything: `kd report OUT` regenerates every report from the Parquet files
//! alone.

pub mod figures;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use polars::prelude::*;

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
    #[error("{file}: column `{column}` {problem}")]
    Column {
        file: PathBuf,
        column: String,
        problem: String,
    },
}

pub type Result<T> = std::result::Result<T, ReportError>;

/// One finished (or diverged, or failed) trial.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRow {
    pub trial_id: String,
    /// `teacher`, `baseline` or `kd`.
    pub kind: String,
    pub seed: u64,
    pub arch: String,
    /// Layer widths, e.g. `800-800` or `c32-c64-f256`.
    pub hidden: String,
    pub params: u64,
    pub temperature: Option<f64>,
    pub alpha: Option<f64>,
    pub beta: Option<f64>,
    pub soft_loss: Option<String>,
    pub epochs: u32,
    /// `ok`, `diverged` or `failed`.
    pub status: String,
    pub train_acc: Option<f64>,
    pub val_acc: Option<f64>,
    pub test_acc: Option<f64>,
    pub test_errors: Option<u64>,
    pub best_epoch: Option<u32>,
    pub wall_s: f64,
    /// RFC 3339, UTC.
    pub finished_at: String,
    /// Grid values of the trial's cell, `(key, value)`; each key becomes a column of its own
    /// (unless it is already one, like `temperature`).
    pub swept: Vec<(String, String)>,
    /// For a KD trial, the id of the baseline it is paired with (same student, seed, init and
    /// data order).
    pub baseline_id: Option<String>,
    /// Images the trial trained on (a student's transfer set may be a share of the teacher's).
    pub train_images: Option<u64>,
    /// Size of the validation split its cells are chosen on.
    pub val_images: Option<u64>,
    pub test_images: Option<u64>,
}

/// One epoch of one trial.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRow {
    pub trial_id: String,
    pub epoch: u32,
    pub train_loss: f64,
    /// Unscaled soft term (`None` when the trial has no teacher).
    pub soft_loss: Option<f64>,
    pub hard_loss: f64,
    /// Running accuracy on the training batches, in training mode (dropout on).
    pub train_acc: f64,
    pub val_acc: f64,
    pub test_acc: f64,
    pub lr: f64,
    pub seconds: f64,
}

pub const TRIAL_COLUMNS: [&str; 24] = [
    "trial_id",
    "kind",
    "seed",
    "arch",
    "hidden",
    "params",
    "temperature",
    "alpha",
    "beta",
    "soft_loss",
    "epochs",
    "status",
    "train_acc",
    "val_acc",
    "test_acc",
    "test_errors",
    "best_epoch",
    "wall_s",
    "finished_at",
    "test_error",
    "baseline_id",
    "train_images",
    "val_images",
    "test_images",
];

pub const EPOCH_COLUMNS: [&str; 10] = [
    "trial_id",
    "epoch",
    "train_loss",
    "soft_loss",
    "hard_loss",
    "train_acc",
    "val_acc",
    "test_acc",
    "lr",
    "seconds",
];

fn col<T, F: Fn(&TrialRow) -> T>(rows: &[TrialRow], f: F) -> Vec<T> {
    rows.iter().map(f).collect()
}

/// The `trials` frame; `test_error` (= 1 - test_acc) is derived for convenience.
pub fn trials_frame(rows: &[TrialRow]) -> DataFrame {
    let mut df = df!(
        "trial_id" => col(rows, |r| r.trial_id.clone()),
        "kind" => col(rows, |r| r.kind.clone()),
        "seed" => col(rows, |r| r.seed),
        "arch" => col(rows, |r| r.arch.clone()),
        "hidden" => col(rows, |r| r.hidden.clone()),
        "params" => col(rows, |r| r.params),
        "temperature" => col(rows, |r| r.temperature),
        "alpha" => col(rows, |r| r.alpha),
        "beta" => col(rows, |r| r.beta),
        "soft_loss" => col(rows, |r| r.soft_loss.clone()),
        "epochs" => col(rows, |r| r.epochs),
        "status" => col(rows, |r| r.status.clone()),
        "train_acc" => col(rows, |r| r.train_acc),
        "val_acc" => col(rows, |r| r.val_acc),
        "test_acc" => col(rows, |r| r.test_acc),
        "test_errors" => col(rows, |r| r.test_errors),
        "best_epoch" => col(rows, |r| r.best_epoch),
        "wall_s" => col(rows, |r| r.wall_s),
        "finished_at" => col(rows, |r| r.finished_at.clone()),
        "test_error" => col(rows, |r| r.test_acc.map(|a| 1.0 - a)),
        "baseline_id" => col(rows, |r| r.baseline_id.clone()),
        "train_images" => col(rows, |r| r.train_images),
        "val_images" => col(rows, |r| r.val_images),
        "test_images" => col(rows, |r| r.test_images),
    )
    .expect("columns have equal length");
    for key in swept_keys(rows) {
        let values: Vec<Option<String>> = rows
            .iter()
            .map(|r| {
                r.swept
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.clone())
            })
            .collect();
        df.with_column(Column::new(key.as_str().into(), values))
            .expect("column has the frame's length");
    }
    df
}

/// Swept keys that need a column of their own, in first-seen order.
pub fn swept_keys(rows: &[TrialRow]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for (k, _) in rows.iter().flat_map(|r| &r.swept) {
        if !TRIAL_COLUMNS.contains(&k.as_str()) && !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    keys
}

pub fn epochs_frame(rows: &[EpochRow]) -> DataFrame {
    let c = |f: fn(&EpochRow) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    df!(
        "trial_id" => rows.iter().map(|r| r.trial_id.clone()).collect::<Vec<_>>(),
        "epoch" => rows.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        "train_loss" => c(|r| r.train_loss),
        "soft_loss" => rows.iter().map(|r| r.soft_loss).collect::<Vec<_>>(),
        "hard_loss" => c(|r| r.hard_loss),
        "train_acc" => c(|r| r.train_acc),
        "val_acc" => c(|r| r.val_acc),
        "test_acc" => c(|r| r.test_acc),
        "lr" => c(|r| r.lr),
        "seconds" => c(|r| r.seconds),
    )
    .expect("columns have equal length")
}

/// Write `bytes` to `path` through a temporary file in the same folder and a rename, so a reader
/// (or a crash) never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e| ReportError::Io {
        file: path.to_path_buf(),
        source: e,
    };
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
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

/// Read the `epochs` frame back into rows (the inverse of [`epochs_frame`]).
pub fn epoch_rows_of(df: &DataFrame) -> std::result::Result<Vec<EpochRow>, PolarsError> {
    let f = |name: &str| -> std::result::Result<Vec<Option<f64>>, PolarsError> {
        let c = df.column(name)?.cast(&DataType::Float64)?;
        let ca = c.f64()?;
        Ok((0..ca.len()).map(|i| ca.get(i)).collect())
    };
    let ids = df.column("trial_id")?.str()?.clone();
    let (epoch, loss, soft, hard, tr, va, te, lr, sec) = (
        f("epoch")?,
        f("train_loss")?,
        f("soft_loss")?,
        f("hard_loss")?,
        f("train_acc")?,
        f("val_acc")?,
        f("test_acc")?,
        f("lr")?,
        f("seconds")?,
    );
    let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
    Ok((0..df.height())
        .map(|i| EpochRow {
            trial_id: ids.get(i).unwrap_or_default().to_string(),
            epoch: nan(epoch[i]) as u32,
            train_loss: nan(loss[i]),
            soft_loss: soft[i],
            hard_loss: nan(hard[i]),
            train_acc: nan(tr[i]),
            val_acc: nan(va[i]),
            test_acc: nan(te[i]),
            lr: nan(lr[i]),
            seconds: nan(sec[i]),
        })
        .collect())
}

/// Write `trials.parquet`, `trials.csv` and `epochs.parquet` into `out`.
pub fn write_frames(out: &Path, trials: &[TrialRow], epochs: &[EpochRow]) -> Result<()> {
    let t = trials_frame(trials);
    write_parquet(&t, &out.join("trials.parquet"))?;
    write_csv(&t, &out.join("trials.csv"))?;
    write_parquet(&epochs_frame(epochs), &out.join("epochs.parquet"))
}

/// Read the `trials` frame back into rows (the inverse of [`trials_frame`]).
pub fn trial_rows(df: &DataFrame, file: &Path) -> Result<Vec<TrialRow>> {
    let get = |name: &str| {
        df.column(name).map_err(|_| ReportError::Column {
            file: file.to_path_buf(),
            column: name.to_string(),
            problem: "is missing".into(),
        })
    };
    let bad = |name: &str, e: PolarsError| ReportError::Column {
        file: file.to_path_buf(),
        column: name.to_string(),
        problem: format!("has the wrong type: {e}"),
    };
    let s = |name: &str| -> Result<Vec<Option<String>>> {
        let ca = get(name)?.str().map_err(|e| bad(name, e))?.clone();
        Ok((0..ca.len())
            .map(|i| ca.get(i).map(str::to_string))
            .collect())
    };
    let f = |name: &str| -> Result<Vec<Option<f64>>> {
        let c = get(name)?
            .cast(&DataType::Float64)
            .map_err(|e| bad(name, e))?;
        let ca = c.f64().map_err(|e| bad(name, e))?;
        Ok((0..ca.len()).map(|i| ca.get(i)).collect())
    };
    let u = |name: &str| -> Result<Vec<Option<u64>>> {
        let c = get(name)?
            .cast(&DataType::UInt64)
            .map_err(|e| bad(name, e))?;
        let ca = c.u64().map_err(|e| bad(name, e))?;
        Ok((0..ca.len()).map(|i| ca.get(i)).collect())
    };
    // Columns added after the first release: absent in older files, so optional.
    let optional_u = |name: &str| -> Result<Vec<Option<u64>>> {
        if df.column(name).is_ok() {
            u(name)
        } else {
            Ok(vec![None; df.height()])
        }
    };
    let (train_n, val_n, test_n) = (
        optional_u("train_images")?,
        optional_u("val_images")?,
        optional_u("test_images")?,
    );
    let base_ids = s("baseline_id")?;
    let (id, kind, arch, hidden, soft, status, fin) = (
        s("trial_id")?,
        s("kind")?,
        s("arch")?,
        s("hidden")?,
        s("soft_loss")?,
        s("status")?,
        s("finished_at")?,
    );
    let (seed, params, epochs, errors, best) = (
        u("seed")?,
        u("params")?,
        u("epochs")?,
        u("test_errors")?,
        u("best_epoch")?,
    );
    let (t, a, b, tr, va, te, wall) = (
        f("temperature")?,
        f("alpha")?,
        f("beta")?,
        f("train_acc")?,
        f("val_acc")?,
        f("test_acc")?,
        f("wall_s")?,
    );
    let extra: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|c| c.to_string())
        .filter(|c| !TRIAL_COLUMNS.contains(&c.as_str()))
        .collect();
    let extra_values = extra.iter().map(|c| s(c)).collect::<Result<Vec<_>>>()?;
    Ok((0..df.height())
        .map(|i| TrialRow {
            baseline_id: base_ids[i].clone(),
            swept: extra
                .iter()
                .zip(&extra_values)
                .filter_map(|(k, vals)| vals[i].clone().map(|v| (k.clone(), v)))
                .collect(),
            trial_id: id[i].clone().unwrap_or_default(),
            kind: kind[i].clone().unwrap_or_default(),
            seed: seed[i].unwrap_or(0),
            arch: arch[i].clone().unwrap_or_default(),
            hidden: hidden[i].clone().unwrap_or_default(),
            params: params[i].unwrap_or(0),
            temperature: t[i],
            alpha: a[i],
            beta: b[i],
            soft_loss: soft[i].clone(),
            epochs: epochs[i].unwrap_or(0) as u32,
            status: status[i].clone().unwrap_or_default(),
            train_acc: tr[i],
            val_acc: va[i],
            test_acc: te[i],
            test_errors: errors[i],
            best_epoch: best[i].map(|b| b as u32),
            wall_s: wall[i].unwrap_or(f64::NAN),
            finished_at: fin[i].clone().unwrap_or_default(),
            train_images: train_n[i],
            val_images: val_n[i],
            test_images: test_n[i],
        })
        .collect())
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}", 100.0 * v))
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v}"))
}

/// Mean and sample standard deviation (0 for a single value).
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The per-trial table, as Markdown (also what the CLI prints).
pub fn trials_table(rows: &[TrialRow]) -> String {
    let mut s = String::from(
        "| trial | kind | seed | model | params | T | alpha | beta | soft | status | train % | val % | test % | test errors | wall s |\n\
         |---|---|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
            r.trial_id,
            r.kind,
            r.seed,
            r.arch,
            r.hidden,
            r.params,
            num(r.temperature),
            num(r.alpha),
            num(r.beta),
            r.soft_loss.as_deref().unwrap_or("-"),
            r.status,
            pct(r.train_acc),
            pct(r.val_acc),
            pct(r.test_acc),
            r.test_errors.map_or("-".into(), |e| e.to_string()),
            r.wall_s
        );
    }
    s
}

/// Two-sided 95% Student-t critical value for `df` degrees of freedom.
fn t95(df: usize) -> f64 {
    const T: [f64; 10] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    ];
    match df {
        0 => f64::NAN,
        d if d <= 10 => T[d - 1],
        d if d <= 30 => 2.042 + (10.0 / d as f64 - 1.0 / 3.0) * 0.279,
        _ => 1.96,
    }
}

/// The label of a KD trial's cell: student, KD settings and any other swept value.
pub(crate) fn cell_label(r: &TrialRow) -> String {
    let mut parts = vec![
        format!("{} {}", r.arch, r.hidden),
        format!("T={}", num(r.temperature)),
        format!("alpha={}", num(r.alpha)),
        format!("beta={}", num(r.beta)),
        r.soft_loss.clone().unwrap_or_default(),
    ];
    for (k, v) in &r.swept {
        if !TRIAL_COLUMNS.contains(&k.as_str()) {
            parts.push(format!("{k}={v}"));
        }
    }
    parts.join(", ")
}

/// KD against its paired hard-target baseline (same student, seed, init and data order), one row
/// per cell: means and sample standard deviations over seeds, and a 95% t-interval of the gain.
pub fn kd_vs_baseline(rows: &[TrialRow]) -> String {
    let ok = |r: &&TrialRow| r.status == "ok" && r.test_acc.is_some();
    let mut cells: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for kd in rows.iter().filter(|r| r.kind == "kd").filter(ok) {
        let Some(base) = rows
            .iter()
            .filter(ok)
            .find(|b| Some(&b.trial_id) == kd.baseline_id.as_ref())
        else {
            continue;
        };
        let pair = (100.0 * kd.test_acc.unwrap(), 100.0 * base.test_acc.unwrap());
        let label = cell_label(kd);
        match cells.iter_mut().find(|(l, _)| *l == label) {
            Some((_, v)) => v.push(pair),
            None => cells.push((label, vec![pair])),
        }
    }
    if cells.is_empty() {
        return "No KD trial has a finished baseline of the same seed to compare with.\n".into();
    }
    let mut s = String::from(
        "| cell | seeds | KD test % | baseline test % | gain (points) | 95% interval of the gain |\n\
         |---|---:|---:|---:|---:|---|\n",
    );
    for (label, pairs) in &cells {
        let kd: Vec<f64> = pairs.iter().map(|p| p.0).collect();
        let base: Vec<f64> = pairs.iter().map(|p| p.1).collect();
        let gain: Vec<f64> = pairs.iter().map(|p| p.0 - p.1).collect();
        let ((km, ks), (bm, bs), (gm, gs)) = (mean_std(&kd), mean_std(&base), mean_std(&gain));
        let ci = if gain.len() > 1 {
            let h = t95(gain.len() - 1) * gs / (gain.len() as f64).sqrt();
            format!("[{:+.2}, {:+.2}]", gm - h, gm + h)
        } else {
            "one seed: none".into()
        };
        let _ = writeln!(
            s,
            "| {label} | {} | {km:.2} ± {ks:.2} | {bm:.2} ± {bs:.2} | {gm:+.2} ± {gs:.2} | {ci} |",
            pairs.len()
        );
    }
    s
}

/// The best KD cell of each student size, chosen on mean validation accuracy, with its test
/// numbers and those of its paired baseline.
pub fn best_cells_table(rows: &[TrialRow]) -> String {
    let best = figures::best_cells(rows);
    if best.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| student | best cell (by validation) | seeds | val % | KD test % | baseline test % |\n\
         |---|---|---:|---:|---:|---:|\n",
    );
    for (student, cell) in &best {
        let pct = |v: Vec<f64>| {
            let (m, sd) = mean_std(&v);
            format!("{:.2} ± {:.2}", 100.0 * m, 100.0 * sd)
        };
        let val = pct(cell.iter().filter_map(|r| r.val_acc).collect());
        let test = pct(cell.iter().filter_map(|r| r.test_acc).collect());
        let base: Vec<f64> = cell
            .iter()
            .filter_map(|r| {
                let id = r.baseline_id.as_ref()?;
                rows.iter()
                    .find(|b| &b.trial_id == id && b.status == "ok")?
                    .test_acc
            })
            .collect();
        let base = if base.is_empty() {
            "-".into()
        } else {
            pct(base)
        };
        let _ = writeln!(
            s,
            "| {student} | {} | {} | {val} | {test} | {base} |",
            cell_label(cell[0]),
            cell.len()
        );
    }
    s
}

/// " Data: ..." — the split sizes the rows record (empty for files that predate them).
fn data_sizes(rows: &[TrialRow]) -> String {
    let first = |f: fn(&TrialRow) -> Option<u64>, teacher: bool| {
        rows.iter()
            .filter(|r| (r.kind == "teacher") == teacher)
            .find_map(f)
    };
    let (Some(val), Some(test)) = (
        rows.iter().find_map(|r| r.val_images),
        rows.iter().find_map(|r| r.test_images),
    ) else {
        return String::new();
    };
    let mut s = format!(" Data: validation split {val} images, test set {test} images");
    let teacher = first(|r| r.train_images, true);
    match (first(|r| r.train_images, false), teacher) {
        (Some(st), Some(t)) if st != t => {
            let _ = write!(
                s,
                "; the students trained on {st} images, a share of the teacher's {t} (the \
                 teacher's logits on them are the soft targets)"
            );
        }
        (Some(st), _) => {
            let _ = write!(s, "; every model trained on the same {st} images");
        }
        (None, Some(t)) => {
            let _ = write!(s, "; the teacher trained on {t} images");
        }
        (None, None) => {}
    }
    s.push('.');
    s
}

/// The whole `report.md`: a pure function of the rows and the figures drawn from them.
pub fn render_report(
    name: &str,
    rows: &[TrialRow],
    figures: &[(String, PathBuf)],
    out: &Path,
) -> String {
    let mut s = format!("# kd-sweep report: {name}\n\n");
    let val = rows
        .iter()
        .find(|r| r.val_acc.is_some())
        .map_or(String::new(), |_| {
            String::from(" Cells are chosen on validation accuracy, never on test accuracy.")
        });
    let _ = write!(
        s,
        "Reporting policy: accuracies are on the test set at T = 1 after the **last epoch**; \
         `val %` is on the validation split held out of the training file.{val} `train %` is \
         measured in evaluation mode after training, on the images the trial trained on. Gains \
         are KD minus the paired hard-target-only baseline (same student, seed, initialisation \
         and data order), in accuracy points; the interval is a 95% Student-t interval over \
         seeds.{}\n\n",
        data_sizes(rows)
    );
    s.push_str("## Distillation against the hard-target-only baseline\n\n");
    s.push_str(&kd_vs_baseline(rows));
    let best = best_cells_table(rows);
    if !best.is_empty() {
        s.push_str("\n## Best cell per student size\n\n");
        s.push_str(&best);
    }
    if !figures.is_empty() {
        s.push_str("\n## Figures\n\n");
        for (title, path) in figures {
            let rel = path.strip_prefix(out).unwrap_or(path);
            let svg = rel.with_extension("svg");
            let _ = writeln!(
                s,
                "### {title}\n\n![{title}]({}) ([SVG]({}))\n",
                rel.display(),
                svg.display()
            );
        }
    }
    s.push_str("\n## Trials\n\n");
    s.push_str(&trials_table(rows));
    let bad: Vec<_> = rows.iter().filter(|r| r.status != "ok").collect();
    if !bad.is_empty() {
        s.push_str("\n## Trials that did not finish\n\n");
        for r in bad {
            let _ = writeln!(
                s,
                "- `{}` ({}, seed {}): {}",
                r.trial_id, r.kind, r.seed, r.status
            );
        }
    }
    s
}

/// Write `OUT/report.md` and `OUT/figures/*` from rows.
pub fn write_report(
    out: &Path,
    name: &str,
    rows: &[TrialRow],
    epochs: &[EpochRow],
) -> Result<PathBuf> {
    let figures = figures::render_figures(&out.join("figures"), rows, epochs)?;
    let path = out.join("report.md");
    write_atomic(&path, render_report(name, rows, &figures, out).as_bytes())?;
    Ok(path)
}

/// Regenerate `OUT/report.md` and its figures from `OUT/trials.parquet` and
/// `OUT/epochs.parquet` alone. Returns the report's path.
pub fn regenerate(out: &Path, name: &str) -> Result<PathBuf> {
    let file = out.join("trials.parquet");
    let rows = trial_rows(&read_parquet(&file)?, &file)?;
    let efile = out.join("epochs.parquet");
    let epochs = epoch_rows_of(&read_parquet(&efile)?).map_err(|e| ReportError::Polars {
        file: efile.clone(),
        source: e,
    })?;
    write_report(out, name, &rows, &epochs)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn row(id: &str, kind: &str, seed: u64, acc: f64) -> TrialRow {
        TrialRow {
            trial_id: id.into(),
            kind: kind.into(),
            seed,
            arch: "mlp".into(),
            hidden: "800-800".into(),
            params: 1_276_810,
            temperature: (kind == "kd").then_some(4.0),
            alpha: (kind == "kd").then_some(0.9),
            beta: (kind == "kd").then_some(0.1),
            soft_loss: (kind == "kd").then(|| "ce".to_string()),
            epochs: 15,
            status: "ok".into(),
            train_acc: Some(0.99),
            val_acc: Some(acc - 0.001),
            test_acc: Some(acc),
            test_errors: Some(((1.0 - acc) * 10_000.0).round() as u64),
            best_epoch: Some(14),
            wall_s: 12.5,
            finished_at: "2026-11-27T00:00:00Z".into(),
            swept: vec![],
            baseline_id: (kind == "kd").then(|| format!("b{seed}")),
            train_images: Some(if kind == "teacher" { 55_000 } else { 5_500 }),
            val_images: Some(5_000),
            test_images: Some(10_000),
        }
    }

    #[test]
    fn the_report_states_the_split_sizes_and_reads_files_without_them() {
        let mut rows = sample();
        rows.insert(0, row("t", "teacher", 0, 0.92));
        let text = render_report("x", &rows, &[], Path::new("."));
        assert!(
            text.contains(
                "Data: validation split 5000 images, test set 10000 images; the students \
                 trained on 5500 images, a share of the teacher's 55000"
            ),
            "{text}"
        );
        // A frame written before the size columns existed still reads, without sizes.
        let mut df = trials_frame(&rows);
        for c in ["train_images", "val_images", "test_images"] {
            df = df.drop(c).unwrap();
        }
        let back = trial_rows(&df, Path::new("old.parquet")).unwrap();
        assert_eq!(back.len(), 5);
        assert!(back.iter().all(|r| r.val_images.is_none()));
        assert!(!render_report("x", &back, &[], Path::new(".")).contains("Data:"));
    }

    fn sample() -> Vec<TrialRow> {
        vec![
            row("b0", "baseline", 0, 0.90),
            row("k0", "kd", 0, 0.905),
            row("b1", "baseline", 1, 0.89),
            row("k1", "kd", 1, 0.897),
        ]
    }

    #[test]
    fn trials_frame_has_every_column_and_row() {
        let df = trials_frame(&sample());
        assert_eq!(df.height(), 4);
        let names: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(names, TRIAL_COLUMNS);
        let err = df
            .column("test_error")
            .unwrap()
            .f64()
            .unwrap()
            .get(0)
            .unwrap();
        assert!((err - 0.10).abs() < 1e-12);
    }

    #[test]
    fn parquet_round_trip_preserves_rows() {
        let dir = tempfile::tempdir().unwrap();
        let rows = sample();
        write_frames(dir.path(), &rows, &[]).unwrap();
        let file = dir.path().join("trials.parquet");
        let back = trial_rows(&read_parquet(&file).unwrap(), &file).unwrap();
        assert_eq!(back, rows);
        let csv = std::fs::read_to_string(dir.path().join("trials.csv")).unwrap();
        assert!(csv.starts_with("trial_id,kind,seed,arch,hidden,params,temperature"));
        assert_eq!(csv.lines().count(), 5);
        let e = read_parquet(&dir.path().join("epochs.parquet")).unwrap();
        let names: Vec<String> = e.get_column_names().iter().map(|s| s.to_string()).collect();
        assert_eq!(names, EPOCH_COLUMNS);
    }

    #[test]
    fn report_pairs_kd_with_the_baseline_of_its_seed() {
        let md = render_report("t", &sample(), &[], Path::new("."));
        // KD 90.5 and 89.7 (mean 90.10, std 0.566); baselines 90.0 and 89.0 (89.50, 0.707);
        // gains 0.5 and 0.7: mean +0.60, std 0.1414, 95% CI 0.6 +- 12.706 * 0.1414 / sqrt(2).
        let want = "| mlp 800-800, T=4, alpha=0.9, beta=0.1, ce | 2 | 90.10 ± 0.57 | 89.50 ± 0.71 \
                    | +0.60 ± 0.14 | [-0.67, +1.87] |";
        assert!(md.contains(want), "{md}");
    }

    #[test]
    fn diverged_trials_are_listed_and_not_compared() {
        let mut rows = sample();
        rows[1].status = "diverged".into();
        rows[1].test_acc = None;
        let md = render_report("t", &rows, &[], Path::new("."));
        assert!(md.contains("- `k0` (kd, seed 0): diverged"), "{md}");
        assert!(
            md.contains("| 1 | 89.70 ± 0.00 | 89.00 ± 0.00 | +0.70 ± 0.00 | one seed: none |"),
            "{md}"
        );
    }

    #[test]
    fn regenerate_reads_parquet_only() {
        let dir = tempfile::tempdir().unwrap();
        write_frames(dir.path(), &sample(), &[]).unwrap();
        let p = regenerate(dir.path(), "demo").unwrap();
        let md = std::fs::read_to_string(p).unwrap();
        assert!(md.starts_with("# kd-sweep report: demo"));
        assert!(md.contains("+0.60 ± 0.14 | [-0.67, +1.87]"), "{md}");
    }

    #[test]
    fn missing_column_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("trials.parquet");
        let df = trials_frame(&sample()).drop("status").unwrap();
        write_parquet(&df, &file).unwrap();
        let err = trial_rows(&read_parquet(&file).unwrap(), &file)
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("column `status` is missing"), "{err}");
    }

    /// A hand-made sweep: 2 students x 2 alphas x 3 temperatures x 2 seeds, with baselines.
    fn sweep_rows() -> (Vec<TrialRow>, Vec<EpochRow>) {
        let mut rows = Vec::new();
        let mut epochs = Vec::new();
        for (hidden, params, base_acc) in [("800-800", 1_276_810u64, 0.90), ("30-30", 24_790, 0.86)]
        {
            for seed in 0..2u64 {
                let bid = format!("b-{hidden}-{seed}");
                let mut b = row(&bid, "baseline", seed, base_acc + 0.002 * seed as f64);
                b.hidden = hidden.into();
                b.params = params;
                rows.push(b);
                for alpha in [0.5, 0.9] {
                    for t in [1.0f64, 4.0, 16.0] {
                        let id = format!("k-{hidden}-{seed}-{alpha}-{t}");
                        let gain = 0.004 * (4.0f64.ln() - t.ln()).abs().max(0.1) * alpha;
                        let mut k = row(&id, "kd", seed, base_acc + gain + 0.001 * seed as f64);
                        k.hidden = hidden.into();
                        k.params = params;
                        k.temperature = Some(t);
                        k.alpha = Some(alpha);
                        k.beta = Some(1.0 - alpha);
                        k.baseline_id = Some(bid.clone());
                        for epoch in 1..=3 {
                            epochs.push(EpochRow {
                                trial_id: id.clone(),
                                epoch,
                                train_loss: 1.0 / epoch as f64,
                                soft_loss: Some(0.5),
                                hard_loss: 0.3,
                                train_acc: 0.9,
                                val_acc: 0.88,
                                test_acc: 0.8 + 0.03 * epoch as f64,
                                lr: 0.01,
                                seconds: 1.0,
                            });
                        }
                        rows.push(k);
                    }
                }
            }
        }
        (rows, epochs)
    }

    #[test]
    fn figures_are_drawn_as_png_and_svg_from_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (rows, epochs) = sweep_rows();
        write_frames(dir.path(), &rows, &epochs).unwrap();
        let report = regenerate(dir.path(), "sweep").unwrap();
        let md = std::fs::read_to_string(report).unwrap();
        for stem in [
            "error_vs_temperature",
            "gain_alpha_temperature",
            "error_vs_params",
            "gap_vs_temperature",
            "learning_curves",
        ] {
            let png = dir.path().join("figures").join(format!("{stem}.png"));
            let svg = dir.path().join("figures").join(format!("{stem}.svg"));
            assert!(
                std::fs::metadata(&png).unwrap().len() > 5_000,
                "{stem}.png is too small to hold a plot"
            );
            let text = std::fs::read_to_string(&svg).unwrap();
            assert!(text.starts_with("<svg"), "{stem}.svg");
            assert!(md.contains(&format!("](figures/{stem}.png)")), "{md}");
        }
        let svg =
            std::fs::read_to_string(dir.path().join("figures/error_vs_temperature.svg")).unwrap();
        assert!(svg.contains("temperature T (log scale)"), "x axis labelled");
        assert!(svg.contains("test error (%)"), "y axis labelled");
        assert!(
            svg.contains("baseline mlp 800-800"),
            "baseline in the legend"
        );
        // 2 students x 2 alphas x 3 temperatures = 12 cells, each with 2 seeds.
        assert_eq!(md.matches("| 2 | ").count(), 12 + 2, "{md}");
        assert!(md.contains("## Best cell per student size"));
    }

    #[test]
    fn no_kd_rows_means_no_figures() {
        let dir = tempfile::tempdir().unwrap();
        let rows = vec![row("b0", "baseline", 0, 0.9)];
        let figs = figures::render_figures(dir.path(), &rows, &[]).unwrap();
        assert!(figs.is_empty());
    }

    #[test]
    fn mean_std_of_known_values() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, 2.5);
        assert!((s - 1.2909944487).abs() < 1e-9);
        assert_eq!(mean_std(&[5.0]), (5.0, 0.0));
    }
}
