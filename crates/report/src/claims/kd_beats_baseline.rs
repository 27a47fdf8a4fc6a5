//! `claim: kd_beats_baseline`: its keys, their check, and its verdicts on the finished records.

use super::check::{self, Judge, On};
use super::*;

/// For each student size (or `student`), the KD cell chosen on validation accuracy (or the
/// one at `temperature`) beats its paired baselines by more than the seed spread: the 95%
/// interval of the paired gain lies above 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdBeatsBaseline {
    pub student: Option<String>,
    pub temperature: Option<f64>,
    #[serde(default)]
    pub select: Select,
    pub paper: Option<String>,
}

impl Kind for KdBeatsBaseline {
    fn paper(&self) -> Option<&str> {
        self.paper.as_deref()
    }

    fn validate(&self) -> Result<(), String> {
        check_select(&self.select)
    }

    fn judge(&self, j: &Judge, on: &On, out: &mut Vec<Verdict>) {
        check::gains(j, on.a, &self.student, self.temperature, &self.select, None, out)
    }
}
