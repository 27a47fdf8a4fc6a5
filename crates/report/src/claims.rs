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
        let known =
            key == "student" || key.contains('.') || TrialRecord::COLUMNS.contains(&key.as_str());
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

/// Check every claim on the finished records.
pub fn check(
    claims: &[Claim],
    rows: &[TrialRecord],
    confusion: &[ConfusionRecord],
) -> Vec<Verdict> {
    let a = Analysis::new(rows);
    let mut out = Vec::new();
    for (i, claim) in claims.iter().enumerate() {
        let verdict = |statement: String, measured: String, margin: String, pass: bool| Verdict {
            index: i + 1,
            claim: claim.name(),
            statement,
            paper: claim.paper().map(str::to_string),
            measured,
            margin,
            pass,
        };
        let missing = |statement: String, what: &str| {
            verdict(
                statement,
                format!("not measured: {what}"),
                "-".into(),
                false,
            )
        };
        match claim {
            Claim::KdBeatsBaseline {
                student,
                temperature,
                select,
                ..
            }
            | Claim::GainAtLeast {
                student,
                temperature,
                select,
                ..
            } => {
                let cells = cells_of(&a, student.as_deref(), select);
                let names = match student {
                    Some(s) => vec![s.clone()],
                    None => students(&cells),
                };
                if names.is_empty() {
                    out.push(missing(
                        format!("{} ({})", claim.name(), describe_select(select)),
                        "no finished KD cell matches",
                    ));
                }
                for s in names {
                    let mine: Vec<&Cell> = cells
                        .iter()
                        .copied()
                        .filter(|c| c.first().hidden == s || c.student == s)
                        .collect();
                    let at = temperature.map_or(String::new(), |t| format!(" at T = {}", fmt(t)));
                    let statement = match claim {
                        Claim::GainAtLeast { points, .. } => format!("KD{at} gains at least {} points over the baseline ({})", fmt(*points), who(Some(&s), select)),
                        _ => format!("KD{at} beats the hard-target baseline by more than the seed spread ({})", who(Some(&s), select)),
                    };
                    let Some((cell, which)) = chosen(&mine, *temperature) else {
                        out.push(missing(
                            statement,
                            "no KD cell (or no validation split to choose one)",
                        ));
                        continue;
                    };
                    let Some(cmp) = cell.comparison() else {
                        out.push(missing(statement, "no finished paired baseline"));
                        continue;
                    };
                    let ci = cmp.ci;
                    let ci_text = ci.map_or(" (one seed: no spread)".to_string(), |c| {
                        format!(" ± {:.2} (95% CI, {} seeds)", c, cmp.n)
                    });
                    let measured = format!(
                        "gain {:+.2} points{ci_text}: KD {:.2}% vs baseline {:.2}% ({which})",
                        cmp.gain.0, cmp.kd.0, cmp.baseline.0
                    );
                    let (margin, pass) = match claim {
                        Claim::GainAtLeast { points, .. } => {
                            let m = cmp.gain.0 - points;
                            (format!("{m:+.2} points"), m >= 0.0)
                        }
                        _ => {
                            let m = cmp.gain.0 - ci.unwrap_or(0.0);
                            (format!("{m:+.2} points beyond the interval"), m > 0.0)
                        }
                    };
                    out.push(verdict(statement, measured, margin, pass));
                }
            }
            Claim::BestTemperatureIn {
                student,
                range,
                select,
                ..
            } => {
                let who = who(student.as_deref(), select);
                let statement = format!(
                    "the best temperature lies in [{}, {}] ({who})",
                    fmt(range[0]),
                    fmt(range[1])
                );
                let cells = cells_of(&a, student.as_deref(), select);
                let Some((cell, _)) = chosen(&cells, None) else {
                    out.push(missing(statement, "no KD cell with a validation accuracy"));
                    continue;
                };
                let Some(t) = cell.temperature() else {
                    out.push(missing(statement, "the best cell has no temperature"));
                    continue;
                };
                let test_best = cells
                    .iter()
                    .max_by(|x, y| test_mean(x).total_cmp(&test_mean(y)))
                    .and_then(|c| c.temperature());
                let by_t: Vec<String> = cells
                    .iter()
                    .filter_map(|c| Some((c.temperature()?, c.val_mean()?)))
                    .map(|(t, v)| format!("{}: {:.2}", fmt(t), 100.0 * v))
                    .collect();
                let measured = format!(
                    "best on validation T = {} (best on test T = {}); validation % by T: {}",
                    fmt(t),
                    test_best.map_or("-".into(), fmt),
                    by_t.join(", ")
                );
                let outside = if t < range[0] {
                    range[0] - t
                } else if t > range[1] {
                    t - range[1]
                } else {
                    0.0
                };
                let margin = if outside == 0.0 {
                    "inside".into()
                } else {
                    format!("{} outside", fmt(outside))
                };
                out.push(verdict(statement, measured, margin, outside == 0.0));
            }
            Claim::FlatAbove {
                student,
                temperature,
                tolerance,
                select,
                ..
            } => {
                let who = who(student.as_deref(), select);
                let statement = format!(
                    "every T >= {} is about equally good, within {} points ({who})",
                    fmt(*temperature),
                    fmt(*tolerance)
                );
                let cells: Vec<&Cell> = cells_of(&a, student.as_deref(), select)
                    .into_iter()
                    .filter(|c| c.temperature().is_some_and(|t| t >= *temperature - 1e-9))
                    .collect();
                if cells.len() < 2 {
                    out.push(missing(
                        statement,
                        "fewer than two KD cells at those temperatures",
                    ));
                    continue;
                }
                let accs: Vec<(f64, f64)> = cells
                    .iter()
                    .map(|c| (c.temperature().unwrap_or(f64::NAN), test_mean(c)))
                    .collect();
                let hi = accs.iter().map(|x| x.1).fold(f64::MIN, f64::max);
                let lo = accs.iter().map(|x| x.1).fold(f64::MAX, f64::min);
                let spread = hi - lo;
                let list: Vec<String> = accs
                    .iter()
                    .map(|(t, v)| format!("T {}: {v:.2}%", fmt(*t)))
                    .collect();
                let measured = format!("spread {spread:.2} points ({})", list.join(", "));
                out.push(verdict(
                    statement,
                    measured,
                    format!("{:+.2} points", tolerance - spread),
                    spread <= *tolerance,
                ));
            }
            Claim::Converges {
                student,
                a: sa,
                b: sb,
                tolerance,
                ..
            }
            | Claim::Agrees {
                student,
                a: sa,
                b: sb,
                tolerance,
                ..
            } => {
                let agrees = matches!(claim, Claim::Agrees { .. });
                let statement = if agrees {
                    format!(
                        "{} and {} agree within {} points at every T",
                        describe_select(sa),
                        describe_select(sb),
                        fmt(*tolerance)
                    )
                } else {
                    format!(
                        "{} and {} converge as T grows, within {} points at the highest T",
                        describe_select(sa),
                        describe_select(sb),
                        fmt(*tolerance)
                    )
                };
                let ca = cells_of(&a, student.as_deref(), sa);
                let cb = cells_of(&a, student.as_deref(), sb);
                let mut diffs: Vec<(f64, f64)> = ca
                    .iter()
                    .filter_map(|x| {
                        let t = x.temperature()?;
                        let y = cb
                            .iter()
                            .find(|y| y.temperature().is_some_and(|u| (u - t).abs() < 1e-9))?;
                        Some((t, (test_mean(x) - test_mean(y)).abs()))
                    })
                    .collect();
                diffs.sort_by(|x, y| x.0.total_cmp(&y.0));
                let (Some(&(t_lo, d_lo)), Some(&(t_hi, d_hi))) = (diffs.first(), diffs.last())
                else {
                    out.push(missing(
                        statement,
                        "no temperature with cells of both kinds",
                    ));
                    continue;
                };
                let list: Vec<String> = diffs
                    .iter()
                    .map(|(t, d)| format!("T {}: {d:.2}", fmt(*t)))
                    .collect();
                let measured = format!("test accuracy apart, in points: {}", list.join(", "));
                let (pass, margin) = if agrees {
                    let (t_max, d_max) = diffs
                        .iter()
                        .copied()
                        .max_by(|x, y| x.1.total_cmp(&y.1))
                        .unwrap_or((t_hi, d_hi));
                    (
                        d_max <= *tolerance,
                        format!(
                            "{:+.2} points at T = {} (the largest)",
                            tolerance - d_max,
                            fmt(t_max)
                        ),
                    )
                } else {
                    (
                        d_hi <= *tolerance && (diffs.len() < 2 || d_hi <= d_lo),
                        format!(
                            "{:+.2} points at T = {}; {:.2} at T = {}",
                            tolerance - d_hi,
                            fmt(t_hi),
                            d_lo,
                            fmt(t_lo)
                        ),
                    )
                };
                out.push(verdict(statement, measured, margin, pass));
            }
            Claim::ErrorsAtMost { select, errors, .. } => {
                let m = metric_name(claim);
                let statement = format!(
                    "{m} of {} is at most {}{}",
                    describe_select(select),
                    fmt(*errors),
                    unit(m)
                );
                match mean_metric(rows, select, m, confusion) {
                    Some((v, measured)) => {
                        let margin = format!("{} below the bound", fmt(errors - v));
                        out.push(verdict(statement, measured, margin, v <= *errors));
                    }
                    None => out.push(missing(statement, "no finished trial matches")),
                }
            }
            Claim::Reference {
                select,
                metric,
                value,
                tolerance,
                ..
            } => {
                let statement = format!(
                    "{metric} of {} is {}{u} ± {}{u}",
                    describe_select(select),
                    fmt(*value),
                    fmt(*tolerance),
                    u = unit(metric)
                );
                match mean_metric(rows, select, metric, confusion) {
                    Some((v, measured)) => {
                        let off = (v - value).abs();
                        let margin = format!("{} of {} allowed", fmt(off), fmt(*tolerance));
                        out.push(verdict(statement, measured, margin, off <= *tolerance));
                    }
                    None => out.push(missing(statement, "no finished trial matches")),
                }
            }
        }
    }
    out
}

fn metric_name(claim: &Claim) -> &str {
    match claim {
        Claim::ErrorsAtMost { metric, .. } => metric.as_deref().unwrap_or("test_errors"),
        Claim::Reference { metric, .. } => metric,
        _ => "test_errors",
    }
}

/// The mean of `metric` over the finished trials that match `select`, and it in words:
/// `114 (mean of 3, sd 11.14)`.
fn mean_metric(
    rows: &[TrialRecord],
    select: &Select,
    metric: &str,
    confusion: &[ConfusionRecord],
) -> Option<(f64, String)> {
    let v: Vec<f64> = rows
        .iter()
        .filter(|r| crate::analysis::ok(r) && selected(r, select))
        .filter_map(|r| metric_of(r, metric, confusion))
        .collect();
    if v.is_empty() {
        return None;
    }
    let (m, sd) = mean_std(&v);
    let spread = sd.map_or(String::new(), |s| format!(", sd {}", fmt(s)));
    let text = format!("{}{} (mean of {}{spread})", fmt(m), unit(metric), v.len());
    Some((m, text))
}

/// `## Claims`: one row per verdict, then a sentence on how many passed.
pub fn claims_section(verdicts: &[Verdict]) -> String {
    if verdicts.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n## Claims\n\nEach `expect:` claim of the config, checked on these results. A FAIL is \
         a finding about this setting, not an error of the run. Cells are chosen on validation \
         accuracy; accuracies in %, gains in points, errors in test images.\n\n\
         | # | verdict | claim | paper | measured | margin |\n|---:|---|---|---|---|---|\n",
    );
    // A cell's text must not end the cell.
    let cell = |t: &str| t.replace('|', "\\|");
    for v in verdicts {
        let _ = writeln!(
            s,
            "| {} | **{}** | {} (`{}`) | {} | {} | {} |",
            v.index,
            if v.pass { "PASS" } else { "FAIL" },
            cell(&v.statement),
            v.claim,
            cell(v.paper.as_deref().unwrap_or("-")),
            cell(&v.measured),
            cell(&v.margin)
        );
    }
    let passed = verdicts.iter().filter(|v| v.pass).count();
    let _ = writeln!(s, "\n{passed} of {} claims passed.", verdicts.len());
    s
}

/// The closing summary's lines: `PASS  claim: measured`.
pub fn summary(verdicts: &[Verdict]) -> String {
    let mut s = String::new();
    for v in verdicts {
        let _ = writeln!(
            s,
            "{} #{} {}: {} (paper: {}; margin {})",
            if v.pass { "PASS" } else { "FAIL" },
            v.index,
            v.statement,
            v.measured,
            v.paper.as_deref().unwrap_or("-"),
            v.margin
        );
    }
    if !verdicts.is_empty() {
        let passed = verdicts.iter().filter(|v| v.pass).count();
        let _ = writeln!(s, "{passed} of {} claims passed.", verdicts.len());
    }
    s
}
