//! What the epoch protocol ([`super::driver`]) asks of a way of training: [`Learner`], one
//! optimiser step on a [`Batch`] (measured as a [`StepLoss`]), the students' weights and
//! logits, and their state for a checkpoint.

use tch::Tensor;

use super::snapshot::Named;
use crate::error::TrainError;

/// One step's batch: for each of the K students, the rows of the training split it sees.
pub(crate) struct Batch<'a> {
    /// `[K, rows]`, row indices into the training split.
    pub idx: &'a Tensor,
    /// 1-based epoch.
    pub epoch: u32,
    /// 0-based batch within the epoch.
    pub index: usize,
    /// 0-based step over the whole run.
    pub step: usize,
    /// The schedule's learning rate for this step.
    pub lr: f64,
}

/// What one step measured, per student, detached from the graph.
pub(crate) struct StepLoss {
    /// `[K]`: the objective, zero for a retired student.
    pub total: Tensor,
    /// `[K]`: the soft term, when the learner has soft targets.
    pub soft: Option<Tensor>,
    /// `[K]`: the hard term.
    pub hard: Tensor,
    /// `[K, rows, classes]`: the training-mode logits of the batch.
    pub logits: Tensor,
    /// `[K, rows]`: the batch's labels.
    pub y: Tensor,
}

/// K students trained in lockstep on batches of one size.
pub(crate) trait Learner {
    /// Set the learning rate, run forward and backward on `batch` and update the weights.
    fn step(&mut self, batch: &Batch) -> Result<StepLoss, TrainError>;
    /// Per student: whether every weight is finite.
    fn weights_finite(&self) -> Vec<bool>;
    /// Evaluation-mode logits of every row of `x`, `[K, n, classes]`.
    fn logits(&self, x: &Tensor) -> Tensor;
    /// Stop training the students whose `alive` is false (their loss no longer reaches their
    /// weights).
    fn retire(&mut self, alive: &[bool]);
    /// Every tensor [`Learner::logits`] reads (weights and buffers), shallow, in a fixed order;
    /// and whether they hold the K students along dim 0.
    fn state(&self) -> (Vec<Tensor>, bool);
    /// Student `i`'s tensors in `state` (ordered as [`Learner::state`] orders them: the live
    /// ones or a kept copy), named and shaped as the zoo names and shapes a net of its spec
    /// built alone (a pack's are sliced and transposed back), shallow where they can be.
    fn member(&self, state: &[Tensor], i: usize) -> Vec<(String, Tensor)>;
    /// Everything a continued run needs of the learner: its model's tensors (`model/<name>`)
    /// and its optimiser's state (`opt/...`), shallow.
    fn export(&self) -> Vec<(String, Tensor)>;
    /// Put back what [`Learner::export`] gave; what is missing or of another shape or number
    /// format is an error, found before anything is written (the learner is then as it was).
    fn import(&mut self, from: &Named) -> Result<(), String>;
    /// Draw from libtorch's global generator what steps of `rows` rows each drew, in order,
    /// results discarded (see [`super::snapshot`]). False when the learner cannot say what it
    /// draws.
    fn replay(&self, rows: &mut dyn Iterator<Item = i64>) -> bool;
}
