//! The analysis under the report: KD trials grouped into cells by **every setting except the
//! seed** (typed column values, never formatted labels), each cell paired with its baselines,
//! and cell families for the figures. The Markdown tables and the figures both read this; neither
//! groups rows on its own.

use std::collections::HashMap;

use crate::record::{Kind, Status, TrialRecord, Value};
use crate::stats::{ci95_half_width, mean_std};

/// The columns that are settings of a trial. A cell is keyed by all of them (and by the swept
/// columns); `seed` is left out, and so are the outcome and where it ran (the device, threads
/// and libtorch enter the trial id, not the cell: seeds of one cell may run on two GPUs).
pub const SETTINGS: &[&str] = &[
    "kind",
    "arch",
    "hidden",
    "model",
    "init",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "temperature",
    "alpha",
    "beta",
    "soft_loss",
    "t2_scaling",
    "teacher_id",
    "dataset",
    "data_fingerprint",
    "transfer_fraction",
];

/// Settings that never go into a label: they are shown another way (the student label) or are
/// the same for every trial of a sweep.
const UNLABELLED: &[&str] = &[
    "kind",
    "arch",
    "hidden",
    "model",
    "teacher_id",
    "dataset",
    "data_fingerprint",
];

pub fn ok(r: &TrialRecord) -> bool {
    r.status == Status::Ok && r.test_acc.is_some()
}

/// A KD trial and its paired baseline, both finished.
#[derive(Debug, Clone, Copy)]
pub struct Pair<'a> {
    pub kd: &'a TrialRecord,
    pub baseline: &'a TrialRecord,
}

/// Means over seeds of one cell against its paired baselines, in accuracy points.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub n: usize,
    pub kd: (f64, Option<f64>),
    pub baseline: (f64, Option<f64>),
    pub gain: (f64, Option<f64>),
    /// Half-width of the 95% t-interval of the gain (none for one seed).
    pub ci: Option<f64>,
}

/// One KD cell: every seed of one combination of settings.
#[derive(Debug)]
pub struct Cell<'a> {
    key: Vec<Value>,
    /// `arch hidden` (and any swept model key), e.g. `mlp 800-800`.
    pub student: String,
    /// The student's full model spec (what "student size" groups by).
    pub model: String,
    pub label: String,
    /// Its finished KD trials, one per seed.
    pub kd: Vec<&'a TrialRecord>,
    /// Those with a finished paired baseline.
    pub pairs: Vec<Pair<'a>>,
}

impl<'a> Cell<'a> {
    pub fn first(&self) -> &'a TrialRecord {
        self.kd[0]
    }

    pub fn temperature(&self) -> Option<f64> {
        self.first().temperature
    }

    pub fn comparison(&self) -> Option<Comparison> {
        if self.pairs.is_empty() {
            return None;
        }
        let pts = |f: &dyn Fn(&Pair) -> f64| self.pairs.iter().map(f).collect::<Vec<f64>>();
        let kd = pts(&|p| 100.0 * p.kd.test_acc.unwrap_or(f64::NAN));
        let base = pts(&|p| 100.0 * p.baseline.test_acc.unwrap_or(f64::NAN));
        let gain: Vec<f64> = kd.iter().zip(&base).map(|(k, b)| k - b).collect();
        Some(Comparison {
            n: self.pairs.len(),
            kd: mean_std(&kd),
            baseline: mean_std(&base),
            gain: mean_std(&gain),
            ci: ci95_half_width(&gain),
        })
    }

    /// Mean validation accuracy over seeds (none without a validation split).
    pub fn val_mean(&self) -> Option<f64> {
        let v: Option<Vec<f64>> = self.kd.iter().map(|r| r.val_acc).collect();
        v.filter(|v| !v.is_empty()).map(|v| mean_std(&v).0)
    }

    /// The paired baselines, each once.
    pub fn baselines(&self) -> Vec<&'a TrialRecord> {
        let mut out: Vec<&TrialRecord> = Vec::new();
        for p in &self.pairs {
            if !out.iter().any(|b| b.trial_id == p.baseline.trial_id) {
                out.push(p.baseline);
            }
        }
        out
    }
}

/// Cells that share every setting but the excluded ones (e.g. a line over temperature).
#[derive(Debug)]
pub struct Family<'a, 'c> {
    pub label: String,
    pub cells: Vec<&'c Cell<'a>>,
}

impl<'a> Family<'a, '_> {
    /// The paired baselines of every cell of the family, each once.
    pub fn baselines(&self) -> Vec<&'a TrialRecord> {
        let mut out: Vec<&TrialRecord> = Vec::new();
        for b in self.cells.iter().flat_map(|c| c.baselines()) {
            if !out.iter().any(|o| o.trial_id == b.trial_id) {
                out.push(b);
            }
        }
        out
    }
}

/// The sweep's rows, analysed.
#[derive(Debug)]
pub struct Analysis<'a> {
    pub rows: &'a [TrialRecord],
    /// KD cells, in the rows' order.
    pub cells: Vec<Cell<'a>>,
    swept: Vec<String>,
    /// Every student trial has a validation split, so cells can be chosen on it.
    pub has_validation: bool,
}

impl<'a> Analysis<'a> {
    pub fn new(rows: &'a [TrialRecord]) -> Analysis<'a> {
        let swept = crate::record::swept_keys(rows);
        let by_id: HashMap<&str, &TrialRecord> =
            rows.iter().map(|r| (r.trial_id.as_str(), r)).collect();
        let mut cells: Vec<Cell> = Vec::new();
        for r in rows.iter().filter(|r| r.kind == Kind::Kd && ok(r)) {
            let key = settings_key(r, &[], &swept);
            let at = match cells.iter().position(|c| c.key == key) {
                Some(i) => i,
                None => {
                    cells.push(Cell {
                        key,
                        student: student_label(r),
                        model: r.model.clone(),
                        label: String::new(),
                        kd: vec![],
                        pairs: vec![],
                    });
                    cells.len() - 1
                }
            };
            let cell = &mut cells[at];
            cell.kd.push(r);
            let baseline = r
                .baseline_id
                .as_deref()
                .and_then(|id| by_id.get(id))
                .filter(|b| ok(b));
            if let Some(b) = baseline {
                cell.pairs.push(Pair { kd: r, baseline: b });
            }
        }
        let labels = labels(
            &cells.iter().map(|c| c.first()).collect::<Vec<_>>(),
            &[],
            &swept,
            true,
        );
        for (c, l) in cells.iter_mut().zip(labels) {
            c.label = l;
        }
        let students: Vec<&TrialRecord> = rows.iter().filter(|r| r.kind != Kind::Teacher).collect();
        let has_validation = !students.is_empty() && students.iter().all(|r| r.val_images > 0);
        Analysis {
            rows,
            cells,
            swept,
            has_validation,
        }
    }

    /// The cells grouped into families that differ only in the `exclude`d settings, each
    /// labelled by what sets it apart from the other families.
    pub fn families(&self, exclude: &[&str]) -> Vec<Family<'a, '_>> {
        let mut fams: Vec<(Vec<Value>, Vec<&Cell<'a>>)> = Vec::new();
        for c in &self.cells {
            let key = settings_key(c.first(), exclude, &self.swept);
            match fams.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(c),
                None => fams.push((key, vec![c])),
            }
        }
        let firsts: Vec<&TrialRecord> = fams.iter().map(|(_, c)| c[0].first()).collect();
        let labels = labels(&firsts, exclude, &self.swept, false);
        fams.into_iter()
            .zip(labels)
            .map(|((_, cells), label)| Family { label, cells })
            .collect()
    }

    /// The best cell of each student (model), chosen on mean validation accuracy; empty when
    /// there is no validation split to choose on.
    pub fn best_cells(&self) -> Vec<&Cell<'a>> {
        if !self.has_validation {
            return vec![];
        }
        let mut best: Vec<&Cell> = Vec::new();
        for c in &self.cells {
            let Some(v) = c.val_mean() else { continue };
            match best.iter_mut().find(|b| b.model == c.model) {
                Some(b) => {
                    if v > b.val_mean().unwrap_or(f64::NEG_INFINITY) {
                        *b = c;
                    }
                }
                None => best.push(c),
            }
        }
        best
    }
}

/// The values of every setting of `r` except `exclude`, then its swept values.
fn settings_key(r: &TrialRecord, exclude: &[&str], swept: &[String]) -> Vec<Value> {
    let mut key: Vec<Value> = SETTINGS
        .iter()
        .filter(|s| !exclude.contains(s))
        .map(|s| r.get(s).unwrap_or(Value::Null))
        .collect();
    key.extend(
        swept
            .iter()
            .filter(|s| !excluded(s, exclude))
            .map(|s| swept_value(r, s)),
    );
    key
}

fn swept_value(r: &TrialRecord, key: &str) -> Value {
    r.swept
        .iter()
        .find(|(k, _)| k == key)
        .map_or(Value::Null, |(_, v)| v.clone())
}

/// Whether swept key `s` is excluded, by its name or its last segment (`kd.temperature`).
fn excluded(s: &str, exclude: &[&str]) -> bool {
    exclude.contains(&s)
        || s.rsplit('.')
            .next()
            .is_some_and(|last| exclude.contains(&last))
}

/// A swept key whose value is a column already (`student.train.lr` is `lr`).
fn redundant(key: &str) -> bool {
    key.rsplit('.')
        .next()
        .is_some_and(|last| SETTINGS.contains(&last))
}

/// `arch hidden`, plus any swept model key (`student.model.dropout=0.2`).
pub fn student_label(r: &TrialRecord) -> String {
    let mut s = format!("{} {}", r.arch, r.hidden);
    for (k, v) in &r.swept {
        if k.starts_with("student.model.") && !redundant(k) {
            s.push_str(&format!(" {k}={v}"));
        }
    }
    s
}

/// A label per row of `firsts` (one per cell or family): the student, then `name=value` for the
/// settings that tell them apart. With `kd_always`, a cell label always shows T, alpha, beta and
/// the soft loss, as the tables have since the first release.
fn labels(
    firsts: &[&TrialRecord],
    exclude: &[&str],
    swept: &[String],
    kd_always: bool,
) -> Vec<String> {
    let always: &[&str] = if kd_always {
        &["temperature", "alpha", "beta", "soft_loss"]
    } else {
        &[]
    };
    let varies =
        |get: &dyn Fn(&TrialRecord) -> Value| firsts.windows(2).any(|w| get(w[0]) != get(w[1]));
    let shown: Vec<&str> = SETTINGS
        .iter()
        .copied()
        .filter(|s| !exclude.contains(s) && !UNLABELLED.contains(s))
        .filter(|s| always.contains(s) || varies(&|r| r.get(s).unwrap_or(Value::Null)))
        .collect();
    let shown_swept: Vec<&String> = swept
        .iter()
        .filter(|s| !excluded(s, exclude) && !s.starts_with("student.model."))
        .filter(|s| !redundant(s))
        .filter(|s| varies(&|r| swept_value(r, s)))
        .collect();
    firsts
        .iter()
        .map(|r| {
            let mut parts = vec![student_label(r)];
            for s in &shown {
                let v = r.get(s).unwrap_or(Value::Null);
                parts.push(match *s {
                    "temperature" => format!("T={v}"),
                    "soft_loss" if kd_always => v.to_string(),
                    _ => format!("{s}={v}"),
                });
            }
            for s in &shown_swept {
                parts.push(format!("{s}={}", swept_value(r, s)));
            }
            parts.join(", ")
        })
        .collect()
}
