//! `claim: retained_fraction`: its keys, their check, and its verdicts on the finished records.
//!
//! Hinton, Vinyals & Dean's section 4 in its own form: a single model distilled from an
//! ensemble keeps more than 80% of the ensemble's improvement over the baseline (58.9% ->
//! 61.1% ensemble, 60.8% distilled). Per seed, `(student - baseline) / (teacher - baseline)` of
//! the KD cell chosen on validation (or at `temperature`) against its paired baseline, with the
//! teacher its KD trials distilled from (an ensemble's row, or a lone teacher's); their mean and
//! 95% t-interval over seeds. Where the teacher's gain over the baselines' mean is within 3 times
//! the baselines' seed standard deviation (issue 38's rule), where there is one seed (no spread),
//! or where a seed's baseline is at or above the teacher (a fraction without meaning), the
//! verdict says "not measurable" and neither passes nor fails.

use super::check::{self, Judge, On};
use super::*;
use crate::stats::ci95_half_width;

/// The KD cell keeps at least `at_least` of its teacher's gain over the paired baselines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetainedFraction {
    pub student: Option<String>,
    pub temperature: Option<f64>,
    pub at_least: f64,
    #[serde(default)]
    pub select: Select,
    pub paper: Option<String>,
}

/// The teacher's gain must exceed this many baseline seed standard deviations.
const CLEAR_GAIN: f64 = 3.0;

impl Kind for RetainedFraction {
    fn paper(&self) -> Option<&str> {
        self.paper.as_deref()
    }

    fn validate(&self) -> Result<(), String> {
        if !self.at_least.is_finite() {
            return Err(format!("at_least: must be a number, got {}", self.at_least));
        }
        check_select(&self.select)
    }

    fn judge(&self, j: &Judge, on: &On, out: &mut Vec<Verdict>) {
        for (s, mine) in check::per_student(j, on.a, &self.student, &self.select, out) {
            out.push(self.judge_student(j, on, &s, &mine));
        }
    }
}

impl RetainedFraction {
    fn judge_student(&self, j: &Judge, on: &On, s: &str, mine: &[&Cell]) -> Verdict {
        let at = self
            .temperature
            .map_or(String::new(), |t| format!(" at T = {}", fmt(t)));
        let statement = format!(
            "KD{at} keeps at least {} of its teacher's gain over the baseline ({})",
            fmt(self.at_least),
            who(Some(s), &self.select)
        );
        let Some((cell, which)) = chosen(mine, self.temperature) else {
            return j.missing(statement, "no KD cell (or no validation split to choose one)");
        };
        if cell.pairs.is_empty() {
            return j.missing(statement, "no finished paired baseline");
        }
        let teacher_id = cell.first().teacher_id.clone();
        let teacher = on
            .rows
            .iter()
            .find(|r| Some(&r.trial_id) == teacher_id.as_ref())
            .and_then(|r| r.test_acc.map(|a| (r, 100.0 * a)));
        let Some((teacher, t_acc)) = teacher else {
            return j.missing(statement, "no finished teacher row with a test accuracy");
        };
        let acc = |r: &TrialRecord| 100.0 * r.test_acc.unwrap_or(f64::NAN);
        let base: Vec<f64> = cell.baselines().into_iter().map(acc).collect();
        let (b_mean, b_std) = mean_std(&base);
        let fractions: Vec<f64> = cell
            .pairs
            .iter()
            .map(|p| (acc(p.kd) - acc(p.baseline)) / (t_acc - acc(p.baseline)))
            .collect();
        let (mean, _) = mean_std(&fractions);
        let ci = ci95_half_width(&fractions);
        let gain = t_acc - b_mean;
        let kd_mean = mean_std(&cell.pairs.iter().map(|p| acc(p.kd)).collect::<Vec<_>>()).0;
        let numbers = format!(
            "teacher {} {:.2}%, baseline {:.2}%, KD {:.2}% ({which})",
            teacher.hidden, t_acc, b_mean, kd_mean
        );
        // The noise a gain must clear: the baselines' seed standard deviation (the rule;
        // the test set is the same for the teacher and the baselines, so its sampling error is
        // not added).
        let below = cell.pairs.iter().any(|p| acc(p.baseline) >= t_acc);
        let why = match b_std {
            None => Some("one baseline seed, so no spread to compare the teacher's gain with".into()),
            Some(_) if below => Some(
                "a seed's baseline is at or above the teacher, so its fraction has no meaning"
                    .to_string(),
            ),
            Some(sd) if gain <= CLEAR_GAIN * sd => Some(format!(
                "the teacher's gain over the baseline, {gain:+.2} points, is within {CLEAR_GAIN} \
                 x the baselines' seed standard deviation ({sd:.2} points)"
            )),
            Some(_) => None,
        };
        if let Some(why) = why {
            let mut v = j.verdict(
                statement,
                format!("not measurable: {why}; {numbers}"),
                "-".into(),
                false,
            );
            v.measurable = false;
            return v;
        }
        let ci_text = ci.map_or(" (one seed: no spread)".to_string(), |c| {
            format!(" ± {c:.2} (95% CI, {} seeds)", fractions.len())
        });
        let m = mean - self.at_least;
        j.verdict(
            statement,
            format!("retained {mean:.2}{ci_text}: {numbers}"),
            format!("{m:+.2}"),
            m >= 0.0,
        )
    }
}
