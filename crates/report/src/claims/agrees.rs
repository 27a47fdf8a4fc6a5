//! `claim: agrees`: its keys, their check, and its verdicts on the finished records.

use super::check::{self, Judge, On};
use super::*;

/// KD cells selected by `a` and by `b` agree within `tolerance` points of test accuracy at
/// every temperature they share (e.g. two forms of one loss with the same gradient).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agrees {
    pub student: Option<String>,
    pub a: Select,
    pub b: Select,
    pub tolerance: f64,
    pub paper: Option<String>,
}

impl Kind for Agrees {
    fn paper(&self) -> Option<&str> {
        self.paper.as_deref()
    }

    fn validate(&self) -> Result<(), String> {
        finite("tolerance", self.tolerance, 0.0)?;
        check_select(&self.a)?;
        check_select(&self.b)
    }

    fn judge(&self, j: &Judge, on: &On, out: &mut Vec<Verdict>) {
        let (a, b) = (&self.a, &self.b);
        check::apart(j, on.a, &self.student, a, b, self.tolerance, true, out)
    }
}
