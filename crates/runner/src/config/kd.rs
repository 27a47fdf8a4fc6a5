//! The `kd:` block: the objective, its weights and its own keys, checked and filled with the
//! defaults of `resolve.rs`.

use kd_loss::{KdWeights, SoftLoss};

use super::resolve::{check_prob, DEFAULT_ALPHA, DEFAULT_TEMPERATURE};
use super::{invalid, parse_enum, ConfigError, RawKd};

impl RawKd {
    pub(super) fn resolve(&self) -> Result<KdWeights, ConfigError> {
        let temperature = self.temperature.unwrap_or(DEFAULT_TEMPERATURE);
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(invalid(
                "kd.temperature",
                format!("must be > 0, got {temperature}"),
            ));
        }
        let soft_loss = match self.soft_loss.as_deref() {
            None => SoftLoss::Ce,
            Some(s) => parse_enum("kd.soft_loss".into(), "soft loss", s, SoftLoss::ALL)?,
        };
        let (alpha, beta) = match (
            self.alpha,
            self.beta,
            soft_loss.objective().recipe_weights(),
        ) {
            // An objective with a published recipe brings its weights (DKD, DIST: 1 and 1).
            (None, None, Some(recipe)) => recipe,
            _ => self.weights()?,
        };
        let standardise = self.standardise.unwrap_or(false);
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
        let weight = |key: &str, v: Option<f64>, default: f64| match v {
            Some(w) if !(w.is_finite() && w >= 0.0) => {
                Err(invalid(key, format!("must be >= 0, got {w}")))
            }
            w => Ok(w.unwrap_or(default)),
        };
        // Each objective's own keys apply to its cells only, so a grid over soft_loss may set
        // them once; other forms leave them out of their weights (and ids).
        let dkd = match (soft_loss, &self.dkd) {
            (SoftLoss::Dkd, raw) => {
                let raw = raw.clone().unwrap_or_default();
                let d = kd_loss::DkdWeights::default();
                Some(kd_loss::DkdWeights {
                    tckd: weight("kd.dkd.tckd", raw.tckd, d.tckd)?,
                    nckd: weight("kd.dkd.nckd", raw.nckd, d.nckd)?,
                    warmup: raw.warmup.unwrap_or(d.warmup),
                })
            }
            _ => None,
        };
        let dist = match (soft_loss, &self.dist) {
            (SoftLoss::Dist, raw) => {
                let raw = raw.clone().unwrap_or_default();
                let d = kd_loss::DistWeights::default();
                Some(kd_loss::DistWeights {
                    inter: weight("kd.dist.inter", raw.inter, d.inter)?,
                    intra: weight("kd.dist.intra", raw.intra, d.intra)?,
                })
            }
            _ => None,
        };
        Ok(KdWeights {
            temperature,
            alpha,
            beta,
            soft_loss,
            t2_scaling: self.t2_scaling.unwrap_or(true),
            standardise,
            dkd,
            dist,
        })
    }

    /// `kd.alpha` and `kd.beta` as written, defaults filled: alpha a share (0.9 unset) where
    /// beta is unset (then 1 - alpha), a free weight where beta is given.
    fn weights(&self) -> Result<(f64, f64), ConfigError> {
        // alpha is a share, 0 to 1, where beta is its complement (unset); with beta given it is
        // a free weight (logit standardisation's recipe weighs its KL term 9).
        let alpha = match (self.alpha, self.beta) {
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
        let beta = match self.beta {
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
}
