//! loss: the distillation objectives, as pure functions over tensors.
//!
//! Owns the tempered softmax, the soft losses (Hinton's cross-entropy form, the KL form and
//! Caruana's logit matching), the hard cross-entropy and their weighted sum. It must not do IO,
//! choose devices, touch RNG state or know about models and datasets. It declares the config's
//! `kd:` block ([`RawKd`]), as that block holds each objective's own keys; the runner resolves
//! it.
//!
//! # Convention
//! `total = alpha * s * L_soft + beta * L_hard`, where **alpha always weights the soft term**,
//! `s = T^2` when `t2_scaling` is on (default) and `1` otherwise, `L_hard = CE(labels, softmax(z))`
//! at T = 1, and every term is a mean over the batch. The value reported as `soft` is the unscaled
//! `L_soft` in the chosen form (`ce`: `-sum p_T log q_T`; `kl`: `sum p_T (log p_T - log q_T)`;
//! `mse_logits`: `0.5 * mean_i (z_i - v_i)^2`, for which `T` and the scaling do not apply).
//!
//! # Layout
//! One file per soft loss in `objectives/` (see its docs for adding one), written once against
//! [`Targets`], which serves one student and K packed students alike; this file holds the
//! weights, the hard term and their sum.

mod ensemble;
mod objectives;
mod targets;

// The registry: SoftLoss, Objective, Params, RawKd and each objective's parameter type.
pub use ensemble::{
    ensemble_distillation_loss, ensemble_targets, geometric_logits,
    packed_ensemble_distillation_loss,
};
pub use objectives::*;
pub use targets::Targets;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Reduction, Tensor};

/// Everything that can go wrong before any maths is done.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        what: &'static str,
        expected: String,
        got: Vec<i64>,
    },
    #[error("temperature must be finite and > 0, got {0}")]
    Temperature(f64),
    #[error("{name} must be finite and >= 0, got {value}")]
    Weight { name: &'static str, value: f64 },
    #[error(
        "soft_loss {0} reads the teacher's logits, and an ensemble averaged in probability has \
         none: use soft_loss ce or kl, or the ensemble rule geometric (the mean of its members' \
         logits)"
    )]
    Mixture(&'static str),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// The weights and form of one distillation objective.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KdWeights {
    pub temperature: f64,
    /// Weight of the soft term.
    pub alpha: f64,
    /// Weight of the hard term.
    pub beta: f64,
    pub soft_loss: SoftLoss,
    pub t2_scaling: bool,
    /// Logit standardisation (Sun et al. 2024): z-score student and teacher logits before the
    /// tempered softmax of the soft term (the hard term keeps the raw logits). Left out of the
    /// serialised form (and so of every id) when off.
    #[serde(default, skip_serializing_if = "is_false")]
    pub standardise: bool,
    /// The objective's own parameters (`"dkd": {...}` for `soft_loss: dkd`; none for ce).
    #[serde(flatten)]
    pub params: Params,
}

fn is_false(v: &bool) -> bool {
    !*v
}

impl KdWeights {
    /// Hard targets only: alpha 0, beta 1.
    pub fn hard_only() -> Self {
        KdWeights {
            temperature: 1.0,
            alpha: 0.0,
            beta: 1.0,
            soft_loss: SoftLoss::Ce,
            t2_scaling: true,
            standardise: false,
            params: Params::default(),
        }
    }

    /// Whether students with these weights can train in a pack: their objective packs, it has
    /// no parameters of its own (a pack computes one soft term for all its members, with the
    /// first member's parameters) and logits are not standardised.
    pub fn packs(&self) -> bool {
        self.soft_loss.objective().packs() && self.params == Params::default() && !self.standardise
    }

    /// The warm-up epochs of the soft term (DKD's), 0 for none.
    pub fn warmup(&self) -> u32 {
        self.soft_loss.objective().warmup(self)
    }

    /// The weights in force in 1-based `epoch`: `alpha` times `min(epoch / warmup, 1)` during a
    /// warm-up (mdistiller's DKD), else these.
    pub fn at_epoch(&self, epoch: u32) -> KdWeights {
        let warmup = self.warmup();
        if warmup == 0 || epoch >= warmup {
            return *self;
        }
        KdWeights {
            alpha: self.alpha * (epoch as f64 / warmup as f64),
            ..*self
        }
    }

    /// The factor that multiplies `L_soft` inside `alpha * factor * L_soft`.
    pub fn soft_scale(&self) -> f64 {
        if self.t2_scaling && self.soft_loss.objective().tempered() {
            self.temperature * self.temperature
        } else {
            1.0
        }
    }

    /// How the soft term is reduced over classes and the batch.
    pub fn soft_reduction(&self) -> &'static str {
        self.soft_loss.objective().reduction()
    }

    /// The objective with the weights written out: `0.9 * T^2(=16) * CE(p_T, q_T) + 0.1 *
    /// CE(y, q_1)` for a KD trial (`kd`), `1 * CE(y, q_1)` for hard targets only.
    pub fn describe(&self, kd: bool) -> String {
        if !kd {
            return format!("{} * CE(y, q_1)", self.beta);
        }
        let mut soft = self.soft_loss.objective().formula(self);
        if self.standardise {
            soft.push_str(" on z-scored logits");
        }
        let scale = self.soft_scale();
        let scale = if scale == 1.0 {
            String::new()
        } else {
            format!("T^2 (= {scale}) * ")
        };
        let warmup = match self.warmup() {
            0 => String::new(),
            w => format!("min(epoch / {w}, 1) * "),
        };
        format!(
            "{warmup}{} * {scale}{soft} + {} * CE(y, q_1)",
            self.alpha, self.beta
        )
    }

    fn validate(&self) -> Result<(), LossError> {
        check_temperature(self.temperature)?;
        for (name, value) in [("alpha", self.alpha), ("beta", self.beta)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(LossError::Weight { name, value });
            }
        }
        Ok(())
    }
}

/// The three scalar tensors of one step. `total` carries the graph; `soft` and `hard` are the
/// unweighted terms (also differentiable).
#[derive(Debug)]
pub struct KdLoss {
    pub total: Tensor,
    pub soft: Tensor,
    pub hard: Tensor,
}

fn check_temperature(t: f64) -> Result<(), LossError> {
    if t.is_finite() && t > 0.0 {
        Ok(())
    } else {
        Err(LossError::Temperature(t))
    }
}

fn check_logits(what: &'static str, logits: &Tensor) -> Result<(i64, i64), LossError> {
    match logits.size().as_slice() {
        &[b, c] if c > 0 => Ok((b, c)),
        other => Err(LossError::Shape {
            what,
            expected: "[batch, classes]".into(),
            got: other.to_vec(),
        }),
    }
}

fn check_pair(student: &Tensor, teacher: &Tensor) -> Result<(), LossError> {
    let s = check_logits("student logits", student)?;
    let t = check_logits("teacher logits", teacher)?;
    if s != t {
        return Err(LossError::Shape {
            what: "teacher logits",
            expected: format!("[{}, {}] (the student's shape)", s.0, s.1),
            got: vec![t.0, t.1],
        });
    }
    Ok(())
}

/// Softmax of `logits / t` over the last dimension.
///
/// # Shapes
/// `logits: [batch, classes]` -> `[batch, classes]`.
pub fn tempered_softmax(logits: &Tensor, t: f64) -> Result<Tensor, LossError> {
    check_temperature(t)?;
    check_logits("logits", logits)?;
    Ok((logits / t).f_softmax(-1, logits.kind())?)
}

/// Log-softmax of `logits / t` over the last dimension.
///
/// # Shapes
/// `logits: [batch, classes]` -> `[batch, classes]`.
pub fn tempered_log_softmax(logits: &Tensor, t: f64) -> Result<Tensor, LossError> {
    check_temperature(t)?;
    check_logits("logits", logits)?;
    Ok((logits / t).f_log_softmax(-1, logits.kind())?)
}

/// Hinton's soft loss `-sum_i p_i^T log q_i^T`, averaged over the batch. Not scaled by T^2.
/// Its gradient with respect to the student logit `z_i` is `(q_i - p_i) / T` per sample.
///
/// # Shapes
/// `student, teacher: [batch, classes]` -> scalar.
pub fn soft_cross_entropy(student: &Tensor, teacher: &Tensor, t: f64) -> Result<Tensor, LossError> {
    soft_term(student, teacher, t, SoftLoss::Ce)
}

/// `KL(p^T || q^T) = sum_i p_i^T (log p_i^T - log q_i^T)`, averaged over the batch (PyTorch's
/// `kl_div(..., reduction="batchmean")`). Same gradient as [`soft_cross_entropy`].
///
/// # Shapes
/// `student, teacher: [batch, classes]` -> scalar.
pub fn soft_kl(student: &Tensor, teacher: &Tensor, t: f64) -> Result<Tensor, LossError> {
    soft_term(student, teacher, t, SoftLoss::Kl)
}

/// Caruana's logit matching, `0.5 * mean_i (z_i - v_i)^2` per sample, averaged over the batch.
/// Gradient `(z_i - v_i) / classes`: the large-T limit of `T^2 * soft_cross_entropy` for
/// zero-mean logits.
///
/// # Shapes
/// `student, teacher: [batch, classes]` -> scalar.
pub fn logit_mse(student: &Tensor, teacher: &Tensor) -> Result<Tensor, LossError> {
    soft_term(student, teacher, 1.0, SoftLoss::MseLogits)
}

/// Cross-entropy of the student at T = 1 against integer labels, averaged over the batch.
///
/// # Shapes
/// `student: [batch, classes]`, `labels: [batch]` (int64) -> scalar.
pub fn hard_cross_entropy(student: &Tensor, labels: &Tensor) -> Result<Tensor, LossError> {
    let (b, _) = check_logits("student logits", student)?;
    if labels.size() != [b] {
        return Err(LossError::Shape {
            what: "labels",
            expected: format!("[{b}]"),
            got: labels.size(),
        });
    }
    Ok(student
        .f_log_softmax(-1, student.kind())?
        .f_nll_loss::<Tensor>(labels, None, Reduction::Mean, -100)?)
}

/// Cross-entropy with label smoothing `eps` (PyTorch's `cross_entropy(..., label_smoothing=eps)`):
/// `(1 - eps) * CE(y, q_1) + eps * mean_c(-log q_1c)`, averaged over the batch; exactly
/// [`hard_cross_entropy`] at `eps = 0`.
///
/// # Shapes
/// `student: [batch, classes]`, `labels: [batch]` (int64) -> scalar.
pub fn smoothed_cross_entropy(
    student: &Tensor,
    labels: &Tensor,
    eps: f64,
) -> Result<Tensor, LossError> {
    let hard = hard_cross_entropy(student, labels)?;
    if eps == 0.0 {
        return Ok(hard);
    }
    if !(eps.is_finite() && (0.0..1.0).contains(&eps)) {
        return Err(LossError::Weight {
            name: "label_smoothing",
            value: eps,
        });
    }
    let uniform = -student
        .f_log_softmax(-1, student.kind())?
        .f_mean_dim(-1, false, None::<Kind>)?
        .f_mean(None::<Kind>)?;
    Ok(hard * (1.0 - eps) + uniform * eps)
}

/// The soft term in the chosen form, unscaled.
pub fn soft_term(
    student: &Tensor,
    teacher: &Tensor,
    t: f64,
    form: SoftLoss,
) -> Result<Tensor, LossError> {
    let w = KdWeights {
        temperature: t,
        soft_loss: form,
        ..KdWeights::hard_only()
    };
    soft_term_of(student, teacher, None, &w)
}

/// The soft term of `w`'s objective, unscaled, with the labels for objectives that need them.
fn soft_term_of(
    student: &Tensor,
    teacher: &Tensor,
    labels: Option<&Tensor>,
    w: &KdWeights,
) -> Result<Tensor, LossError> {
    check_pair(student, teacher)?;
    check_temperature(w.temperature)?;
    let mut targets = Targets::single(teacher, w.temperature).standardised(w.standardise);
    if let Some(y) = labels {
        targets = targets.with_labels(y);
    }
    w.soft_loss.objective().soft(student, &targets, w)
}

/// `total = alpha * soft_scale * L_soft + beta * L_hard` (see the crate docs).
///
/// # Shapes
/// `student, teacher: [batch, classes]`, `labels: [batch]` (int64) -> three scalars.
pub fn distillation_loss(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    w: &KdWeights,
) -> Result<KdLoss, LossError> {
    distillation_loss_smoothed(student, teacher, labels, w, 0.0)
}

/// [`distillation_loss`] with the hard term label-smoothed by `eps` ([`smoothed_cross_entropy`]).
pub fn distillation_loss_smoothed(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    w: &KdWeights,
    eps: f64,
) -> Result<KdLoss, LossError> {
    w.validate()?;
    let hard = smoothed_cross_entropy(student, labels, eps)?;
    let soft = soft_term_of(student, teacher, Some(labels), w)?;
    let total = &soft * (w.alpha * w.soft_scale()) + &hard * w.beta;
    Ok(KdLoss { total, soft, hard })
}

/// Per-student losses of K packed students, each `[K]`: `total` (carries the graph), and the
/// unweighted `soft` and `hard` terms. Student k's entries are [`distillation_loss`] of its
/// slice, up to the order of floating-point operations.
#[derive(Debug)]
pub struct PackedKdLoss {
    pub total: Tensor,
    pub soft: Tensor,
    pub hard: Tensor,
}

/// The per-student weights of a pack, checked and put on the device once (a pack's weights do
/// not change between steps, and on a GPU an upload inside a step waits for the device):
/// temperatures `[K, 1, 1]`, soft-term factors `alpha * soft_scale` and hard-term factors `beta`
/// `[K]`, in the kind of the students' logits.
#[derive(Debug)]
pub struct PackedWeights {
    k: i64,
    form: SoftLoss,
    first: KdWeights,
    temperature: Tensor,
    soft: Tensor,
    hard: Tensor,
}

impl PackedWeights {
    /// Check `weights` (one soft-loss form that packs) and upload them to `device` as `kind`.
    pub fn new(weights: &[KdWeights], kind: Kind, device: Device) -> Result<Self, LossError> {
        let Some(first) = weights.first().copied() else {
            return Err(LossError::Shape {
                what: "packed weights",
                expected: "at least one student".into(),
                got: vec![0],
            });
        };
        for w in weights {
            w.validate()?;
            if !w.packs() {
                return Err(LossError::Shape {
                    what: "packed soft_loss",
                    expected: "an objective that packs (not dkd, dist or standardised logits)"
                        .into(),
                    got: vec![],
                });
            }
            if w.soft_loss != first.soft_loss {
                return Err(LossError::Shape {
                    what: "packed soft_loss",
                    expected: format!("one form per pack ({})", first.soft_loss.as_str()),
                    got: vec![],
                });
            }
        }
        let column = |f: &dyn Fn(&KdWeights) -> f64| {
            Tensor::from_slice(&weights.iter().map(f).collect::<Vec<f64>>())
                .to_kind(kind)
                .to_device(device)
        };
        let k = weights.len() as i64;
        Ok(PackedWeights {
            k,
            form: first.soft_loss,
            first,
            temperature: column(&|w| w.temperature).view([k, 1, 1]),
            soft: column(&|w| w.alpha * w.soft_scale()),
            hard: column(&|w| w.beta),
        })
    }
}

/// The objective of K students trained as one pack, each with its own temperature and weights
/// (one soft-loss form per pack). Baselines in the pack have `alpha = 0, beta = 1`: their soft
/// term is computed and multiplied by 0, which adds exactly nothing to their gradient.
///
/// # Shapes
/// `student, teacher: [K, batch, classes]`, `labels: [K, batch]` (int64); `weights`: K of them.
/// Returns three `[K]` tensors.
pub fn packed_distillation_loss(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    weights: &[KdWeights],
) -> Result<PackedKdLoss, LossError> {
    let w = PackedWeights::new(weights, student.kind(), student.device())?;
    packed_distillation_loss_with(student, teacher, labels, &w)
}

/// [`packed_distillation_loss`] with the weights already on the device: no transfer between
/// host and device.
pub fn packed_distillation_loss_with(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    weights: &PackedWeights,
) -> Result<PackedKdLoss, LossError> {
    let shape = student.size();
    let k = weights.k;
    if shape.len() != 3 || shape[0] != k || teacher.size() != shape {
        return Err(LossError::Shape {
            what: "packed logits",
            expected: format!("[{k}, batch, classes] for student and teacher"),
            got: shape,
        });
    }
    if labels.size() != shape[..2] {
        return Err(LossError::Shape {
            what: "packed labels",
            expected: format!("[{}, {}]", shape[0], shape[1]),
            got: labels.size(),
        });
    }
    let targets = Targets::packed(teacher, weights.temperature.shallow_clone()).with_labels(labels);
    targets.packed_loss(student, labels, weights)
}

/// Cross-entropy at T = 1 of K packed students against their labels, `[K]`.
pub fn packed_hard_cross_entropy(student: &Tensor, labels: &Tensor) -> Result<Tensor, LossError> {
    Ok(-student
        .f_log_softmax(-1, student.kind())?
        .f_gather(-1, &labels.unsqueeze(-1), false)?
        .squeeze_dim(-1)
        .f_mean_dim(-1, false, None::<Kind>)?)
}
