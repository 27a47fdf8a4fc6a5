//! A run stopped at a step and continued from its snapshot in a fresh learner gives the
//! outcome of an uninterrupted run, every number and epoch record to the bit (timings aside):
//! alone with dropout (SGD with momentum, KD), Adam, bf16, a pack with dropout, a batch-norm
//! ResNet with crop and flip; stopped at an epoch's end and mid-epoch; paused at a rung of
//! successive halving, with a pack member pruned.

use std::cell::{Cell, RefCell};

use kd_loss::KdWeights;
use kd_model_zoo::{Init, InputShape, MlpSpec, ModelSpec};
use tch::{nn, Device, Kind, Tensor};

use super::snapshot::{Durability, Rung, Snapshot};
use super::{train, train_pack, Member, Outcome, TrainData};
use crate::config::{Optimizer, Precision, Schedule, TrainCfg};
use crate::data::SplitTensors;
use crate::error::TrainError;

const INPUT: InputShape = InputShape {
    channels: 3,
    height: 6,
    width: 6,
};

struct Task {
    train: SplitTensors,
    val: SplitTensors,
    test: SplitTensors,
    teacher: Tensor,
}

impl Task {
    /// Its splits to train on, with the teacher's logits when `kd`.
    fn data(&self, kd: bool) -> TrainData<'_> {
        TrainData {
            train: &self.train,
            val: &self.val,
            test: &self.test,
            soft_targets: kd.then_some(&self.teacher),
            online_teacher: None,
            reference: None,
        }
    }
}

fn task() -> Task {
    tch::manual_seed(11);
    let w = Tensor::randn([108, 10], (Kind::Float, Device::Cpu));
    let split = |n: i64| {
        let x = Tensor::randn([n, 3, 6, 6], (Kind::Float, Device::Cpu));
        let logits = x.view([n, 108]).mm(&w);
        (
            SplitTensors {
                y: logits.argmax(-1, false),
                x,
            },
            logits,
        )
    };
    let (train, logits) = split(150);
    Task {
        teacher: logits + Tensor::randn([150, 10], (Kind::Float, Device::Cpu)),
        train,
        val: split(60).0,
        test: split(60).0,
    }
}

fn mlp(dropout: f64) -> ModelSpec {
    ModelSpec::Mlp(MlpSpec {
        hidden: vec![24, 16],
        dropout,
        input_dropout: dropout / 2.0,
        init: Init::Torch,
    })
}

fn member(seed: u64, alpha: f64) -> Member {
    Member {
        trial_id: format!("s{seed}-a{alpha}"),
        seed,
        weights: KdWeights {
            temperature: 3.0,
            alpha,
            beta: 1.0 - alpha,
            ..KdWeights::hard_only()
        },
        kd: alpha > 0.0,
    }
}

/// Stop at the `n`th question "stop now?" (one per step, one per epoch's end); never for none.
/// Whatever snapshots are saved are deep copies (a snapshot's tensors are the live ones).
struct Stopper {
    asked: Cell<usize>,
    at: Option<usize>,
    saved: RefCell<Vec<Snapshot>>,
    rung: Rung,
}

impl Stopper {
    fn new(at: Option<usize>) -> Stopper {
        Stopper {
            asked: Cell::new(0),
            at,
            saved: RefCell::new(vec![]),
            rung: Rung::default(),
        }
    }

    fn durability(&self, resume: Option<Snapshot>) -> Durability<'_> {
        Durability {
            resume,
            every: None,
            stop: Box::new(|| {
                self.asked.set(self.asked.get() + 1);
                Some(self.asked.get()) == self.at
            }),
            save: Box::new(|s: &Snapshot| {
                let tensors = s
                    .tensors
                    .iter()
                    .map(|(n, t)| (n.clone(), t.copy()))
                    .collect();
                self.saved.borrow_mut().push(Snapshot {
                    progress: s.progress.clone(),
                    tensors,
                });
                true
            }),
            rung: self.rung.clone(),
            models: Default::default(),
        }
    }
}

/// One way of training, started afresh (libtorch seeded, the model built) on each call.
type Trainer<'t> = dyn Fn(Durability) -> Result<Vec<Outcome>, TrainError> + 't;

fn alone<'t>(
    spec: &'t ModelSpec,
    m: &'t Member,
    cfg: &'t TrainCfg,
    data: &'t TrainData<'t>,
) -> Box<Trainer<'t>> {
    Box::new(move |durable| {
        // The bulk replay where this CPU's libtorch allows it (else the masks drawn again).
        super::snapshot::probe_draws();
        tch::manual_seed(m.seed as i64);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = spec.build(&vs, INPUT, 10).unwrap();
        let d = TrainData {
            soft_targets: data.soft_targets.filter(|_| m.kd),
            ..*data
        };
        train(
            &net,
            &vs,
            cfg,
            &m.weights,
            m.seed,
            &d,
            &m.trial_id,
            durable,
            |_| {},
        )
        .map(|o| vec![o])
    })
}

/// Every number of the outcomes, timings and the resume note left out.
fn numbers(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .map(|o| {
            let mut o = o.clone();
            o.wall_s = 0.0;
            o.finished_at.clear();
            o.resumed = None;
            for e in &mut o.epochs {
                e.seconds = 0.0;
            }
            format!("{o:?}")
        })
        .collect()
}

/// Uninterrupted, then stopped at each of `stops` and continued: the same numbers.
fn continues_exactly(what: &str, trainer: &Trainer, stops: &[usize]) {
    let whole = trainer(Durability::none()).unwrap();
    assert!(
        whole.iter().all(|o| o.epochs.len() > 2),
        "{what}: {whole:?}"
    );
    for &at in stops {
        let stopper = Stopper::new(Some(at));
        let err = trainer(stopper.durability(None)).unwrap_err();
        assert!(matches!(err, TrainError::Stopped(_)), "{what}: {err}");
        let snap = stopper.saved.borrow_mut().pop().expect("a snapshot");
        assert!(snap.progress.step > 0);
        let again = Stopper::new(None);
        let resumed = trainer(again.durability(Some(snap))).unwrap();
        assert_eq!(
            numbers(&resumed),
            numbers(&whole),
            "{what}, stopped at question {at}"
        );
        let note = resumed[0].resumed.as_deref().unwrap_or_default();
        assert!(
            note.starts_with("continued ") && !note.contains("another draw"),
            "{note}"
        );
    }
}

fn cfg(optimizer: Optimizer, lr: f64) -> TrainCfg {
    TrainCfg {
        epochs: 4,
        schedule: Schedule::Cosine,
        ..TrainCfg::plain(optimizer, lr, 32)
    }
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    crate::torch_lock()
}

/// 150 rows in batches of 32: 5 steps an epoch, asked after each but an epoch's last, and at
/// the end of each epoch but the last. So question 5 is epoch 1's end, 8 is mid epoch 2, 15
/// epoch 3's end, 19 epoch 4 after its 4th batch.
const STOPS: [usize; 4] = [5, 8, 15, 19];

#[test]
fn a_student_alone_continues_as_if_never_stopped() {
    let _g = lock();
    let t = task();
    let data = t.data(true);
    let spec = mlp(0.3);
    let (kd, adam) = (member(3, 0.7), member(4, 0.0));
    let mut sgd = cfg(Optimizer::Sgd, 0.05);
    sgd.weight_decay = 5e-4;
    sgd.max_norm = Some(2.0);
    continues_exactly("sgd, dropout, kd", &alone(&spec, &kd, &sgd, &data), &STOPS);
    let adam_cfg = cfg(Optimizer::Adamw, 0.01);
    continues_exactly(
        "adamw, dropout",
        &alone(&spec, &adam, &adam_cfg, &data),
        &STOPS,
    );
    let bf16 = TrainCfg {
        precision: Precision::Bf16,
        ..cfg(Optimizer::Adam, 0.01)
    };
    continues_exactly("bf16", &alone(&spec, &kd, &bf16, &data), &STOPS);
}

#[test]
fn a_pack_continues_as_if_never_stopped() {
    let _g = lock();
    let t = task();
    let data = t.data(true);
    let spec = mlp(0.2);
    let members = [member(1, 0.0), member(2, 0.5), member(3, 0.9)];
    for c in [
        cfg(Optimizer::Sgd, 0.05),
        TrainCfg {
            precision: Precision::Bf16,
            ..cfg(Optimizer::Adam, 0.01)
        },
    ] {
        let trainer =
            |d: Durability| train_pack(&spec, &members, &c, &data, INPUT, 10, d, |_, _| {});
        continues_exactly("pack", &trainer, &STOPS);
    }
}

/// Issue 36: a pack paused at a rung (the end of epoch 2 of 4) and continued with one member
/// pruned: the others end exactly as in an uninterrupted run (the pruned member's loss is
/// masked out, as a diverged one's), and the pause reports each member's epochs so far and its
/// last validation accuracy. A student alone paused and continued likewise.
#[test]
fn a_paused_pack_continues_with_a_member_pruned_as_if_never_paused() {
    let _g = lock();
    let t = task();
    let data = t.data(true);
    let spec = mlp(0.2);
    let members = [member(1, 0.0), member(2, 0.5), member(3, 0.9)];
    let c = cfg(Optimizer::Sgd, 0.05);
    let trainer = |d: Durability| train_pack(&spec, &members, &c, &data, INPUT, 10, d, |_, _| {});
    let whole = trainer(Durability::none()).unwrap();
    let mut pause = Stopper::new(None);
    pause.rung.until = Some(2);
    let Err(TrainError::Paused(at_rung)) = trainer(pause.durability(None)) else {
        panic!("no pause at the rung");
    };
    for (o, w) in at_rung.iter().zip(&whole) {
        assert_eq!(o.epochs.len(), 2);
        assert_eq!(o.status, kd_report::Status::Ok);
        assert_eq!(o.epochs[1].val_acc, w.epochs[1].val_acc);
        assert_eq!(
            format!(
                "{:?}",
                o.epochs.iter().map(|e| e.train_loss).collect::<Vec<_>>()
            ),
            format!(
                "{:?}",
                w.epochs[..2]
                    .iter()
                    .map(|e| e.train_loss)
                    .collect::<Vec<_>>()
            )
        );
    }
    let snap = pause
        .saved
        .borrow_mut()
        .pop()
        .expect("a snapshot at the rung");
    let mut go_on = Stopper::new(None);
    go_on.rung.pruned = vec![false, true, false];
    let ended = trainer(go_on.durability(Some(snap))).unwrap();
    let (ended, whole) = (numbers(&ended), numbers(&whole));
    assert_eq!(ended[0], whole[0], "the baseline");
    assert_eq!(ended[2], whole[2], "the survivor");
    assert_ne!(ended[1], whole[1], "the pruned member stopped");

    let m = member(4, 0.7);
    let one = alone(&spec, &m, &c, &data);
    let whole = one(Durability::none()).unwrap();
    let mut pause = Stopper::new(None);
    pause.rung.until = Some(3);
    assert!(matches!(
        one(pause.durability(None)),
        Err(TrainError::Paused(_))
    ));
    let snap = pause.saved.borrow_mut().pop().expect("a snapshot");
    let ended = one(Stopper::new(None).durability(Some(snap))).unwrap();
    assert_eq!(numbers(&ended), numbers(&whole));
}

#[test]
fn a_batch_norm_resnet_with_crop_and_flip_continues_as_if_never_stopped() {
    let _g = lock();
    let t = task();
    let data = t.data(false);
    let spec = ModelSpec::ResNet(kd_model_zoo::ResNetSpec {
        depth: 8,
        widths: vec![4, 4, 8, 8],
        channels_last: false,
    });
    let c = TrainCfg {
        crop: 1,
        flip: true,
        weight_decay: 5e-4,
        ..cfg(Optimizer::Sgd, 0.05)
    };
    let m = member(5, 0.0);
    continues_exactly("resnet", &alone(&spec, &m, &c, &data), &[8, 10]);
}

/// `train.weights: best`: the trial ends with its best validation epoch's weights (a constant
/// schedule, so they are those of a run stopped at that epoch), and its final numbers are
/// theirs: `test_acc` equals `best_test_acc`, `val_acc` the best epoch's.
#[test]
fn weights_best_ends_with_the_best_validation_epochs_weights() {
    let _g = lock();
    let t = task();
    let data = t.data(false);
    let spec = mlp(0.3);
    let m = member(7, 0.0);
    let run = |epochs: usize, weights: crate::config::Weights| {
        let c = TrainCfg {
            epochs,
            weights,
            ..TrainCfg::plain(Optimizer::Adam, 0.03, 32)
        };
        tch::manual_seed(m.seed as i64);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = spec.build(&vs, INPUT, 10).unwrap();
        let o = train(
            &net,
            &vs,
            &c,
            &m.weights,
            m.seed,
            &data,
            "w",
            Durability::none(),
            |_| {},
        )
        .unwrap();
        let logits = tch::no_grad(|| super::predict(&net, &t.test.x, 1000));
        (o, logits)
    };
    let (last, _) = run(8, crate::config::Weights::Last);
    let (best, logits) = run(8, crate::config::Weights::Best);
    let e = best.best_epoch.unwrap();
    assert_eq!(last.best_epoch, Some(e));
    assert!(
        e < 8,
        "the last epoch is the best: the test shows nothing ({last:?})"
    );
    assert_eq!(best.test_acc, best.best_test_acc());
    assert_eq!(best.best_test_acc(), last.best_test_acc());
    assert_eq!(best.val_acc, best.epochs[e as usize - 1].val_acc);
    let (_, at_e) = run(e as usize, crate::config::Weights::Last);
    assert!(logits.equal(&at_e), "the weights of epoch {e}");
}
