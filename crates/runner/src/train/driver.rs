//! The epoch protocol, written once for every way of training: the data order and schedule,
//! the weighted loss sums, the divergence checks (loss, then weights, then outputs, with their
//! messages), the epoch records, the final evaluation and the outcomes. What differs between a
//! student alone ([`super::single`]) and a pack ([`super::packed`]) is behind [`Learner`]: one
//! optimiser step on a batch, the finiteness of each student's weights, and its logits.

use std::time::Instant;

use kd_report::{EpochRecord, Status};
use tch::{Kind, Tensor};

use super::eval::{score, Score};
use super::snapshot::{named, rows_of_steps, Durability, Named, Progress, Snapshot};
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
    /// Everything a continued run needs of the learner: its model's tensors (`model/<name>`)
    /// and its optimiser's state (`opt/...`), shallow.
    fn export(&self) -> Vec<(String, Tensor)>;
    /// Put back what [`Learner::export`] gave; what is missing or of another shape is an error.
    fn import(&mut self, from: &Named) -> Result<(), String>;
    /// Draw from libtorch's global generator what steps of `rows` rows each drew, in order,
    /// results discarded (see [`super::snapshot`]). False when the learner cannot say what it
    /// draws.
    fn replay(&self, rows: &mut dyn Iterator<Item = i64>) -> bool;
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

/// The batches of a run: `n` training rows in batches of `bs`.
struct Geometry {
    n: usize,
    bs: usize,
    steps_per_epoch: usize,
    total_steps: usize,
}

impl Geometry {
    fn new(cfg: &TrainCfg, n: usize) -> Geometry {
        let bs = cfg.batch_size.min(n.max(1));
        let steps_per_epoch = n.div_ceil(bs);
        Geometry {
            n,
            bs,
            steps_per_epoch,
            total_steps: steps_per_epoch * cfg.epochs,
        }
    }
}

/// An epoch's running sums over its batches, per student, on the device.
struct Sums {
    total: Tensor,
    soft: Tensor,
    hard: Tensor,
    correct: Tensor,
}

const SUMS: [&str; 4] = ["total", "soft", "hard", "correct"];

impl Sums {
    fn zeros(k: usize, device: tch::Device) -> Sums {
        let acc = || Tensor::zeros([k as i64], (Kind::Double, device));
        Sums {
            total: acc(),
            soft: acc(),
            hard: acc(),
            correct: Tensor::zeros([k as i64], (Kind::Int64, device)),
        }
    }

    fn tensors(&self) -> [&Tensor; 4] {
        [&self.total, &self.soft, &self.hard, &self.correct]
    }

    fn add(&mut self, l: &StepLoss, rows: usize) {
        let r = rows as f64;
        self.total += l.total.to_kind(Kind::Double) * r;
        self.hard += l.hard.to_kind(Kind::Double) * r;
        if let Some(s) = &l.soft {
            self.soft += s.to_kind(Kind::Double) * r;
        }
        self.correct +=
            l.logits
                .argmax(-1, false)
                .eq_tensor(&l.y)
                .sum_dim_intlist(-1, false, Kind::Int64);
    }

    /// One read: per student, (total, soft, hard, correct).
    fn read(self, k: usize) -> [Vec<f64>; 4] {
        let [t, s, h, c] = [self.total, self.soft, self.hard, self.correct];
        let sums = super::host::f64s(&Tensor::cat(&[t, s, h, c.to_kind(Kind::Double)], 0));
        std::array::from_fn(|c| sums[c * k..(c + 1) * k].to_vec())
    }
}

/// Where an unfinished epoch stands (a run continued mid-epoch).
struct Partial {
    batch: usize,
    sums: Sums,
    seconds: f64,
    lr: f64,
}

/// What the epoch loop carries from epoch to epoch: what a [`Snapshot`] saves.
struct RunState {
    alive: Vec<bool>,
    message: Vec<Option<String>>,
    logs: Vec<Vec<EpochRecord>>,
    /// Per student, its best validation accuracy so far. The weights of an epoch that beats it
    /// are kept and tested after training unless the epoch is tested anyway
    /// (`train.test_every`), so `best_test_acc` is always measured.
    best_val: Vec<f64>,
    kept: super::kept::Kept,
    /// Epochs finished.
    epoch: u32,
    step: usize,
    /// The learner's seconds in earlier processes (a continued run).
    before: f64,
    start: Instant,
    last_snapshot: Instant,
    partial: Option<Partial>,
    /// A continued run: where it continued, as its outcome says.
    resumed: Option<String>,
}

impl RunState {
    fn new(learner: &dyn Learner, k: usize, epochs: usize) -> RunState {
        let (state, stacked) = learner.state();
        RunState {
            alive: vec![true; k],
            message: vec![None; k],
            logs: vec![Vec::with_capacity(epochs); k],
            best_val: vec![f64::NEG_INFINITY; k],
            kept: super::kept::Kept::new(state, stacked, k),
            epoch: 0,
            step: 0,
            before: 0.0,
            start: Instant::now(),
            last_snapshot: Instant::now(),
            partial: None,
            resumed: None,
        }
    }

    /// Continue from `snap`: the learner's state and the loop's put back, libtorch's generator
    /// brought to where the snapshot's steps left it.
    fn restore(
        &mut self,
        learner: &mut dyn Learner,
        snap: Snapshot,
        g: &Geometry,
        k: usize,
    ) -> Result<(), String> {
        let p = snap.progress;
        let lengths = [
            p.logs.len(),
            p.best_val.len(),
            p.alive.len(),
            p.message.len(),
        ];
        if lengths.iter().any(|&l| l != k) {
            return Err(format!("it holds {} students, not {k}", p.alive.len()));
        }
        let expected = p.epoch as usize * g.steps_per_epoch + p.batch;
        if p.step != expected || p.batch >= g.steps_per_epoch {
            return Err(format!(
                "its step {} (epoch {}, batch {}) does not fit {} batches per epoch",
                p.step, p.epoch, p.batch, g.steps_per_epoch
            ));
        }
        let tensors = named(snap.tensors);
        learner.import(&tensors)?;
        self.kept.import(&tensors, &p.kept)?;
        learner.retire(&p.alive);
        if p.batch > 0 {
            let sum = |what: &str| {
                let name = format!("sum/{what}");
                let device = learner.state().0[0].device();
                tensors
                    .get(&name)
                    .map(|t| t.to_device(device))
                    .ok_or_else(|| format!("it has no tensor `{name}`"))
            };
            self.partial = Some(Partial {
                batch: p.batch,
                sums: Sums {
                    total: sum("total")?,
                    soft: sum("soft")?,
                    hard: sum("hard")?,
                    correct: sum("correct")?,
                },
                seconds: p.epoch_seconds,
                lr: p.lr,
            });
        }
        let exact = learner.replay(&mut rows_of_steps(p.step, g.n, g.bs));
        let at = match p.batch {
            0 => format!("at epoch {}", p.epoch),
            b => format!("in epoch {} after batch {b}", p.epoch + 1),
        };
        self.resumed = Some(if exact {
            format!("continued {at}")
        } else {
            format!("continued {at} on another draw (its dropout masks differ from an uninterrupted run's)")
        });
        (self.alive, self.message, self.logs, self.best_val) =
            (p.alive, p.message, p.logs, p.best_val);
        (self.epoch, self.step, self.before) = (p.epoch, p.step, p.seconds);
        Ok(())
    }

    /// The learner's seconds so far, in this process and before.
    fn seconds(&self) -> f64 {
        self.before + self.start.elapsed().as_secs_f64()
    }

    /// A snapshot of the run now: at an epoch's end, or mid-epoch with `partial`.
    fn snapshot(
        &self,
        learner: &dyn Learner,
        partial: Option<(usize, &Sums, f64, f64)>,
    ) -> Snapshot {
        let mut tensors = learner.export();
        tensors.extend(self.kept.export());
        let (batch, epoch_seconds, lr) = match partial {
            Some((b, sums, seconds, lr)) => {
                for (what, t) in SUMS.iter().zip(sums.tensors()) {
                    tensors.push((format!("sum/{what}"), t.shallow_clone()));
                }
                (b, seconds, lr)
            }
            None => (0, 0.0, 0.0),
        };
        Snapshot {
            progress: Progress {
                epoch: self.epoch,
                batch,
                step: self.step,
                seconds: self.seconds(),
                epoch_seconds,
                logs: self.logs.clone(),
                best_val: self.best_val.clone(),
                alive: self.alive.clone(),
                message: self.message.clone(),
                kept: self.kept.epochs().to_vec(),
                lr,
            },
            tensors,
        }
    }
}

/// Train `members` (one per student of `learner`, in order) for `cfg.epochs` epochs on
/// `data`. `on_epoch(k, record)` sees student k's epochs as they are measured (a continued run:
/// those after the snapshot). A student whose loss, weights or outputs become NaN or infinite
/// at the end of an epoch is recorded `diverged` and retired; the others go on. Returns one
/// outcome per member; `wall_s` and epoch seconds are each student's share (the learner's time
/// / K). `durable` says where to continue from and when to snapshot (see [`super::snapshot`]).
pub(crate) fn run(
    learner: &mut dyn Learner,
    members: &[Member],
    cfg: &TrainCfg,
    data: &TrainData,
    mut durable: Durability,
    mut on_epoch: impl FnMut(usize, &EpochRecord),
) -> Result<Vec<Outcome>, TrainError> {
    let k = members.len();
    let device = data.train.x.device();
    if device.is_cuda() {
        // Process-wide in libtorch: set for every trial, so each runs as its recipe says.
        tch::Cuda::cudnn_set_benchmark(cfg.cudnn_benchmark);
    }
    let g = Geometry::new(cfg, data.train.len() as usize);
    let mut st = RunState::new(learner, k, cfg.epochs);
    if let Some(snap) = durable.resume.take() {
        st.restore(learner, snap, &g, k)
            .map_err(TrainError::Resume)?;
    }
    // The last epoch's test logits, which are also the final ones (the weights do not change).
    let mut last_test: Option<Tensor> = None;
    while (st.epoch as usize) < cfg.epochs {
        let epoch = st.epoch + 1;
        let partial = st.partial.take();
        let t0 = Instant::now();
        let earlier = partial.as_ref().map_or(0.0, |p| p.seconds);
        let (sums, lr) = train_epoch(
            learner,
            members,
            cfg,
            data,
            &g,
            &mut st,
            epoch,
            partial,
            &mut durable,
            t0,
        )?;
        let seconds = (earlier + t0.elapsed().as_secs_f64()) / k as f64;
        let test = close_epoch(
            learner,
            members,
            cfg,
            data,
            &mut st,
            epoch,
            sums,
            lr,
            seconds,
            &mut on_epoch,
        );
        if epoch as usize == cfg.epochs {
            last_test = test;
        }
        st.epoch = epoch;
        if st.alive.iter().all(|a| !a) {
            break;
        }
        learner.retire(&st.alive);
        if epoch as usize == cfg.epochs {
            break;
        }
        let stop = (durable.stop)();
        let due = durable
            .every
            .is_some_and(|e| st.last_snapshot.elapsed() >= e);
        if stop || due {
            (durable.save)(&st.snapshot(learner, None));
            st.last_snapshot = Instant::now();
            if stop {
                return Err(TrainError::Stopped(format!("after epoch {epoch}")));
            }
        }
    }
    Ok(finish(learner, members, data, st, last_test))
}

/// Train the batches of `epoch` (from where `partial` stands, if given); the epoch's sums and
/// its last learning rate. A stop asked for mid-epoch snapshots after the current step.
#[allow(clippy::too_many_arguments)]
fn train_epoch(
    learner: &mut dyn Learner,
    members: &[Member],
    cfg: &TrainCfg,
    data: &TrainData,
    g: &Geometry,
    st: &mut RunState,
    epoch: u32,
    partial: Option<Partial>,
    durable: &mut Durability,
    t0: Instant,
) -> Result<(Sums, f64), TrainError> {
    let (k, n, bs) = (members.len(), g.n, g.bs);
    let device = data.train.x.device();
    // Each student's own order, a function of its seed alone.
    let order: Vec<i64> = members
        .iter()
        .flat_map(|m| epoch_order(m.seed, epoch, n))
        .collect();
    let order = super::host::upload(&order, device).view([k as i64, n as i64]);
    let (first, mut sums, mut lr, earlier) = match partial {
        Some(p) => (p.batch, p.sums, p.lr, p.seconds),
        None => (0, Sums::zeros(k, device), cfg.lr, 0.0),
    };
    for b in first..g.steps_per_epoch {
        let rows = bs.min(n - b * bs);
        let idx = order.narrow(1, (b * bs) as i64, rows as i64);
        lr = lr_at(cfg, st.step, g.total_steps);
        let l = learner.step(&Batch {
            idx: &idx,
            epoch,
            index: b,
            step: st.step,
            lr,
        })?;
        sums.add(&l, rows);
        st.step += 1;
        if b + 1 < g.steps_per_epoch && (durable.stop)() {
            let seconds = earlier + t0.elapsed().as_secs_f64();
            (durable.save)(&st.snapshot(learner, Some((b + 1, &sums, seconds, lr))));
            return Err(TrainError::Stopped(format!(
                "in epoch {epoch} after batch {}",
                b + 1
            )));
        }
    }
    Ok((sums, lr))
}

/// The end of `epoch`: its sums read, the students checked, evaluated and recorded. The test
/// logits, when the epoch measured them.
#[allow(clippy::too_many_arguments)]
fn close_epoch(
    learner: &mut dyn Learner,
    members: &[Member],
    cfg: &TrainCfg,
    data: &TrainData,
    st: &mut RunState,
    epoch: u32,
    sums: Sums,
    lr: f64,
    seconds: f64,
    on_epoch: &mut impl FnMut(usize, &EpochRecord),
) -> Option<Tensor> {
    let k = members.len();
    let nf = data.train.len() as f64;
    let [totals, softs, hards, correct] = sums.read(k);
    let finite_w = learner.weights_finite();
    let alive = &mut st.alive;
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
            let new_best = val[i].is_some_and(|v| v.finite && v.acc > st.best_val[i]);
            if alive[i] && sound && new_best {
                st.best_val[i] = val[i].map_or(st.best_val[i], |v| v.acc);
                if now {
                    st.kept.forget(i);
                } else {
                    st.kept.keep(i, epoch);
                }
            }
            now
        })
        .collect();
    let mut logits = None;
    let test = if healthy && tested.iter().any(|&t| t) {
        let (scores, l) = evaluate_keep(learner, data.test, k);
        logits = l;
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
        st.logs[i].push(log);
        if let Some(why) = why {
            alive[i] = false;
            st.message[i] = Some(format!("{why} in epoch {epoch}"));
        }
    }
    logits
}

/// After the last epoch: the kept best epochs tested, the final scores and measures, one
/// outcome per member.
fn finish(
    learner: &mut dyn Learner,
    members: &[Member],
    data: &TrainData,
    st: RunState,
    last_test: Option<Tensor>,
) -> Vec<Outcome> {
    let k = members.len();
    let RunState {
        alive,
        mut message,
        mut logs,
        kept,
        resumed,
        before,
        start,
        ..
    } = st;
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
    let wall_s = (before + start.elapsed().as_secs_f64()) / k as f64;
    let finished_at = now_rfc3339();
    (0..k)
        .map(|i| {
            let (train, test_score) = (train_scores[i], test_scores[i]);
            let mut out = Outcome {
                wall_s,
                finished_at: finished_at.clone(),
                epochs: std::mem::take(&mut logs[i]),
                resumed: resumed.clone(),
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
        .collect()
}
