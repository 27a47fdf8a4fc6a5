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

/// The number of classes of a dataset the runner reads by name; `None` for a generic `idx`
/// dataset, whose class count the records do not hold.
pub fn classes(dataset: &str) -> Option<usize> {
    match dataset {
        "mnist" | "fashion-mnist" | "cifar10" => Some(10),
        "cifar100" => Some(100),
        _ => None,
    }
}

/// What [`collapsed`] means, in the words the report prints where it counts collapsed seeds.
pub const COLLAPSED: &str = "A student **collapsed** when it did not finish (diverged or failed) \
     or its test accuracy is below max(2 x chance, half its paired baseline's test accuracy), \
     chance being 1 / classes (2 x chance is left out for a student whose transfer set lacks \
     some classes: it cannot reach more than its share of the test set; its paired baseline \
     judges it).";

/// Whether a student trial **collapsed**: it has no finite test accuracy (it diverged or
/// failed), or its test accuracy is below `max(2 / classes, baseline / 2)`, where `baseline` is
/// the test accuracy of its paired baseline (the baseline its row names: same student, seed,
/// initialisation and data order), when that finished. The chance floor `2 / classes` applies
/// when the dataset's class count is known ([`classes`]) and the trial learned from every class
/// (`transfer_classes` null): a student that saw 2 of 10 classes tops out near 20%. A baseline
/// or a trial without a finished paired baseline is judged on the chance floor alone.
///
/// The figures draw a collapsed trial apart from its cell's mean and spread; the tables and
/// claims keep it in every number and count it ([`Cell::collapsed_pairs`]). [`COLLAPSED`] says
/// this in words.
pub fn collapsed(trial: &TrialRecord, baseline: Option<&TrialRecord>) -> bool {
    let Some(acc) = trial
        .test_acc
        .filter(|a| a.is_finite() && trial.status == Status::Ok)
    else {
        return true;
    };
    let chance_floor = match (classes(&trial.dataset), &trial.transfer_classes) {
        (Some(c), None) => 2.0 / c as f64,
        _ => 0.0,
    };
    let baseline_floor = baseline
        .filter(|b| ok(b))
        .and_then(|b| b.test_acc)
        .filter(|b| b.is_finite())
        .map_or(0.0, |b| b / 2.0);
    acc < chance_floor.max(baseline_floor)
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
    /// Its KD trials that did not finish (diverged or failed): in no table number, drawn apart
    /// in the figures.
    pub unfinished: Vec<&'a TrialRecord>,
}

impl<'a> Cell<'a> {
    /// Its first finished KD trial (the first unfinished one in a cell of [`Analysis::lost`]).
    pub fn first(&self) -> &'a TrialRecord {
        self.kd
            .first()
            .or(self.unfinished.first())
            .copied()
            .expect("a cell has a trial")
    }

    /// The finished paired baseline of KD trial `r`.
    pub fn baseline_of(&self, r: &TrialRecord) -> Option<&'a TrialRecord> {
        self.pairs
            .iter()
            .find(|p| p.kd.trial_id == r.trial_id)
            .map(|p| p.baseline)
    }

    /// Whether KD trial `r` of this cell [`collapsed`].
    pub fn is_collapsed(&self, r: &TrialRecord) -> bool {
        collapsed(r, self.baseline_of(r))
    }

    /// Its finished KD trials that did not collapse: what the figures average.
    pub fn healthy(&self) -> Vec<&'a TrialRecord> {
        self.kd
            .iter()
            .copied()
            .filter(|r| !self.is_collapsed(r))
            .collect()
    }

    /// Its KD trials the figures draw apart: the finished ones that collapsed, then the
    /// unfinished ones.
    pub fn collapsed(&self) -> Vec<&'a TrialRecord> {
        let finished = self.kd.iter().copied().filter(|r| self.is_collapsed(r));
        finished.chain(self.unfinished.iter().copied()).collect()
    }

    /// How many of the seeds of [`Cell::comparison`] (the paired ones) collapsed: what the
    /// table's `collapsed` column counts.
    pub fn collapsed_pairs(&self) -> usize {
        self.pairs
            .iter()
            .filter(|p| collapsed(p.kd, Some(p.baseline)))
            .count()
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
    /// KD cells none of whose trials finished (each diverged or failed): in no table (the
    /// report lists their trials as not finished), marked in the figures.
    pub lost: Vec<Cell<'a>>,
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
            let at = cell_at(&mut cells, key, r);
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
        let lost = unfinished_cells(rows, &mut cells, &swept);
        let students: Vec<&TrialRecord> = rows.iter().filter(|r| r.kind != Kind::Teacher).collect();
        let has_validation = !students.is_empty() && students.iter().all(|r| r.val_images > 0);
        Analysis {
            rows,
            cells,
            lost,
            swept,
            has_validation,
        }
    }

    /// The cells grouped into families that differ only in the `exclude`d settings, each
    /// labelled by what sets it apart from the other families.
    pub fn families(&self, exclude: &[&str]) -> Vec<Family<'a, '_>> {
        self.group(self.cells.iter(), exclude)
    }

    /// [`Analysis::families`] with the [`Analysis::lost`] cells too (after the others, so the
    /// families of finished cells come first): what a figure marks.
    pub fn families_with_lost(&self, exclude: &[&str]) -> Vec<Family<'a, '_>> {
        self.group(self.cells.iter().chain(&self.lost), exclude)
    }

    fn group<'c>(
        &'c self,
        cells: impl Iterator<Item = &'c Cell<'a>>,
        exclude: &[&str],
    ) -> Vec<Family<'a, 'c>> {
        let mut fams: Vec<(Vec<Value>, Vec<&Cell<'a>>)> = Vec::new();
        for c in cells {
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

/// The index of the cell keyed `key` in `cells`, a new (empty) one for `r` when none is.
fn cell_at<'a>(cells: &mut Vec<Cell<'a>>, key: Vec<Value>, r: &TrialRecord) -> usize {
    if let Some(i) = cells.iter().position(|c| c.key == key) {
        return i;
    }
    cells.push(Cell {
        key,
        student: student_label(r),
        model: r.model.clone(),
        label: String::new(),
        kd: vec![],
        pairs: vec![],
        unfinished: vec![],
    });
    cells.len() - 1
}

/// The KD trials that did not finish, each in its cell of `cells` when it has one, else in a
/// cell of the returned ones (labelled among every cell, which leaves the labels of `cells`
/// as they are).
fn unfinished_cells<'a>(
    rows: &'a [TrialRecord],
    cells: &mut [Cell<'a>],
    swept: &[String],
) -> Vec<Cell<'a>> {
    let mut lost: Vec<Cell> = Vec::new();
    for r in rows.iter().filter(|r| r.kind == Kind::Kd && !ok(r)) {
        let key = settings_key(r, &[], swept);
        match cells.iter_mut().find(|c| c.key == key) {
            Some(c) => c.unfinished.push(r),
            None => {
                let at = cell_at(&mut lost, key, r);
                lost[at].unfinished.push(r);
            }
        }
    }
    let firsts: Vec<&TrialRecord> = cells.iter().chain(&lost).map(|c| c.first()).collect();
    let labels = labels(&firsts, &[], swept, true);
    for (c, l) in lost.iter_mut().zip(labels.into_iter().skip(cells.len())) {
        c.label = l;
    }
    lost
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
