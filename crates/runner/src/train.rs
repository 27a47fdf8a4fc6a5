//! One training run: a model, its optimiser and schedule, optional soft targets, evaluation at
//! T = 1 after every epoch. Pure with respect to IO: the caller logs and writes results.

use std::time::Instant;

use kd_data::SplitMix64;
use kd_loss::KdWeights;
use kd_model_zoo::Net;
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Kind, Tensor};

use crate::config::{Optimizer, Schedule, TrainCfg};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Loss(#[from] kd_loss::LossError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Tensors of one split on the training device.
#[derive(Debug)]
pub struct SplitTensors {
    pub x: Tensor,
    pub y: Tensor,
}

impl SplitTensors {
    pub fn len(&self) -> i64 {
        self.y.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a trial trains on.
#[derive(Debug)]
pub struct TrainData<'a> {
    pub train: &'a SplitTensors,
    pub val: &'a SplitTensors,
    pub test: &'a SplitTensors,
    /// Teacher logits for every training image (the transfer set), `[n_train, classes]`.
    pub soft_targets: Option<&'a Tensor>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochLog {
    pub epoch: u32,
    pub train_loss: f64,
    pub soft_loss: Option<f64>,
    pub hard_loss: f64,
    pub train_acc: f64,
    pub val_acc: f64,
    pub test_acc: f64,
    pub lr: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Status {
    Ok,
    /// The loss became NaN or infinite; training stopped at that epoch.
    Diverged,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Diverged => "diverged",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub status: Status,
    pub epochs: Vec<EpochLog>,
    /// Evaluation-mode accuracy on the training split after the last epoch.
    pub train_acc: Option<f64>,
    pub val_acc: Option<f64>,
    pub test_acc: Option<f64>,
    pub test_errors: Option<u64>,
    /// 1-based epoch with the highest validation accuracy.
    pub best_epoch: Option<u32>,
    pub wall_s: f64,
}

/// Learning rate at `step` of `total` steps.
pub fn lr_at(cfg: &TrainCfg, step: usize, total: usize) -> f64 {
    match cfg.schedule {
        Schedule::Constant => cfg.lr,
        Schedule::Cosine => {
            let frac = step as f64 / total.max(1) as f64;
            0.5 * cfg.lr * (1.0 + (std::f64::consts::PI * frac).cos())
        }
    }
}

/// The order in which a trial visits the training images in `epoch`: a function of the seed
/// alone, so a KD trial and its baseline see the same batches.
pub fn epoch_order(seed: u64, epoch: u32, n: usize) -> Vec<i64> {
    let mut order: Vec<i64> = (0..n as i64).collect();
    SplitMix64::new(
        seed.wrapping_mul(0x1000_0000_01B3)
            .wrapping_add(epoch as u64),
    )
    .shuffle(&mut order);
    order
}

/// Logits of `net` (evaluation mode) for every row of `x`, in chunks.
pub fn predict(net: &Net, x: &Tensor, chunk: i64) -> Tensor {
    tch::no_grad(|| {
        let n = x.size()[0];
        let parts: Vec<Tensor> = (0..n)
            .step_by(chunk as usize)
            .map(|start| net.forward_t(&x.narrow(0, start, chunk.min(n - start)), false))
            .collect();
        Tensor::cat(&parts, 0)
    })
}

/// (accuracy, errors) of `net` at T = 1 on a split.
pub fn evaluate(net: &Net, split: &SplitTensors) -> (f64, u64) {
    if split.is_empty() {
        return (f64::NAN, 0);
    }
    accuracy(&predict(net, &split.x, 1000), &split.y)
}

/// (accuracy, errors) of `logits` (`[n, classes]`, on any device) against the labels `y`.
pub fn accuracy(logits: &Tensor, y: &Tensor) -> (f64, u64) {
    let correct = logits
        .to_device(y.device())
        .argmax(-1, false)
        .eq_tensor(y)
        .sum(Kind::Int64)
        .int64_value(&[]);
    let n = y.size()[0];
    (correct as f64 / n as f64, (n - correct) as u64)
}

fn build_optimizer(vs: &nn::VarStore, cfg: &TrainCfg) -> Result<nn::Optimizer, TrainError> {
    Ok(match cfg.optimizer {
        Optimizer::Sgd => nn::Sgd {
            momentum: cfg.momentum,
            dampening: 0.0,
            wd: cfg.weight_decay,
            nesterov: false,
        }
        .build(vs, cfg.lr)?,
        Optimizer::Adam => nn::Adam {
            wd: cfg.weight_decay,
            ..Default::default()
        }
        .build(vs, cfg.lr)?,
        Optimizer::Adamw => nn::AdamW {
            wd: cfg.weight_decay,
            ..Default::default()
        }
        .build(vs, cfg.lr)?,
    })
}

/// Train `net` (whose variables live in `vs`) for `cfg.epochs` epochs. With soft targets the
/// objective is `kd_loss::distillation_loss` with `weights`; without, plain cross-entropy.
/// `on_epoch` sees each epoch's log as soon as it is measured.
pub fn train(
    net: &Net,
    vs: &nn::VarStore,
    cfg: &TrainCfg,
    weights: &KdWeights,
    seed: u64,
    data: &TrainData,
    mut on_epoch: impl FnMut(&EpochLog),
) -> Result<Outcome, TrainError> {
    let start = Instant::now();
    let mut opt = build_optimizer(vs, cfg)?;
    let n = data.train.len() as usize;
    let bs = cfg.batch_size.min(n.max(1));
    let steps_per_epoch = n.div_ceil(bs);
    let total_steps = steps_per_epoch * cfg.epochs;
    let device = data.train.x.device();
    let mut step = 0usize;
    let mut logs = Vec::with_capacity(cfg.epochs);
    let mut status = Status::Ok;
    for epoch in 1..=cfg.epochs as u32 {
        let t0 = Instant::now();
        let order = Tensor::from_slice(&epoch_order(seed, epoch, n)).to_device(device);
        let zero = || Tensor::zeros([], (Kind::Double, device));
        let (mut sum_total, mut sum_soft, mut sum_hard) = (zero(), zero(), zero());
        let mut correct = Tensor::zeros([], (Kind::Int64, device));
        let mut lr = cfg.lr;
        for b in 0..steps_per_epoch {
            let idx = order.narrow(0, (b * bs) as i64, bs.min(n - b * bs) as i64);
            let x = data.train.x.index_select(0, &idx);
            let y = data.train.y.index_select(0, &idx);
            lr = lr_at(cfg, step, total_steps);
            opt.set_lr(lr);
            let logits = net.forward_t(&x, true);
            let rows = idx.size()[0] as f64;
            let total = match data.soft_targets {
                Some(teacher) => {
                    let t = teacher.index_select(0, &idx);
                    let l = kd_loss::distillation_loss(&logits, &t, &y, weights)?;
                    sum_soft += l.soft.detach().to_kind(Kind::Double) * rows;
                    sum_hard += l.hard.detach().to_kind(Kind::Double) * rows;
                    l.total
                }
                None => {
                    let h = kd_loss::hard_cross_entropy(&logits, &y)?;
                    sum_hard += h.detach().to_kind(Kind::Double) * rows;
                    h
                }
            };
            sum_total += total.detach().to_kind(Kind::Double) * rows;
            correct += logits
                .detach()
                .argmax(-1, false)
                .eq_tensor(&y)
                .sum(Kind::Int64);
            opt.backward_step(&total);
            step += 1;
        }
        let nf = n as f64;
        let train_loss = sum_total.double_value(&[]) / nf;
        let hard_loss = sum_hard.double_value(&[]) / nf;
        let soft_loss = data.soft_targets.map(|_| sum_soft.double_value(&[]) / nf);
        if !train_loss.is_finite() {
            status = Status::Diverged;
        }
        let (val_acc, test_acc) = if status == Status::Ok {
            (evaluate(net, data.val).0, evaluate(net, data.test).0)
        } else {
            (f64::NAN, f64::NAN)
        };
        let log = EpochLog {
            epoch,
            train_loss,
            soft_loss,
            hard_loss,
            train_acc: correct.int64_value(&[]) as f64 / nf,
            val_acc,
            test_acc,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        };
        on_epoch(&log);
        logs.push(log);
        if status == Status::Diverged {
            break;
        }
    }
    let mut out = Outcome {
        status,
        train_acc: None,
        val_acc: None,
        test_acc: None,
        test_errors: None,
        best_epoch: None,
        wall_s: 0.0,
        epochs: logs,
    };
    if status == Status::Ok {
        out.train_acc = Some(evaluate(net, data.train).0);
        let (test_acc, test_errors) = evaluate(net, data.test);
        out.test_acc = Some(test_acc);
        out.test_errors = Some(test_errors);
        out.val_acc = out.epochs.last().map(|l| l.val_acc);
        out.best_epoch = out
            .epochs
            .iter()
            .max_by(|a, b| a.val_acc.total_cmp(&b.val_acc).then(b.epoch.cmp(&a.epoch)))
            .map(|l| l.epoch);
    }
    out.wall_s = start.elapsed().as_secs_f64();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Optimizer, Schedule};

    fn cfg(schedule: Schedule) -> TrainCfg {
        TrainCfg {
            epochs: 1,
            batch_size: 10,
            optimizer: Optimizer::Sgd,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            schedule,
        }
    }

    #[test]
    fn cosine_schedule_runs_from_lr_to_zero() {
        let c = cfg(Schedule::Cosine);
        assert_eq!(lr_at(&c, 0, 100), 0.1);
        assert!((lr_at(&c, 50, 100) - 0.05).abs() < 1e-12);
        assert!(lr_at(&c, 100, 100).abs() < 1e-12);
        assert_eq!(lr_at(&cfg(Schedule::Constant), 77, 100), 0.1);
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(3, 1, 50);
        assert_eq!(a, epoch_order(3, 1, 50));
        assert_ne!(a, epoch_order(3, 2, 50));
        assert_ne!(a, epoch_order(4, 1, 50));
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, (0..50).collect::<Vec<i64>>());
    }
}
