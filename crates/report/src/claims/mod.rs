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

pub use check::{check, check_with_pruned, claims_section, summary};

/// Rows a claim is about: column name (or `student` for `hidden`, or a swept key) to value.
pub type Select = BTreeMap<String, serde_yaml::Value>;

/// The claim kinds, `claim: <name>` in `expect:`: each a file of this folder with its keys (a
/// struct whose fields are the YAML keys, `paper:` among them), their check, and its verdicts
/// on the finished records ([`Kind`]); this list generates the [`Claim`] enum, [`KNOWN`] and
/// every dispatch, so nothing else names a kind. To add one: write `<name>.rs` (copy
/// `errors_at_most.rs`) and add a line here.
macro_rules! claim_kinds {
    ($($file:ident => $kind:ident),+ $(,)?) => {
        $(mod $file; pub use $file::$kind;)+

        /// One claim of `expect:`, by its kind (`claim:`); every claim takes `paper:` (what
        /// the paper reports, as text).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "claim", rename_all = "snake_case")]
        pub enum Claim {
            $($kind($kind),)+
        }

        /// The claim names `claim:` takes.
        pub const KNOWN: &[&str] = &[$(stringify!($file),)+];

        impl Claim {
            fn kind(&self) -> &dyn Kind {
                match self {
                    $(Claim::$kind(c) => c,)+
                }
            }

            pub fn name(&self) -> &'static str {
                match self {
                    $(Claim::$kind(_) => stringify!($file),)+
                }
            }
        }
    };
}

claim_kinds! {
    kd_beats_baseline => KdBeatsBaseline,
    best_temperature_in => BestTemperatureIn,
    flat_above => FlatAbove,
    gain_at_least => GainAtLeast,
    converges => Converges,
    agrees => Agrees,
    errors_at_most => ErrorsAtMost,
    reference => Reference,
    retained_fraction => RetainedFraction,
}

/// What a claim kind does: say what the paper reports, check its keys, judge the records.
trait Kind {
    fn paper(&self) -> Option<&str>;
    /// Check what the config can: ranges, tolerances, metric names and selected columns.
    fn validate(&self) -> Result<(), String>;
    /// Its verdicts (one, or one per student size) on what `on` holds.
    fn judge(&self, j: &check::Judge, on: &check::On, out: &mut Vec<Verdict>);
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
    pub fn paper(&self) -> Option<&str> {
        self.kind().paper()
    }

    /// Check what the config can: ranges, tolerances, metric names and selected columns.
    pub fn validate(&self) -> Result<(), String> {
        self.kind().validate()
    }
}

/// `v` is a number of at least `min`, else why not (naming the key `name`).
fn finite(name: &str, v: f64, min: f64) -> Result<(), String> {
    if v.is_finite() && v >= min {
        Ok(())
    } else {
        Err(format!("{name}: must be a number >= {min}, got {v}"))
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
    /// False where the cells a successive-halving search pruned could change it (see
    /// [`check_with_pruned`]): then it neither passes nor fails.
    pub judged: bool,
    /// False where the effect the claim is about is not clear of the seeds' noise
    /// (`retained_fraction`): then it neither passes nor fails.
    pub measurable: bool,
}

impl Verdict {
    /// `PASS`, `FAIL`, `NOT MEASURABLE` or `NOT JUDGED`.
    pub fn label(&self) -> &'static str {
        match (self.judged, self.pass) {
            _ if !self.measurable => "NOT MEASURABLE",
            (false, _) => "NOT JUDGED",
            (true, true) => "PASS",
            (true, false) => "FAIL",
        }
    }
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
