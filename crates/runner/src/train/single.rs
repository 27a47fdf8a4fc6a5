//! One student alone, any model family: libtorch's optimiser over its variables, the
//! augmentations (`train.jitter`, `crop`, `flip`), soft targets read from the cached teacher
//! logits or computed by the teacher itself on each augmented batch (online teacher).

use kd_loss::KdWeights;
use kd_model_zoo::Net;
use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::augment::{crop_flip, crop_flip_with, jitter, jitter_with, EpochDraws};
use super::driver::{Batch, Learner, StepLoss};
use super::eval::{predict, weights_finite};
use super::exact::ExactOptimizer;
use super::kept::tensors_of;
use super::optim::PackedOptimizer;
use super::precision::Numerics;
use super::snapshot::{fits, put, Named};
use super::TrainData;
use crate::config::TrainCfg;
use crate::error::TrainError;

/// The optimiser of one student: libtorch's update rules written out (the same bits, its state
/// ours) over the model's float32 variables, or the pack's over the float32 masters of a
/// bfloat16 model (`train.precision: bf16`; the same update rules).
enum Opt {
    Torch(ExactOptimizer),
    Masters(PackedOptimizer),
}

impl Opt {
    fn export(&self) -> Vec<(String, Tensor)> {
        match self {
            Opt::Torch(o) => o.export(),
            Opt::Masters(o) => o.export(),
        }
    }

    fn check(&self, from: &Named) -> Result<(), String> {
        match self {
            Opt::Torch(o) => o.check(from),
            Opt::Masters(o) => o.check(from),
        }
    }

    fn import(&mut self, from: &Named) -> Result<(), String> {
        match self {
            Opt::Torch(o) => o.import(from),
            Opt::Masters(o) => o.import(from),
        }
    }

    fn set_lr(&mut self, lr: f64) {
        match self {
            Opt::Torch(o) => o.set_lr(lr),
            Opt::Masters(o) => o.set_lr(lr),
        }
    }

    fn backward_step(&mut self, loss: &Tensor) {
        match self {
            Opt::Torch(o) => o.backward_step(loss),
            Opt::Masters(o) => o.backward_step(loss),
        }
    }
}

/// A [`Learner`] of one student.
pub(crate) struct Single<'a> {
    net: &'a Net,
    vs: &'a nn::VarStore,
    opt: Opt,
    /// `train.precision`: the model's number format and, for bf16, its float32 masters.
    numerics: Numerics,
    cfg: &'a TrainCfg,
    weights: &'a KdWeights,
    seed: u64,
    data: &'a TrainData<'a>,
    /// The standardised black pixel: what a shifted image's uncovered border shows.
    fill: f64,
    /// Per channel (`[1, C, 1, 1]`), the standardised black pixel of `train.crop`'s padding.
    black: Tensor,
    /// The current epoch's augmentation draws, uploaded once per epoch.
    draws: Option<EpochDraws>,
}

impl<'a> Single<'a> {
    pub(crate) fn new(
        net: &'a Net,
        vs: &'a nn::VarStore,
        cfg: &'a TrainCfg,
        weights: &'a KdWeights,
        seed: u64,
        data: &'a TrainData<'a>,
    ) -> Result<Single<'a>, TrainError> {
        if cfg.augments() && data.soft_targets.is_some() && data.online_teacher.is_none() {
            // Cached logits are the teacher's on the unaugmented images: never soft targets for
            // augmented ones.
            return Err(TrainError::Spec(
                "train.jitter/crop/flip: a KD student with augmented images needs the teacher \
                 itself (online teacher), not its cached logits"
                    .into(),
            ));
        }
        let fill = if cfg.jitter > 0 && !data.train.is_empty() {
            super::host::f64_of(&data.train.x.min())
        } else {
            0.0
        };
        // Each channel's standardised black pixel (the darkest training value of the channel),
        // what a cropped image's padding shows.
        let black = if cfg.crop > 0 && !data.train.is_empty() {
            data.train.x.amin([0, 2, 3], true)
        } else {
            Tensor::zeros([1], (tch::Kind::Float, data.train.x.device()))
        };
        let all = tensors_of(vs);
        let numerics = Numerics::new(cfg.precision, vs.trainable_variables(), all);
        let opt = match numerics.masters() {
            None => Opt::Torch(ExactOptimizer::new(vs, cfg)?),
            Some((masters, work)) => {
                Opt::Masters(PackedOptimizer::with_masters(masters, work, cfg))
            }
        };
        Ok(Single {
            black,
            draws: None,
            net,
            vs,
            opt,
            numerics,
            cfg,
            weights,
            seed,
            data,
            fill,
        })
    }
}

impl Learner for Single<'_> {
    fn step(&mut self, b: &Batch) -> Result<StepLoss, TrainError> {
        let idx = b.idx.reshape([-1]);
        let train = self.data.train;
        let x = train.x.index_select(0, &idx);
        let (crop, flip) = (self.cfg.crop, self.cfg.flip);
        if self.cfg.augments() && self.draws.as_ref().is_none_or(|d| d.epoch != b.epoch) {
            let n = train.len() as usize;
            let bs = self.cfg.batch_size.min(n.max(1));
            let what = (self.cfg.jitter, crop, flip);
            self.draws = Some(EpochDraws::new(what, self.seed, b.epoch, n, bs, x.device()));
        }
        // The epoch's draws on the device; a batch outside the epoch's plan draws its own.
        let rows = x.size()[0];
        let planned = |f: fn(&EpochDraws, usize, i64) -> Option<Tensor>| {
            self.draws.as_ref().and_then(|d| f(d, b.index, rows))
        };
        let x = match planned(EpochDraws::jitter) {
            Some(d) => jitter_with(&x, self.cfg.jitter, &d, self.fill),
            None => jitter(&x, self.cfg.jitter, self.seed, b.epoch, b.index, self.fill),
        };
        let x = match planned(EpochDraws::crop) {
            Some(d) => crop_flip_with(&x, crop, flip, &self.black, &d),
            None => crop_flip(&x, crop, flip, &self.black, self.seed, b.epoch, b.index),
        };
        let y = train.y.index_select(0, &idx);
        self.opt.set_lr(b.lr);
        let logits = self
            .numerics
            .output(self.net.forward_t(&self.numerics.input(&x), true));
        let (total, soft, hard) = match self.data.soft_targets {
            Some(teacher) => {
                let t = match self.data.online_teacher {
                    Some(t) => tch::no_grad(|| t.forward_t(&x, false)),
                    None => teacher.index_select(0, &idx),
                };
                let w = self.weights.at_epoch(b.epoch);
                let eps = self.cfg.label_smoothing;
                let l = kd_loss::distillation_loss_smoothed(&logits, &t, &y, &w, eps)?;
                (l.total, Some(l.soft), l.hard)
            }
            None => {
                let h = kd_loss::smoothed_cross_entropy(&logits, &y, self.cfg.label_smoothing)?;
                (h.shallow_clone(), None, h)
            }
        };
        let one = |t: &Tensor| t.detach().unsqueeze(0);
        let loss = StepLoss {
            total: one(&total),
            soft: soft.as_ref().map(one),
            hard: one(&hard),
            logits: one(&logits),
            y: y.unsqueeze(0),
        };
        self.opt.backward_step(&total);
        if let Some(c) = self.cfg.max_norm {
            self.net.max_norm_(c);
        }
        Ok(loss)
    }

    fn weights_finite(&self) -> Vec<bool> {
        vec![weights_finite(self.vs)]
    }

    fn logits(&self, x: &Tensor) -> Tensor {
        let x = self.numerics.input(x);
        self.numerics
            .output(predict(self.net, &x, 1000))
            .unsqueeze(0)
    }

    fn retire(&mut self, _alive: &[bool]) {}

    fn state(&self) -> (Vec<Tensor>, bool) {
        (tensors_of(self.vs), false)
    }

    fn member(&self, state: &[Tensor], _i: usize) -> Vec<(String, Tensor)> {
        let names = super::kept::names_of(self.vs);
        names
            .into_iter()
            .zip(state.iter().map(Tensor::shallow_clone))
            .collect()
    }

    fn export(&self) -> Vec<(String, Tensor)> {
        let mut out = model_tensors(self.vs);
        out.extend(self.opt.export());
        out
    }

    fn import(&mut self, from: &Named) -> Result<(), String> {
        import_checked(self.vs, from, self.opt.check(from), || {
            self.opt.import(from)
        })
    }

    fn replay(&self, rows: &mut dyn Iterator<Item = i64>) -> bool {
        let Some(sites) = self.net.dropout_sites() else {
            return false;
        };
        // Dropout draws only with 0 < p < 1.
        if sites.iter().all(|&(p, _)| p <= 0.0 || p >= 1.0) {
            return true;
        }
        let device = self.data.train.x.device();
        if device == tch::Device::Cpu && super::snapshot::bulk_replay() {
            // The masks' numbers in bulk: one per element of each site that draws.
            let per_row: i64 = sites
                .iter()
                .filter(|&&(p, _)| p > 0.0 && p < 1.0)
                .map(|&(_, width)| width)
                .sum();
            super::snapshot::draw_numbers(rows.map(|r| r * per_row).sum());
        } else {
            for r in rows {
                self.net.replay_draws(r, self.numerics.kind(), device);
            }
        }
        true
    }
}

/// Put back `vs`'s tensors from `from` and then an optimiser's state (`import_opt`), only once
/// every model tensor fits and the optimiser's own check (`opt_check`) passed: a snapshot that
/// does not fit leaves the learner as it was.
pub(crate) fn import_checked(
    vs: &nn::VarStore,
    from: &Named,
    opt_check: Result<(), String>,
    import_opt: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let model = model_tensors(vs);
    for (name, t) in &model {
        fits(t, from, name)?;
    }
    opt_check?;
    for (name, t) in &model {
        put(t, from, name)?;
    }
    import_opt()
}

/// Every tensor of `vs` (weights and buffers) as `model/<name>`.
pub(crate) fn model_tensors(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| (format!("model/{name}"), t))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

impl Single<'_> {
    /// After training: the model in float32 again (with bf16, the masters' values).
    pub(crate) fn finish(&self) {
        self.numerics.restore();
    }
}
