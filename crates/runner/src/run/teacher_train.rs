//! Training the teacher with checkpoints: it continues from its checkpoint beside its cache
//! entry (`$KD_CACHE_DIR/teachers/<hash>.ckpt`; one cached teacher serves many OUTs) and writes
//! one every `checkpoint_every`, and at once on a stop (see [`super::checkpoint`]).

use std::path::Path;
use std::time::Duration;

use kd_model_zoo::Net;
use tch::nn;

use crate::data::Tensors;
use crate::error::{RunError, TrainError};
use crate::plan::TeacherPlan;
use crate::run::checkpoint;
use crate::track::Outputs;
use crate::train::snapshot::Durability;
use crate::train::{self, Outcome, TrainData};

/// Train teacher `t` (`net`, its variables in `vs`, seeded and built as at the
/// start), continuing from its checkpoint `ckpt` beside its cache entry when there is one, and
/// writing one every `every` (and at once on a stop, which ends the sweep: exit 3).
pub(super) fn train_teacher(
    t: &TeacherPlan,
    net: &Net,
    vs: &nn::VarStore,
    data: &Tensors,
    ckpt: &Path,
    every: Option<Duration>,
    progress: &mut Outputs,
) -> Result<Outcome, RunError> {
    let ids = [t.id.as_str()];
    let (meta, resume) = match checkpoint::load(ckpt, &ids, data.train.x.device()) {
        Ok(Some((meta, snap))) => {
            progress.note(&format!(
                "teacher: continuing from checkpoint {} (epoch {} of {})",
                ckpt.display(),
                meta.progress.epoch,
                t.cfg.train.epochs
            ));
            if let Some(note) = checkpoint::other_cpu_note("teacher", &meta) {
                progress.note(&note);
            }
            (Some(meta), Some(snap))
        }
        Ok(None) => (None, None),
        Err(why) => {
            progress.note(&checkpoint::refuse(ckpt, &why));
            (None, None)
        }
    };
    let failures = std::cell::RefCell::new(Vec::new());
    let durable = |resume| Durability {
        resume,
        every,
        stop: Box::new(crate::run::stop::requested),
        save: Box::new(|snap| {
            checkpoint::save_or_warn(ckpt, &ids, snap, |w| failures.borrow_mut().push(w))
        }),
        rung: Default::default(),
        models: Default::default(),
    };
    let data = TrainData {
        train: &data.train,
        val: &data.val,
        test: &data.test,
        soft_targets: None,
        online_teacher: None,
        reference: None,
    };
    let hard = kd_loss::KdWeights::hard_only();
    let cfg = &t.cfg.train;
    let attempt = |durable: Durability, progress: &mut Outputs| {
        let on_epoch = |log: &kd_report::EpochRecord| progress.epoch(0, log);
        train::train(
            net, vs, cfg, &hard, t.cfg.seed, &data, &t.id, durable, on_epoch,
        )
    };
    let mut result = attempt(durable(resume), progress);
    if let Err(TrainError::Resume(why)) = &result {
        // Found before anything was written: the teacher starts over as built.
        progress.note(&checkpoint::refuse(ckpt, why));
        result = attempt(durable(None), progress);
    }
    for f in failures.take() {
        progress.note(&f);
    }
    match result {
        Ok(mut o) => {
            if let (Some(note), Some(meta)) = (&o.resumed, &meta) {
                o.resumed = Some(checkpoint::resumed_note(note, meta));
            }
            Ok(o)
        }
        Err(TrainError::Stopped(at)) => Err(RunError::Stopped(format!(
            "the teacher stopped {at} ({})",
            ckpt.display()
        ))),
        Err(e) => Err(e.into()),
    }
}
