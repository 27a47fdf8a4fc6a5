//! The state [`super::driver::run`] carries across epochs and steps, and what a snapshot
//! saves of it: the batches of a run ([`Geometry`]), an epoch's running sums ([`Sums`]), an
//! unfinished epoch ([`Partial`]) and the loop's state ([`RunState`]), restored from a
//! [`Snapshot`] with libtorch's generator brought to where the snapshot left it.

use std::time::Instant;

use kd_report::EpochRecord;
use tch::{Kind, Tensor};

use super::learner::{Learner, StepLoss};
use super::snapshot::{named, rows_of_steps, Progress, Snapshot};
use crate::config::TrainCfg;

/// The batches of a run: `n` training rows in batches of `bs`.
pub(super) struct Geometry {
    pub n: usize,
    pub bs: usize,
    pub steps_per_epoch: usize,
    pub total_steps: usize,
}

impl Geometry {
    pub fn new(cfg: &TrainCfg, n: usize) -> Geometry {
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
pub(super) struct Sums {
    total: Tensor,
    soft: Tensor,
    hard: Tensor,
    correct: Tensor,
}

const SUMS: [&str; 4] = ["total", "soft", "hard", "correct"];

impl Sums {
    pub fn zeros(k: usize, device: tch::Device) -> Sums {
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

    pub fn add(&mut self, l: &StepLoss, rows: usize) {
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
    pub fn read(self, k: usize) -> [Vec<f64>; 4] {
        let [t, s, h, c] = [self.total, self.soft, self.hard, self.correct];
        let sums = super::host::f64s(&Tensor::cat(&[t, s, h, c.to_kind(Kind::Double)], 0));
        std::array::from_fn(|c| sums[c * k..(c + 1) * k].to_vec())
    }
}

/// Where an unfinished epoch stands (a run continued mid-epoch).
pub(super) struct Partial {
    pub batch: usize,
    pub sums: Sums,
    pub seconds: f64,
    pub lr: f64,
}

/// What the epoch loop carries from epoch to epoch: what a [`Snapshot`] saves.
pub(super) struct RunState {
    pub alive: Vec<bool>,
    pub message: Vec<Option<String>>,
    pub logs: Vec<Vec<EpochRecord>>,
    /// Per student, its best validation accuracy so far. The weights of an epoch that beats it
    /// are kept and tested after training unless the epoch is tested anyway
    /// (`train.test_every`), so `best_test_acc` is always measured.
    pub best_val: Vec<f64>,
    pub kept: super::kept::Kept,
    /// Epochs finished.
    pub epoch: u32,
    pub step: usize,
    /// The learner's seconds in earlier processes (a continued run).
    pub before: f64,
    pub start: Instant,
    pub last_snapshot: Instant,
    pub partial: Option<Partial>,
    /// A continued run: where it continued, as its outcome says.
    pub resumed: Option<String>,
    /// Keep each student's best epoch's weights to the end even when that epoch was tested
    /// as it happened (`save: best`).
    pub keep_best: bool,
}

impl RunState {
    /// The state at step 0 of `k` students training `epochs` epochs; `keep_best`: see
    /// [`RunState::keep_best`].
    pub fn new(learner: &dyn Learner, k: usize, epochs: usize, keep_best: bool) -> RunState {
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
            keep_best,
        }
    }

    /// Continue from `snap`: the learner's state and the loop's put back, libtorch's generator
    /// brought to where the snapshot's steps left it.
    pub fn restore(
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
        // Everything that can fail is read before the learner is written: a snapshot that does
        // not fit leaves it as built, so the caller can start over in place.
        let partial = match p.batch {
            0 => None,
            batch => {
                let device = learner.state().0[0].device();
                let sum = |what: &str| {
                    let name = format!("sum/{what}");
                    match tensors.get(&name) {
                        Some(t) if t.size() == [k as i64] => Ok(t.to_device(device)),
                        _ => Err(format!("it has no tensor `{name}` of {k} sums")),
                    }
                };
                Some(Partial {
                    batch,
                    sums: Sums {
                        total: sum("total")?,
                        soft: sum("soft")?,
                        hard: sum("hard")?,
                        correct: sum("correct")?,
                    },
                    seconds: p.epoch_seconds,
                    lr: p.lr,
                })
            }
        };
        let kept = self.kept.imported(&tensors, &p.kept)?;
        learner.import(&tensors)?;
        self.kept = kept;
        self.partial = partial;
        learner.retire(&p.alive);
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
    pub fn seconds(&self) -> f64 {
        self.before + self.start.elapsed().as_secs_f64()
    }

    /// A snapshot of the run now: at an epoch's end, or mid-epoch with `partial`.
    pub fn snapshot(
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
