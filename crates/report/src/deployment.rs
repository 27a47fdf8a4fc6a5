//! What the student buys: for the teacher and each distinct student model of a sweep, its
//! parameters, its size on disk and its inference speed on the sweep's device, beside its
//! accuracy. The runner measures freshly built nets of each shape (so a sweep whose trials were
//! all reused measures them too) and writes `OUT/deployment.json`; the report's section and
//! figure are drawn from that file and the rows. The timings are observations of one machine,
//! in no id and no claim.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::analysis::{Analysis, Cell};
use crate::figures::{Figure, LinePlot, Series};
use crate::record::{Kind, Status, TrialRecord};
use crate::stats::mean_std;
use crate::{ReportError, Result};

/// `OUT/deployment.json`.
pub const FILE: &str = "deployment.json";

/// One model's size and speed, measured on a freshly built net of its shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Footprint {
    /// `teacher` or `student`.
    pub role: String,
    /// As the trial rows name it: `mlp` and `800-800`.
    pub arch: String,
    pub hidden: String,
    /// `fp32` or `bf16`: the number format it is timed and stored in.
    pub precision: String,
    pub params: u64,
    /// Bytes of its weights and buffers in that format (a kept file, less its ~1 KB of
    /// metadata).
    pub bytes: u64,
    /// Median wall time of one evaluation-mode forward pass at batch 1 and at batch 256, in
    /// milliseconds, after warm-up.
    pub batch1_ms: f64,
    pub batch256_ms: f64,
    /// Timed runs behind each median (batch 1, batch 256).
    pub runs: [usize; 2],
    /// Where: `cpu` or `cuda:N`, libtorch's threads, and the CPU or GPU model.
    pub device: String,
    pub threads: usize,
    pub hardware: String,
}

impl Footprint {
    /// Images per second at batch 256.
    pub fn throughput(&self) -> f64 {
        256.0 / (self.batch256_ms / 1000.0)
    }

    fn label(&self) -> String {
        let bf16 = if self.precision == "bf16" {
            " (bf16)"
        } else {
            ""
        };
        format!("{} {}{bf16}", self.arch, self.hidden)
    }

    /// Whether trial row `r` is of this model.
    fn is_of(&self, r: &TrialRecord) -> bool {
        r.arch == self.arch
            && r.hidden == self.hidden
            && r.precision.as_deref().unwrap_or("fp32") == self.precision
            && (r.kind == Kind::Teacher) == (self.role == "teacher")
    }
}

/// Write `OUT/deployment.json`, atomically.
pub fn write(out: &Path, footprints: &[Footprint]) -> Result<()> {
    let text = serde_json::to_string_pretty(footprints).expect("footprints serialise");
    crate::write_atomic(&out.join(FILE), text.as_bytes())
}

/// Read `OUT/deployment.json`; none when OUT has no such file (a sweep before it existed, or
/// one that stopped before measuring).
pub fn read(out: &Path) -> Result<Vec<Footprint>> {
    let file = out.join(FILE);
    if !file.exists() {
        return Ok(vec![]);
    }
    let text = std::fs::read_to_string(&file).map_err(|source| ReportError::Io {
        file: file.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ReportError::Column {
        file,
        column: "(json)".into(),
        problem: format!("is not the list of footprints this kd-sweep writes ({e})"),
    })
}

/// Of the KD cells of `fp`'s student model, the one with the best mean validation accuracy
/// (none without validation).
fn best_cell<'a, 'b>(a: &'b Analysis<'a>, fp: &Footprint) -> Option<&'b Cell<'a>> {
    let val = |c: &Cell| {
        let v: Vec<f64> = c.kd.iter().filter_map(|r| r.val_acc).collect();
        (!v.is_empty()).then(|| mean_std(&v).0)
    };
    a.cells
        .iter()
        .filter(|c| !c.kd.is_empty() && fp.is_of(c.first()))
        .filter_map(|c| val(c).map(|v| (c, v)))
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .map(|(c, _)| c)
}

fn mean_pct(rows: &[&TrialRecord]) -> Option<f64> {
    let v: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.test_acc)
        .map(|a| 100.0 * a)
        .collect();
    (!v.is_empty()).then(|| mean_std(&v).0)
}

/// Test accuracy (%) of `fp`'s model: the teacher's; for a student, its best KD cell's mean
/// (by validation) and its baselines' mean.
fn accuracies(a: &Analysis, rows: &[TrialRecord], fp: &Footprint) -> (Option<f64>, Option<f64>) {
    if fp.role == "teacher" {
        let t: Vec<&TrialRecord> = rows
            .iter()
            .filter(|r| fp.is_of(r) && r.status == Status::Ok)
            .collect();
        return (mean_pct(&t), None);
    }
    let kd = best_cell(a, fp).and_then(|c| mean_pct(&c.kd));
    let base: Vec<&TrialRecord> = rows
        .iter()
        .filter(|r| r.kind == Kind::Baseline && r.status == Status::Ok)
        .filter(|r| fp.is_of(r))
        .collect();
    (kd, mean_pct(&base))
}

/// `## What the student buys`: one row per model, the teacher first; nothing without
/// footprints.
pub fn section(rows: &[TrialRecord], footprints: &[Footprint]) -> String {
    let Some(first) = footprints.first() else {
        return String::new();
    };
    let a = Analysis::new(rows);
    let teacher = footprints.iter().find(|f| f.role == "teacher");
    let mut s = format!(
        "## What the student buys\n\nEach model's size and inference speed: a freshly built net \
         of its shape, in evaluation mode, on {} with {} thread(s) ({}); the median of repeated \
         timed forward passes after warm-up, at batch 1 (one image, as on a phone) and batch \
         256. Size: its weights and buffers in its number format. Accuracy: the teacher's test \
         accuracy; for a student, its best KD cell's (chosen on validation) and its baselines' \
         means. Timings are this machine's, in no id or claim.\n\n\
         | model | role | params | size (MB) | batch 1 (ms) | batch 256 (ms) | images/s | x faster than the teacher (batch 1 / 256) | test % KD / baseline |\n\
         |---|---|---:|---:|---:|---:|---:|---|---|\n",
        first.device, first.threads, first.hardware
    );
    let speedup = |f: &Footprint| match teacher {
        Some(t) if f.role != "teacher" => format!(
            "{:.1} / {:.1}",
            t.batch1_ms / f.batch1_ms,
            t.batch256_ms / f.batch256_ms
        ),
        _ => "-".into(),
    };
    let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    for f in footprints {
        let (kd, base) = accuracies(&a, rows, f);
        let acc = if f.role == "teacher" {
            pct(kd)
        } else {
            format!("{} / {}", pct(kd), pct(base))
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} | {:.3} | {:.2} | {:.0} | {} | {acc} |",
            f.label(),
            f.role,
            f.params,
            f.bytes as f64 / 1e6,
            f.batch1_ms,
            f.batch256_ms,
            f.throughput(),
            speedup(f),
        );
    }
    s.push('\n');
    s
}

/// Test accuracy against batch-1 latency: the teacher, each student model's baselines and its
/// best KD cell (by validation). None without footprints or accuracies to draw.
pub fn figure(rows: &[TrialRecord], footprints: &[Footprint]) -> Option<Figure> {
    let a = Analysis::new(rows);
    let (mut kd, mut base, mut teacher) = (Vec::new(), Vec::new(), Vec::new());
    for f in footprints {
        let (k, b) = accuracies(&a, rows, f);
        let x = f.batch1_ms;
        match f.role.as_str() {
            "teacher" => teacher.extend(k.map(|y| (x, y, 0.0))),
            _ => {
                kd.extend(k.map(|y| (x, y, 0.0)));
                base.extend(b.map(|y| (x, y, 0.0)));
            }
        }
    }
    if kd.is_empty() && base.is_empty() {
        return None;
    }
    for v in [&mut kd, &mut base] {
        v.sort_by(|p, q| p.0.total_cmp(&q.0));
    }
    let series = |name: &str, points, dashed, color| Series {
        name: name.into(),
        points,
        dashed,
        color,
    };
    Some(Figure::Line {
        stem: "accuracy_vs_latency".into(),
        plot: LinePlot {
            title: "Test accuracy vs inference latency at batch 1".into(),
            x_label: "latency of one image, ms (log scale)".into(),
            y_label: "test accuracy (%)".into(),
            log_x: true,
            series: vec![
                series("KD, best cell by validation accuracy", kd, false, 0),
                series("hard targets only (baselines)", base, true, 1),
                series("teacher", teacher, false, 3),
            ],
            ..LinePlot::default()
        },
    })
}
