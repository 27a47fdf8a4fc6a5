//! One training run: a model, its optimiser and schedule, optional soft targets, evaluation at
//! T = 1 after every epoch. Pure with respect to IO: the caller logs and writes results.

use std::time::Instant;

use kd_data::SplitMix64;
use kd_loss::KdWeights;
use kd_model_zoo::Net;
use kd_report::{EpochRecord, Status};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Kind, Tensor};

use crate::config::{Optimizer, Schedule, TrainCfg};
use crate::data::SplitTensors;
use crate::env::now_rfc3339;
use crate::error::TrainError;

/// What a trial trains on.
#[derive(Debug)]
pub struct TrainData<'a> {
    pub train: &'a SplitTensors,
    pub val: &'a SplitTensors,
    pub test: &'a SplitTensors,
    /// Teacher logits for every training image (the transfer set), `[n_train, classes]`.
    pub soft_targets: Option<&'a Tensor>,
    /// The teacher itself, run on each (augmented) batch instead of reading `soft_targets`:
    /// used when `train.jitter` shifts the student's images (online teacher).
    pub online_teacher: Option<&'a Net>,
    /// What the finished student is measured against (fidelity, bias shift); none for the
    /// teacher.
    pub reference: Option<&'a crate::measure::Reference<'a>>,
}

/// How a trial ended, with everything measured. Serialised between a worker and the sweep.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub status: Status,
    pub epochs: Vec<EpochRecord>,
    /// Evaluation-mode accuracy on the training split after the last epoch.
    pub train_acc: Option<f64>,
    pub val_acc: Option<f64>,
    pub test_acc: Option<f64>,
    pub test_errors: Option<u64>,
    /// 1-based epoch with the highest validation accuracy (none without a validation split).
    pub best_epoch: Option<u32>,
    pub wall_s: f64,
    /// Why it diverged or failed.
    pub message: Option<String>,
    /// RFC 3339, UTC.
    pub finished_at: String,
    /// Confusion, fidelity and bias shift of a finished student.
    #[serde(default)]
    pub measures: crate::measure::Measures,
}

impl Outcome {
    /// An outcome with `status` and nothing measured yet.
    pub(crate) fn empty(status: Status) -> Outcome {
        Outcome {
            status,
            epochs: vec![],
            train_acc: None,
            val_acc: None,
            test_acc: None,
            test_errors: None,
            best_epoch: None,
            wall_s: 0.0,
            message: None,
            finished_at: now_rfc3339(),
            measures: Default::default(),
        }
    }

    /// A trial that could not run to its end.
    pub fn failed(message: impl Into<String>) -> Outcome {
        Outcome {
            message: Some(message.into()),
            ..Outcome::empty(Status::Failed)
        }
    }
}

/// NaN or infinity where a number should be: the trial diverged.
#[derive(Debug, Clone, PartialEq)]
pub struct NonFinite(pub String);

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

/// `x` (`[B, C, H, W]`) with each image shifted by up to `n` pixels in each direction, the
/// shifts drawn from a stream of (`seed`, `epoch`, `batch`) alone (so a KD trial and its
/// baseline see the same shifts), the uncovered border filled with `fill` (the standardised
/// black pixel). One `gather`, on any device.
pub fn jitter(x: &Tensor, n: usize, seed: u64, epoch: u32, batch: usize, fill: f64) -> Tensor {
    if n == 0 {
        return x.shallow_clone();
    }
    let size = x.size();
    let (b, c, h, w) = (size[0], size[1], size[2], size[3]);
    let n = n as i64;
    let (hp, wp) = (h + 2 * n, w + 2 * n);
    let padded = ((x - fill).constant_pad_nd([n, n, n, n]) + fill).view([b, c, hp * wp]);
    let mut rng = SplitMix64::new(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ ((epoch as u64) << 40)
            ^ (batch as u64)
            ^ 0x6a69_7474_6572,
    );
    let offsets: Vec<i64> = (0..b)
        .map(|_| {
            let dy = rng.below(2 * n as u64 + 1) as i64;
            let dx = rng.below(2 * n as u64 + 1) as i64;
            dy * wp + dx
        })
        .collect();
    let device = x.device();
    let base: Vec<i64> = (0..h)
        .flat_map(|i| (0..w).map(move |j| i * wp + j))
        .collect();
    let idx = Tensor::from_slice(&base)
        .to_device(device)
        .view([1, 1, h * w])
        + Tensor::from_slice(&offsets)
            .to_device(device)
            .view([b, 1, 1]);
    padded
        .gather(2, &idx.expand([b, c, h * w], false), false)
        .view([b, c, h, w])
}

/// The evaluated epoch with the highest validation accuracy (the earliest of ties).
pub fn best_epoch(epochs: &[EpochRecord]) -> Option<u32> {
    epochs
        .iter()
        .filter_map(|l| Some((l.val_acc?, l.epoch)))
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, e)| e)
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

/// (accuracy, errors) of `net` at T = 1 on a split: none for an empty split, an error when an
/// output is NaN or infinite.
pub fn evaluate(net: &Net, split: &SplitTensors) -> Result<Option<(f64, u64)>, NonFinite> {
    Ok(evaluate_logits(net, split)?.map(|(score, _)| score))
}

/// (accuracy, errors) of a split, with the logits they were scored on.
type Scored = ((f64, u64), Tensor);

/// [`evaluate`], with the logits it scored (for measures that need them too).
fn evaluate_logits(net: &Net, split: &SplitTensors) -> Result<Option<Scored>, NonFinite> {
    if split.is_empty() {
        return Ok(None);
    }
    let logits = predict(net, &split.x, 1000);
    if !all_finite(&logits) {
        return Err(NonFinite("an output became NaN or infinite".into()));
    }
    Ok(Some((accuracy(&logits, &split.y), logits)))
}

fn all_finite(t: &Tensor) -> bool {
    t.isfinite().all().int64_value(&[]) != 0
}

/// Whether every trainable weight of `vs` is finite.
pub fn weights_finite(vs: &nn::VarStore) -> bool {
    tch::no_grad(|| vs.trainable_variables().iter().all(all_finite))
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

pub(crate) fn build_optimizer(
    vs: &nn::VarStore,
    cfg: &TrainCfg,
) -> Result<nn::Optimizer, TrainError> {
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
/// `on_epoch` sees each epoch's record (under `trial_id`) as soon as it is measured. A NaN or
/// infinite loss, weight or output at the end of an epoch stops the trial as `Diverged`.
#[allow(clippy::too_many_arguments)]
pub fn train(
    net: &Net,
    vs: &nn::VarStore,
    cfg: &TrainCfg,
    weights: &KdWeights,
    seed: u64,
    data: &TrainData,
    trial_id: &str,
    mut on_epoch: impl FnMut(&EpochRecord),
) -> Result<Outcome, TrainError> {
    let start = Instant::now();
    if cfg.jitter > 0 && data.soft_targets.is_some() && data.online_teacher.is_none() {
        // Cached logits are the teacher's on the unshifted images: never soft targets for
        // shifted ones.
        return Err(TrainError::Spec(
            "train.jitter: a KD student with shifted images needs the teacher itself (online \
             teacher), not its cached logits"
                .into(),
        ));
    }
    let mut opt = build_optimizer(vs, cfg)?;
    let n = data.train.len() as usize;
    let bs = cfg.batch_size.min(n.max(1));
    let steps_per_epoch = n.div_ceil(bs);
    let total_steps = steps_per_epoch * cfg.epochs;
    let device = data.train.x.device();
    let mut step = 0usize;
    let mut logs = Vec::with_capacity(cfg.epochs);
    let mut diverged: Option<String> = None;
    // The standardised black pixel: what a shifted image's uncovered border shows.
    let fill = if cfg.jitter > 0 && n > 0 {
        data.train.x.min().double_value(&[])
    } else {
        0.0
    };
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
            let x = jitter(&x, cfg.jitter, seed, epoch, b, fill);
            let y = data.train.y.index_select(0, &idx);
            lr = lr_at(cfg, step, total_steps);
            opt.set_lr(lr);
            let logits = net.forward_t(&x, true);
            let rows = idx.size()[0] as f64;
            let total = match data.soft_targets {
                Some(teacher) => {
                    let t = match data.online_teacher {
                        Some(t) => tch::no_grad(|| t.forward_t(&x, false)),
                        None => teacher.index_select(0, &idx),
                    };
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
            if let Some(c) = cfg.max_norm {
                net.max_norm_(c);
            }
            step += 1;
        }
        let nf = n as f64;
        let train_loss = sum_total.double_value(&[]) / nf;
        let hard_loss = sum_hard.double_value(&[]) / nf;
        let soft_loss = data.soft_targets.map(|_| sum_soft.double_value(&[]) / nf);
        let (mut val_acc, mut test_acc) = (None, None);
        if !train_loss.is_finite() {
            diverged = Some(format!("the loss became NaN or infinite in epoch {epoch}"));
        } else if !weights_finite(vs) {
            diverged = Some(format!("a weight became NaN or infinite in epoch {epoch}"));
        } else if cfg.evaluates(epoch) {
            match (evaluate(net, data.val), evaluate(net, data.test)) {
                (Ok(v), Ok(t)) => (val_acc, test_acc) = (v.map(|v| v.0), t.map(|t| t.0)),
                (Err(NonFinite(m)), _) | (_, Err(NonFinite(m))) => {
                    diverged = Some(format!("{m} in epoch {epoch}"));
                }
            }
        }
        let log = EpochRecord {
            trial_id: trial_id.to_string(),
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
        if diverged.is_some() {
            break;
        }
    }
    let mut out = Outcome {
        epochs: logs,
        ..Outcome::empty(Status::Ok)
    };
    let last = if diverged.is_none() {
        evaluate(net, data.train).and_then(|tr| Ok((tr, evaluate_logits(net, data.test)?)))
    } else {
        Err(NonFinite(String::new()))
    };
    match (diverged, last) {
        (None, Ok((train, test))) => {
            out.train_acc = train.map(|t| t.0);
            out.test_acc = test.as_ref().map(|t| t.0 .0);
            out.test_errors = test.as_ref().map(|t| t.0 .1);
            out.val_acc = out.epochs.last().and_then(|l| l.val_acc);
            out.best_epoch = best_epoch(&out.epochs);
            // The measures read the test logits just scored.
            if let (Some(r), Some((_, logits))) = (data.reference, &test) {
                let val = (!data.val.is_empty()).then(|| predict(net, &data.val.x, 1000));
                out.measures =
                    crate::measure::measure(logits, data.test, val.as_ref(), data.val, r);
            }
        }
        (why, last) => {
            out.status = Status::Diverged;
            out.message = why.or(last.err().map(|NonFinite(m)| format!("{m} after training")));
        }
    }
    out.wall_s = start.elapsed().as_secs_f64();
    out.finished_at = now_rfc3339();
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
            eval_every: 1,
            jitter: 0,
            max_norm: None,
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
    fn nan_weights_are_not_finite() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let w = vs.root().var("w", &[3], nn::Init::Const(1.0));
        assert!(weights_finite(&vs));
        tch::no_grad(|| {
            let _ = w.narrow(0, 1, 1).fill_(f64::NAN);
        });
        assert!(!weights_finite(&vs));
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

    #[test]
    fn jitter_shifts_each_image_by_at_most_n_and_fills_the_border() {
        // Four 5x5 images, one bright pixel each at the centre, background -1.
        let x = Tensor::full([4, 1, 5, 5], -1.0, (Kind::Float, tch::Device::Cpu));
        let _ = x.narrow(2, 2, 1).narrow(3, 2, 1).fill_(7.0);
        assert!(jitter(&x, 0, 1, 1, 0, -1.0).equal(&x));
        let j = jitter(&x, 2, 5, 3, 7, -1.0);
        assert_eq!(j.size(), [4, 1, 5, 5]);
        let mut moved = 0;
        for b in 0..4 {
            let img = j.get(b).get(0);
            // Still one bright pixel (a shift of 2 keeps the centre inside), the rest the fill.
            assert_eq!(img.eq(7.0).sum(Kind::Int64).int64_value(&[]), 1);
            assert_eq!(img.eq(-1.0).sum(Kind::Int64).int64_value(&[]), 24);
            let at = img.flatten(0, -1).argmax(0, false).int64_value(&[]);
            let (r, c) = (at / 5, at % 5);
            assert!((r - 2).abs() <= 2 && (c - 2).abs() <= 2);
            moved += i64::from(at != 12);
        }
        assert!(moved > 0, "some image moved");
        // A function of (seed, epoch, batch) alone: a KD trial and its baseline agree.
        assert!(j.equal(&jitter(&x, 2, 5, 3, 7, -1.0)));
        let other = (0..8).any(|b| !jitter(&x, 2, 5, 3, b, -1.0).equal(&j));
        assert!(other, "another batch gets other shifts");
        // A shift of 1 on a 5x5 image whose edge is bright brings in the fill.
        let edge = Tensor::full([16, 1, 5, 5], 3.0, (Kind::Float, tch::Device::Cpu));
        let e = jitter(&edge, 1, 0, 1, 0, -9.0);
        assert!(e.eq(-9.0).sum(Kind::Int64).int64_value(&[]) > 0);
    }

    #[test]
    fn max_norm_bounds_every_hidden_row_after_training_and_leaves_the_output_free() {
        use kd_model_zoo::{Init, MlpSpec, ModelSpec};
        let _l = crate::torch_lock();
        let dev = tch::Device::Cpu;
        tch::manual_seed(0);
        let x = Tensor::randn([120, 1, 4, 4], (Kind::Float, dev)) * 3.0;
        let y = Tensor::randint(3, [120], (Kind::Int64, dev));
        let split = SplitTensors {
            x: x.shallow_clone(),
            y: y.shallow_clone(),
        };
        let input = kd_model_zoo::InputShape {
            channels: 1,
            height: 4,
            width: 4,
        };
        let spec = ModelSpec::Mlp(MlpSpec {
            hidden: vec![6, 6],
            dropout: 0.0,
            input_dropout: 0.0,
            init: Init::Torch,
        });
        let row_norms = |t: &Tensor| -> Vec<f32> {
            t.square()
                .sum_dim_intlist(1, false, Kind::Float)
                .sqrt()
                .try_into()
                .unwrap()
        };
        let run = |max_norm: Option<f64>| {
            tch::manual_seed(1);
            let vs = nn::VarStore::new(dev);
            let net = spec.build(&vs.root(), input, 3).unwrap();
            let mut c = cfg(Schedule::Constant);
            c.lr = 0.5;
            c.max_norm = max_norm;
            let data = TrainData {
                train: &split,
                val: &split,
                test: &split,
                soft_targets: None,
                online_teacher: None,
                reference: None,
            };
            let out = train(
                &net,
                &vs,
                &c,
                &KdWeights::hard_only(),
                0,
                &data,
                "t",
                |_| {},
            );
            assert_eq!(out.unwrap().status, Status::Ok);
            let Net::Mlp { layers, .. } = &net else {
                unreachable!()
            };
            layers.iter().map(|l| row_norms(&l.ws)).collect::<Vec<_>>()
        };
        let free = run(None);
        let bound = run(Some(0.4));
        // Unconstrained, the hidden rows grow past the bound; constrained, none is above it.
        assert!(free[..2].iter().flatten().any(|&n| n > 0.6), "{free:?}");
        for n in bound[..2].iter().flatten() {
            assert!(*n <= 0.4 + 1e-5, "hidden row norm {n}");
        }
        // The output layer's rows are not hidden units: free to exceed it.
        assert!(bound[2].iter().any(|&n| n > 0.45), "{bound:?}");
    }

    #[test]
    fn an_online_teacher_gives_the_soft_targets_of_the_cached_logits() {
        use kd_model_zoo::{Init, MlpSpec, ModelSpec};
        let _l = crate::torch_lock();
        let dev = tch::Device::Cpu;
        tch::manual_seed(0);
        let x = Tensor::randn([200, 1, 4, 4], (Kind::Float, dev));
        let y = Tensor::randint(3, [200], (Kind::Int64, dev));
        let split = |n: i64| SplitTensors {
            x: x.narrow(0, 0, n),
            y: y.narrow(0, 0, n),
        };
        let (tr, val, test) = (split(200), split(50), split(50));
        let input = kd_model_zoo::InputShape {
            channels: 1,
            height: 4,
            width: 4,
        };
        let spec = |h: usize| {
            ModelSpec::Mlp(MlpSpec {
                hidden: vec![h],
                dropout: 0.0,
                input_dropout: 0.0,
                init: Init::Torch,
            })
        };
        let tvs = nn::VarStore::new(dev);
        let teacher = spec(16).build(&tvs.root(), input, 3).unwrap();
        let cached = predict(&teacher, &tr.x, 1000);
        let mut c = cfg(Schedule::Constant);
        c.epochs = 2;
        c.optimizer = Optimizer::Adam;
        c.lr = 0.01;
        let weights = KdWeights {
            temperature: 4.0,
            alpha: 0.9,
            beta: 0.1,
            ..KdWeights::hard_only()
        };
        let run = |online: Option<&Net>| {
            tch::manual_seed(1);
            let vs = nn::VarStore::new(dev);
            let net = spec(8).build(&vs.root(), input, 3).unwrap();
            let data = TrainData {
                train: &tr,
                val: &val,
                test: &test,
                soft_targets: Some(&cached),
                online_teacher: online,
                reference: None,
            };
            train(&net, &vs, &c, &weights, 3, &data, "t", |_| {}).unwrap()
        };
        let (a, b) = (run(None), run(Some(&teacher)));
        for (ea, eb) in a.epochs.iter().zip(&b.epochs) {
            assert!(
                (ea.train_loss - eb.train_loss).abs() < 1e-5,
                "{ea:?} {eb:?}"
            );
            assert!((ea.soft_loss.unwrap() - eb.soft_loss.unwrap()).abs() < 1e-5);
        }
    }
}
