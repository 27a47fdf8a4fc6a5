//! Issue 38: distilling from an ensemble. Golden values from PyTorch 2.13 (float64) for a
//! 3-member ensemble at T = 4, equal weights and weights (0.5, 0.3, 0.2), printed by:
//! ```python
//! import torch, torch.nn.functional as F
//! z = torch.tensor([[1.0, -2.0, 0.5, 3.0, 0.0], [0.2, 0.1, -1.5, 2.5, -0.3],
//!                   [-1.0, 4.0, 0.0, 1.0, 2.0]], dtype=torch.float64, requires_grad=True)
//! v = torch.tensor([[[2.0, -1.0, 0.0, 5.0, 1.0], [0.0, 0.5, -2.0, 1.0, 0.0], [-3.0, 6.0, 1.0, 0.5, 2.5]],
//!                   [[1.0, 0.0, 0.5, 3.0, -1.0], [2.0, -0.5, -1.0, 0.0, 0.5], [0.0, 3.0, 2.0, -1.0, 1.0]],
//!                   [[-1.0, 2.0, 0.0, 4.0, 0.0], [0.5, 1.5, -0.5, 2.0, -2.0], [-2.0, 5.0, 0.0, 3.0, 1.5]]],
//!                  dtype=torch.float64)
//! y = torch.tensor([3, 0, 1]); T = 4.0
//! for w in ([1/3, 1/3, 1/3], [0.5, 0.3, 0.2]):
//!     wt = torch.tensor(w, dtype=torch.float64).view(3, 1, 1)
//!     p = (wt * F.softmax(v / T, -1)).sum(0)            # printed: p
//!     logq = F.log_softmax(z / T, -1)
//!     ce = -(p * logq).sum(-1).mean()
//!     kl = (p * (p.log() - logq)).sum(-1).mean()
//!     total = 0.9 * T * T * ce + 0.1 * F.cross_entropy(z, y)
//!     g, = torch.autograd.grad(total, z)                # printed: ce, kl, total, g
//!     geo = (wt * v).sum(0)                             # printed: geo
//! ```

use kd_loss::*;
use tch::{Kind, Tensor};

const Z: [f64; 15] = [
    1.0, -2.0, 0.5, 3.0, 0.0, 0.2, 0.1, -1.5, 2.5, -0.3, -1.0, 4.0, 0.0, 1.0, 2.0,
];
const V: [f64; 45] = [
    2.0, -1.0, 0.0, 5.0, 1.0, 0.0, 0.5, -2.0, 1.0, 0.0, -3.0, 6.0, 1.0, 0.5, 2.5, //
    1.0, 0.0, 0.5, 3.0, -1.0, 2.0, -0.5, -1.0, 0.0, 0.5, 0.0, 3.0, 2.0, -1.0, 1.0, //
    -1.0, 2.0, 0.0, 4.0, 0.0, 0.5, 1.5, -0.5, 2.0, -2.0, -2.0, 5.0, 0.0, 3.0, 1.5,
];

/// One weighting's golden values: p, ce, kl, total, the gradient of total, the geometric mean.
struct Golden {
    weights: [f64; 3],
    p: [f64; 15],
    ce: f64,
    kl: f64,
    total: f64,
    grad: [f64; 15],
    geo: [f64; 15],
}

const GOLDEN: [Golden; 2] = [
    Golden {
        weights: [1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0],
        p: [
            0.17113301582754642,
            0.16136117948180118,
            0.1471201825831082,
            0.3804323732374321,
            0.1399532488701121,
            0.23328427871319835,
            0.21393238441614756,
            0.13931211741159036,
            0.24241715046205523,
            0.17105406899700842,
            0.08917847030708563,
            0.39923685998733105,
            0.16525747250609024,
            0.160300029082525,
            0.18602716811696807,
        ],
        ce: 1.5522387462671705,
        kl: 0.01995131024776774,
        total: 22.451304012082446,
        grad: [
            0.049102288062439485,
            -0.07493052054219024,
            0.04704039981680533,
            -0.04998828489117257,
            0.02877611755411778,
            -0.08374466035484703,
            -0.03304159598881149,
            -0.018354435310510616,
            0.13857236744071777,
            -0.003431675786548968,
            0.018956408355470668,
            -0.04584063720193049,
            -0.036293364235218895,
            0.01639568454797191,
            0.04678190853370667,
        ],
        geo: [
            0.6666666666666667,
            0.3333333333333333,
            0.16666666666666666,
            4.0,
            0.0,
            0.8333333333333333,
            0.5,
            -1.1666666666666667,
            1.0,
            -0.5,
            -1.6666666666666665,
            4.666666666666666,
            1.0,
            0.8333333333333334,
            1.6666666666666665,
        ],
    },
    Golden {
        weights: [0.5, 0.3, 0.2],
        p: [
            0.18332444489345776,
            0.14114324510696155,
            0.14279855982411682,
            0.3894595781915068,
            0.14327417198395717,
            0.2299771953509673,
            0.21224045938955266,
            0.13411525402739533,
            0.24049994823546417,
            0.18316714299662054,
            0.08348893207925277,
            0.41606196333959333,
            0.1649905256205499,
            0.14437771271216665,
            0.1910808662484374,
        ],
        ce: 1.5403003386869534,
        kl: 0.018261770510734025,
        total: 22.279390942927318,
        grad: [
            0.034472573183345914,
            -0.05066899929238269,
            0.05222634712759501,
            -0.060820930836062076,
            0.024791009817503727,
            -0.07977616032016974,
            -0.031011285956897606,
            -0.012118199249476545,
            0.1408730101126271,
            -0.01796736458608347,
            0.025783854228870112,
            -0.06603076122464516,
            -0.03597302797257043,
            0.035502464192401974,
            0.04071747077594353,
        ],
        geo: [
            1.1, -0.1, 0.15, 4.2, 0.2, 0.7, 0.4, -1.4, 0.9, -0.25, -1.9, 4.9, 1.1, 0.55, 1.85,
        ],
    },
];

fn z() -> Tensor {
    Tensor::from_slice(&Z).view([3, 5]).set_requires_grad(true)
}
fn members() -> Tensor {
    Tensor::from_slice(&V).view([3, 3, 5])
}
fn y() -> Tensor {
    Tensor::from_slice(&[3i64, 0, 1])
}
fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.flatten(0, -1)).unwrap()
}
fn close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

fn weights(form: SoftLoss) -> KdWeights {
    KdWeights {
        temperature: 4.0,
        alpha: 0.9,
        beta: 0.1,
        soft_loss: form,
        ..KdWeights::hard_only()
    }
}

#[test]
fn the_targets_losses_and_gradients_are_pytorchs() {
    for g in &GOLDEN {
        let p = ensemble_targets(&members(), &g.weights, 4.0).unwrap();
        close(&values(&p), &g.p, 1e-12, "p");
        let z = z();
        let ce = ensemble_distillation_loss(
            &z,
            &members(),
            &g.weights,
            &y(),
            &weights(SoftLoss::Ce),
            0.0,
        )
        .unwrap();
        close(&[ce.soft.double_value(&[])], &[g.ce], 1e-12, "ce");
        close(&[ce.total.double_value(&[])], &[g.total], 1e-12, "total");
        ce.total.backward();
        close(&values(&z.grad()), &g.grad, 1e-12, "grad");
        let kl = ensemble_distillation_loss(
            &z,
            &members(),
            &g.weights,
            &y(),
            &weights(SoftLoss::Kl),
            0.0,
        )
        .unwrap();
        close(&[kl.soft.double_value(&[])], &[g.kl], 1e-10, "kl");
        close(
            &values(&geometric_logits(&members(), &g.weights).unwrap()),
            &g.geo,
            1e-12,
            "geo",
        );
    }
}

/// A pack of students sees, each, what it would alone; float32 agrees to 1e-5.
#[test]
fn a_pack_sees_what_each_student_would_alone() {
    let w = [0.5, 0.3, 0.2];
    let students = Tensor::stack(&[z().detach(), z().detach() * 0.5], 0).to_kind(Kind::Float);
    let members = Tensor::stack(&[members(), members()], 1).to_kind(Kind::Float);
    let labels = Tensor::stack(&[y(), y()], 0);
    let cells = [
        weights(SoftLoss::Ce),
        KdWeights {
            temperature: 2.0,
            ..weights(SoftLoss::Ce)
        },
    ];
    let pw = PackedWeights::new(&cells, Kind::Float, tch::Device::Cpu).unwrap();
    let packed = packed_ensemble_distillation_loss(&students, &members, &w, &labels, &pw).unwrap();
    for k in 0..2 {
        let alone = ensemble_distillation_loss(
            &students.get(k),
            &members.select(1, k),
            &w,
            &y(),
            &cells[k as usize],
            0.0,
        )
        .unwrap();
        close(
            &[packed.total.double_value(&[k])],
            &[alone.total.double_value(&[])],
            1e-5,
            "packed total",
        );
    }
}

/// Objectives that read the teacher's logits are refused with the way out; bad weights and
/// shapes are named.
#[test]
fn logit_objectives_and_bad_weights_are_refused() {
    for form in [SoftLoss::MseLogits, SoftLoss::Dkd, SoftLoss::Dist] {
        let e = ensemble_distillation_loss(
            &z(),
            &members(),
            &[0.5, 0.3, 0.2],
            &y(),
            &weights(form),
            0.0,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("use soft_loss ce or kl, or the ensemble rule geometric"),
            "{e}"
        );
    }
    let bad = |w: &[f64]| {
        ensemble_distillation_loss(&z(), &members(), w, &y(), &weights(SoftLoss::Ce), 0.0)
            .unwrap_err()
            .to_string()
    };
    assert!(bad(&[0.5, 0.5]).contains("ensemble weights"));
    assert!(bad(&[0.5, 0.3, 0.3]).contains("summing to 1"));
    let e = ensemble_distillation_loss(
        &z(),
        &members().get(0),
        &[1.0],
        &y(),
        &weights(SoftLoss::Ce),
        0.0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("ensemble logits"), "{e}");
}
