//! What is measured of a finished student beyond its accuracy: its test-set confusion matrix,
//! its fidelity to the teacher (top-1 agreement, KL(teacher || student) at T = 1) and, when
//! classes were missing from its transfer set, the bias shift that repairs them (Hinton et al.
//! 2015, section 3), fitted on the validation split alone.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::data::SplitTensors;

/// The largest shift tried, and the step: the paper's shifts were 3.5 and 7.6.
pub const SHIFT_MAX: f64 = 30.0;
pub const SHIFT_STEP: f64 = 0.1;

/// What a student is measured against after training.
#[derive(Debug)]
pub struct Reference<'a> {
    /// The teacher's logits on the test split, `[n_test, classes]` (none: no fidelity).
    pub teacher_test: Option<&'a Tensor>,
    /// The classes missing from the student's transfer set, whose logits the shift raises.
    pub missing: &'a [usize],
    pub classes: usize,
}

/// The measures of one student, carried in its [`crate::train::Outcome`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measures {
    pub teacher_agreement: Option<f64>,
    pub teacher_kl: Option<f64>,
    /// Test confusion counts, row-major `[label][predicted]`.
    pub confusion: Vec<u64>,
    pub bias_shift: Option<f64>,
    pub shifted_test_errors: Option<u64>,
    /// The confusion counts with the shift applied (empty without a shift).
    pub shifted_confusion: Vec<u64>,
}

fn to_u64(t: &Tensor) -> Vec<u64> {
    super::host::i64s(t).into_iter().map(|v| v as u64).collect()
}

/// Row-major `[label][predicted]` counts of `logits` against `y`.
pub fn confusion(logits: &Tensor, y: &Tensor, classes: usize) -> Vec<u64> {
    let c = classes as i64;
    let pred = logits.argmax(-1, false);
    let cells = y * c + pred;
    to_u64(&cells.bincount::<Tensor>(None, c * c))
}

/// Top-1 agreement of `student` with `teacher` (logits of the same rows).
pub fn agreement(student: &Tensor, teacher: &Tensor) -> f64 {
    let agree = student
        .argmax(-1, false)
        .eq_tensor(&teacher.argmax(-1, false))
        .to_kind(Kind::Double)
        .mean(Kind::Double);
    super::host::f64_of(&agree)
}

/// KL(p_teacher || q_student) at T = 1, summed over classes and averaged over rows, in nats.
pub fn kl_teacher_student(student: &Tensor, teacher: &Tensor) -> f64 {
    let lp = teacher.to_kind(Kind::Double).log_softmax(-1, Kind::Double);
    let lq = student.to_kind(Kind::Double).log_softmax(-1, Kind::Double);
    let kl = (lp.exp() * (&lp - lq))
        .sum_dim_intlist(-1, false, Kind::Double)
        .mean(Kind::Double);
    super::host::f64_of(&kl)
}

/// `[classes]` with 1 at the columns `missing`, on the device of `logits`.
fn missing_mask(logits: &Tensor, missing: &[usize]) -> Tensor {
    let mut mask = vec![0f32; logits.size()[1] as usize];
    for &m in missing {
        mask[m] = 1.0;
    }
    super::host::upload(&mask, logits.device())
}

/// `logits` with `shift` added to the columns `missing`.
pub fn shifted(logits: &Tensor, missing: &[usize], shift: f64) -> Tensor {
    logits + missing_mask(logits, missing) * shift
}

/// The shift (0 to [`SHIFT_MAX`] in steps of [`SHIFT_STEP`]) added to the `missing` classes'
/// logits that leaves the fewest errors on `val`; the smallest of ties. Only the validation
/// split is read: the test set never chooses it.
pub fn fit_shift(val_logits: &Tensor, val_y: &Tensor, missing: &[usize]) -> f64 {
    let steps = (SHIFT_MAX / SHIFT_STEP).round() as i64;
    let mask = missing_mask(val_logits, missing);
    // Every shift's errors, read at once.
    let errors: Vec<Tensor> = (0..=steps)
        .map(|i| {
            (val_logits + &mask * (i as f64 * SHIFT_STEP))
                .argmax(-1, false)
                .ne_tensor(val_y)
                .sum(Kind::Int64)
        })
        .collect();
    let errors = super::host::i64s(&Tensor::stack(&errors, 0));
    let mut best = (i64::MAX, 0.0);
    for (i, e) in errors.into_iter().enumerate() {
        if e < best.0 {
            best = (e, i as f64 * SHIFT_STEP);
        }
    }
    best.1
}

/// Measure a student from its logits on the test split and on the validation split.
pub fn measure(
    test_logits: &Tensor,
    test: &SplitTensors,
    val_logits: Option<&Tensor>,
    val: &SplitTensors,
    r: &Reference,
) -> Measures {
    let mut m = Measures {
        confusion: confusion(test_logits, &test.y, r.classes),
        ..Measures::default()
    };
    if let Some(t) = r.teacher_test {
        let t = t.to_device(test_logits.device());
        m.teacher_agreement = Some(agreement(test_logits, &t));
        m.teacher_kl = Some(kl_teacher_student(test_logits, &t));
    }
    if let (false, Some(v)) = (r.missing.is_empty(), val_logits.filter(|_| !val.is_empty())) {
        let shift = fit_shift(v, &val.y, r.missing);
        let after = shifted(test_logits, r.missing, shift);
        m.shifted_confusion = confusion(&after, &test.y, r.classes);
        let correct: u64 = (0..r.classes)
            .map(|c| m.shifted_confusion[c * r.classes + c])
            .sum();
        m.bias_shift = Some(shift);
        m.shifted_test_errors = Some(test.len() as u64 - correct);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t2(rows: &[[f32; 3]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, 3])
    }

    #[test]
    fn fidelity_matches_a_hand_computation() {
        let student = t2(&[
            [2.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 3.0],
            [1.0, 0.0, 0.0],
        ]);
        let teacher = t2(&[
            [1.0, 0.0, 0.0],
            [0.0, 0.0, 2.0],
            [0.0, 0.0, 1.0],
            [0.0, 1.0, 0.0],
        ]);
        // Argmaxes: student 0 1 2 0, teacher 0 2 2 1: two of four agree.
        assert_eq!(agreement(&student, &teacher), 0.5);
        // KL by hand in float64.
        let sm = |r: [f64; 3]| {
            let z: f64 = r.iter().map(|v| v.exp()).sum();
            r.map(|v| v.exp() / z)
        };
        let s = [
            [2.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 3.0],
            [1.0, 0.0, 0.0],
        ];
        let t = [
            [1.0, 0.0, 0.0],
            [0.0, 0.0, 2.0],
            [0.0, 0.0, 1.0],
            [0.0, 1.0, 0.0],
        ];
        let want: f64 = s
            .iter()
            .zip(&t)
            .map(|(s, t)| {
                let (q, p) = (sm(*s), sm(*t));
                (0..3).map(|i| p[i] * (p[i] / q[i]).ln()).sum::<f64>()
            })
            .sum::<f64>()
            / 4.0;
        let got = kl_teacher_student(&student, &teacher);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        assert!(kl_teacher_student(&teacher, &teacher).abs() < 1e-12);
        // Confusion: labels 0 1 1 2, predictions 0 1 2 0.
        let y = Tensor::from_slice(&[0i64, 1, 1, 2]);
        assert_eq!(
            confusion(&student, &y, 3),
            [1, 0, 0, 0, 1, 1, 1, 0, 0].map(|v| v as u64)
        );
    }

    #[test]
    fn the_shift_is_fitted_on_validation_and_never_reads_test() {
        // Class 2 was missing from the transfer set: its logit sits 1.5 below where it should.
        let val = t2(&[
            [0.0, 0.0, -0.5],
            [0.0, 0.0, -1.0],
            [2.0, 0.0, 0.0],
            [0.0, 1.0, -0.2],
        ]);
        let val_y = Tensor::from_slice(&[2i64, 2, 0, 1]);
        let s = fit_shift(&val, &val_y, &[2]);
        // Any shift in (1.0, 1.2] fixes both 2s and keeps the 0 and the 1 (lost above 1.2 and 2):
        // the smallest on the grid is 1.1.
        assert!((s - 1.1).abs() < 1e-9, "{s}");
        // Test labels that would want another shift do not move it: `measure` fits on val only.
        let test = SplitTensors {
            x: Tensor::zeros([2, 1], (Kind::Float, tch::Device::Cpu)),
            y: Tensor::from_slice(&[2i64, 2]),
        };
        let valsplit = SplitTensors {
            x: Tensor::zeros([4, 1], (Kind::Float, tch::Device::Cpu)),
            y: val_y.shallow_clone(),
        };
        let test_logits = t2(&[[0.0, 0.0, -5.0], [0.0, 0.0, -0.5]]);
        let r = Reference {
            teacher_test: None,
            missing: &[2],
            classes: 3,
        };
        let m = measure(&test_logits, &test, Some(&val), &valsplit, &r);
        assert_eq!(m.bias_shift, Some(s));
        // Before: both test 2s wrong; after a shift of 1.1: the second is right, the first not.
        assert_eq!(m.confusion[2 * 3 + 2], 0);
        assert_eq!(m.shifted_confusion[2 * 3 + 2], 1);
        assert_eq!(m.shifted_test_errors, Some(1));
        // No missing class: no shift.
        let none = measure(
            &test_logits,
            &test,
            Some(&val),
            &valsplit,
            &Reference { missing: &[], ..r },
        );
        assert_eq!((none.bias_shift, none.shifted_confusion.len()), (None, 0));
    }
}
