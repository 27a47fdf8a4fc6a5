//! DIST (Huang et al. 2022, "Knowledge Distillation from A Stronger Teacher"): the relations of
//! the tempered softmaxes `y_s = softmax(z / T)`, `y_t = softmax(v / T)`, not their values. Inter-
//! class: `1 - mean over samples of Pearson(y_s[b, :], y_t[b, :])`; intra-class: `1 - mean over
//! classes of Pearson(y_s[:, c], y_t[:, c])` across the batch; Pearson as the paper's code, the
//! cosine of the centred vectors with `1e-8` added to the norms' product. `L_soft = inter *
//! inter-class + intra * intra-class`; `t2_scaling` multiplies it by `T^2` as DIST does (its CIFAR
//! recipe: T = 4, inter = intra = 2).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{non_negative, Objective, ObjectiveParams, ParamError};
use crate::{KdWeights, LossError, Targets};

pub(super) struct Dist;

/// DIST's own weights (the paper's beta and gamma; its code defaults to 1 and 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistWeights {
    /// Weight of the inter-class relation (per sample, across classes).
    pub inter: f64,
    /// Weight of the intra-class relation (per class, across the batch).
    pub intra: f64,
}

impl ObjectiveParams for DistWeights {
    fn check(&self) -> Result<(), ParamError> {
        non_negative("inter", self.inter)?;
        non_negative("intra", self.intra)?;
        Ok(())
    }
}

impl Default for DistWeights {
    fn default() -> Self {
        DistWeights {
            inter: 1.0,
            intra: 1.0,
        }
    }
}

/// Pearson correlation of `a` and `b` along `dim`.
fn pearson(a: &Tensor, b: &Tensor, dim: i64) -> Result<Tensor, LossError> {
    let centre = |x: &Tensor| -> Result<Tensor, LossError> {
        Ok(x - x.f_mean_dim(dim, true, None::<Kind>)?)
    };
    let (a, b) = (centre(a)?, centre(b)?);
    let norm = |x: &Tensor| -> Result<Tensor, LossError> {
        Ok(x.square()
            .f_sum_dim_intlist(dim, false, None::<Kind>)?
            .f_sqrt()?)
    };
    let dot = (&a * &b).f_sum_dim_intlist(dim, false, None::<Kind>)?;
    Ok(dot / (norm(&a)? * norm(&b)? + 1e-8))
}

impl Objective for Dist {
    fn tempered(&self) -> bool {
        true
    }

    fn reduction(&self) -> &'static str {
        "1 - mean Pearson over samples (inter) and over classes (intra)"
    }

    fn formula(&self, w: &KdWeights) -> String {
        let d = w.params.dist.unwrap_or_default();
        format!(
            "({} * inter + {} * intra)(y_s, y_t) at T = {}",
            d.inter, d.intra, w.temperature
        )
    }

    fn soft(
        &self,
        student: &Tensor,
        targets: &Targets,
        w: &KdWeights,
    ) -> Result<Tensor, LossError> {
        let d = w.params.dist.unwrap_or_default();
        let ys = targets
            .student_tempered(student)
            .f_softmax(-1, student.kind())?;
        let yt = targets.teacher_tempered("dist")?.f_softmax(-1, student.kind())?;
        // Per sample across classes, then per class across the batch; each averaged over the
        // last axis left (a scalar, or `[K]` packed).
        let inter = 1.0 - targets.batch_mean(pearson(&ys, &yt, -1)?)?;
        let intra = 1.0 - targets.batch_mean(pearson(&ys, &yt, -2)?)?;
        Ok(inter * d.inter + intra * d.intra)
    }

    fn packs(&self) -> bool {
        false
    }

    fn recipe_weights(&self) -> Option<(f64, f64)> {
        Some((1.0, 1.0))
    }

    fn recipe(&self) -> &'static str {
        "DIST's recipe (Huang et al. 2022): CE + DIST, each weighted 1"
    }
}
