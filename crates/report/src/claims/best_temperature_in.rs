//! `claim: best_temperature_in`: its keys, their check, and its verdicts on the finished records.

use super::check::{Judge, On};
use super::*;

/// The temperature of the KD cell with the best validation accuracy lies in `range`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BestTemperatureIn {
    pub student: Option<String>,
    pub range: [f64; 2],
    #[serde(default)]
    pub select: Select,
    pub paper: Option<String>,
}

impl Kind for BestTemperatureIn {
    fn paper(&self) -> Option<&str> {
        self.paper.as_deref()
    }

    fn validate(&self) -> Result<(), String> {
        let range = self.range;
        if !(range[0].is_finite() && range[1].is_finite() && range[0] <= range[1]) {
            return Err(format!(
                "range: expected [low, high] with low <= high, got {range:?}"
            ));
        }
        check_select(&self.select)
    }

    fn judge(&self, j: &Judge, on: &On, out: &mut Vec<Verdict>) {
        best_temperature(j, on.a, &self.student, &self.range, &self.select, out)
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
