//! Checking claims on the finished records, and the report's section of verdicts.

use super::*;

/// One claim being judged: it words the verdicts of claim number `index`.
pub(super) struct Judge<'c> {
    pub index: usize,
    pub claim: &'c Claim,
}

/// What claims are judged on: the finished records, their cells, the confusion counts.
pub(super) struct On<'a> {
    pub a: &'a Analysis<'a>,
    pub rows: &'a [TrialRecord],
    pub confusion: &'a [ConfusionRecord],
}

impl Judge<'_> {
    pub(super) fn verdict(
        &self,
        statement: String,
        measured: String,
        margin: String,
        pass: bool,
    ) -> Verdict {
        Verdict {
            index: self.index,
            claim: self.claim.name(),
            statement,
            paper: self.claim.paper().map(str::to_string),
            measured,
            margin,
            pass,
            judged: true,
            measurable: true,
        }
    }

    /// A claim that cannot be judged: it fails, saying what was not measured.
    pub(super) fn missing(&self, statement: String, what: &str) -> Verdict {
        self.verdict(
            statement,
            format!("not measured: {what}"),
            "-".into(),
            false,
        )
    }
}

/// Check every claim on the finished records, where a successive-halving search `pruned` some
/// trials: a verdict those trials could change is not judged. Each pruned trial stands in as
/// finished, its last validation accuracy as its test accuracy; a verdict whose outcome or margin
/// then differs needs a pruned cell, and says so instead of passing or failing (a
/// `search: grid` run trains them). One the stand-ins leave as it is (the best cell on
/// validation is a survivor, say) is judged on the survivors.
pub fn check_with_pruned(
    claims: &[Claim],
    rows: &[TrialRecord],
    pruned: &[TrialRecord],
    confusion: &[ConfusionRecord],
) -> Vec<Verdict> {
    let mut verdicts = check(claims, rows, confusion);
    if pruned.is_empty() {
        return verdicts;
    }
    let mut all = rows.to_vec();
    all.extend(pruned.iter().map(stand_in));
    let with = check(claims, &all, confusion);
    for (i, claim_verdicts) in group_by_index(&mut verdicts) {
        let others: Vec<&Verdict> = with.iter().filter(|w| w.index == i).collect();
        let same_count = others.len() == claim_verdicts.len();
        for (k, v) in claim_verdicts.into_iter().enumerate() {
            // The outcome and its margin: the measured text may list every cell (the best
            // temperature's does) without the verdict depending on them.
            let unchanged = same_count
                && others[k].pass == v.pass
                && others[k].margin == v.margin
                && others[k].statement == v.statement;
            if !unchanged {
                v.judged = false;
                v.measured = format!(
                    "{}; not judged: the {} trial(s) the search pruned could change it",
                    v.measured,
                    pruned.len()
                );
            }
        }
    }
    verdicts
}

/// A pruned trial as if it had finished with its last validation accuracy as its test numbers.
fn stand_in(r: &TrialRecord) -> TrialRecord {
    let mut r = r.clone();
    r.status = crate::Status::Ok;
    r.test_acc = r.val_acc;
    r.best_test_acc = r.val_acc;
    r.test_error = r.val_acc.map(|a| 1.0 - a);
    r.test_errors = r
        .val_acc
        .map(|a| ((1.0 - a) * r.test_images as f64).round() as u64);
    r
}

/// The verdicts of each claim (by `index`), in order.
fn group_by_index(verdicts: &mut [Verdict]) -> Vec<(usize, Vec<&mut Verdict>)> {
    let mut out: Vec<(usize, Vec<&mut Verdict>)> = Vec::new();
    for v in verdicts.iter_mut() {
        match out.last_mut() {
            Some((i, vs)) if *i == v.index => vs.push(v),
            _ => out.push((v.index, vec![v])),
        }
    }
    out
}

/// Check every claim on the finished records.
pub fn check(
    claims: &[Claim],
    rows: &[TrialRecord],
    confusion: &[ConfusionRecord],
) -> Vec<Verdict> {
    let a = Analysis::new(rows);
    let on = On {
        a: &a,
        rows,
        confusion,
    };
    let mut out = Vec::new();
    for (i, claim) in claims.iter().enumerate() {
        let j = Judge {
            index: i + 1,
            claim,
        };
        claim.kind().judge(&j, &on, &mut out);
    }
    out
}

/// The KD cells matching `select`, per student size (or just `student`), for the claims judged
/// per size; where none matches, a `not measured` verdict in `out`.
pub(super) fn per_student<'a, 'b>(
    j: &Judge,
    a: &'b Analysis<'a>,
    student: &Option<String>,
    select: &Select,
    out: &mut Vec<Verdict>,
) -> Vec<(String, Vec<&'b Cell<'a>>)> {
    let cells = cells_of(a, student.as_deref(), select);
    let names = match student {
        Some(s) => vec![s.clone()],
        None => students(&cells),
    };
    if names.is_empty() {
        out.push(j.missing(
            format!("{} ({})", j.claim.name(), describe_select(select)),
            "no finished KD cell matches",
        ));
    }
    names
        .into_iter()
        .map(|s| {
            let mine = cells
                .iter()
                .copied()
                .filter(|c| c.first().hidden == s || c.student == s)
                .collect();
            (s, mine)
        })
        .collect()
}

/// `kd_beats_baseline` and `gain_at_least` (at least `points`): per student size, the KD cell
/// chosen on validation (or at `temperature`) against its paired baselines.
pub(super) fn gains(
    j: &Judge,
    a: &Analysis,
    student: &Option<String>,
    temperature: Option<f64>,
    select: &Select,
    points: Option<f64>,
    out: &mut Vec<Verdict>,
) {
    for (s, mine) in per_student(j, a, student, select, out) {
        let at = temperature.map_or(String::new(), |t| format!(" at T = {}", fmt(t)));
        let statement = match points {
            Some(points) => format!(
                "KD{at} gains at least {} points over the baseline ({})",
                fmt(points),
                who(Some(&s), select)
            ),
            None => format!(
                "KD{at} beats the hard-target baseline by more than the seed spread ({})",
                who(Some(&s), select)
            ),
        };
        let Some((cell, which)) = chosen(&mine, temperature) else {
            out.push(j.missing(
                statement,
                "no KD cell (or no validation split to choose one)",
            ));
            continue;
        };
        let Some(cmp) = cell.comparison() else {
            out.push(j.missing(statement, "no finished paired baseline"));
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
        let (margin, pass) = match points {
            Some(points) => {
                let m = cmp.gain.0 - points;
                (format!("{m:+.2} points"), m >= 0.0)
            }
            None => {
                let m = cmp.gain.0 - ci.unwrap_or(0.0);
                (format!("{m:+.2} points beyond the interval"), m > 0.0)
            }
        };
        out.push(j.verdict(statement, measured, margin, pass));
    }
}

/// `converges` and `agrees`: how far apart the cells of `sa` and `sb` are at each temperature.
#[allow(clippy::too_many_arguments)]
pub(super) fn apart(
    j: &Judge,
    a: &Analysis,
    student: &Option<String>,
    sa: &Select,
    sb: &Select,
    tolerance: f64,
    agrees: bool,
    out: &mut Vec<Verdict>,
) {
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

/// The mean of `metric` over the finished trials that match `select`, and it in words:
/// `114 (mean of 3, sd 11.14)`.
pub(super) fn mean_metric(
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
            v.label(),
            cell(&v.statement),
            v.claim,
            cell(v.paper.as_deref().unwrap_or("-")),
            cell(&v.measured),
            cell(&v.margin)
        );
    }
    let _ = writeln!(s, "\n{}", tally(verdicts));
    s
}

/// `3 of 4 claims passed.`, and how many were not judged.
fn tally(verdicts: &[Verdict]) -> String {
    let passed = verdicts
        .iter()
        .filter(|v| v.judged && v.measurable && v.pass)
        .count();
    let mut s = format!("{passed} of {} claims passed.", verdicts.len());
    let unmeasurable = verdicts.iter().filter(|v| !v.measurable).count();
    if unmeasurable > 0 {
        s.push_str(&format!(
            " {unmeasurable} not measurable: the effect they are about is within the seeds' noise."
        ));
    }
    let unjudged = verdicts
        .iter()
        .filter(|v| !v.judged && v.measurable)
        .count();
    if unjudged > 0 {
        s.push_str(&format!(
            " {unjudged} not judged: they need cells the search pruned."
        ));
    }
    s
}

/// The closing summary's lines: `PASS  claim: measured`.
pub fn summary(verdicts: &[Verdict]) -> String {
    let mut s = String::new();
    for v in verdicts {
        let _ = writeln!(
            s,
            "{} #{} {}: {} (paper: {}; margin {})",
            v.label(),
            v.index,
            v.statement,
            v.measured,
            v.paper.as_deref().unwrap_or("-"),
            v.margin
        );
    }
    if !verdicts.is_empty() {
        let _ = writeln!(s, "{}", tally(verdicts));
    }
    s
}
