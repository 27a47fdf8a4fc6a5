//! The soft losses, one file each. To add one: write `objectives/NAME.rs` with a unit struct
//! implementing [`Objective`] (its maths against [`Targets`], so one student and a pack share
//! it), then its line in `objectives!` below. An objective with parameters of its own (DKD's
//! weights and warm-up) declares their type in the same file and names it on its line: the
//! type is the config block `kd.NAME` (`#[serde(default, deny_unknown_fields)]`, so a block
//! that sets some keys takes the defaults for the rest) and the resolved value in
//! [`KdWeights::params`], checked by [`ObjectiveParams::check`]. Nothing outside this folder
//! names an objective or its parameters.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::{KdWeights, LossError, Targets};

/// One way of comparing the student with its teacher.
pub trait Objective: Sync {
    /// Whether `T` enters the loss; only then does `t2_scaling` multiply it by `T^2`.
    fn tempered(&self) -> bool;
    /// How the term is reduced over classes and the batch, for the report.
    fn reduction(&self) -> &'static str;
    /// The term written out with its own parameters (`w`'s), e.g. `CE(p_T, q_T) at T = 4`.
    fn formula(&self, w: &KdWeights) -> String;
    /// The unscaled soft term: a scalar for one student, `[K]` for K packed students; `w` holds
    /// the objective's own parameters (the first student's, for a pack).
    fn soft(&self, student: &Tensor, targets: &Targets, w: &KdWeights)
        -> Result<Tensor, LossError>;
    /// Whether K students with this objective can train as one pack (per-student parameters
    /// of its own would need a column each: whatever this says, students whose objective has
    /// parameters train alone, see [`KdWeights::packs`]).
    fn packs(&self) -> bool {
        true
    }
    /// The soft and hard weights `(alpha, beta)` of the objective's published recipe, taken
    /// when a config sets neither `kd.alpha` nor `kd.beta`; `None`: Hinton's share (alpha 0.9,
    /// beta 1 - alpha), the config's default.
    fn recipe_weights(&self) -> Option<(f64, f64)> {
        None
    }
    /// Where [`Objective::recipe_weights`] come from, for the resolved config and the plan.
    fn recipe(&self) -> &'static str {
        ""
    }
    /// The epochs over which the soft term ramps up (see [`KdWeights::at_epoch`]); 0: none.
    fn warmup(&self, _w: &KdWeights) -> u32 {
        0
    }
}

/// An objective's own parameters: the `kd.NAME` block of a config and its resolved value.
pub trait ObjectiveParams: Default {
    /// Refuse values the objective cannot use, naming the key within the block.
    fn check(&self) -> Result<(), ParamError>;
}

/// A parameter an objective refuses: `key` within its block (`nckd`), and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamError {
    pub key: String,
    pub message: String,
}

/// `Ok` where `value` is a finite weight >= 0, else the error for `key`.
pub fn non_negative(key: &str, value: f64) -> Result<(), ParamError> {
    if value.is_finite() && value >= 0.0 {
        return Ok(());
    }
    Err(ParamError {
        key: key.to_string(),
        message: format!("must be >= 0, got {value}"),
    })
}

/// The registry of soft losses, one line each (its doc comment, then `"name" =>
/// Variant(file::Unit)`, then `{ Params }` where the objective has parameters of its own): the
/// line declares the file, the [`SoftLoss`] variant (named `name` in configs, ids and records,
/// `kd.soft_loss`), its entry in [`SoftLoss::ALL`] and every dispatch, and its parameters' key
/// `kd.name` in [`RawKd`] and [`Params`].
macro_rules! objectives {
    ($($(#[$doc:meta])* $name:literal => $variant:ident($file:ident::$unit:ident)
        $({ $params:ident })?,)+) => {
        $(mod $file;)+
        $($(pub use $file::$params;)?)+

        /// Which soft loss compares the student with the teacher.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
        pub enum SoftLoss {
            $($(#[$doc])* #[serde(rename = $name)] $variant,)+
        }

        impl SoftLoss {
            /// Every soft loss, in registry order.
            pub const ALL: &'static [SoftLoss] = &[$(SoftLoss::$variant),+];

            /// The code of the form.
            pub fn objective(self) -> &'static dyn Objective {
                match self {
                    $(SoftLoss::$variant => &$file::$unit,)+
                }
            }

            /// The name in configs, ids and records.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(SoftLoss::$variant => $name,)+
                }
            }
        }

        /// The resolved parameters of the objective in use (at most one is set; the others
        /// are left out of the serialised weights, so of every id). Flattened into
        /// [`KdWeights`]: `"dkd": {...}` beside `"soft_loss": "dkd"`, as it always was.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
        pub struct Params {
            $($(
                #[serde(rename = $name, default, skip_serializing_if = "Option::is_none")]
                pub $file: Option<$params>,
            )?)+
        }

        /// The `kd:` block of a config, as written: the weights, the form and each
        /// objective's own block (`kd.NAME`, used where `soft_loss` is NAME, so a grid over
        /// soft_loss may set them once). The runner resolves it; unknown keys are errors.
        #[derive(Debug, Clone, Default, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct RawKd {
            pub temperature: Option<f64>,
            pub alpha: Option<f64>,
            pub beta: Option<f64>,
            pub soft_loss: Option<String>,
            pub t2_scaling: Option<bool>,
            pub standardise: Option<bool>,
            $($(
                #[serde(rename = $name, default, skip_serializing_if = "Option::is_none")]
                pub $file: Option<$params>,
            )?)+
        }

        impl RawKd {
            /// The parameters of `soft_loss` as written (defaults where its block or a key is
            /// absent), checked; an error names the key `kd.NAME.KEY`. The blocks of other
            /// objectives are not used.
            #[allow(unreachable_patterns)]
            pub fn params(&self, soft_loss: SoftLoss) -> Result<Params, ParamError> {
                let mut params = Params::default();
                match soft_loss {
                    $($(SoftLoss::$variant => {
                        let p: $params = self.$file.clone().unwrap_or_default();
                        p.check().map_err(|e| ParamError {
                            key: format!("kd.{}.{}", $name, e.key),
                            ..e
                        })?;
                        params.$file = Some(p);
                    })?)+
                    _ => {}
                }
                Ok(params)
            }
        }
    };
}

objectives! {
    /// Hinton's form: `-sum_i p_i^T log q_i^T`.
    "ce" => Ce(ce::Ce),
    /// `KL(p^T || q^T)`: the CE form minus the teacher's entropy; same gradient, lower value.
    "kl" => Kl(kl::Kl),
    /// Caruana's logit matching: `0.5 * mean_i (z_i - v_i)^2` per sample; ignores T.
    "mse_logits" => MseLogits(mse_logits::MseLogits),
    /// Decoupled KD (Zhao et al. 2022): `tckd * TCKD + nckd * NCKD`, with a warm-up.
    "dkd" => Dkd(dkd::Dkd) { DkdWeights },
    /// DIST (Huang et al. 2022): `inter * (1 - mean row Pearson) + intra * (1 - mean column
    /// Pearson)` of the tempered softmaxes.
    "dist" => Dist(dist::Dist) { DistWeights },
}

#[cfg(test)]
mod tests {
    use super::SoftLoss;

    /// Configs, ids and records name a form by its registry name, as before the registry.
    #[test]
    fn forms_are_named_as_they_always_were() {
        let names: Vec<&str> = SoftLoss::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(names, ["ce", "kl", "mse_logits", "dkd", "dist"]);
        for &form in SoftLoss::ALL {
            let json = serde_json::to_string(&form).unwrap();
            assert_eq!(json, format!("\"{}\"", form.as_str()));
            assert_eq!(serde_json::from_str::<SoftLoss>(&json).unwrap(), form);
        }
    }
}
