//! `expect:` claims: statements about a sweep's results (a paper's, usually), checked on the
//! finished records and printed PASS or FAIL with the measured value, the paper's value and the
//! margin. A failed claim is a finding, not an error: the sweep still exits 0.
//!
//! Units: accuracies, errors rates and agreements are in **percent**, gains in accuracy points,
//! error counts in images, `teacher_kl` in nats per image. Cells are chosen on validation
//! accuracy (the report's policy), never on test accuracy; the verdict is then on test.
//!
//! The claims are a config section; a sweep stores them in `claims.parquet` so that `kd report`
//! checks them again from the Parquet files alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::analysis::{Analysis, Cell};
use crate::record::{ConfusionRecord, TrialRecord, Value};
use crate::stats::mean_std;

mod check;

pub use check::{check, claims_section, summary};

/// The claim names `claim:` takes.
pub const KNOWN: &[&str] = &[
    "kd_beats_baseline",
    "best_temperature_in",
    "flat_above",
    "gain_at_least",
    "converges",
    "agrees",
    "errors_at_most",
    "reference",
];

/// Rows a claim is about: column name (or `student` for `hidden`, or a swept key) to value.
pub type Select = BTreeMap<String, serde_yaml::Value>;

/// One claim of `expect:`. Every claim takes `paper:` (what the paper reports, as text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "claim", rename_all = "snake_case", deny_unknown_fields)]
pub enum Claim {
    /// For each student size (or `student`), the KD cell chosen on validation accuracy (or the
    /// one at `temperature`) beats its paired baselines by more than the seed spread: the 95%
    /// interval of the paired gain lies above 0.
    KdBeatsBaseline {
        student: Option<String>,
        temperature: Option<f64>,
        #[serde(default)]
        select: Select,
        paper: Option<String>,
    },
    /// The temperature of the KD cell with the best validation accuracy lies in `range`.
    BestTemperatureIn {
        student: Option<String>,
        range: [f64; 2],
        #[serde(default)]
        select: Select,
        paper: Option<String>,
    },
    /// Every KD cell at T >= `temperature` is within `tolerance` accuracy points of the others
    /// (test accuracy, mean over seeds).
    FlatAbove {
        student: Option<String>,
        temperature: f64,
        tolerance: f64,
        #[serde(default)]
        select: Select,
        paper: Option<String>,
    },
    /// The KD cell chosen on validation (or at `temperature`) gains at least `points` over its
    /// paired baselines.
    GainAtLeast {
        student: Option<String>,
        temperature: Option<f64>,
        points: f64,
        #[serde(default)]
        select: Select,
        paper: Option<String>,
    },
    /// KD cells selected by `a` and by `b` come together as T grows: their test accuracies
    /// differ by at most `tolerance` points at the highest common T, and by no more there than
    /// at the lowest (e.g. soft targets approaching logit matching).
    Converges {
        student: Option<String>,
        a: Select,
        b: Select,
        tolerance: f64,
        paper: Option<String>,
    },
    /// KD cells selected by `a` and by `b` agree within `tolerance` points of test accuracy at
    /// every temperature they share (e.g. two forms of one loss with the same gradient).
    Agrees {
        student: Option<String>,
        a: Select,
        b: Select,
        tolerance: f64,
        paper: Option<String>,
    },
    /// The mean over seeds of `metric` (default `test_errors`) on the rows of `select` is at
    /// most `errors`.
    ErrorsAtMost {
        select: Select,
        metric: Option<String>,
        errors: f64,
        paper: Option<String>,
    },
    /// The mean of `metric` on the rows of `select` is within `tolerance` of the paper's
    /// `value`.
    Reference {
        select: Select,
        metric: String,
        value: f64,
        tolerance: f64,
        paper: Option<String>,
    },
}

/// Metrics a claim can read besides the numeric record columns: per-class test errors.
const CLASS_METRICS: &[&str] = &["class_errors:", "shifted_class_errors:"];

/// Record columns that are fractions, shown and compared in percent.
const PERCENT: &[&str] = &[
    "test_acc",
    "val_acc",
    "train_acc",
    "best_test_acc",
    "test_error",
    "teacher_agreement",
    "transfer_fraction",
];

fn check_select(select: &Select) -> Result<(), String> {
    for key in select.keys() {
        // Swept keys are dotted, or `kd` (the grid axis of whole objectives, by their names).
        let known = key == "student"
            || key == "kd"
            || key.contains('.')
            || TrialRecord::COLUMNS.contains(&key.as_str());
        if !known {
            return Err(format!(
                "select: unknown column `{key}` (use a trials.parquet column, `student`, or a \
                 swept key)"
            ));
        }
    }
    Ok(())
}

fn check_metric(metric: &str) -> Result<(), String> {
    if let Some(c) = CLASS_METRICS.iter().find_map(|p| metric.strip_prefix(p)) {
        return c
            .parse::<u32>()
            .map(|_| ())
            .map_err(|_| format!("metric `{metric}`: expected a class number after the colon"));
    }
    if TrialRecord::COLUMNS.contains(&metric) {
        return Ok(());
    }
    Err(format!(
        "unknown metric `{metric}` (a numeric trials.parquet column such as test_errors, \
         test_acc, shifted_test_errors, teacher_agreement, teacher_kl, or class_errors:N / \
         shifted_class_errors:N)"
    ))
}

impl Claim {
    pub fn name(&self) -> &'static str {
        match self {
            Claim::KdBeatsBaseline { .. } => "kd_beats_baseline",
            Claim::BestTemperatureIn { .. } => "best_temperature_in",
            Claim::FlatAbove { .. } => "flat_above",
            Claim::GainAtLeast { .. } => "gain_at_least",
            Claim::Converges { .. } => "converges",
            Claim::Agrees { .. } => "agrees",
            Claim::ErrorsAtMost { .. } => "errors_at_most",
            Claim::Reference { .. } => "reference",
        }
    }

    pub fn paper(&self) -> Option<&str> {
        match self {
            Claim::KdBeatsBaseline { paper, .. }
            | Claim::BestTemperatureIn { paper, .. }
            | Claim::FlatAbove { paper, .. }
            | Claim::GainAtLeast { paper, .. }
            | Claim::Converges { paper, .. }
            | Claim::Agrees { paper, .. }
            | Claim::ErrorsAtMost { paper, .. }
            | Claim::Reference { paper, .. } => paper.as_deref(),
        }
    }

    /// Check what the config can: ranges, tolerances, metric names and selected columns.
    pub fn validate(&self) -> Result<(), String> {
        let finite = |name: &str, v: f64, min: f64| {
            if v.is_finite() && v >= min {
                Ok(())
            } else {
                Err(format!("{name}: must be a number >= {min}, got {v}"))
            }
        };
        match self {
            Claim::KdBeatsBaseline { select, .. } => check_select(select),
            Claim::BestTemperatureIn { range, select, .. } => {
                if !(range[0].is_finite() && range[1].is_finite() && range[0] <= range[1]) {
                    return Err(format!(
                        "range: expected [low, high] with low <= high, got {range:?}"
                    ));
                }
                check_select(select)
            }
            Claim::FlatAbove {
                temperature,
                tolerance,
                select,
                ..
            } => {
                finite("temperature", *temperature, 0.0)?;
                finite("tolerance", *tolerance, 0.0)?;
                check_select(select)
            }
            Claim::GainAtLeast { points, select, .. } => {
                if !points.is_finite() {
                    return Err(format!("points: must be a number, got {points}"));
                }
                check_select(select)
            }
            Claim::Converges {
                a, b, tolerance, ..
            }
            | Claim::Agrees {
                a, b, tolerance, ..
            } => {
                finite("tolerance", *tolerance, 0.0)?;
                check_select(a)?;
                check_select(b)
            }
            Claim::ErrorsAtMost {
                select,
                metric,
                errors,
                ..
            } => {
                finite("errors", *errors, 0.0)?;
                check_metric(metric.as_deref().unwrap_or("test_errors"))?;
                check_select(select)
            }
            Claim::Reference {
                select,
                metric,
                value,
                tolerance,
                ..
            } => {
                finite("tolerance", *tolerance, 0.0)?;
                if !value.is_finite() {
                    return Err(format!("value: must be a number, got {value}"));
                }
                check_metric(metric)?;
                check_select(select)
            }
        }
    }
}

/// The outcome of one claim (or of one student size of a per-size claim).
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// 1-based position in `expect:`.
    pub index: usize,
    pub claim: &'static str,
    /// The claim in words, with its parameters.
    pub statement: String,
    pub paper: Option<String>,
    pub measured: String,
    /// How far the measurement is from the threshold (positive: on the passing side).
    pub margin: String,
    pub pass: bool,
}

fn yaml_matches(v: &Value, want: &serde_yaml::Value) -> bool {
    match (v, want) {
        (Value::Null, serde_yaml::Value::Null) => true,
        (Value::Bool(a), serde_yaml::Value::Bool(b)) => a == b,
        (v, serde_yaml::Value::Number(n)) => match (v.as_f64(), n.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
            _ => false,
        },
        (v, serde_yaml::Value::String(s)) => v.to_string() == *s,
        (v, serde_yaml::Value::Sequence(items)) => {
            // A list of widths names a student: [800, 800] is `800-800`.
            let parts: Vec<String> = items
                .iter()
                .map(|i| match i {
                    serde_yaml::Value::Number(n) => n.to_string(),
                    serde_yaml::Value::String(s) => s.clone(),
                    _ => String::new(),
                })
                .collect();
            v.to_string() == parts.join("-")
        }
        _ => false,
    }
}

fn column_value(r: &TrialRecord, key: &str) -> Value {
    let key = if key == "student" { "hidden" } else { key };
    r.get(key).unwrap_or_else(|| {
        r.swept
            .iter()
            .find(|(k, _)| k == key)
            .map_or(Value::Null, |(_, v)| v.clone())
    })
}

fn selected(r: &TrialRecord, select: &Select) -> bool {
    select
        .iter()
        .all(|(k, want)| yaml_matches(&column_value(r, k), want))
}

fn describe_select(select: &Select) -> String {
    if select.is_empty() {
        return "every trial".into();
    }
    select
        .iter()
        .map(|(k, v)| {
            let v = serde_yaml::to_string(v).unwrap_or_default();
            let v = v.trim().replace('\n', " ");
            format!("{k} = {v}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A metric of one trial, in claim units (percent for fractions).
fn metric_of(r: &TrialRecord, metric: &str, confusion: &[ConfusionRecord]) -> Option<f64> {
    for (prefix, shifted) in [("class_errors:", false), ("shifted_class_errors:", true)] {
        if let Some(c) = metric.strip_prefix(prefix) {
            let c: u32 = c.parse().ok()?;
            let mine: Vec<&ConfusionRecord> = confusion
                .iter()
                .filter(|x| x.trial_id == r.trial_id && x.shifted == shifted && x.label == c)
                .collect();
            if mine.is_empty() {
                return None;
            }
            return Some(
                mine.iter()
                    .filter(|x| x.predicted != c)
                    .map(|x| x.count as f64)
                    .sum(),
            );
        }
    }
    let v = r.get(metric)?.as_f64()?;
    Some(if PERCENT.contains(&metric) {
        100.0 * v
    } else {
        v
    })
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e9 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn unit(metric: &str) -> &'static str {
    if PERCENT.contains(&metric) {
        "%"
    } else {
        ""
    }
}

/// Whom a cell-level claim is about: `30-30`, `every student`, with the selection if any.
fn who(student: Option<&str>, select: &Select) -> String {
    let mut w = student.unwrap_or("every student").to_string();
    if !select.is_empty() {
        w = format!("{w}, {}", describe_select(select));
    }
    w
}

/// The KD cells of `student` (all sizes when none) whose trials match `select`.
fn cells_of<'a, 'b>(
    a: &'b Analysis<'a>,
    student: Option<&str>,
    select: &Select,
) -> Vec<&'b Cell<'a>> {
    a.cells
        .iter()
        .filter(|c| {
            let r = c.first();
            student.is_none_or(|s| r.hidden == s || c.student == s) && selected(r, select)
        })
        .collect()
}

/// The students (shape labels) the KD cells cover, in first-seen order.
fn students(cells: &[&Cell]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in cells {
        let h = c.first().hidden.clone();
        if !out.contains(&h) {
            out.push(h);
        }
    }
    out
}

/// The cell at `temperature`, or the one with the best mean validation accuracy.
fn chosen<'a, 'b>(
    cells: &[&'b Cell<'a>],
    temperature: Option<f64>,
) -> Option<(&'b Cell<'a>, String)> {
    match temperature {
        Some(t) => cells
            .iter()
            .find(|c| c.temperature().is_some_and(|x| (x - t).abs() < 1e-9))
            .map(|c| (*c, format!("T = {}", fmt(t)))),
        None => cells
            .iter()
            .filter_map(|c| Some((*c, c.val_mean()?)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(c, _)| (c, format!("{}, chosen on validation", c.label))),
    }
}

fn test_mean(c: &Cell) -> f64 {
    let v: Vec<f64> =
        c.kd.iter()
            .filter_map(|r| r.test_acc)
            .map(|a| 100.0 * a)
            .collect();
    mean_std(&v).0
}
