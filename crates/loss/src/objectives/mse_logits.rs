//! Caruana's logit matching: `0.5 * mean_i (z_i - v_i)^2` per sample, averaged over the batch.
//! Gradient `(z_i - v_i) / classes`: the large-T limit of `T^2 * CE` for zero-mean logits. T
//! does not enter it, so `t2_scaling` does not apply.

use tch::Tensor;

use super::Objective;
use crate::{KdWeights, LossError, Targets};

pub(super) struct MseLogits;

impl Objective for MseLogits {
    fn tempered(&self) -> bool {
        false
    }

    fn reduction(&self) -> &'static str {
        "0.5 * mean over classes, mean over batch"
    }

    fn formula(&self, _w: &KdWeights) -> String {
        "MSE(z, v)".into()
    }

    fn soft(&self, student: &Tensor, targets: &Targets, _w: &KdWeights) -> Result<Tensor, LossError> {
        Ok(targets.mean_squared_error(student)? * 0.5)
    }
}
