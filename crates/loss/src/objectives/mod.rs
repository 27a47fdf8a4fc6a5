//! The soft losses, one file each. To add one: write `objectives/NAME.rs` with a unit struct
//! implementing [`Objective`] (its maths against [`Targets`], so one student and a pack share
//! it), add a [`SoftLoss`] variant (and to [`SoftLoss::ALL`]) and its arm in [`SoftLoss::objective`].

mod ce;
mod kl;
mod mse_logits;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::{LossError, Targets};

/// One way of comparing the student with its teacher.
pub trait Objective: Sync {
    /// The name in configs, ids and records (`kd.soft_loss`).
    fn name(&self) -> &'static str;
    /// Whether `T` enters the loss; only then does `t2_scaling` multiply it by `T^2`.
    fn tempered(&self) -> bool;
    /// How the term is reduced over classes and the batch, for the report.
    fn reduction(&self) -> &'static str;
    /// The term written out, e.g. `CE(p_T, q_T) at T = 4`.
    fn formula(&self, t: f64) -> String;
    /// The unscaled soft term: a scalar for one student, `[K]` for K packed students.
    fn soft(&self, student: &Tensor, targets: &Targets) -> Result<Tensor, LossError>;
}

/// Which soft loss compares the student with the teacher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum SoftLoss {
    /// Hinton's form: `-sum_i p_i^T log q_i^T`.
    Ce,
    /// `KL(p^T || q^T)`: the CE form minus the teacher's entropy; same gradient, lower value.
    Kl,
    /// Caruana's logit matching: `0.5 * mean_i (z_i - v_i)^2` per sample; ignores T.
    MseLogits,
}

impl SoftLoss {
    pub const ALL: [SoftLoss; 3] = [SoftLoss::Ce, SoftLoss::Kl, SoftLoss::MseLogits];

    /// The registry: the code of each form.
    pub fn objective(self) -> &'static dyn Objective {
        match self {
            SoftLoss::Ce => &ce::Ce,
            SoftLoss::Kl => &kl::Kl,
            SoftLoss::MseLogits => &mse_logits::MseLogits,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.objective().name()
    }
}
