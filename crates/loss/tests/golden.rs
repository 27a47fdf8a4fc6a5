//! Golden values and gradients from PyTorch 2.13, and the laws the losses must obey.
//!
//! The golden numbers were printed by this snippet (float64):
//! ```python
//! import torch, torch.nn.functional as F
//! z = torch.tensor([[1.0, -2.0, 0.5, 3.0, 0.0], [0.2, 0.1, -1.5, 2.5, -0.3],
//!                   [-1.0, 4.0, 0.0, 1.0, 2.0]], dtype=torch.float64, requires_grad=True)
//! v = torch.tensor([[2.0, -1.0, 0.0, 5.0, 1.0], [0.0, 0.5, -2.0, 1.0, 0.0],
//!                   [-3.0, 6.0, 1.0, 0.5, 2.5]], dtype=torch.float64)
//! y = torch.tensor([3, 0, 1])
//! for T in (1.0, 4.0, 20.0):
//!     p = F.softmax(v / T, -1); logq = F.log_softmax(z / T, -1)
//!     ce = -(p * logq).sum(-1).mean()
//!     kl = F.kl_div(logq, F.log_softmax(v / T, -1), log_target=True, reduction="batchmean")
//!     hard = F.cross_entropy(z, y)
//!     total = 0.9 * T * T * ce + 0.1 * hard
//!     g, = torch.autograd.grad(total, z)           # printed: ce, kl, total, g
//! hard = F.cross_entropy(z, y)
//! mse = 0.5 * F.mse_loss(z, v); g, = torch.autograd.grad(mse, z)
//! T = 4.0   # t2_scaling off, alpha 0.7, beta 0.5
//! total = 0.7 * (-(F.softmax(v/T,-1) * F.log_softmax(z/T,-1)).sum(-1).mean()) + 0.5 * hard
//! g, = torch.autograd.grad(total, z)
//! ```

use kd_loss::*;
use tch::{Kind, Tensor};

const Z: [f64; 15] = [
    1.0, -2.0, 0.5, 3.0, 0.0, 0.2, 0.1, -1.5, 2.5, -0.3, -1.0, 4.0, 0.0, 1.0, 2.0,
];
const V: [f64; 15] = [
    2.0, -1.0, 0.0, 5.0, 1.0, 0.0, 0.5, -2.0, 1.0, 0.0, -3.0, 6.0, 1.0, 0.5, 2.5,
];

fn z(kind: Kind) -> Tensor {
    Tensor::from_slice(&Z)
        .view([3, 5])
        .to_kind(kind)
        .set_requires_grad(true)
}
fn v(kind: Kind) -> Tensor {
    Tensor::from_slice(&V).view([3, 5]).to_kind(kind)
}
fn y() -> Tensor {
    Tensor::from_slice(&[3i64, 0, 1])
}

fn scalar(t: &Tensor) -> f64 {
    t.double_value(&[])
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

fn grad_of(loss: &Tensor, x: &Tensor) -> Vec<f64> {
    let g = Tensor::run_backward(&[loss], &[x], false, false).remove(0);
    Vec::<f64>::try_from(g.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

struct Golden {
    t: f64,
    ce: f64,
    kl: f64,
    total: f64,
    grad: [f64; 15],
}

const GOLDEN: [Golden; 3] = [
    Golden {
        t: 1.0,
        ce: 0.804980845,
        kl: 0.1743104771,
        total: 0.8235488264,
        grad: [
            0.0215469136,
            0.0010727577,
            0.0196015883,
            -0.050147926,
            0.0079266665,
            -0.053158048,
            -0.0522588976,
            -0.0014371312,
            0.1370319668,
            -0.0301778899,
            0.0018203541,
            -0.0460354508,
            0.0031033969,
            0.0125358725,
            0.0285758273,
        ],
    },
    Golden {
        t: 4.0,
        ce: 1.4932201905,
        kl: 0.0276380635,
        total: 21.6014368094,
        grad: [
            0.0132412345,
            0.0047583173,
            0.0772768853,
            -0.1041336047,
            0.0088571676,
            -0.0426710773,
            -0.0469951311,
            0.003939612,
            0.1227609408,
            -0.0370343444,
            0.0646207844,
            -0.1488269906,
            -0.0047504121,
            0.0615852279,
            0.0273713904,
        ],
    },
    Golden {
        t: 20.0,
        ce: 1.6048208263,
        kl: 0.0012273324,
        total: 577.8345635405,
        grad: [
            6.97501e-05,
            -0.0028115229,
            0.0854333541,
            -0.0806922253,
            -0.0019993561,
            -0.0377414883,
            -0.0411222152,
            0.0104859376,
            0.1033860274,
            -0.0350082615,
            0.1184137058,
            -0.1248383627,
            -0.0373003983,
            0.0500244946,
            -0.0062994394,
        ],
    },
];

const HARD: f64 = 0.9906606584;

fn weights(t: f64, alpha: f64, beta: f64, soft_loss: SoftLoss, t2: bool) -> KdWeights {
    KdWeights {
        temperature: t,
        alpha,
        beta,
        soft_loss,
        t2_scaling: t2,
        ..KdWeights::hard_only()
    }
}

#[test]
fn soft_ce_and_kl_values_match_pytorch() {
    for g in &GOLDEN {
        let ce = soft_cross_entropy(&z(Kind::Double), &v(Kind::Double), g.t).unwrap();
        let kl = soft_kl(&z(Kind::Double), &v(Kind::Double), g.t).unwrap();
        assert_close(&[scalar(&ce)], &[g.ce], 1e-8, &format!("ce T={}", g.t));
        assert_close(&[scalar(&kl)], &[g.kl], 1e-8, &format!("kl T={}", g.t));
    }
}

#[test]
fn hard_ce_matches_pytorch() {
    let h = hard_cross_entropy(&z(Kind::Double), &y()).unwrap();
    assert_close(&[scalar(&h)], &[HARD], 1e-8, "hard");
}

#[test]
fn total_and_gradient_match_pytorch_in_float64() {
    for g in &GOLDEN {
        let zs = z(Kind::Double);
        let l = distillation_loss(
            &zs,
            &v(Kind::Double),
            &y(),
            &weights(g.t, 0.9, 0.1, SoftLoss::Ce, true),
        )
        .unwrap();
        assert_close(&[scalar(&l.total)], &[g.total], 1e-8, "total");
        assert_close(&[scalar(&l.soft)], &[g.ce], 1e-8, "logged soft");
        assert_close(&[scalar(&l.hard)], &[HARD], 1e-8, "logged hard");
        assert_close(
            &grad_of(&l.total, &zs),
            &g.grad,
            1e-8,
            &format!("grad T={}", g.t),
        );
    }
}

#[test]
fn total_and_gradient_match_pytorch_in_float32_to_1e5() {
    for g in &GOLDEN {
        let zs = z(Kind::Float);
        let l = distillation_loss(
            &zs,
            &v(Kind::Float),
            &y(),
            &weights(g.t, 0.9, 0.1, SoftLoss::Ce, true),
        )
        .unwrap();
        assert_close(&[scalar(&l.total)], &[g.total], 1e-5, "total f32");
        assert_close(&grad_of(&l.total, &zs), &g.grad, 1e-5, "grad f32");
    }
}

#[test]
fn unscaled_total_matches_pytorch() {
    let zs = z(Kind::Double);
    let l = distillation_loss(
        &zs,
        &v(Kind::Double),
        &y(),
        &weights(4.0, 0.7, 0.5, SoftLoss::Ce, false),
    )
    .unwrap();
    assert_close(&[scalar(&l.total)], &[1.5405844625], 1e-8, "total");
    let want = [
        0.018177067,
        0.0011042435,
        0.0143910574,
        -0.0405531006,
        0.0068807326,
        -0.1540922262,
        0.0095040608,
        0.0025715754,
        0.1359147716,
        0.0061018183,
        0.0040602233,
        -0.0358988743,
        0.0022670019,
        0.0097837897,
        0.0197878594,
    ];
    assert_close(&grad_of(&l.total, &zs), &want, 1e-8, "grad");
}

#[test]
fn logit_mse_matches_pytorch() {
    let zs = z(Kind::Double);
    let l = logit_mse(&zs, &v(Kind::Double)).unwrap();
    assert_close(&[scalar(&l)], &[0.6513333333], 1e-8, "mse");
    let want = [
        -0.0666666667,
        -0.0666666667,
        0.0333333333,
        -0.1333333333,
        -0.0666666667,
        0.0133333333,
        -0.0266666667,
        0.0333333333,
        0.1,
        -0.02,
        0.1333333333,
        -0.1333333333,
        -0.0666666667,
        0.0333333333,
        -0.0333333333,
    ];
    assert_close(&grad_of(&l, &zs), &want, 1e-8, "grad mse");
}

#[test]
fn ce_and_kl_forms_have_equal_gradients_but_differ_by_teacher_entropy() {
    for t in [0.5, 1.0, 3.0, 10.0] {
        let (z1, z2) = (z(Kind::Double), z(Kind::Double));
        let ce = soft_cross_entropy(&z1, &v(Kind::Double), t).unwrap();
        let kl = soft_kl(&z2, &v(Kind::Double), t).unwrap();
        assert_close(&grad_of(&ce, &z1), &grad_of(&kl, &z2), 1e-12, "grads");
        let p = tempered_softmax(&v(Kind::Double), t).unwrap();
        let entropy = scalar(&-(&p * p.log()).sum(Kind::Double)) / 3.0;
        assert_close(&[scalar(&ce) - scalar(&kl)], &[entropy], 1e-10, "ce - kl");
    }
}

#[test]
fn alpha_zero_is_plain_cross_entropy() {
    for form in [SoftLoss::Ce, SoftLoss::Kl, SoftLoss::MseLogits] {
        let (z1, z2) = (z(Kind::Double), z(Kind::Double));
        let l = distillation_loss(
            &z1,
            &v(Kind::Double),
            &y(),
            &weights(7.0, 0.0, 1.0, form, true),
        )
        .unwrap();
        let ce = -z2
            .log_softmax(-1, Kind::Double)
            .gather(1, &y().unsqueeze(1), false)
            .mean(Kind::Double);
        assert_close(&[scalar(&l.total)], &[scalar(&ce)], 1e-12, "value");
        assert_close(&grad_of(&l.total, &z1), &grad_of(&ce, &z2), 1e-12, "grad");
    }
}

#[test]
fn soft_gradient_is_q_minus_p_over_t() {
    for t in [1.0, 2.0, 8.0] {
        let zs = z(Kind::Double);
        let ce = soft_cross_entropy(&zs, &v(Kind::Double), t).unwrap();
        let q = tempered_softmax(&zs.detach(), t).unwrap();
        let p = tempered_softmax(&v(Kind::Double), t).unwrap();
        // The loss is a batch mean over 3 samples.
        let want = (q - p) / (t * 3.0);
        let want = Vec::<f64>::try_from(want.flatten(0, -1)).unwrap();
        assert_close(&grad_of(&ce, &zs), &want, 1e-12, &format!("T={t}"));
    }
}

#[test]
fn large_t_soft_gradient_approaches_logit_matching_for_zero_mean_logits() {
    let center = |x: Tensor| &x - x.mean_dim(-1, true, None::<Kind>);
    // q - p = (z - v) / (N T) + O(1 / T^2), so after the T^2 scaling the gap shrinks like 1/T.
    let mut errs = Vec::new();
    for t in [10.0, 100.0, 1000.0] {
        let z1 = center(z(Kind::Double).detach()).set_requires_grad(true);
        let z2 = center(z(Kind::Double).detach()).set_requires_grad(true);
        let vv = center(v(Kind::Double));
        let soft = soft_cross_entropy(&z1, &vv, t).unwrap() * (t * t);
        let mse = logit_mse(&z2, &vv).unwrap();
        let (g1, g2) = (grad_of(&soft, &z1), grad_of(&mse, &z2));
        let err = g1
            .iter()
            .zip(&g2)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        errs.push(err);
    }
    for w in errs.windows(2) {
        let ratio = w[0] / w[1];
        assert!(
            (ratio - 10.0).abs() < 1.0,
            "10x larger T should shrink the gap ~10x: {errs:?}"
        );
    }
    assert!(
        errs[2] < 1e-3,
        "at T=1000 the gradients differ by {}",
        errs[2]
    );
}

#[test]
fn t2_scaling_keeps_soft_gradients_comparable_across_t() {
    // Unscaled, the soft gradient shrinks like 1/T^2; scaled, it approaches a constant.
    let norm = |t: f64, scale: bool| {
        let zs = z(Kind::Double);
        let l = distillation_loss(
            &zs,
            &v(Kind::Double),
            &y(),
            &weights(t, 1.0, 0.0, SoftLoss::Ce, scale),
        )
        .unwrap();
        grad_of(&l.total, &zs)
            .iter()
            .map(|g| g * g)
            .sum::<f64>()
            .sqrt()
    };
    let (s10, s40) = (norm(10.0, true), norm(40.0, true));
    assert!((s10 / s40 - 1.0).abs() < 0.1, "scaled norms {s10} vs {s40}");
    let (u10, u40) = (norm(10.0, false), norm(40.0, false));
    assert!(
        (u10 / u40 - 16.0).abs() < 1.6,
        "unscaled ratio {}",
        u10 / u40
    );
}

#[test]
fn mse_logits_ignores_temperature_and_scaling() {
    let a = distillation_loss(
        &z(Kind::Double),
        &v(Kind::Double),
        &y(),
        &weights(1.0, 0.5, 0.5, SoftLoss::MseLogits, true),
    )
    .unwrap();
    let b = distillation_loss(
        &z(Kind::Double),
        &v(Kind::Double),
        &y(),
        &weights(9.0, 0.5, 0.5, SoftLoss::MseLogits, true),
    )
    .unwrap();
    assert_close(
        &[scalar(&a.total)],
        &[0.5 * 0.6513333333 + 0.5 * HARD],
        1e-8,
        "total",
    );
    assert_close(&[scalar(&a.total)], &[scalar(&b.total)], 1e-12, "T-free");
}

#[test]
fn tempered_softmax_limits() {
    let p = tempered_softmax(&v(Kind::Double), 1e6).unwrap();
    assert!(p.allclose(
        &Tensor::full([3, 5], 0.2, (Kind::Double, tch::Device::Cpu)),
        1e-5,
        1e-5,
        false
    ));
    let p = tempered_softmax(&v(Kind::Double), 1e-3).unwrap();
    let argmax = Vec::<i64>::try_from(p.argmax(-1, false)).unwrap();
    assert_eq!(argmax, [3, 3, 1]);
    let top = Vec::<f64>::try_from(p.amax(-1, false)).unwrap();
    assert!(
        top.iter().all(|&m| m > 1.0 - 1e-12),
        "T -> 0 gives one-hot: {top:?}"
    );
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let zs = z(Kind::Float);
    for t in [0.0, -1.0, f64::NAN] {
        let e = soft_cross_entropy(&zs, &v(Kind::Float), t)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("temperature must be finite and > 0"), "{e}");
    }
    let e = soft_kl(
        &zs,
        &Tensor::zeros([3, 4], (Kind::Float, tch::Device::Cpu)),
        2.0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("teacher logits: expected shape [3, 5]"), "{e}");
    let e = hard_cross_entropy(&zs, &Tensor::from_slice(&[1i64, 2]))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("labels: expected shape [3]"), "{e}");
    let e = distillation_loss(
        &zs,
        &v(Kind::Float),
        &y(),
        &weights(2.0, -0.1, 1.0, SoftLoss::Ce, true),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("alpha must be finite and >= 0"), "{e}");
    let e = tempered_softmax(&Tensor::zeros([5], (Kind::Float, tch::Device::Cpu)), 1.0)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("logits: expected shape [batch, classes]"),
        "{e}"
    );
}

/// The packed loss of K students equals, per student, `distillation_loss` of its slice (which
/// the tests above tie to PyTorch), value and gradient, for every soft-loss form.
#[test]
fn packed_loss_is_the_per_student_loss() {
    tch::manual_seed(0);
    let k = 3;
    let zs =
        (Tensor::randn([k, 6, 5], (Kind::Double, tch::Device::Cpu)) * 3.0).set_requires_grad(true);
    let vs = Tensor::randn([k, 6, 5], (Kind::Double, tch::Device::Cpu)) * 4.0;
    let ys = Tensor::randint(5, [k, 6], (Kind::Int64, tch::Device::Cpu));
    for form in [SoftLoss::Ce, SoftLoss::Kl, SoftLoss::MseLogits] {
        let ws = [
            KdWeights::hard_only(),
            weights(4.0, 0.9, 0.1, form, true),
            weights(0.5, 0.3, 0.7, form, false),
        ];
        let ws: Vec<KdWeights> = ws
            .iter()
            .map(|w| KdWeights {
                soft_loss: form,
                ..*w
            })
            .collect();
        let packed = packed_distillation_loss(&zs, &vs, &ys, &ws).unwrap();
        let grad = Tensor::run_backward(&[packed.total.sum(Kind::Double)], &[&zs], false, false);
        for (i, w) in ws.iter().enumerate() {
            let zi = zs.get(i as i64).detach().set_requires_grad(true);
            let one = distillation_loss(&zi, &vs.get(i as i64), &ys.get(i as i64), w).unwrap();
            let what = format!("{form:?} student {i}");
            assert_close(
                &[
                    scalar(&packed.total.get(i as i64)),
                    scalar(&packed.soft.get(i as i64)),
                    scalar(&packed.hard.get(i as i64)),
                ],
                &[scalar(&one.total), scalar(&one.soft), scalar(&one.hard)],
                1e-12,
                &what,
            );
            let g = grad_of(&one.total, &zi);
            let gp: Vec<f64> = Vec::<f64>::try_from(&grad[0].get(i as i64).flatten(0, -1)).unwrap();
            assert_close(&gp, &g, 1e-12, &what);
        }
    }
    let e = packed_distillation_loss(&zs, &vs, &ys, &[KdWeights::hard_only()])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("packed logits: expected shape [1, batch, classes]"),
        "{e}"
    );
}
