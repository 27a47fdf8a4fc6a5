//! Hinton et al. 2015's soft loss: `-sum_i p_i^T log q_i^T`, summed over classes, averaged over
//! the batch. Its gradient with respect to the student logit `z_i` is `(q_i - p_i) / T`.

use tch::Tensor;

use super::Objective;
use crate::{KdWeights, LossError, Targets};

pub(super) struct Ce;

impl Objective for Ce {
    fn tempered(&self) -> bool {
        true
    }

    fn reduction(&self) -> &'static str {
        "sum over classes, mean over batch"
    }

    fn formula(&self, w: &KdWeights) -> String {
        let t = w.temperature;
        format!("CE(p_T, q_T) at T = {t}")
    }

    fn soft(&self, student: &Tensor, targets: &Targets, _w: &KdWeights) -> Result<Tensor, LossError> {
        let log_q = targets.student_log_probs(student)?;
        let p = targets.probs()?;
        targets.class_sum_batch_mean(-(p * log_q))
    }
}
