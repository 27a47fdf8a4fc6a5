//! The objectives, one file each since issue 18, keep the exact operations of the code before
//! them, so committed trials reproduce bit for bit: one student and a pack, value and gradient,
//! against the pre-refactor formulas written out here.

use kd_loss::*;
use tch::{Kind, Reduction, Tensor};

fn logits(seed: i64, shape: &[i64], scale: f64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randn(shape, (Kind::Float, tch::Device::Cpu)) * scale
}

/// Value and gradient with respect to the student logits of `f`, weighted by 0.9 * 16 as a KD
/// step at T = 4 would be.
/// The forms that existed before the refactor.
const OLD: [SoftLoss; 3] = [SoftLoss::Ce, SoftLoss::Kl, SoftLoss::MseLogits];

fn value_and_grad(z: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> (Tensor, Tensor) {
    let z = z.copy().set_requires_grad(true);
    let v = f(&z);
    let g = Tensor::run_backward(&[&v * 14.4], &[&z], false, false).remove(0);
    (v.detach(), g)
}

fn old_single(form: SoftLoss, z: &Tensor, v: &Tensor, t: f64) -> Tensor {
    match form {
        SoftLoss::Ce => {
            let log_q = (z / t).log_softmax(-1, Kind::Float);
            let p = (v / t).softmax(-1, Kind::Float).detach();
            -(p * log_q)
                .sum_dim_intlist(-1, false, None::<Kind>)
                .mean(None::<Kind>)
        }
        SoftLoss::Kl => {
            let log_q = (z / t).log_softmax(-1, Kind::Float);
            let log_p = (v / t).log_softmax(-1, Kind::Float).detach();
            let p = log_p.exp();
            (p * (log_p - log_q))
                .sum_dim_intlist(-1, false, None::<Kind>)
                .mean(None::<Kind>)
        }
        SoftLoss::MseLogits => z.mse_loss(&v.detach(), Reduction::Mean) * 0.5,
        other => unreachable!("{other:?} came after the refactor"),
    }
}

fn old_packed(form: SoftLoss, z: &Tensor, v: &Tensor, temp: &Tensor) -> Tensor {
    match form {
        SoftLoss::Ce | SoftLoss::Kl => {
            let log_q = (z / temp).log_softmax(-1, Kind::Float);
            let log_p = (v / temp).log_softmax(-1, Kind::Float).detach();
            let p = log_p.exp();
            let per_class = if form == SoftLoss::Ce {
                -(p * log_q)
            } else {
                p * (log_p - log_q)
            };
            per_class
                .sum_dim_intlist(-1, false, None::<Kind>)
                .mean_dim(-1, false, None::<Kind>)
        }
        SoftLoss::MseLogits => {
            (z - v.detach())
                .square()
                .mean_dim([1i64, 2].as_slice(), false, None::<Kind>)
                * 0.5
        }
        other => unreachable!("{other:?} came after the refactor"),
    }
}

#[test]
fn single_student_forms_are_bit_identical_to_the_old_code() {
    for form in OLD {
        for (seed, t) in [(1, 1.0), (2, 4.0), (3, 20.0)] {
            let z = logits(seed, &[37, 10], 5.0);
            let v = logits(seed + 100, &[37, 10], 9.0);
            let new = value_and_grad(&z, |z| soft_term(z, &v, t, form).unwrap());
            let old = value_and_grad(&z, |z| old_single(form, z, &v, t));
            assert!(new.0.equal(&old.0), "{form:?} T={t}: value");
            assert!(new.1.equal(&old.1), "{form:?} T={t}: gradient");
        }
    }
}

#[test]
fn packed_forms_are_bit_identical_to_the_old_code() {
    for form in OLD {
        let temps = [1.0, 4.0, 20.0];
        let weights: Vec<KdWeights> = temps
            .iter()
            .map(|&t| KdWeights {
                temperature: t,
                alpha: 0.9,
                beta: 0.1,
                soft_loss: form,
                t2_scaling: true,
                ..KdWeights::hard_only()
            })
            .collect();
        let z = logits(7, &[3, 37, 10], 5.0);
        let v = logits(8, &[3, 37, 10], 9.0);
        let labels = Tensor::randint(10, [3, 37], (Kind::Int64, tch::Device::Cpu));
        let temp = Tensor::from_slice(&temps)
            .to_kind(Kind::Float)
            .view([3, 1, 1]);
        let new = value_and_grad(&z, |z| {
            packed_distillation_loss(z, &v, &labels, &weights)
                .unwrap()
                .soft
                .sum(None::<Kind>)
        });
        let old = value_and_grad(&z, |z| old_packed(form, z, &v, &temp).sum(None::<Kind>));
        assert!(new.0.equal(&old.0), "{form:?}: value");
        assert!(new.1.equal(&old.1), "{form:?}: gradient");
    }
}

#[test]
fn the_registry_names_match_the_serde_names() {
    use serde::de::{value::StrDeserializer, IntoDeserializer};
    for &form in SoftLoss::ALL {
        let d: StrDeserializer<'_, serde::de::value::Error> = form.as_str().into_deserializer();
        let parsed: SoftLoss = serde::Deserialize::deserialize(d).unwrap();
        assert_eq!(parsed, form);
    }
}
