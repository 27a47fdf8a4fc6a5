//! `save:` at the end of a run: which weights of each finished student are handed to the
//! run's sink ([`Keep`]), from the learner's live state or the kept copy of its best
//! validation epoch.

use kd_report::Status;
use tch::Tensor;

use super::learner::Learner;
use super::snapshot::{Keep, KeptModel};
use super::Outcome;
use crate::config::{Save, TrainCfg};

/// `save:`: each finished student's weights handed to `models.sink` and the outcome told where
/// they went. `best` gives the kept copy of its best validation epoch (`best_copies`: the copy
/// and, per student, the epoch it holds), `last` the weights it ended with (its best epoch's
/// under `train.weights: best`); without a validation split, `best` gives those too. A best
/// epoch whose copy is not kept (a checkpoint written by a run without `save: best`) is not
/// saved.
pub(super) fn keep_models(
    learner: &dyn Learner,
    cfg: &TrainCfg,
    test_images: i64,
    (copies, kept_epochs): (Option<&[Tensor]>, &[Option<u32>]),
    outcomes: &mut [Outcome],
    mut models: Keep,
) {
    if models.save == Save::None {
        return;
    }
    let (live, _) = learner.state();
    let errors = |acc: f64| Some(((1.0 - acc) * test_images as f64).round() as u64);
    for (i, out) in outcomes.iter_mut().enumerate() {
        if out.status != Status::Ok {
            continue;
        }
        let ended = out.ended(cfg.weights).map_or(0, |l| l.epoch);
        let last = KeptModel {
            tensors: learner.member(&live, i),
            which: Save::Last,
            epoch: ended,
            test: out.test_acc.map(|a| (a, out.test_errors)),
        };
        let model = match (models.save, out.best_epoch) {
            (Save::Best, Some(best)) if best == ended => Ok(KeptModel {
                which: Save::Best,
                ..last
            }),
            (Save::Best, Some(best)) => match copies {
                Some(c) if kept_epochs[i] == Some(best) => Ok(KeptModel {
                    tensors: learner.member(c, i),
                    which: Save::Best,
                    epoch: best,
                    test: out.best_test_acc().map(|a| (a, errors(a))),
                }),
                _ => Err(format!(
                    "its best epoch's weights (epoch {best}) were not kept by the run that wrote \
                     the checkpoint it continued from (one without `save: best`)"
                )),
            },
            _ => Ok(last),
        };
        out.model_file = (models.sink)(i, model);
    }
}
