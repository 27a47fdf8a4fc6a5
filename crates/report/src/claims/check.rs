//! Checking claims on the finished records, and the report's section of verdicts.

use super::*;

/// One claim being judged: it words the verdicts of claim number `index`.
struct Judge<'c> {
    index: usize,
    claim: &'c Claim,
}

impl Judge<'_> {
    fn verdict(&self, statement: String, measured: String, margin: String, pass: bool) -> Verdict {
        Verdict {
            index: self.index,
            claim: self.claim.name(),
            statement,
            paper: self.claim.paper().map(str::to_string),
            measured,
            margin,
            pass,
        }
    }

    /// A claim that cannot be judged: it fails, saying what was not measured.
    fn missing(&self, statement: String, what: &str) -> Verdict {
        self.verdict(
            statement,
            format!("not measured: {what}"),
            "-".into(),
            false,
        )
    }
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
        let j = Judge {
            index: i + 1,
            claim,
        };
        let out = &mut out;
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
            } => gains(&j, &a, student, *temperature, select, out),
            Claim::BestTemperatureIn {
                student,
                range,
                select,
                ..
            } => best_temperature(&j, &a, student, range, select, out),
            Claim::FlatAbove {
                student,
                temperature,
                tolerance,
                select,
                ..
            } => flat_above(&j, &a, student, *temperature, *tolerance, select, out),
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
            } => apart(&j, &a, student, sa, sb, *tolerance, out),
            Claim::ErrorsAtMost { select, errors, .. } => {
                errors_at_most(&j, rows, confusion, select, *errors, out)
            }
            Claim::Reference {
                select,
                metric,
                value,
                tolerance,
                ..
            } => reference(&j, rows, confusion, select, metric, *value, *tolerance, out),
        }
    }
    out
}

/// `kd_beats_baseline` and `gain_at_least`: per student size, the KD cell chosen on validation
/// (or at `temperature`) against its paired baselines.
fn gains(
    j: &Judge,
    a: &Analysis,
    student: &Option<String>,
    temperature: Option<f64>,
    select: &Select,
    out: &mut Vec<Verdict>,
) {
    let claim = j.claim;
    let cells = cells_of(a, student.as_deref(), select);
    let names = match student {
        Some(s) => vec![s.clone()],
        None => students(&cells),
    };
    if names.is_empty() {
        out.push(j.missing(
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
            Claim::GainAtLeast { points, .. } => format!(
                "KD{at} gains at least {} points over the baseline ({})",
                fmt(*points),
                who(Some(&s), select)
            ),
            _ => format!(
                "KD{at} beats the hard-target baseline by more than the seed spread ({})",
                who(Some(&s), select)
            ),
        };
        let Some((cell, which)) = chosen(&mine, temperature) else {
            out.push(j.missing(
                statement,
                "no KD cell (or no validation split to choose one)",
            ));
            return;
        };
        let Some(cmp) = cell.comparison() else {
            out.push(j.missing(statement, "no finished paired baseline"));
            return;
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
        out.push(j.verdict(statement, measured, margin, pass));
    }
}

/// `best_temperature_in`: the temperature of the KD cell best on validation.
fn best_temperature(
    j: &Judge,
    a: &Analysis,
    student: &Option<String>,
    range: &[f64; 2],
    select: &Select,
    out: &mut Vec<Verdict>,
) {
    let who = who(student.as_deref(), select);
    let statement = format!(
        "the best temperature lies in [{}, {}] ({who})",
        fmt(range[0]),
        fmt(range[1])
    );
    let cells = cells_of(a, student.as_deref(), select);
    let Some((cell, _)) = chosen(&cells, None) else {
        out.push(j.missing(statement, "no KD cell with a validation accuracy"));
        return;
    };
    let Some(t) = cell.temperature() else {
        out.push(j.missing(statement, "the best cell has no temperature"));
        return;
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
    out.push(j.verdict(statement, measured, margin, outside == 0.0));
}

/// `flat_above`: the spread of test accuracy over the KD cells at T >= `temperature`.
#[allow(clippy::too_many_arguments)]
fn flat_above(
    j: &Judge,
    a: &Analysis,
    student: &Option<String>,
    temperature: f64,
    tolerance: f64,
    select: &Select,
    out: &mut Vec<Verdict>,
) {
    let who = who(student.as_deref(), select);
    let statement = format!(
        "every T >= {} is about equally good, within {} points ({who})",
        fmt(temperature),
        fmt(tolerance)
    );
    let cells: Vec<&Cell> = cells_of(a, student.as_deref(), select)
        .into_iter()
        .filter(|c| c.temperature().is_some_and(|t| t >= temperature - 1e-9))
        .collect();
    if cells.len() < 2 {
        out.push(j.missing(statement, "fewer than two KD cells at those temperatures"));
        return;
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
    out.push(j.verdict(
        statement,
        measured,
        format!("{:+.2} points", tolerance - spread),
        spread <= tolerance,
    ));
}

/// `converges` and `agrees`: how far apart the cells of `sa` and `sb` are at each temperature.
#[allow(clippy::too_many_arguments)]
fn apart(
    j: &Judge,
    a: &Analysis,
    student: &Option<String>,
    sa: &Select,
    sb: &Select,
    tolerance: f64,
    out: &mut Vec<Verdict>,
) {
    let claim = j.claim;
    let agrees = matches!(claim, Claim::Agrees { .. });
    let statement = if agrees {
        format!(
            "{} and {} agree within {} points at every T",
            describe_select(sa),
            describe_select(sb),
            fmt(tolerance)
        )
    } else {
        format!(
            "{} and {} converge as T grows, within {} points at the highest T",
            describe_select(sa),
            describe_select(sb),
            fmt(tolerance)
        )
    };
    let ca = cells_of(a, student.as_deref(), sa);
    let cb = cells_of(a, student.as_deref(), sb);
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
    let (Some(&(t_lo, d_lo)), Some(&(t_hi, d_hi))) = (diffs.first(), diffs.last()) else {
        out.push(j.missing(statement, "no temperature with cells of both kinds"));
        return;
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
            d_max <= tolerance,
            format!(
                "{:+.2} points at T = {} (the largest)",
                tolerance - d_max,
                fmt(t_max)
            ),
        )
    } else {
        (
            d_hi <= tolerance && (diffs.len() < 2 || d_hi <= d_lo),
            format!(
                "{:+.2} points at T = {}; {:.2} at T = {}",
                tolerance - d_hi,
                fmt(t_hi),
                d_lo,
                fmt(t_lo)
            ),
        )
    };
    out.push(j.verdict(statement, measured, margin, pass));
}

/// `errors_at_most`: the mean of the metric (test errors by default) against a bound.
fn errors_at_most(
    j: &Judge,
    rows: &[TrialRecord],
    confusion: &[ConfusionRecord],
    select: &Select,
    errors: f64,
    out: &mut Vec<Verdict>,
) {
    let claim = j.claim;
    let m = metric_name(claim);
    let statement = format!(
        "{m} of {} is at most {}{}",
        describe_select(select),
        fmt(errors),
        unit(m)
    );
    match mean_metric(rows, select, m, confusion) {
        Some((v, measured)) => {
            let margin = format!("{} below the bound", fmt(errors - v));
            out.push(j.verdict(statement, measured, margin, v <= errors));
        }
        None => out.push(j.missing(statement, "no finished trial matches")),
    }
}

/// `reference`: the mean of a metric against the paper's value, within a tolerance.
#[allow(clippy::too_many_arguments)]
fn reference(
    j: &Judge,
    rows: &[TrialRecord],
    confusion: &[ConfusionRecord],
    select: &Select,
    metric: &str,
    value: f64,
    tolerance: f64,
    out: &mut Vec<Verdict>,
) {
    let statement = format!(
        "{metric} of {} is {}{u} ± {}{u}",
        describe_select(select),
        fmt(value),
        fmt(tolerance),
        u = unit(metric)
    );
    match mean_metric(rows, select, metric, confusion) {
        Some((v, measured)) => {
            let off = (v - value).abs();
            let margin = format!("{} of {} allowed", fmt(off), fmt(tolerance));
            out.push(j.verdict(statement, measured, margin, off <= tolerance));
        }
        None => out.push(j.missing(statement, "no finished trial matches")),
    }
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
