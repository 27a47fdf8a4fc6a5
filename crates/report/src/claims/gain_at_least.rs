//! `claim: gain_at_least`: its keys, their check, and its verdicts on the finished records.

use super::check::{self, Judge, On};
use super::*;

/// The KD cell chosen on validation (or at `temperature`) gains at least `points` over its
/// paired baselines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GainAtLeast {
    pub student: Option<String>,
    pub temperature: Option<f64>,
    pub points: f64,
    #[serde(default)]
    pub select: Select,
    pub paper: Option<String>,
}

impl Kind for GainAtLeast {
    fn paper(&self) -> Option<&str> {
        self.paper.as_deref()
    }

    fn validate(&self) -> Result<(), String> {
        if !self.points.is_finite() {
            return Err(format!("points: must be a number, got {}", self.points));
        }
        check_select(&self.select)
    }

    fn judge(&self, j: &Judge, on: &On, out: &mut Vec<Verdict>) {
        let (t, points) = (self.temperature, Some(self.points));
        check::gains(j, on.a, &self.student, t, &self.select, points, out)
    }
}
