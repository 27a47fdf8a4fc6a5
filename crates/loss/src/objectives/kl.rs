//! `KL(p^T || q^T) = sum_i p_i^T (log p_i^T - log q_i^T)`, averaged over the batch (PyTorch's
//! `kl_div(..., reduction="batchmean")`): the CE form minus the teacher's entropy, so the same
//! gradient and a lower value.

use tch::Tensor;

use super::Objective;
use crate::{KdWeights, LossError, Targets};

pub(super) struct Kl;

impl Objective for Kl {
    fn tempered(&self) -> bool {
        true
    }

    fn reduction(&self) -> &'static str {
        "sum over classes, mean over batch"
    }

    fn formula(&self, w: &KdWeights) -> String {
        let t = w.temperature;
        format!("KL(p_T || q_T) at T = {t}")
    }

    fn soft(&self, student: &Tensor, targets: &Targets, _w: &KdWeights) -> Result<Tensor, LossError> {
        let log_q = targets.student_log_probs(student)?;
        let log_p = targets.log_probs()?;
        let p = log_p.exp();
        targets.class_sum_batch_mean(p * (log_p - log_q))
    }
}
