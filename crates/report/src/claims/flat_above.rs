//! `claim: flat_above`: its keys, their check, and its verdicts on the finished records.

use super::check::{Judge, On};
use super::*;

/// Every KD cell at T >= `temperature` is within `tolerance` accuracy points of the others
/// (test accuracy, mean over seeds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlatAbove {
    pub student: Option<String>,
    pub temperature: f64,
    pub tolerance: f64,
    #[serde(default)]
    pub select: Select,
    pub paper: Option<String>,
}

impl Kind for FlatAbove {
    fn paper(&self) -> Option<&str> {
        self.paper.as_deref()
    }

    fn validate(&self) -> Result<(), String> {
        finite("temperature", self.temperature, 0.0)?;
        finite("tolerance", self.tolerance, 0.0)?;
        check_select(&self.select)
    }

    fn judge(&self, j: &Judge, on: &On, out: &mut Vec<Verdict>) {
        let (t, tol) = (self.temperature, self.tolerance);
        flat_above(j, on.a, &self.student, t, tol, &self.select, out)
    }
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
