//! `claim: reference`: its keys, their check, and its verdicts on the finished records.

use super::check::{self, Judge, On};
use super::*;

/// The mean of `metric` on the rows of `select` is within `tolerance` of the paper's
/// `value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub select: Select,
    pub metric: String,
    pub value: f64,
    pub tolerance: f64,
    pub paper: Option<String>,
}

impl Kind for Reference {
    fn paper(&self) -> Option<&str> {
        self.paper.as_deref()
    }

    fn validate(&self) -> Result<(), String> {
        finite("tolerance", self.tolerance, 0.0)?;
        if !self.value.is_finite() {
            return Err(format!("value: must be a number, got {}", self.value));
        }
        check_metric(&self.metric)?;
        check_select(&self.select)
    }

    fn judge(&self, j: &Judge, on: &On, out: &mut Vec<Verdict>) {
        let (v, tol) = (self.value, self.tolerance);
        reference(j, on, &self.select, &self.metric, v, tol, out)
    }
}

/// `reference`: the mean of a metric against the paper's value, within a tolerance.
#[allow(clippy::too_many_arguments)]
fn reference(
    j: &Judge,
    on: &On,
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
    match check::mean_metric(on.rows, select, metric, on.confusion) {
        Some((v, measured)) => {
            let off = (v - value).abs();
            let margin = format!("{} of {} allowed", fmt(off), fmt(tolerance));
            out.push(j.verdict(statement, measured, margin, off <= tolerance));
        }
        None => out.push(j.missing(statement, "no finished trial matches")),
    }
}
