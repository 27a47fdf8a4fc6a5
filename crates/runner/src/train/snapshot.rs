//! Where a run stands between two steps, so that it can continue there after the process is
//! gone: [`Snapshot`] (the learner's tensors, the optimiser's state, the kept best weights, the
//! epoch records so far, the step) and [`Durability`], what [`super::driver::run`] is told
//! about checkpoints (where to continue from, how often to snapshot, whether to stop now).
//! Writing a snapshot to a file is the caller's ([`crate::run::checkpoint`]): this module
//! stays free of IO, as training is.
//!
//! A continued run gives the numbers of an uninterrupted one to the last bit on a CPU:
//! - the data order, the augmentations and the schedule are functions of (seed, epoch, batch,
//!   step), recomputed;
//! - the weights, buffers, optimiser state (momentum buffers, Adam's moments and step count,
//!   bf16's float32 masters) and the epoch's running sums are copied back;
//! - the only draws from libtorch's global generator in training are dropout masks (a pack
//!   reseeds its own at every step): the caller seeds and builds the model as at the start, and
//!   [`super::driver::Learner::replay`] draws again what the finished steps drew (the same
//!   dropout calls on tensors of the same shapes, results discarded). A model whose draws are
//!   unknown continues on another draw, and its outcome says so.

use std::collections::HashMap;
use std::time::Duration;

use kd_report::EpochRecord;
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// A learner's tensors by name.
pub type Named = HashMap<String, Tensor>;

/// A run's state between two steps.
#[derive(Debug)]
pub struct Snapshot {
    pub progress: Progress,
    /// The learner's state ([`super::driver::Learner::export`]), the kept best weights
    /// (`kept/<i>`) and, mid-epoch, the epoch's running sums (`sum/<what>`).
    pub tensors: Vec<(String, Tensor)>,
}

/// The numbers of a [`Snapshot`] (serialised as YAML, which carries NaN and infinities).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Epochs finished.
    pub epoch: u32,
    /// Batches of the next epoch already trained (0: the snapshot is at an epoch's end).
    pub batch: usize,
    /// Steps trained in all.
    pub step: usize,
    /// Seconds the learner trained before the snapshot (its whole time, not a share).
    pub seconds: f64,
    /// Seconds of the unfinished epoch (mid-epoch only).
    pub epoch_seconds: f64,
    /// Per student: its epoch records so far.
    pub logs: Vec<Vec<EpochRecord>>,
    /// Per student: its best validation accuracy so far (-inf: none yet).
    pub best_val: Vec<f64>,
    /// Per student: whether it still trains.
    pub alive: Vec<bool>,
    /// Per student: why it stopped, if it diverged.
    pub message: Vec<Option<String>>,
    /// Per student: the epoch whose weights `kept/` holds, not yet tested.
    pub kept: Vec<Option<u32>>,
    /// The last learning rate of the unfinished epoch (mid-epoch only).
    pub lr: f64,
}

/// What [`super::driver::run`] does about checkpoints.
pub struct Durability<'h> {
    /// Continue from this snapshot instead of starting at step 0.
    pub resume: Option<Snapshot>,
    /// Snapshot at the end of the first epoch that ends at least this long after the last
    /// snapshot (or the start); never when none.
    pub every: Option<Duration>,
    /// Whether the run must stop now (a signal): it snapshots after the current step and
    /// returns [`crate::error::TrainError::Stopped`].
    pub stop: Box<dyn Fn() -> bool + 'h>,
    /// Where snapshots go; whether the snapshot was written. Its failures are its own to
    /// report: training goes on.
    pub save: Box<dyn FnMut(&Snapshot) -> bool + 'h>,
    /// Where successive halving pauses the run and which members it pruned.
    pub rung: Rung,
    /// Which weights of each finished student are kept, and where they go.
    pub models: Keep<'h>,
}

/// `save:` in a run: which weights of each student that finishes are handed to `sink` (with
/// `Save::None`, none), as a [`KeptModel`], or why they cannot be; the sink says where it put
/// them (a path relative to OUT), or none when it could not (its failures are its own to
/// report: the trial's record is written either way).
pub struct Keep<'h> {
    pub save: crate::config::Save,
    pub sink: Box<Sink<'h>>,
}

/// Where [`Keep`] hands member `i`'s weights, or why they cannot be kept; the path written.
pub type Sink<'h> = dyn FnMut(usize, Result<KeptModel, String>) -> Option<String> + 'h;

impl Default for Keep<'_> {
    fn default() -> Self {
        Keep {
            save: crate::config::Save::None,
            sink: Box::new(|_, _| None),
        }
    }
}

/// One student's weights as its record measured them.
pub struct KeptModel {
    /// Its tensors, named and shaped as the zoo names a net of its spec built alone.
    pub tensors: Vec<(String, Tensor)>,
    /// `Best` (the best validation epoch's) or `Last` (those it ended with).
    pub which: crate::config::Save,
    /// The epoch whose weights they are.
    pub epoch: u32,
    /// Their test accuracy and errors, as the record has them (`best_test_acc` or
    /// `test_acc`).
    pub test: Option<(f64, Option<u64>)>,
}

/// A run's part in successive halving: pause at the end of epoch `until` (a rung; never the
/// last epoch) with a snapshot written, returning [`crate::error::TrainError::Paused`]; and
/// retire the members marked in `pruned` when the run starts or continues (a pack trains on,
/// their losses masked out, as a diverged member's are). Default: neither.
#[derive(Debug, Clone, Default)]
pub struct Rung {
    pub until: Option<u32>,
    /// Per member (empty: none pruned).
    pub pruned: Vec<bool>,
}

impl Durability<'_> {
    /// No checkpoints, no resume, never stopped.
    pub fn none() -> Durability<'static> {
        Durability {
            resume: None,
            every: None,
            stop: Box::new(|| false),
            save: Box::new(|_| false),
            rung: Rung::default(),
            models: Keep::default(),
        }
    }
}

/// `tensors` by name.
pub fn named(tensors: Vec<(String, Tensor)>) -> Named {
    tensors.into_iter().collect()
}

/// Whether `from[name]` can be copied into `live`: there, of its shape and number format.
pub fn fits(live: &Tensor, from: &Named, name: &str) -> Result<(), String> {
    let saved = from
        .get(name)
        .ok_or_else(|| format!("it has no tensor `{name}`"))?;
    if saved.size() != live.size() || saved.kind() != live.kind() {
        return Err(format!(
            "its tensor `{name}` is {:?} {:?} where the model's is {:?} {:?}",
            saved.kind(),
            saved.size(),
            live.kind(),
            live.size()
        ));
    }
    Ok(())
}

/// Copy `from[name]` into `live` (see [`fits`]), in place: the live tensor keeps its layout
/// and its place in the model.
pub fn put(live: &Tensor, from: &Named, name: &str) -> Result<(), String> {
    fits(live, from, name)?;
    tch::no_grad(|| live.detach().copy_(&from[name]));
    Ok(())
}

/// A tensor like `like` (its shape, kind, device and layout) holding `from[name]`, if saved.
pub fn like(like: &Tensor, from: &Named, name: &str) -> Result<Option<Tensor>, String> {
    if !from.contains_key(name) {
        return Ok(None);
    }
    let t = like.zeros_like();
    put(&t, from, name)?;
    Ok(Some(t))
}

/// The integer `from[name]` (a 0-dim int64 tensor).
pub fn int(from: &Named, name: &str) -> Result<i64, String> {
    match from.get(name) {
        Some(t) if t.dim() == 0 && t.kind() == tch::Kind::Int64 => Ok(t.int64_value(&[])),
        _ => Err(format!("it has no integer `{name}`")),
    }
}

/// `x` as a 0-dim int64 tensor on the CPU.
pub fn int_tensor(x: i64) -> Tensor {
    Tensor::from(x)
}

/// Whether libtorch's CPU Bernoulli draws take one 64-bit number from the global generator per
/// element (its default kernel, as on AMD CPUs) rather than one per call (its MKL kernel, on
/// Intel CPUs); none until [`probe_draws`] has run.
static PER_ELEMENT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Find out how this process's libtorch draws Bernoulli masks on the CPU (once; later calls do
/// nothing). It seeds libtorch's generator itself, so call it **before** a trial seeds it.
pub fn probe_draws() {
    use tch::{Device, Kind};
    PER_ELEMENT.get_or_init(|| {
        let after = |draw: &dyn Fn()| {
            tch::manual_seed(0x5eed);
            draw();
            Tensor::rand([2], (Kind::Double, Device::Cpu))
        };
        let masks = after(&|| {
            let _ = Tensor::empty([2, 3], (Kind::Float, Device::Cpu)).bernoulli_float_(0.5);
            let _ = Tensor::empty([5], (Kind::BFloat16, Device::Cpu)).bernoulli_float_(0.3);
        });
        let numbers = after(&|| {
            let _ = Tensor::empty([11], (Kind::Int64, Device::Cpu)).random_();
        });
        masks.equal(&numbers)
    });
}

/// Whether a replay may draw the Bernoulli masks' numbers in bulk ([`draw_numbers`]): known
/// ([`probe_draws`]) to be one number per element.
pub fn bulk_replay() -> bool {
    PER_ELEMENT.get() == Some(&true)
}

/// Take `n` 64-bit numbers from libtorch's CPU generator, as `n` elements of Bernoulli masks
/// take them where [`bulk_replay`] holds (about 3x faster than drawing the masks again).
pub fn draw_numbers(n: i64) {
    const CHUNK: i64 = 1 << 22;
    let mut left = n;
    while left > 0 {
        let k = left.min(CHUNK);
        let _ = Tensor::empty([k], (tch::Kind::Int64, tch::Device::Cpu)).random_();
        left -= k;
    }
}

/// Steps before the given one as the number of rows of each: `step` steps of epochs of `n`
/// rows in batches of `bs` (the last batch of an epoch smaller).
pub fn rows_of_steps(step: usize, n: usize, bs: usize) -> impl Iterator<Item = i64> {
    let per_epoch = n.div_ceil(bs.max(1)).max(1);
    (0..step).map(move |s| {
        let b = s % per_epoch;
        bs.min(n - b * bs) as i64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On this machine the probe says which kind of CPU kernel libtorch has; where it draws
    /// per element, a bulk draw leaves the generator where the masks of a dropout MLP's steps
    /// leave it.
    #[test]
    fn a_bulk_draw_takes_what_the_masks_take() {
        let _g = crate::torch_lock();
        probe_draws();
        if !bulk_replay() {
            return;
        }
        let next = || Tensor::rand([3], (tch::Kind::Float, tch::Device::Cpu));
        tch::manual_seed(9);
        for rows in [32i64, 32, 7] {
            for (p, width) in [(0.2, 17i64), (0.5, 9)] {
                let x = Tensor::zeros([rows, width], (tch::Kind::Float, tch::Device::Cpu));
                let _ = x.dropout(p, true);
            }
        }
        let a = next();
        tch::manual_seed(9);
        draw_numbers((32 + 32 + 7) * (17 + 9));
        assert!(a.equal(&next()));
    }

    #[test]
    fn the_rows_of_each_step_follow_the_epochs_batches() {
        let rows: Vec<i64> = rows_of_steps(7, 10, 4).collect();
        assert_eq!(rows, [4, 4, 2, 4, 4, 2, 4]);
    }

    #[test]
    fn progress_carries_nan_and_infinities_through_yaml() {
        let p = Progress {
            epoch: 2,
            batch: 0,
            step: 10,
            seconds: 1.5,
            epoch_seconds: 0.0,
            logs: vec![vec![]],
            best_val: vec![f64::NEG_INFINITY],
            alive: vec![false],
            message: vec![Some("the loss became NaN or infinite in epoch 2".into())],
            kept: vec![None],
            lr: f64::NAN,
        };
        let back: Progress = serde_yaml::from_str(&serde_yaml::to_string(&p).unwrap()).unwrap();
        assert_eq!(back.best_val, [f64::NEG_INFINITY]);
        assert!(back.lr.is_nan());
        assert_eq!(back.message, p.message);
    }
}
