//! A record's numbers checked against each other: what a record kd wrote always satisfies, and
//! a hand edit of one number (`test_acc`) does not.

use super::TrialRecord;

impl TrialRecord {
    /// Why the record's numbers contradict each other, if they do: `test_acc` against
    /// `test_errors` and `test_images`, `test_error` against `test_acc`, `val_acc` against
    /// `val_images` (a whole number of them). A record kd wrote always agrees with itself; one
    /// that does not was edited by hand or damaged. Non-finite accuracies (a diverged trial)
    /// are not checked.
    pub fn contradiction(&self) -> Option<String> {
        let whole = |acc: f64, n: u64| (acc * n as f64 - (acc * n as f64).round()).abs() < 1e-6;
        let ti = self.test_images;
        if let Some(a) = self.test_acc.filter(|a| a.is_finite()) {
            if !(0.0..=1.0).contains(&a) || !whole(a, ti) {
                return Some(format!(
                    "test_acc {a} is not a share of its {ti} test images"
                ));
            }
            if let Some(e) = self.test_errors {
                let right = ti as f64 * a;
                if e > ti || (right - (ti - e) as f64).abs() > 1e-6 {
                    return Some(format!(
                        "test_acc {a} ({right:.0} of {ti} test images right) but test_errors {e}"
                    ));
                }
            }
            if let Some(err) = self.test_error.filter(|e| e.is_finite()) {
                if (err - (1.0 - a)).abs() > 1e-9 {
                    return Some(format!("test_acc {a} but test_error {err}"));
                }
            }
        }
        if let Some(v) = self.val_acc.filter(|v| v.is_finite()) {
            let vi = self.val_images;
            if vi == 0 || !(0.0..=1.0).contains(&v) || !whole(v, vi) {
                return Some(format!(
                    "val_acc {v} is not a share of its {vi} validation images"
                ));
            }
        }
        None
    }
}
