//! Decoupled knowledge distillation (Zhao et al. 2022, "Decoupled Knowledge Distillation"), as
//! mdistiller writes it: the tempered softmaxes are split into the target class and the rest.
//! TCKD is the KL divergence of the binary distributions `(p_t, 1 - p_t)`; NCKD the KL divergence
//! of the distributions over the non-target classes (the target logit pushed down by 1000 before
//! the softmax). Both are summed over classes and averaged over the batch; `L_soft = tckd * TCKD
//! + nckd * NCKD`, and `t2_scaling` multiplies it by `T^2` as mdistiller does. The warm-up
//! (`min(epoch / warmup, 1)` on the whole term, 1-based epochs) is applied by
//! [`crate::KdWeights::at_epoch`]. With `kd.beta` (the CE weight) 1 and `kd.alpha` 1 this is
//! mdistiller's `CE + min(epoch / warmup, 1) * dkd_loss`.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{non_negative, Objective, ObjectiveParams, ParamError};
use crate::{KdWeights, LossError, Targets};

pub(super) struct Dkd;

/// DKD's own weights and warm-up (mdistiller's CIFAR defaults: 1, 8, 20 epochs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DkdWeights {
    /// Weight of the target-class term (the paper's alpha).
    pub tckd: f64,
    /// Weight of the non-target-class term (the paper's beta).
    pub nckd: f64,
    /// Epochs over which the soft term ramps up linearly from `1 / warmup` (0: none).
    pub warmup: u32,
}

impl ObjectiveParams for DkdWeights {
    fn check(&self) -> Result<(), ParamError> {
        non_negative("tckd", self.tckd)?;
        non_negative("nckd", self.nckd)?;
        Ok(())
    }
}

impl Default for DkdWeights {
    fn default() -> Self {
        DkdWeights {
            tckd: 1.0,
            nckd: 8.0,
            warmup: 20,
        }
    }
}

impl Objective for Dkd {
    fn tempered(&self) -> bool {
        true
    }

    fn reduction(&self) -> &'static str {
        "sum over classes, mean over batch"
    }

    fn formula(&self, w: &KdWeights) -> String {
        let d = w.params.dkd.unwrap_or_default();
        format!(
            "({} * TCKD + {} * NCKD) at T = {}",
            d.tckd, d.nckd, w.temperature
        )
    }

    fn soft(
        &self,
        student: &Tensor,
        targets: &Targets,
        w: &KdWeights,
    ) -> Result<Tensor, LossError> {
        let d = w.params.dkd.unwrap_or_default();
        let labels = targets.labels("DKD")?;
        let classes = *student.size().last().unwrap_or(&0);
        let gt = labels.f_one_hot(classes)?.to_kind(student.kind());
        let zs = targets.student_tempered(student);
        let zt = targets.teacher_tempered("dkd")?;
        let others = gt.ones_like() - &gt;
        let split = |p: &Tensor| -> Result<Tensor, LossError> {
            let target = (p * &gt).f_sum_dim_intlist(-1, true, None::<Kind>)?;
            let other = (p * &others).f_sum_dim_intlist(-1, true, None::<Kind>)?;
            Ok(Tensor::f_cat(&[target, other], -1)?)
        };
        let bs = split(&zs.f_softmax(-1, student.kind())?)?;
        let bt = split(&zt.f_softmax(-1, student.kind())?)?;
        // KL(target || input) as torch's kl_div computes it: xlogy(t, t) - t * log(input).
        let tckd = targets.class_sum_batch_mean(bt.f_xlogy(&bt)? - &bt * bs.f_log()?)?;
        let log_qs = (&zs - &gt * 1000.0).f_log_softmax(-1, student.kind())?;
        let pt = (&zt - &gt * 1000.0).f_softmax(-1, student.kind())?;
        let nckd = targets.class_sum_batch_mean(pt.f_xlogy(&pt)? - &pt * log_qs)?;
        Ok(tckd * d.tckd + nckd * d.nckd)
    }

    fn packs(&self) -> bool {
        false
    }

    fn recipe_weights(&self) -> Option<(f64, f64)> {
        Some((1.0, 1.0))
    }

    fn recipe(&self) -> &'static str {
        "mdistiller's DKD recipe: CE + DKD, each weighted 1 (configs/cifar100/dkd)"
    }

    fn warmup(&self, w: &KdWeights) -> u32 {
        w.params.dkd.unwrap_or_default().warmup
    }
}
