//! The teacher's side of a soft loss, for one student or for K packed ones.
//!
//! An objective is written once, against [`Targets`]; the layout decides the tensor shapes and
//! the reductions. A few primitives keep the exact operations each layout has always used, so that
//! committed trials reproduce to the last bit: one student takes the teacher's probabilities as
//! `softmax(v / T)` and logit matching as `mse_loss`, a pack takes `exp(log_softmax(v / T))` and
//! `mean((z - v)^2)` (equal in value, not always in the last bit, nor in their gradients).

use tch::{Kind, Reduction, Tensor};

use crate::LossError;

enum Temperature {
    /// One student: `[batch, classes]` logits, one temperature.
    One(f64),
    /// K packed students: `[K, batch, classes]` logits, temperatures as a `[K, 1, 1]` column.
    Each(Tensor),
}

/// The teacher's logits and the temperature(s) they are softened at.
pub struct Targets<'a> {
    teacher: &'a Tensor,
    temperature: Temperature,
}

impl<'a> Targets<'a> {
    /// One student's targets: `teacher: [batch, classes]` at temperature `t` (checked by the
    /// caller).
    pub fn single(teacher: &'a Tensor, t: f64) -> Self {
        Targets {
            teacher,
            temperature: Temperature::One(t),
        }
    }

    /// K packed students' targets: `teacher: [K, batch, classes]`, `temperature: [K, 1, 1]`.
    pub fn packed(teacher: &'a Tensor, temperature: Tensor) -> Self {
        Targets {
            teacher,
            temperature: Temperature::Each(temperature),
        }
    }

    fn soften(&self, logits: &Tensor) -> Tensor {
        match &self.temperature {
            Temperature::One(t) => logits / *t,
            Temperature::Each(t) => logits / t,
        }
    }

    /// The teacher's logits, detached.
    pub fn logits(&self) -> Tensor {
        self.teacher.detach()
    }

    /// `log q^T`: the student's tempered log-probabilities (carries the graph).
    pub fn student_log_probs(&self, student: &Tensor) -> Result<Tensor, LossError> {
        Ok(self.soften(student).f_log_softmax(-1, student.kind())?)
    }

    /// `log p^T`: the teacher's tempered log-probabilities, detached.
    pub fn log_probs(&self) -> Result<Tensor, LossError> {
        Ok(self
            .soften(self.teacher)
            .f_log_softmax(-1, self.teacher.kind())?
            .detach())
    }

    /// `p^T`: the teacher's tempered probabilities, detached.
    pub fn probs(&self) -> Result<Tensor, LossError> {
        match self.temperature {
            Temperature::One(_) => Ok(self
                .soften(self.teacher)
                .f_softmax(-1, self.teacher.kind())?
                .detach()),
            Temperature::Each(_) => Ok(self.log_probs()?.exp()),
        }
    }

    /// A per-class quantity summed over classes and averaged over the batch: a scalar for one
    /// student, `[K]` for a pack.
    pub fn class_sum_batch_mean(&self, per_class: Tensor) -> Result<Tensor, LossError> {
        let per_sample = per_class.f_sum_dim_intlist(-1, false, None::<Kind>)?;
        Ok(match self.temperature {
            Temperature::One(_) => per_sample.f_mean(None::<Kind>)?,
            Temperature::Each(_) => per_sample.f_mean_dim(-1, false, None::<Kind>)?,
        })
    }

    /// `mean (z - v)^2` over classes and the batch, the teacher detached: a scalar for one
    /// student, `[K]` for a pack.
    pub fn mean_squared_error(&self, student: &Tensor) -> Result<Tensor, LossError> {
        let teacher = self.logits();
        Ok(match self.temperature {
            Temperature::One(_) => student.f_mse_loss(&teacher, Reduction::Mean)?,
            Temperature::Each(_) => (student - teacher).square().f_mean_dim(
                [1i64, 2].as_slice(),
                false,
                None::<Kind>,
            )?,
        })
    }
}
