//! The `kd:` block: the objective, its weights and its own keys (declared with the objective in
//! the loss crate), checked and filled with the defaults below.

use kd_loss::{KdWeights, SoftLoss};

use super::checks::check_prob;
use super::{invalid, parse_enum, ConfigError, RawKd};

/// `kd.temperature` when unset.
pub const DEFAULT_TEMPERATURE: f64 = 4.0;
/// `kd.alpha` when neither it nor `kd.beta` is set (and the objective has no recipe of its own):
/// the soft term's share, Hinton's "considerably lower weight" on the hard targets.
pub const DEFAULT_ALPHA: f64 = 0.9;

/// The `kd:` block resolved: defaults filled, every value checked.
pub(super) fn resolve(raw: &RawKd) -> Result<KdWeights, ConfigError> {
    let temperature = raw.temperature.unwrap_or(DEFAULT_TEMPERATURE);
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(invalid(
            "kd.temperature",
            format!("must be > 0, got {temperature}"),
        ));
    }
    let soft_loss = match raw.soft_loss.as_deref() {
        None => SoftLoss::Ce,
        Some(s) => parse_enum("kd.soft_loss".into(), "soft loss", s, SoftLoss::ALL)?,
    };
    let (alpha, beta) = match (raw.alpha, raw.beta, soft_loss.objective().recipe_weights()) {
        // An objective with a published recipe brings its weights (DKD, DIST: 1 and 1).
        (None, None, Some(recipe)) => recipe,
        _ => weights(raw)?,
    };
    let standardise = raw.standardise.unwrap_or(false);
    if standardise && !soft_loss.objective().tempered() {
        return Err(invalid(
            "kd.standardise",
            format!(
                "logit standardisation z-scores logits before the tempered softmax; \
                     soft_loss {} has none (use ce, kl, dkd or dist)",
                soft_loss.as_str()
            ),
        ));
    }
    // The objective's own block (`kd.dkd`), checked by its file in the loss crate.
    let params = raw
        .params(soft_loss)
        .map_err(|e| invalid(&e.key, e.message))?;
    Ok(KdWeights {
        temperature,
        alpha,
        beta,
        soft_loss,
        t2_scaling: raw.t2_scaling.unwrap_or(true),
        standardise,
        params,
    })
}

/// `kd.alpha` and `kd.beta` as written, defaults filled: alpha a share (0.9 unset) where
/// beta is unset (then 1 - alpha), a free weight where beta is given.
fn weights(raw: &RawKd) -> Result<(f64, f64), ConfigError> {
    // alpha is a share, 0 to 1, where beta is its complement (unset); with beta given it is
    // a free weight (logit standardisation's recipe weighs its KL term 9).
    let alpha = match (raw.alpha, raw.beta) {
        (Some(a), Some(_)) if a.is_finite() && a >= 0.0 => a,
        (Some(a), Some(_)) => {
            return Err(invalid("kd.alpha", format!("must be >= 0, got {a}")));
        }
        (a, None) => {
            let a = a.unwrap_or(DEFAULT_ALPHA);
            check_prob("kd.alpha", a, true).map_err(|_| {
                invalid(
                    "kd.alpha",
                    format!(
                        "must be in [0, 1] while kd.beta is unset (beta defaults to 1 - \
                             alpha); got {a}: set kd.beta too for a free weight"
                    ),
                )
            })?
        }
        (None, Some(_)) => DEFAULT_ALPHA,
    };
    let beta = match raw.beta {
        Some(b) if b.is_finite() && b >= 0.0 => b,
        Some(b) => return Err(invalid("kd.beta", format!("must be >= 0, got {b}"))),
        // Rounded so that 1 - 0.9 reads as 0.1 in the resolved config and the frames.
        None => ((1.0 - alpha) * 1e12).round() / 1e12,
    };
    if alpha == 0.0 && beta == 0.0 {
        return Err(invalid(
            "kd.beta",
            "alpha and beta are both 0: nothing to train on",
        ));
    }
    Ok((alpha, beta))
}
