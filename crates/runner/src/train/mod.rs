//! Training: a model, its optimiser and schedule, optional soft targets, evaluation at T = 1
//! after every epoch. Pure with respect to IO: the caller logs and writes results.
//!
//! - [`driver`]: the one epoch protocol (order, schedule, sums, divergence, records, outcome);
//! - [`single`]: one student alone, any family; [`packed`]: K MLP students as one model;
//! - [`optim`]: the optimisers; [`eval`]: scoring at T = 1; [`augment`]: `train.jitter`, `crop`, `flip`;
//! - [`measure`]: what a finished student is measured on (confusion, fidelity, bias shift);
//! - [`kept`]: the best validation epoch's weights, tested after training;
//! - [`precision`]: `train.precision: bf16`'s bfloat16 model and float32 master weights.

use kd_data::SplitMix64;
use kd_loss::KdWeights;
use kd_model_zoo::Net;
use kd_report::{EpochRecord, Status};
use tch::nn;
use tch::Tensor;

use crate::config::{Schedule, TrainCfg};
use crate::data::SplitTensors;
use crate::env::now_rfc3339;
use crate::error::TrainError;

mod augment;
pub(crate) mod driver;
pub(crate) mod eval;
mod exact;
pub(crate) mod host;
mod kept;
mod learner;
pub(crate) mod measure;
pub(crate) mod optim;
pub(crate) mod packed;
mod precision;
pub(crate) mod reload;
mod run_state;
mod save;
pub(crate) mod single;
pub mod snapshot;

#[cfg(test)]
mod resume_tests;

pub use eval::{accuracy, evaluate, predict, NonFinite};
pub use packed::{auto_pack_size, train_pack};

/// What a trial trains on.
#[derive(Debug)]
pub struct TrainData<'a> {
    pub train: &'a SplitTensors,
    pub val: &'a SplitTensors,
    pub test: &'a SplitTensors,
    /// Teacher logits for every training image (the transfer set), `[n_train, classes]`.
    pub soft_targets: Option<&'a Tensor>,
    /// The teacher itself, run on each (augmented) batch instead of reading `soft_targets`:
    /// used when `train.jitter`/`crop`/`flip` augment the student's images (online teacher).
    pub online_teacher: Option<&'a Net>,
    /// What the finished student is measured against (fidelity, bias shift); none for the
    /// teacher.
    pub reference: Option<&'a measure::Reference<'a>>,
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
    pub measures: measure::Measures,
    /// A run continued from a checkpoint: where (and whether on another draw).
    #[serde(default)]
    pub resumed: Option<String>,
    /// The CPU model of the machine that trained it (`env::cpu_model`); none for a teacher
    /// loaded from a file, or cached before the model was recorded.
    #[serde(default)]
    pub cpu: Option<String>,
    /// Where its weights were kept (`save:`), relative to OUT: `models/<trial id>.safetensors`.
    #[serde(default)]
    pub model_file: Option<String>,
}

impl Outcome {
    /// The epoch whose weights the student ends with: its best validation epoch under
    /// `train.weights: best` (when it has one), else its last.
    pub fn ended(&self, weights: crate::config::Weights) -> Option<&kd_report::EpochRecord> {
        match self.best_epoch {
            Some(e) if weights == crate::config::Weights::Best => {
                self.epochs.iter().find(|l| l.epoch == e)
            }
            _ => self.epochs.last(),
        }
    }

    /// Test accuracy after the best validation epoch (the record's `best_test_acc`).
    pub fn best_test_acc(&self) -> Option<f64> {
        let best = self.best_epoch?;
        self.epochs
            .iter()
            .find(|e| e.epoch == best)
            .and_then(|e| e.test_acc)
    }

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
            resumed: None,
            cpu: Some(crate::env::cpu_model()),
            model_file: None,
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

/// Learning rate at `step` of `total` steps (`cfg.epochs` epochs of equal length).
pub fn lr_at(cfg: &TrainCfg, step: usize, total: usize) -> f64 {
    match cfg.schedule {
        Schedule::Constant => cfg.lr,
        Schedule::Multistep => {
            // The 0-based epoch of this step; the rate is decayed from each milestone epoch on.
            let epoch = step * cfg.epochs / total.max(1);
            let passed = cfg.milestones.iter().filter(|&&m| m <= epoch).count();
            cfg.lr * cfg.gamma.unwrap_or(1.0).powi(passed as i32)
        }
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

/// The evaluated epoch with the highest validation accuracy (the earliest of ties).
pub fn best_epoch(epochs: &[EpochRecord]) -> Option<u32> {
    epochs
        .iter()
        .filter_map(|l| Some((l.val_acc?, l.epoch)))
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, e)| e)
}

/// One student of a pack.
#[derive(Debug, Clone)]
pub struct Member {
    pub trial_id: String,
    pub seed: u64,
    /// Its objective: KD weights, or hard targets only (alpha 0, beta 1) for a baseline.
    pub weights: KdWeights,
    /// Whether it learns from the teacher (a baseline does not, and logs no soft loss).
    pub kd: bool,
}

/// Train `net` (whose variables live in `vs`) for `cfg.epochs` epochs: [`driver::run`] with one
/// [`single::Single`] student. With soft targets the objective is `weights`' distillation loss;
/// without, plain cross-entropy. `on_epoch` sees each epoch's record (under `trial_id`) as soon
/// as it is measured. A NaN or infinite loss, weight or output at the end of an epoch stops the
/// trial as `Diverged`. `durable`: checkpoints ([`snapshot`]).
#[allow(clippy::too_many_arguments)]
pub fn train(
    net: &Net,
    vs: &nn::VarStore,
    cfg: &TrainCfg,
    weights: &KdWeights,
    seed: u64,
    data: &TrainData,
    trial_id: &str,
    durable: snapshot::Durability,
    mut on_epoch: impl FnMut(&EpochRecord),
) -> Result<Outcome, TrainError> {
    let mut single = single::Single::new(net, vs, cfg, weights, seed, data)?;
    let member = Member {
        trial_id: trial_id.to_string(),
        seed,
        weights: *weights,
        kd: data.soft_targets.is_some(),
    };
    let outcomes = driver::run(&mut single, &[member], cfg, data, durable, |_, r| {
        on_epoch(r)
    });
    // The model holds float32 again (the masters), whatever happened.
    single.finish();
    Ok(outcomes?.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Optimizer, Schedule};
    use tch::Kind;

    fn cfg(schedule: Schedule) -> TrainCfg {
        TrainCfg {
            schedule,
            ..TrainCfg::plain(Optimizer::Sgd, 0.1, 10)
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
    fn multistep_decays_from_each_milestone_epoch_on_as_pytorch_does() {
        // PyTorch, stepped once per epoch after training it:
        //   opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.05)
        //   s = torch.optim.lr_scheduler.MultiStepLR(opt, [3, 5], 0.1)
        //   for e in range(7): print(e, opt.param_groups[0]["lr"]); s.step()
        // -> 0.05 0.05 0.05 0.005 0.005 0.0005 0.0005 (to float rounding)
        let mut c = cfg(Schedule::Multistep);
        (c.epochs, c.lr, c.milestones, c.gamma) = (7, 0.05, vec![3, 5], Some(0.1));
        let steps = 4; // per epoch
        let want = [0.05, 0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005];
        for (e, w) in want.iter().enumerate() {
            for s in 0..steps {
                let lr = lr_at(&c, e * steps + s, 7 * steps);
                assert!((lr - w).abs() < 1e-15, "epoch {e} step {s}: {lr}");
            }
        }
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
            let net = spec.build(&vs, input, 3).unwrap();
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
                snapshot::Durability::none(),
                |_| {},
            );
            assert_eq!(out.unwrap().status, Status::Ok);
            net.linears()
                .iter()
                .map(|l| row_norms(&l.ws))
                .collect::<Vec<_>>()
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
        let teacher = spec(16).build(&tvs, input, 3).unwrap();
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
            let net = spec(8).build(&vs, input, 3).unwrap();
            let data = TrainData {
                train: &tr,
                val: &val,
                test: &test,
                soft_targets: Some(&cached),
                online_teacher: online,
                reference: None,
            };
            train(
                &net,
                &vs,
                &c,
                &weights,
                3,
                &data,
                "t",
                snapshot::Durability::none(),
                |_| {},
            )
            .unwrap()
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
