//! The teacher's side of a soft loss, for one student or for K packed ones.
//!
//! An objective is written once, against [`Targets`]; the layout decides the tensor shapes and
//! the reductions. A few primitives keep the exact operations each layout has always used, so that
//! committed trials reproduce to the last bit: one student takes the teacher's probabilities as
//! `softmax(v / T)` and logit matching as `mse_loss`, a pack takes `exp(log_softmax(v / T))` and
//! `mean((z - v)^2)` (equal in value, not always in the last bit, nor in their gradients).

use tch::{Kind, Reduction, Tensor};

use crate::{packed_hard_cross_entropy, LossError, PackedKdLoss, PackedWeights};

enum Temperature {
    /// One student: `[batch, classes]` logits, one temperature.
    One(f64),
    /// K packed students: `[K, batch, classes]` logits, temperatures as a `[K, 1, 1]` column.
    Each(Tensor),
}

/// The teacher's logits and the temperature(s) they are softened at, with the labels (for the
/// objectives that split the target class from the others) and whether logits are z-scored
/// before they are softened (logit standardisation).
pub struct Targets<'a> {
    teacher: &'a Tensor,
    temperature: Temperature,
    labels: Option<&'a Tensor>,
    standardise: bool,
    /// An ensemble averaged in probability: `teacher` holds its M members' logits along a
    /// leading dim, and these are the members' log-weights, `[M]` shaped to broadcast over
    /// the rest (`[M, 1, 1]`, or `[M, 1, 1, 1]` packed).
    mixture: Option<Tensor>,
}

impl<'a> Targets<'a> {
    /// One student's targets: `teacher: [batch, classes]` at temperature `t` (checked by the
    /// caller).
    pub fn single(teacher: &'a Tensor, t: f64) -> Self {
        Targets {
            teacher,
            temperature: Temperature::One(t),
            labels: None,
            standardise: false,
            mixture: None,
        }
    }

    /// K packed students' targets: `teacher: [K, batch, classes]`, `temperature: [K, 1, 1]`.
    pub fn packed(teacher: &'a Tensor, temperature: Tensor) -> Self {
        Targets {
            teacher,
            temperature: Temperature::Each(temperature),
            labels: None,
            standardise: false,
            mixture: None,
        }
    }

    /// An ensemble's targets: the teacher given to [`Targets::single`] or [`Targets::packed`]
    /// holds M members' logits along a new leading dim (`[M, batch, classes]`, or `[M, K, batch,
    /// classes]`), combined as the arithmetic mean of their softened probabilities with weights
    /// `weights` (M of them, summing to 1): `p^T = sum_m w_m softmax(v_m / T)`. Objectives that
    /// read the teacher's logits (logit matching, DKD, DIST) have none to read: they are refused
    /// with [`LossError::Mixture`].
    pub fn mixture(mut self, weights: &[f64]) -> Result<Self, LossError> {
        let m = self.teacher.size().first().copied().unwrap_or(0);
        if weights.len() as i64 != m || m == 0 {
            return Err(LossError::Shape {
                what: "ensemble weights",
                expected: format!("one per member ({m})"),
                got: vec![weights.len() as i64],
            });
        }
        let ones = vec![1i64; self.teacher.dim() - 1];
        let shape: Vec<i64> = std::iter::once(m).chain(ones).collect();
        let log_w = Tensor::from_slice(weights)
            .to_kind(self.teacher.kind())
            .to_device(self.teacher.device())
            .log()
            .view(shape.as_slice());
        self.mixture = Some(log_w);
        Ok(self)
    }

    /// An error for an objective that reads the teacher's logits, when they are an ensemble's
    /// members averaged in probability.
    fn logits_needed(&self, what: &'static str) -> Result<(), LossError> {
        match self.mixture {
            Some(_) => Err(LossError::Mixture(what)),
            None => Ok(()),
        }
    }

    /// The same targets with the batch's labels (`[batch]`, or `[K, batch]` packed).
    pub fn with_labels(mut self, labels: &'a Tensor) -> Self {
        self.labels = Some(labels);
        self
    }

    /// The same targets, z-scoring student and teacher logits before they are softened when
    /// `on` (Sun et al. 2024, "Logit standardization in knowledge distillation").
    pub fn standardised(mut self, on: bool) -> Self {
        self.standardise = on;
        self
    }

    /// The labels, for objectives that need them.
    pub fn labels(&self, objective: &'static str) -> Result<&'a Tensor, LossError> {
        self.labels.ok_or(LossError::Shape {
            what: objective,
            expected: "the batch's labels".into(),
            got: vec![],
        })
    }

    /// `(z - mean(z)) / (1e-7 + std(z))` over classes, the standard deviation unbiased, as the
    /// paper's code (`logit.std(dim=-1, keepdims=True)`); `z` itself when standardisation is off.
    fn prepare(&self, logits: &Tensor) -> Tensor {
        if !self.standardise {
            return logits.shallow_clone();
        }
        let mean = logits.mean_dim(-1, true, None::<Kind>);
        let std = logits.std_dim(-1, true, true);
        (logits - mean) / (std + 1e-7)
    }

    fn soften(&self, logits: &Tensor) -> Tensor {
        let logits = self.prepare(logits);
        match &self.temperature {
            Temperature::One(t) => logits / *t,
            Temperature::Each(t) => logits / t,
        }
    }

    /// `z / T` (z-scored first under standardisation): the student's tempered logits.
    pub fn student_tempered(&self, student: &Tensor) -> Tensor {
        self.soften(student)
    }

    /// `v / T` (z-scored first under standardisation): the teacher's, detached; `what` (the
    /// objective) is refused for an ensemble averaged in probability.
    pub fn teacher_tempered(&self, what: &'static str) -> Result<Tensor, LossError> {
        self.logits_needed(what)?;
        Ok(self.soften(self.teacher).detach())
    }

    /// The teacher's logits, detached.
    fn logits(&self) -> Tensor {
        self.teacher.detach()
    }

    /// `log q^T`: the student's tempered log-probabilities (carries the graph).
    pub fn student_log_probs(&self, student: &Tensor) -> Result<Tensor, LossError> {
        Ok(self.soften(student).f_log_softmax(-1, student.kind())?)
    }

    /// `log p^T`: the teacher's tempered log-probabilities, detached. An ensemble's is
    /// `logsumexp_m(log w_m + log_softmax(v_m / T))`, the log of the members' weighted mean
    /// probability without leaving the log domain.
    pub fn log_probs(&self) -> Result<Tensor, LossError> {
        let log_p = self
            .soften(self.teacher)
            .f_log_softmax(-1, self.teacher.kind())?;
        Ok(match &self.mixture {
            None => log_p,
            Some(log_w) => (log_p + log_w).f_logsumexp([0i64].as_slice(), false)?,
        }
        .detach())
    }

    /// `p^T`: the teacher's tempered probabilities, detached.
    pub fn probs(&self) -> Result<Tensor, LossError> {
        if self.mixture.is_some() {
            return Ok(self.log_probs()?.exp());
        }
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

    /// A per-sample quantity averaged over the batch: a scalar for one student, `[K]` for a pack.
    pub fn batch_mean(&self, per_sample: Tensor) -> Result<Tensor, LossError> {
        Ok(match self.temperature {
            Temperature::One(_) => per_sample.f_mean(None::<Kind>)?,
            Temperature::Each(_) => per_sample.f_mean_dim(-1, false, None::<Kind>)?,
        })
    }

    /// `mean (z - v)^2` over classes and the batch, the teacher detached: a scalar for one
    /// student, `[K]` for a pack.
    pub fn mean_squared_error(&self, student: &Tensor) -> Result<Tensor, LossError> {
        self.logits_needed("mse_logits")?;
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

impl Targets<'_> {
    /// A pack's loss against these targets (one teacher's or an ensemble's): each member's soft
    /// term in the pack's form plus its hard cross-entropy, weighted per member.
    pub(crate) fn packed_loss(
        &self,
        student: &Tensor,
        labels: &Tensor,
        weights: &PackedWeights,
    ) -> Result<PackedKdLoss, LossError> {
        let soft = weights
            .form
            .objective()
            .soft(student, self, &weights.first)?;
        let hard = packed_hard_cross_entropy(student, labels)?;
        let total = &soft * &weights.soft + &hard * &weights.hard;
        Ok(PackedKdLoss { total, soft, hard })
    }
}
