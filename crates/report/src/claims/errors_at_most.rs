//! `claim: errors_at_most`: its keys, their check, and its verdicts on the finished records.

use super::check::{self, Judge, On};
use super::*;

/// The mean over seeds of `metric` (default `test_errors`) on the rows of `select` is at
/// most `errors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorsAtMost {
    pub select: Select,
    pub metric: Option<String>,
    pub errors: f64,
    pub paper: Option<String>,
}

impl Kind for ErrorsAtMost {
    fn paper(&self) -> Option<&str> {
        self.paper.as_deref()
    }

    fn validate(&self) -> Result<(), String> {
        finite("errors", self.errors, 0.0)?;
        check_metric(self.metric.as_deref().unwrap_or("test_errors"))?;
        check_select(&self.select)
    }

    fn judge(&self, j: &Judge, on: &On, out: &mut Vec<Verdict>) {
        let m = self.metric.as_deref().unwrap_or("test_errors");
        errors_at_most(j, on, &self.select, m, self.errors, out)
    }
}

/// `errors_at_most`: the mean of the metric (test errors by default) against a bound.
fn errors_at_most(
    j: &Judge,
    on: &On,
    select: &Select,
    m: &str,
    errors: f64,
    out: &mut Vec<Verdict>,
) {
    let statement = format!(
        "{m} of {} is at most {}{}",
        describe_select(select),
        fmt(errors),
        unit(m)
    );
    match check::mean_metric(on.rows, select, m, on.confusion) {
        Some((v, measured)) => {
            let margin = format!("{} below the bound", fmt(errors - v));
            out.push(j.verdict(statement, measured, margin, v <= errors));
        }
        None => out.push(j.missing(statement, "no finished trial matches")),
    }
}
