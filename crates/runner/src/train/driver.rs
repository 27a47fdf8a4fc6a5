//! The epoch protocol, written once for every way of training: the data order and schedule,
//! the weighted loss sums, the divergence checks (loss, then weights, then outputs, with their
//! messages), the epoch records, the final evaluation and the outcomes. What differs between a
//! student alone ([`super::single`]) and a pack ([`super::packed`]) is behind [`Learner`]: one
//! optimiser step on a batch, the finiteness of each student's weights, and its logits.

use std::time::Instant;

use kd_report::{EpochRecord, Status};
use tch::{Kind, Tensor};

use super::eval::{score, Score};
use super::{best_epoch, epoch_order, lr_at, Member, Outcome, TrainData};
use crate::config::TrainCfg;
use crate::data::SplitTensors;
use crate::env::now_rfc3339;
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
}

/// Per student, the scores of `learner` on `split`; none for an empty split.
fn evaluate(learner: &dyn Learner, split: &SplitTensors, k: usize) -> Vec<Option<Score>> {
    evaluate_keep(learner, split, k).0
}

/// [`evaluate`], and the logits it scored (`[K, n, classes]`), none for an empty split.
fn evaluate_keep(
    learner: &dyn Learner,
    split: &SplitTensors,
    k: usize,
) -> (Vec<Option<Score>>, Option<Tensor>) {
    if split.is_empty() {
        return (vec![None; k], None);
    }
    let logits = learner.logits(&split.x);
    let scores = score(&logits, &split.y).into_iter().map(Some).collect();
    (scores, Some(logits))
}

/// Train `members` (one per student of `learner`, in order) for `cfg.epochs` epochs on
/// `data`. `on_epoch(k, record)` sees student k's epochs as they are measured. A student whose
/// loss, weights or outputs become NaN or infinite at the end of an epoch is recorded
/// `diverged` and retired; the others go on. Returns one outcome per member; `wall_s` and epoch
/// seconds are each student's share (the learner's time / K).
pub(crate) fn run(
    learner: &mut dyn Learner,
    members: &[Member],
    cfg: &TrainCfg,
    data: &TrainData,
    mut on_epoch: impl FnMut(usize, &EpochRecord),
) -> Result<Vec<Outcome>, TrainError> {
    let start = Instant::now();
    let k = members.len();
    let device = data.train.x.device();
    if device.is_cuda() {
        // Process-wide in libtorch: set for every trial, so each runs as its recipe says.
        tch::Cuda::cudnn_set_benchmark(cfg.cudnn_benchmark);
    }
    let n = data.train.len() as usize;
    let bs = cfg.batch_size.min(n.max(1));
    let steps_per_epoch = n.div_ceil(bs);
    let total_steps = steps_per_epoch * cfg.epochs;
    let mut alive = vec![true; k];
    let mut message: Vec<Option<String>> = vec![None; k];
    let mut logs: Vec<Vec<EpochRecord>> = vec![Vec::with_capacity(cfg.epochs); k];
    // Per student, its best validation accuracy so far. The weights of an epoch that beats it
    // are kept and tested after training unless the epoch is tested anyway (`train.test_every`),
    // so `best_test_acc` is always measured.
    let mut best_val = vec![f64::NEG_INFINITY; k];
    let (state, stacked) = learner.state();
    let mut kept = super::kept::Kept::new(state, stacked, k);
    // The last epoch's test logits, which are also the final ones (the weights do not change).
    let mut last_test: Option<Tensor> = None;
    let mut step = 0usize;
    for epoch in 1..=cfg.epochs as u32 {
        let t0 = Instant::now();
        // Each student's own order, a function of its seed alone.
        let order: Vec<i64> = members
            .iter()
            .flat_map(|m| epoch_order(m.seed, epoch, n))
            .collect();
        let order = super::host::upload(&order, device).view([k as i64, n as i64]);
        let acc = || Tensor::zeros([k as i64], (Kind::Double, device));
        let (mut sum_total, mut sum_soft, mut sum_hard) = (acc(), acc(), acc());
        let mut correct = Tensor::zeros([k as i64], (Kind::Int64, device));
        let mut lr = cfg.lr;
        for b in 0..steps_per_epoch {
            let rows = bs.min(n - b * bs);
            let idx = order.narrow(1, (b * bs) as i64, rows as i64);
            lr = lr_at(cfg, step, total_steps);
            let l = learner.step(&Batch {
                idx: &idx,
                epoch,
                index: b,
                step,
                lr,
            })?;
            let r = rows as f64;
            sum_total += l.total.to_kind(Kind::Double) * r;
            sum_hard += l.hard.to_kind(Kind::Double) * r;
            if let Some(s) = &l.soft {
                sum_soft += s.to_kind(Kind::Double) * r;
            }
            correct +=
                l.logits
                    .argmax(-1, false)
                    .eq_tensor(&l.y)
                    .sum_dim_intlist(-1, false, Kind::Int64);
            step += 1;
        }
        let nf = n as f64;
        // One read for the epoch's sums: total, soft, hard, correct, per student.
        let sums = super::host::f64s(&Tensor::cat(
            &[sum_total, sum_soft, sum_hard, correct.to_kind(Kind::Double)],
            0,
        ));
        let column = |c: usize| sums[c * k..(c + 1) * k].to_vec();
        let (totals, softs, hards, correct) = (column(0), column(1), column(2), column(3));
        let finite_w = learner.weights_finite();
        // Evaluated only when some student is still healthy after the epoch's loss and weights.
        let healthy = (0..k).any(|i| alive[i] && totals[i].is_finite() && finite_w[i]);
        let val = if cfg.evaluates(epoch) && healthy {
            evaluate(learner, data.val, k)
        } else {
            vec![None; k]
        };
        let tested: Vec<bool> = (0..k)
            .map(|i| {
                let now = alive[i] && cfg.tests(epoch);
                // A new best of a student that does not diverge in this epoch.
                let sound = totals[i].is_finite() && finite_w[i];
                let new_best = val[i].is_some_and(|v| v.finite && v.acc > best_val[i]);
                if alive[i] && sound && new_best {
                    best_val[i] = val[i].map_or(best_val[i], |v| v.acc);
                    if now {
                        kept.forget(i);
                    } else {
                        kept.keep(i, epoch);
                    }
                }
                now
            })
            .collect();
        let test = if healthy && tested.iter().any(|&t| t) {
            let (scores, logits) = evaluate_keep(learner, data.test, k);
            if epoch as usize == cfg.epochs {
                last_test = logits;
            }
            // Recorded for the students that asked for it only, so a pack's epochs are a lone
            // student's.
            scores
                .into_iter()
                .zip(&tested)
                .map(|(s, &t)| s.filter(|_| t))
                .collect()
        } else {
            vec![None; k]
        };
        let seconds = t0.elapsed().as_secs_f64() / k as f64;
        for i in 0..k {
            if !alive[i] {
                continue;
            }
            let train_loss = totals[i] / nf;
            let why = if !train_loss.is_finite() {
                Some("the loss became NaN or infinite")
            } else if !finite_w[i] {
                Some("a weight became NaN or infinite")
            } else if val[i].is_some_and(|v| !v.finite) || test[i].is_some_and(|t| !t.finite) {
                Some("an output became NaN or infinite")
            } else {
                None
            };
            let diverged = why.is_some();
            let log = EpochRecord {
                trial_id: members[i].trial_id.clone(),
                epoch,
                train_loss,
                soft_loss: members[i].kd.then(|| softs[i] / nf),
                hard_loss: hards[i] / nf,
                train_acc: correct[i] / nf,
                val_acc: val[i].filter(|_| !diverged).map(|v| v.acc),
                test_acc: test[i].filter(|_| !diverged).map(|t| t.acc),
                lr,
                seconds,
            };
            on_epoch(i, &log);
            logs[i].push(log);
            if let Some(why) = why {
                alive[i] = false;
                message[i] = Some(format!("{why} in epoch {epoch}"));
            }
        }
        if alive.iter().all(|a| !a) {
            break;
        }
        learner.retire(&alive);
    }
    // The kept best epochs' test accuracies: one pass with their weights in place.
    let mut late_diverged: Vec<Option<u32>> = vec![None; k];
    if kept.epochs().iter().any(Option::is_some) && !data.test.is_empty() {
        let logits = kept.with(|| learner.logits(&data.test.x));
        let scores = score(&logits, &data.test.y);
        for (i, e) in kept.epochs().iter().enumerate() {
            let Some(e) = *e else { continue };
            let Some(log) = logs[i].iter_mut().find(|l| l.epoch == e) else {
                continue;
            };
            if scores[i].finite {
                log.test_acc = Some(scores[i].acc);
            } else {
                late_diverged[i] = Some(e);
            }
        }
    }
    // The test logits are scored and, for the measures, kept.
    let any = alive.iter().any(|&a| a);
    let test = (any && !data.test.is_empty())
        .then(|| last_test.unwrap_or_else(|| learner.logits(&data.test.x)));
    let (train_scores, test_scores) = if any {
        let t = test.as_ref().map_or_else(
            || vec![None; k],
            |t| score(t, &data.test.y).into_iter().map(Some).collect(),
        );
        (evaluate(learner, data.train, k), t)
    } else {
        (vec![None; k], vec![None; k])
    };
    // Confusion, fidelity and bias shift, from each student's own logits.
    let val = match (data.reference, &test) {
        (Some(_), Some(_)) if !data.val.is_empty() => Some(learner.logits(&data.val.x)),
        _ => None,
    };
    let wall_s = start.elapsed().as_secs_f64() / k as f64;
    let finished_at = now_rfc3339();
    Ok((0..k)
        .map(|i| {
            let (train, test_score) = (train_scores[i], test_scores[i]);
            let mut out = Outcome {
                wall_s,
                finished_at: finished_at.clone(),
                epochs: std::mem::take(&mut logs[i]),
                ..Outcome::empty(Status::Ok)
            };
            if !alive[i] {
                out.status = Status::Diverged;
                out.message = message[i].take();
            } else if let Some(e) = late_diverged[i] {
                out.status = Status::Diverged;
                out.message = Some(format!(
                    "an output became NaN or infinite in epoch {e} (its test logits, measured \
                     after training with that epoch's kept weights)"
                ));
            } else if train.is_some_and(|t| !t.finite) || test_score.is_some_and(|t| !t.finite) {
                out.status = Status::Diverged;
                out.message = Some("an output became NaN or infinite after training".into());
            } else {
                out.train_acc = train.map(|t| t.acc);
                out.test_acc = test_score.map(|t| t.acc);
                out.test_errors = test_score.map(|t| t.errors);
                out.val_acc = out.epochs.last().and_then(|l| l.val_acc);
                out.best_epoch = best_epoch(&out.epochs);
                if let (Some(r), Some(test)) = (data.reference, &test) {
                    let v = val.as_ref().map(|v| v.get(i as i64));
                    out.measures = super::measure::measure(
                        &test.get(i as i64),
                        data.test,
                        v.as_ref(),
                        data.val,
                        r,
                    );
                }
            }
            out
        })
        .collect())
}
