//! The epoch protocol, written once for every way of training: the data order and schedule,
//! the weighted loss sums, the divergence checks (loss, then weights, then outputs, with their
//! messages), the epoch records, the final evaluation and the outcomes. What differs between a
//! student alone ([`super::single`]) and a pack ([`super::packed`]) is behind [`Learner`]: one
//! optimiser step on a batch, the finiteness of each student's weights, and its logits.

use std::time::Instant;

use kd_report::{EpochRecord, Status};
use tch::Tensor;

use super::eval::{score, Score};
pub(crate) use super::learner::{Batch, Learner, StepLoss};
use super::run_state::{Geometry, Partial, RunState, Sums};
use super::snapshot::{Durability, Keep};
use super::{best_epoch, epoch_order, lr_at, Member, Outcome, TrainData};
use crate::config::{Save, TrainCfg, Weights};
use crate::data::SplitTensors;
use crate::env::now_rfc3339;
use crate::error::{AtRung, TrainError};

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
    if data.train.x.device().is_cuda() {
        // Process-wide in libtorch: set for every trial, so each runs as its recipe says.
        tch::Cuda::cudnn_set_benchmark(cfg.cudnn_benchmark);
    }
    let g = Geometry::new(cfg, data.train.len() as usize);
    let mut st = RunState::new(learner, k, cfg.epochs, durable.models.save == Save::Best);
    if let Some(snap) = durable.resume.take() {
        st.restore(learner, snap, &g, k)
            .map_err(TrainError::Resume)?;
    }
    if let Some(i) = (0..k).find(|&i| {
        st.message[i].as_deref() == Some(PRUNED)
            && !durable.rung.pruned.get(i).copied().unwrap_or(false)
    }) {
        // A halving search's checkpoint, with a member it pruned that must train now (a grid
        // run after it): the member's state stopped at its rung, so the unit starts over.
        return Err(TrainError::Resume(format!(
            "its member {} was pruned by a successive-halving search in it, and trains to the \
             end now",
            members[i].trial_id
        )));
    }
    prune(learner, &mut st, &durable.rung.pruned);
    // A run continued from past its rung (a checkpoint written on the way to the next one, by a
    // run that was stopped there) reports the rung from its epoch records.
    if let Some(until) = durable.rung.until.filter(|&u| st.epoch >= u) {
        return Err(TrainError::Paused(paused(&st, until)));
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
        // The epoch's seconds run until its evaluation is done (`close_epoch` reads the clock).
        let clock = (t0, earlier);
        let test = close_epoch(
            learner,
            members,
            cfg,
            data,
            &mut st,
            epoch,
            sums,
            lr,
            clock,
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
        if durable.rung.until == Some(epoch) {
            (durable.save)(&st.snapshot(learner, None));
            return Err(TrainError::Paused(paused(&st, epoch)));
        }
        let stop = (durable.stop)();
        let due = durable
            .every
            .is_some_and(|e| st.last_snapshot.elapsed() >= e);
        if stop || due {
            let saved = (durable.save)(&st.snapshot(learner, None));
            st.last_snapshot = Instant::now();
            if stop {
                return Err(stopped(format!("after epoch {epoch}"), saved));
            }
        }
    }
    let keep = std::mem::take(&mut durable.models);
    Ok(finish(learner, members, cfg, data, st, last_test, keep))
}

/// Why a member retired by [`prune`] stopped, as its snapshot keeps it.
const PRUNED: &str = "pruned by the search";

/// Retire the members the search pruned (`pruned[i]`), as a diverged one is: a pack trains on
/// with their losses masked out, so the others' numbers are what they would have been.
fn prune(learner: &mut dyn Learner, st: &mut RunState, pruned: &[bool]) {
    let mut any = false;
    for (i, _) in pruned.iter().enumerate().filter(|(_, &p)| p) {
        if st.alive[i] {
            st.alive[i] = false;
            st.message[i] = Some(PRUNED.into());
            any = true;
        }
    }
    if any {
        learner.retire(&st.alive);
    }
}

/// Each member's state at the rung `until`: its epochs up to it (a member that diverged before:
/// its status and message).
fn paused(st: &RunState, until: u32) -> Vec<AtRung> {
    (0..st.alive.len())
        .map(|i| {
            let epochs: Vec<EpochRecord> = st.logs[i]
                .iter()
                .filter(|e| e.epoch <= until)
                .cloned()
                .collect();
            let reached = epochs.last().is_some_and(|e| e.epoch == until);
            // Healthy at the rung: alive now, or alive past it (a run continued from a later
            // checkpoint), not dead in the rung's epoch itself.
            let lived_past = st.logs[i].last().is_some_and(|e| e.epoch > until);
            let status = if reached && (st.alive[i] || lived_past) {
                Status::Ok
            } else {
                Status::Diverged
            };
            AtRung {
                message: (status != Status::Ok)
                    .then(|| st.message[i].clone())
                    .flatten(),
                status,
                epochs,
            }
        })
        .collect()
}

/// A stop `at` where, and whether its checkpoint was written.
fn stopped(at: String, saved: bool) -> TrainError {
    TrainError::Stopped(if saved {
        format!("{at}: its checkpoint is written")
    } else {
        format!("{at}, but its checkpoint could not be written (see the warning above)")
    })
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
            let saved = (durable.save)(&st.snapshot(learner, Some((b + 1, &sums, seconds, lr))));
            return Err(stopped(
                format!("in epoch {epoch} after batch {}", b + 1),
                saved,
            ));
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
    (t0, earlier): (Instant, f64),
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
                // With `train.weights: best` the weights are kept though tested now: the
                // trial ends with them; with `save: best` they are written at the end.
                if now && cfg.weights != Weights::Best && !st.keep_best {
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
    // Training and evaluation, each student's share.
    let seconds = (earlier + t0.elapsed().as_secs_f64()) / k as f64;
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

/// The kept best epochs' test accuracies, written into the epoch records that have none (one
/// pass with their weights in place). Per student, the kept epoch whose logits were not finite.
fn test_kept(
    learner: &dyn Learner,
    kept: &super::kept::Kept,
    logs: &mut [Vec<EpochRecord>],
    data: &TrainData,
) -> Vec<Option<u32>> {
    let mut late_diverged = vec![None; logs.len()];
    let untested: Vec<Option<u32>> = (kept.epochs().iter().zip(logs.iter()))
        .map(|(e, log)| e.filter(|&e| log.iter().any(|l| l.epoch == e && l.test_acc.is_none())))
        .collect();
    if !untested.iter().any(Option::is_some) || data.test.is_empty() {
        return late_diverged;
    }
    let logits = kept.with(|| learner.logits(&data.test.x));
    let scores = score(&logits, &data.test.y);
    for (i, e) in untested.iter().enumerate() {
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
    late_diverged
}

/// After the last epoch: the kept best epochs tested, the final scores and measures, one
/// outcome per member.
fn finish(
    learner: &mut dyn Learner,
    members: &[Member],
    cfg: &TrainCfg,
    data: &TrainData,
    st: RunState,
    mut last_test: Option<Tensor>,
    models: Keep,
) -> Vec<Outcome> {
    let k = members.len();
    let RunState {
        alive,
        mut message,
        mut logs,
        mut kept,
        resumed,
        before,
        start,
        ..
    } = st;
    let late_diverged = test_kept(learner, &kept, &mut logs, data);
    let kept_epochs = kept.epochs().to_vec();
    // `train.weights: best`: the students end with their best validation epoch's weights.
    let best = cfg.weights == Weights::Best;
    if best && kept.epochs().iter().any(Option::is_some) {
        kept.install();
        last_test = None;
    }
    let (test, train_scores, test_scores) = final_scores(learner, data, &alive, last_test);
    // Confusion, fidelity and bias shift, from each student's own logits.
    let val = match (data.reference, &test) {
        (Some(_), Some(_)) if !data.val.is_empty() => Some(learner.logits(&data.val.x)),
        _ => None,
    };
    let wall_s = (before + start.elapsed().as_secs_f64()) / k as f64;
    let finished_at = now_rfc3339();
    let mut outcomes: Vec<Outcome> = (0..k)
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
                out.best_epoch = best_epoch(&out.epochs);
                // The validation accuracy of the weights it ends with.
                out.val_acc = out.ended(cfg.weights).and_then(|l| l.val_acc);
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
        .collect();
    let best_copies = (kept.copies(), kept_epochs.as_slice());
    let n = data.test.len();
    super::save::keep_models(learner, cfg, n, best_copies, &mut outcomes, models);
    outcomes
}

/// After training, if any student of `alive` is: the test logits (`last_test` when the
/// weights have not changed since they were measured), kept for the measures, and per student
/// the scores on the training and test splits.
#[allow(clippy::type_complexity)]
fn final_scores(
    learner: &dyn Learner,
    data: &TrainData,
    alive: &[bool],
    last_test: Option<Tensor>,
) -> (Option<Tensor>, Vec<Option<Score>>, Vec<Option<Score>>) {
    let k = alive.len();
    if !alive.iter().any(|&a| a) {
        return (None, vec![None; k], vec![None; k]);
    }
    let test =
        (!data.test.is_empty()).then(|| last_test.unwrap_or_else(|| learner.logits(&data.test.x)));
    let t = test.as_ref().map_or_else(
        || vec![None; k],
        |t| score(t, &data.test.y).into_iter().map(Some).collect(),
    );
    (test, evaluate(learner, data.train, k), t)
}
