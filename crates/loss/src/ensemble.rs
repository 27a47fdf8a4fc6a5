//! Distillation from an ensemble of teachers (Hinton, Vinyals & Dean 2015, section 4): the soft
//! targets at T are the members' softened probabilities averaged, optionally weighted,
//! `p^T = sum_m w_m softmax(v_m / T)`, as the paper's ensembles average their predictions. The
//! other rule, the geometric mean (the members' logits averaged, then softened), is a single
//! teacher's logits to every objective: [`geometric_logits`] makes them, and any loss of this
//! crate takes them.

use tch::{Kind, Tensor};

use crate::{
    check_pair, check_temperature, smoothed_cross_entropy, KdLoss, KdWeights, LossError,
    PackedKdLoss, PackedWeights, Targets,
};

/// The members' weights as given, checked: M of them, finite, >= 0, summing to 1 (within 1e-9).
fn check_weights(weights: &[f64], members: i64) -> Result<(), LossError> {
    let sum: f64 = weights.iter().sum();
    if weights.len() as i64 != members
        || weights.iter().any(|w| !w.is_finite() || *w < 0.0)
        || (sum - 1.0).abs() > 1e-9
    {
        return Err(LossError::Shape {
            what: "ensemble weights",
            expected: format!("{members} finite weights >= 0 summing to 1"),
            got: vec![weights.len() as i64],
        });
    }
    Ok(())
}

/// `[M, rest...]` members whose every member has `rest` = `shape`.
fn check_members(members: &Tensor, shape: &[i64]) -> Result<i64, LossError> {
    let size = members.size();
    match size.split_first() {
        Some((&m, rest)) if m > 0 && rest == shape => Ok(m),
        _ => Err(LossError::Shape {
            what: "ensemble logits",
            expected: format!(
                "[members, {}]",
                shape
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            got: size,
        }),
    }
}

/// The ensemble's soft targets `p^T`, `[batch, classes]` from members `[M, batch, classes]`.
pub fn ensemble_targets(members: &Tensor, weights: &[f64], t: f64) -> Result<Tensor, LossError> {
    check_temperature(t)?;
    let m = *members.size().first().unwrap_or(&0);
    check_weights(weights, m)?;
    if members.dim() != 3 {
        return Err(LossError::Shape {
            what: "ensemble logits",
            expected: "[members, batch, classes]".into(),
            got: members.size(),
        });
    }
    Targets::single(members, t).mixture(weights)?.probs()
}

/// The geometric-mean rule's teacher: the members' logits `[M, ...]` averaged with `weights`.
pub fn geometric_logits(members: &Tensor, weights: &[f64]) -> Result<Tensor, LossError> {
    let m = *members.size().first().unwrap_or(&0);
    check_weights(weights, m)?;
    let mut shape = vec![m];
    shape.extend(std::iter::repeat_n(1, members.dim() - 1));
    let w = Tensor::from_slice(weights)
        .to_kind(members.kind())
        .to_device(members.device())
        .view(shape.as_slice());
    Ok((members * w).f_sum_dim_intlist([0i64].as_slice(), false, None::<Kind>)?)
}

/// [`crate::distillation_loss_smoothed`] with an ensemble averaged in probability for a
/// teacher: `members: [M, batch, classes]`, `weights`: M of them summing to 1.
pub fn ensemble_distillation_loss(
    student: &Tensor,
    members: &Tensor,
    weights: &[f64],
    labels: &Tensor,
    w: &KdWeights,
    eps: f64,
) -> Result<KdLoss, LossError> {
    w.validate()?;
    let m = check_members(members, &student.size())?;
    check_weights(weights, m)?;
    check_pair(student, &members.get(0))?;
    check_temperature(w.temperature)?;
    let targets = Targets::single(members, w.temperature)
        .standardised(w.standardise)
        .with_labels(labels)
        .mixture(weights)?;
    let soft = w.soft_loss.objective().soft(student, &targets, w)?;
    let hard = smoothed_cross_entropy(student, labels, eps)?;
    let total = &soft * (w.alpha * w.soft_scale()) + &hard * w.beta;
    Ok(KdLoss { total, soft, hard })
}

/// [`crate::packed_distillation_loss_with`] with an ensemble averaged in probability for a
/// teacher: `members: [M, K, batch, classes]`.
pub fn packed_ensemble_distillation_loss(
    student: &Tensor,
    members: &Tensor,
    ensemble: &[f64],
    labels: &Tensor,
    weights: &PackedWeights,
) -> Result<PackedKdLoss, LossError> {
    let m = check_members(members, &student.size())?;
    check_weights(ensemble, m)?;
    let targets = Targets::packed(members, weights.temperature.shallow_clone())
        .with_labels(labels)
        .mixture(ensemble)?;
    targets.packed_loss(student, labels, weights)
}
