//! The soft losses, one file each. To add one: write `objectives/NAME.rs` with a unit struct
//! implementing [`Objective`] (its maths against [`Targets`], so one student and a pack share
//! it), then its line in `objectives!` below.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::{KdWeights, LossError, Targets};

pub use dist::DistWeights;
pub use dkd::DkdWeights;

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
    /// of its own would need a column each; objectives that have them train alone).
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
}

/// The registry of soft losses, one line each (its doc comment, then `"name" =>
/// Variant(file::Unit)`): the line declares the file, the [`SoftLoss`] variant (named `name` in
/// configs, ids and records, `kd.soft_loss`) and its entry in [`SoftLoss::ALL`] and every
/// dispatch.
macro_rules! objectives {
    ($($(#[$doc:meta])* $name:literal => $variant:ident($file:ident::$unit:ident),)+) => {
        $(mod $file;)+

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
    "dkd" => Dkd(dkd::Dkd),
    /// DIST (Huang et al. 2022): `inter * (1 - mean row Pearson) + intra * (1 - mean column
    /// Pearson)` of the tempered softmaxes.
    "dist" => Dist(dist::Dist),
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
