//! Packed training: K MLP students of one shape and recipe trained as one model
//! ([`PackedMlp`]), each with its own initial weights (built alone with its seed, then stacked),
//! data order ([`super::epoch_order`] of its seed), temperature, alpha and beta. The optimiser is
//! elementwise (SGD, Adam, AdamW), so one optimiser over the stacked tensors is K optimisers.
//!
//! A student's numbers depend on its own settings only, never on its pack mates or its position
//! in the pack: its rows of every batched product, its slice of every optimiser update, its own
//! dropout masks (drawn after seeding libtorch with its seed and the step). A student that
//! diverges is masked out (its loss stops contributing, its slice is left alone) and recorded
//! `diverged`; the others go on.

use kd_data::SplitMix64;
use kd_loss::KdWeights;
use kd_model_zoo::{InputShape, ModelSpec, Net, PackedMlp};
use kd_report::EpochRecord;
use tch::{nn, Device, Kind, Tensor};

use super::driver::{self, Batch, Learner, StepLoss};
use super::optim::PackedOptimizer;
use super::precision::Numerics;
use super::snapshot::Named;
use super::{Member, Outcome, TrainData};
use crate::config::TrainCfg;
use crate::error::TrainError;

/// Bytes of working memory one student of `spec` needs in a pack: weights, gradients and two
/// optimiser moments, plus the activations of one batch (forward and backward). Evaluation
/// runs one student at a time, so its memory does not grow with the pack.
pub fn bytes_per_student(
    spec: &ModelSpec,
    input: InputShape,
    classes: usize,
    batch: usize,
) -> usize {
    let params = spec.param_count(input, classes);
    4 * (4 * params + 4 * batch * spec.packed_widths(input, classes))
}

/// Evaluation rows per chunk of a pack's forward pass.
pub(crate) const EVAL_CHUNK: i64 = 5000;

/// How many students of `spec` one pack holds on `device`: what fits a memory budget (2 GiB on
/// a CPU, 8 GiB on a GPU), at most 64 (beyond that one kernel call is already large).
pub fn auto_pack_size(
    spec: &ModelSpec,
    input: InputShape,
    classes: usize,
    batch: usize,
    cuda: bool,
) -> usize {
    let budget: usize = if cuda { 8 << 30 } else { 2 << 30 };
    (budget / bytes_per_student(spec, input, classes, batch).max(1)).clamp(1, 64)
}

/// Seed for student `seed`'s dropout masks at `step`: its own stream, whatever its pack (a
/// SplitMix64 draw, as the data order is, kept non-negative for libtorch).
fn mask_seed(seed: u64, step: usize) -> i64 {
    let stream = seed.wrapping_mul(0x1000_0000_01B3) ^ 0xD1B5_4A32_D192_ED03;
    (SplitMix64::new(stream.wrapping_add(step as u64)).next_u64() >> 1) as i64
}

/// The dropout masks of one step: per site of [`PackedMlp::dropout_sites`] with p > 0, `[K, B,
/// width]` scaled by `1 / (1 - p)`; student k's drawn after seeding libtorch with
/// [`mask_seed`] of its seed and the step.
fn dropout_masks(
    net: &PackedMlp,
    members: &[Member],
    step: usize,
    batch: i64,
    device: Device,
) -> Vec<Option<Tensor>> {
    let sites = net.dropout_sites();
    if sites.iter().all(|(p, _)| *p <= 0.0) {
        return vec![];
    }
    let mut per_site: Vec<Vec<Tensor>> = sites.iter().map(|_| Vec::new()).collect();
    for m in members {
        tch::manual_seed(mask_seed(m.seed, step));
        for (i, &(p, width)) in sites.iter().enumerate() {
            if p > 0.0 {
                let keep = Tensor::empty([batch, width], (Kind::Float, device))
                    .bernoulli_float_(1.0 - p)
                    / (1.0 - p);
                per_site[i].push(keep);
            }
        }
    }
    per_site
        .into_iter()
        .map(|masks| (!masks.is_empty()).then(|| Tensor::stack(&masks, 0)))
        .collect()
}

/// A [`Learner`] of K MLP students stacked into one [`PackedMlp`].
pub(crate) struct Packed<'a> {
    net: PackedMlp,
    vars: Vec<Tensor>,
    opt: PackedOptimizer,
    /// `train.precision`: the pack's number format and, for bf16, its float32 masters.
    numerics: Numerics,
    members: &'a [Member],
    /// Each member's weights with the pack's one soft-loss form, on the device (when some
    /// member learns from the teacher).
    weights: Option<kd_loss::PackedWeights>,
    data: &'a TrainData<'a>,
    /// The teacher's logits, when some member learns from them.
    soft_targets: Option<&'a Tensor>,
    /// `[K]`: which students still train.
    alive: Tensor,
    zeros: Tensor,
    // Owns the stacked variables; declared last so it drops after the views above.
    vs: nn::VarStore,
}

impl<'a> Packed<'a> {
    /// Each student built alone with its seed, exactly as an unpacked trial starts, then stacked.
    pub(crate) fn new(
        spec: &ModelSpec,
        members: &'a [Member],
        cfg: &TrainCfg,
        data: &'a TrainData<'a>,
        input: InputShape,
        classes: usize,
    ) -> Result<Packed<'a>, TrainError> {
        let k = members.len();
        let device = data.train.x.device();
        let singles: Vec<(nn::VarStore, Net)> = members
            .iter()
            .map(|m| {
                tch::manual_seed(m.seed as i64);
                let vs = nn::VarStore::new(device);
                let net = spec
                    .build(&vs, input, classes)
                    .map_err(|e| TrainError::Spec(format!("student.model.{e}")))?;
                Ok((vs, net))
            })
            .collect::<Result<_, TrainError>>()?;
        let vs = nn::VarStore::new(device);
        let nets: Vec<&Net> = singles.iter().map(|(_, n)| n).collect();
        let net = PackedMlp::stack(&vs.root(), &nets)
            .map_err(|e| TrainError::Spec(format!("student.model.{e}")))?;
        drop(singles);
        let vars = vs.trainable_variables();
        let all = super::kept::tensors_of(&vs);
        let shallow = |v: &[Tensor]| v.iter().map(Tensor::shallow_clone).collect::<Vec<_>>();
        let numerics = Numerics::new(cfg.precision, shallow(&vars), all);
        let opt = match numerics.masters() {
            None => PackedOptimizer::new(shallow(&vars), cfg),
            Some((masters, work)) => PackedOptimizer::with_masters(masters, work, cfg),
        };
        // One soft-loss form per pack: a baseline's (multiplied by alpha = 0) takes the KD
        // trials'.
        let form = members
            .iter()
            .find(|m| m.kd)
            .map_or(kd_loss::SoftLoss::Ce, |m| m.weights.soft_loss);
        let weights: Vec<KdWeights> = members
            .iter()
            .map(|m| KdWeights {
                soft_loss: form,
                ..m.weights
            })
            .collect();
        let any_kd = members.iter().any(|m| m.kd);
        let weights = any_kd
            .then(|| kd_loss::PackedWeights::new(&weights, Kind::Float, device))
            .transpose()?;
        Ok(Packed {
            net,
            vars,
            opt,
            numerics,
            members,
            weights,
            data,
            soft_targets: data.soft_targets.filter(|_| any_kd),
            alive: Tensor::ones([k as i64], (Kind::Bool, device)),
            zeros: Tensor::zeros([k as i64], (Kind::Float, device)),
            vs,
        })
    }
}

impl Learner for Packed<'_> {
    fn step(&mut self, b: &Batch) -> Result<StepLoss, TrainError> {
        let (k, rows) = (b.idx.size()[0], b.idx.size()[1]);
        let idx = b.idx.reshape([-1]);
        let train = self.data.train;
        let x = train.x.index_select(0, &idx).view([k, rows, -1]);
        let y = train.y.index_select(0, &idx).view([k, rows]);
        self.opt.set_lr(b.lr);
        let masks = dropout_masks(&self.net, self.members, b.step, rows, x.device());
        let n = &self.numerics;
        let masks: Vec<Option<Tensor>> = masks
            .iter()
            .map(|m| m.as_ref().map(|m| n.input(m)))
            .collect();
        let logits = n.output(self.net.forward(&n.input(&x), &masks));
        let (total, soft, hard) = match (self.soft_targets, &self.weights) {
            (Some(teacher), Some(w)) => {
                let t = teacher.index_select(0, &idx).view([k, rows, -1]);
                let l = kd_loss::packed_distillation_loss_with(&logits, &t, &y, w)?;
                (l.total, Some(l.soft), l.hard)
            }
            _ => {
                let h = kd_loss::packed_hard_cross_entropy(&logits, &y)?;
                (h.shallow_clone(), None, h)
            }
        };
        // A retired student's loss no longer reaches its weights.
        let total = total.where_self(&self.alive, &self.zeros);
        let loss = StepLoss {
            total: total.detach(),
            soft: soft.map(|s| s.detach()),
            hard: hard.detach(),
            logits: logits.detach(),
            y,
        };
        self.opt.backward_step(&total.sum(Kind::Float));
        Ok(loss)
    }

    fn weights_finite(&self) -> Vec<bool> {
        slices_finite(&self.vars, self.members.len())
    }

    fn logits(&self, x: &Tensor) -> Tensor {
        let n = &self.numerics;
        n.output(self.net.forward_shared(&n.input(x), EVAL_CHUNK))
    }

    fn retire(&mut self, alive: &[bool]) {
        self.alive = super::host::upload(alive, self.alive.device());
    }

    fn state(&self) -> (Vec<Tensor>, bool) {
        (super::kept::tensors_of(&self.vs), true)
    }

    fn member(&self, state: &[Tensor], i: usize) -> Vec<(String, Tensor)> {
        // `fcN.weight` `[K, in, out]` and `fcN.bias` `[K, 1, out]` (`PackedMlp::stack`): a
        // lone MLP's `[out, in]` and `[out]`.
        let names = super::kept::names_of(&self.vs);
        names
            .into_iter()
            .zip(state)
            .map(|(name, t)| {
                let one = t.get(i as i64);
                let t = if one.dim() == 2 && name.ends_with(".weight") {
                    one.tr()
                } else {
                    one.view([-1])
                };
                (name, t)
            })
            .collect()
    }

    fn export(&self) -> Vec<(String, Tensor)> {
        let mut out = super::single::model_tensors(&self.vs);
        out.extend(self.opt.export());
        out
    }

    fn import(&mut self, from: &Named) -> Result<(), String> {
        let check = self.opt.check(from);
        super::single::import_checked(&self.vs, from, check, || self.opt.import(from))
    }

    fn replay(&self, _rows: &mut dyn Iterator<Item = i64>) -> bool {
        // Each step seeds its own masks (`mask_seed`): nothing before it matters.
        true
    }
}

/// Whether each student's slice of every variable is finite (one read).
fn slices_finite(vars: &[Tensor], k: usize) -> Vec<bool> {
    tch::no_grad(|| {
        let each: Vec<Tensor> = vars
            .iter()
            .map(|v| v.isfinite().flatten(1, -1).all_dim(1, false))
            .collect();
        if each.is_empty() {
            return vec![true; k];
        }
        super::host::bools(&Tensor::stack(&each, 0).all_dim(0, false))
    })
}

/// Train the MLP students `members` (all of `spec` and `cfg`) as one pack on `data`.
/// `on_epoch(k, record)` sees student k's epochs as they are measured. Returns one outcome per
/// member, in order; `wall_s` and epoch seconds are each student's share (the pack's time / K).
/// `durable`: checkpoints ([`super::snapshot`]).
#[allow(clippy::too_many_arguments)]
pub fn train_pack(
    spec: &ModelSpec,
    members: &[Member],
    cfg: &TrainCfg,
    data: &TrainData,
    input: InputShape,
    classes: usize,
    durable: super::snapshot::Durability,
    on_epoch: impl FnMut(usize, &EpochRecord),
) -> Result<Vec<Outcome>, TrainError> {
    let mut pack = Packed::new(spec, members, cfg, data, input, classes)?;
    driver::run(&mut pack, members, cfg, data, durable, on_epoch)
}

#[cfg(test)]
mod tests {
    //! Packed vs alone on a small synthetic task (8x8 inputs, 10 classes, 600 training rows).
    //!
    //! Tolerance: a pack computes each student's products with batched kernels (`baddbmm`) and
    //! its soft targets as `exp(log_softmax)`, where a student alone uses `addmm` and `softmax`:
    //! the same maths in another order of float32 operations. After a few epochs the per-epoch
    //! losses agree to a relative 1e-3 and the accuracies to within 1% of the rows (a handful
    //! of borderline predictions); identical to the bit they are not, which is why a packed
    //! trial's id records `packed`. Within packed mode a student's numbers are bit-identical
    //! whatever its pack mates, which the other tests assert exactly.

    use super::*;
    use crate::config::{Optimizer, Schedule};
    use crate::data::SplitTensors;
    use crate::train::snapshot::Durability;
    use kd_model_zoo::{Init, MlpSpec};
    use kd_report::Status;

    fn lock() -> std::sync::MutexGuard<'static, ()> {
        crate::torch_lock()
    }

    const INPUT: InputShape = InputShape {
        channels: 1,
        height: 8,
        width: 8,
    };

    struct Task {
        train: SplitTensors,
        val: SplitTensors,
        test: SplitTensors,
        teacher: Tensor,
    }

    /// Labels from a fixed random linear map of the inputs; the teacher's logits are that map
    /// with noise (so it knows the task, imperfectly).
    fn task() -> Task {
        tch::manual_seed(123);
        let w = Tensor::randn([64, 10], (Kind::Float, Device::Cpu));
        let split = |n: i64| {
            let x = Tensor::randn([n, 1, 8, 8], (Kind::Float, Device::Cpu));
            let logits = x.view([n, 64]).mm(&w);
            let y = logits.argmax(-1, false);
            (SplitTensors { x, y }, logits)
        };
        let (train, logits) = split(600);
        let teacher = logits * 2.0 + Tensor::randn([600, 10], (Kind::Float, Device::Cpu));
        Task {
            train,
            val: split(300).0,
            test: split(300).0,
            teacher,
        }
    }

    fn spec(dropout: f64) -> ModelSpec {
        ModelSpec::Mlp(MlpSpec {
            hidden: vec![32, 16],
            dropout,
            input_dropout: 0.0,
            init: Init::Torch,
        })
    }

    fn cfg(optimizer: Optimizer, epochs: usize) -> TrainCfg {
        let lr = if optimizer == Optimizer::Sgd {
            0.05
        } else {
            0.005
        };
        TrainCfg {
            epochs,
            schedule: Schedule::Cosine,
            ..TrainCfg::plain(optimizer, lr, 32)
        }
    }

    fn member(seed: u64, t: f64, alpha: f64) -> Member {
        let kd = alpha > 0.0;
        Member {
            trial_id: format!("s{seed}-t{t}-a{alpha}"),
            seed,
            weights: if kd {
                KdWeights {
                    temperature: t,
                    alpha,
                    beta: 1.0 - alpha,
                    ..KdWeights::hard_only()
                }
            } else {
                KdWeights::hard_only()
            },
            kd,
        }
    }

    fn data(task: &Task) -> TrainData<'_> {
        TrainData {
            train: &task.train,
            val: &task.val,
            test: &task.test,
            soft_targets: Some(&task.teacher),
            online_teacher: None,
            reference: None,
        }
    }

    fn pack(spec: &ModelSpec, members: &[Member], cfg: &TrainCfg, task: &Task) -> Vec<Outcome> {
        train_pack(
            spec,
            members,
            cfg,
            &data(task),
            INPUT,
            10,
            Durability::none(),
            |_, _| {},
        )
        .unwrap()
    }

    fn alone(spec: &ModelSpec, m: &Member, cfg: &TrainCfg, task: &Task) -> Outcome {
        tch::manual_seed(m.seed as i64);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = spec.build(&vs, INPUT, 10).unwrap();
        let d = TrainData {
            soft_targets: m.kd.then_some(&task.teacher),
            ..data(task)
        };
        crate::train::train(
            &net,
            &vs,
            cfg,
            &m.weights,
            m.seed,
            &d,
            &m.trial_id,
            Durability::none(),
            |_| {},
        )
        .unwrap()
    }

    /// The numbers of an outcome, without its timings.
    fn numbers(o: &Outcome) -> String {
        let epochs: Vec<String> = o
            .epochs
            .iter()
            .map(|e| {
                format!(
                    "{} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
                    e.epoch,
                    e.train_loss,
                    e.soft_loss,
                    e.hard_loss,
                    e.train_acc,
                    e.val_acc,
                    e.test_acc,
                    e.lr
                )
            })
            .collect();
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?}\n{}",
            o.status,
            o.train_acc,
            o.val_acc,
            o.test_acc,
            o.test_errors,
            o.best_epoch,
            o.message,
            epochs.join("\n")
        )
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-6)
    }

    #[test]
    fn packed_students_match_the_same_students_trained_alone() {
        let _l = lock();
        let task = task();
        let members = [
            member(0, 1.0, 0.0),
            member(0, 4.0, 0.9),
            member(1, 2.0, 0.5),
            member(2, 8.0, 0.99),
        ];
        for opt in [Optimizer::Adam, Optimizer::Sgd] {
            let c = cfg(opt, 8);
            let packed = pack(&spec(0.0), &members, &c, &task);
            for (m, p) in members.iter().zip(&packed) {
                let a = alone(&spec(0.0), m, &c, &task);
                assert_eq!(p.status, Status::Ok);
                assert_eq!(p.epochs.len(), a.epochs.len());
                for (pe, ae) in p.epochs.iter().zip(&a.epochs) {
                    let what = format!("{opt:?} {} epoch {}", m.trial_id, pe.epoch);
                    assert!(
                        close(pe.train_loss, ae.train_loss, 1e-3),
                        "{what}: {pe:?} vs {ae:?}"
                    );
                    assert!(close(pe.hard_loss, ae.hard_loss, 1e-3), "{what}");
                    assert_eq!(pe.soft_loss.is_some(), m.kd, "{what}");
                    if let (Some(x), Some(y)) = (pe.soft_loss, ae.soft_loss) {
                        assert!(close(x, y, 1e-3), "{what}: soft {x} vs {y}");
                    }
                    assert!((pe.train_acc - ae.train_acc).abs() <= 0.01, "{what}");
                    assert!(
                        (pe.val_acc.unwrap() - ae.val_acc.unwrap()).abs() <= 0.01,
                        "{what}"
                    );
                    // Tested at the best validation epoch, which rounding may shift.
                    if let (Some(x), Some(y)) = (pe.test_acc, ae.test_acc) {
                        assert!((x - y).abs() <= 0.01, "{what}");
                    }
                    assert_eq!(pe.lr, ae.lr);
                }
                assert!((p.test_acc.unwrap() - a.test_acc.unwrap()).abs() <= 0.01);
                // The task is learnable: the baseline ends far above the 10% of chance.
                if !m.kd {
                    assert!(
                        p.test_acc.unwrap() > 0.3,
                        "{}: {:?}",
                        m.trial_id,
                        p.test_acc
                    );
                }
            }
        }
    }

    #[test]
    fn a_students_numbers_do_not_depend_on_its_pack_mates() {
        let _l = lock();
        let task = task();
        let c = cfg(Optimizer::Adam, 3);
        for dropout in [0.0, 0.3] {
            let s = spec(dropout);
            let me = member(7, 4.0, 0.9);
            let solo = pack(&s, std::slice::from_ref(&me), &c, &task);
            let mates = [member(0, 1.0, 0.0), member(1, 2.0, 0.5), me.clone()];
            let crowd = pack(&s, &mates, &c, &task);
            assert_eq!(numbers(&solo[0]), numbers(&crowd[2]), "dropout {dropout}");
            let reordered = pack(&s, &[me, mates[1].clone()], &c, &task);
            assert_eq!(
                numbers(&solo[0]),
                numbers(&reordered[0]),
                "dropout {dropout}"
            );
            assert_eq!(
                numbers(&crowd[1]),
                numbers(&reordered[1]),
                "dropout {dropout}"
            );
        }
    }

    #[test]
    fn a_diverging_student_is_masked_out_and_the_others_go_on() {
        let _l = lock();
        let task = task();
        let c = cfg(Optimizer::Sgd, 3);
        let mut bad = member(5, 4.0, 0.9);
        bad.weights.alpha = 1e38; // alpha * T^2 overflows float32: the loss is infinite
        let good = [member(0, 1.0, 0.0), member(1, 2.0, 0.5)];
        let with_bad = pack(
            &spec(0.0),
            &[good[0].clone(), bad, good[1].clone()],
            &c,
            &task,
        );
        let without = pack(&spec(0.0), &good, &c, &task);
        assert_eq!(with_bad[1].status, Status::Diverged);
        assert_eq!(
            with_bad[1].message.as_deref(),
            Some("the loss became NaN or infinite in epoch 1")
        );
        assert_eq!(with_bad[1].epochs.len(), 1);
        assert_eq!(with_bad[1].test_acc, None);
        assert_eq!(numbers(&with_bad[0]), numbers(&without[0]));
        assert_eq!(numbers(&with_bad[2]), numbers(&without[1]));
    }

    #[test]
    fn eval_every_skips_evaluations_but_not_results() {
        let _l = lock();
        let task = task();
        let every = cfg(Optimizer::Adam, 3);
        let sparse = TrainCfg {
            eval_every: 2,
            ..every.clone()
        };
        let m = [member(3, 4.0, 0.9)];
        let a = &pack(&spec(0.0), &m, &every, &task)[0];
        let b = &pack(&spec(0.0), &m, &sparse, &task)[0];
        let evaluated: Vec<bool> = b.epochs.iter().map(|e| e.val_acc.is_some()).collect();
        assert_eq!(evaluated, [false, true, true]);
        // Tested: the best of the evaluated epochs and the last.
        let tested: Vec<bool> = b.epochs.iter().map(|e| e.test_acc.is_some()).collect();
        assert_eq!(tested, [false, b.best_epoch == Some(2), true]);
        assert_eq!(b.epochs[2].test_acc, a.epochs[2].test_acc);
        assert_eq!(b.epochs[0].train_loss, a.epochs[0].train_loss);
        assert_eq!((b.test_acc, b.train_acc), (a.test_acc, a.train_acc));
        // The best epoch is chosen among the evaluated ones.
        assert!(matches!(b.best_epoch, Some(2 | 3)));
        // Alone, too.
        let single = alone(&spec(0.0), &m[0], &sparse, &task);
        let evaluated: Vec<bool> = single.epochs.iter().map(|e| e.val_acc.is_some()).collect();
        assert_eq!(evaluated, [false, true, true]);
    }

    /// `train.test_every: best` (the default) measures the test split at the best validation
    /// epoch (its weights kept, tested after training) and after the last only, and reports
    /// exactly what dense testing reports: `test_acc`, the best epoch, its test accuracy
    /// (`best_test_acc`), every validation and training number; packed and alone alike.
    #[test]
    fn testing_at_new_bests_reports_what_testing_every_epoch_does() {
        let _l = lock();
        let task = task();
        let best = cfg(Optimizer::Adam, 16);
        let dense = TrainCfg {
            test_every: crate::config::TestEvery::Every(1),
            ..best.clone()
        };
        let m = [
            member(1, 4.0, 0.9),
            member(2, 2.0, 0.5),
            member(1, 1.0, 0.0),
            member(3, 8.0, 0.9),
        ];
        let best_test = |o: &Outcome| o.best_test_acc().expect("the best epoch was tested");
        let mut sparse_epochs = 0;
        let runs = [
            (
                pack(&spec(0.0), &m, &best, &task),
                pack(&spec(0.0), &m, &dense, &task),
            ),
            (
                m.iter()
                    .map(|x| alone(&spec(0.0), x, &best, &task))
                    .collect(),
                m.iter()
                    .map(|x| alone(&spec(0.0), x, &dense, &task))
                    .collect(),
            ),
        ];
        for (b, d) in &runs {
            for (b, d) in b.iter().zip(d) {
                assert_eq!(
                    (b.test_acc, b.train_acc, b.test_errors),
                    (d.test_acc, d.train_acc, d.test_errors)
                );
                assert_eq!(b.best_epoch, d.best_epoch);
                assert_eq!(best_test(b), best_test(d));
                assert!(
                    d.epochs.iter().all(|e| e.test_acc.is_some()),
                    "dense: every epoch"
                );
                // Tested: exactly the best validation epoch, and the last epoch.
                for (eb, ed) in b.epochs.iter().zip(&d.epochs) {
                    assert_eq!((eb.val_acc, eb.train_loss), (ed.val_acc, ed.train_loss));
                    let want = Some(eb.epoch) == b.best_epoch || eb.epoch == 16;
                    assert_eq!(eb.test_acc.is_some(), want, "epoch {}", eb.epoch);
                    if want {
                        assert_eq!(eb.test_acc, ed.test_acc);
                    } else {
                        sparse_epochs += 1;
                    }
                }
            }
        }
        // The packed and the lone students agree too, epoch by epoch.
        for (p, a) in runs[0].0.iter().zip(&runs[1].0) {
            let tested = |o: &Outcome| {
                o.epochs
                    .iter()
                    .map(|e| e.test_acc.is_some())
                    .collect::<Vec<_>>()
            };
            assert_eq!(tested(p), tested(a));
        }
        assert!(
            sparse_epochs > 0,
            "some epoch was not the best: the test would prove nothing"
        );
        assert!(
            runs[0].0.iter().any(|o| o.best_epoch < Some(16)),
            "some best epoch came before the last: its weights were kept and tested late"
        );
    }

    /// A student with batch norm keeps its running statistics with its weights: alone, a small
    /// ResNet's best epoch (before the last) tested after training gives the test accuracy that
    /// testing after every epoch measured there.
    #[test]
    fn a_batchnorm_students_kept_epoch_tests_as_it_did_then() {
        let _l = lock();
        let task = task();
        let spec = ModelSpec::ResNet(kd_model_zoo::ResNetSpec {
            channels_last: false,
            depth: 8,
            widths: vec![4, 4, 8, 8],
        });
        let best = cfg(Optimizer::Sgd, 12);
        let dense = TrainCfg {
            test_every: crate::config::TestEvery::Every(1),
            ..best.clone()
        };
        let mut early = 0;
        for seed in [1, 2, 3] {
            let m = member(seed, 4.0, 0.9);
            let (b, d) = (
                alone(&spec, &m, &best, &task),
                alone(&spec, &m, &dense, &task),
            );
            let val = |o: &Outcome| o.epochs.iter().map(|e| e.val_acc).collect::<Vec<_>>();
            assert_eq!(val(&b), val(&d));
            assert_eq!((b.test_acc, b.best_epoch), (d.test_acc, d.best_epoch));
            assert_eq!(b.best_test_acc(), d.best_test_acc(), "seed {seed}");
            assert!(b.best_test_acc().is_some());
            early += usize::from(b.best_epoch < Some(12));
        }
        assert!(early > 0, "no best epoch before the last: nothing was kept");
    }

    /// `train.precision: bf16`: students learn through float32 master weights, packed (with
    /// dropout) and alone (a ResNet with batch norm), in bfloat16's own numbers (not float32's)
    /// and close to float32's accuracy; afterwards the lone model is float32 again, buffers
    /// included.
    #[test]
    fn bf16_students_learn_through_float32_masters() {
        let _l = lock();
        let task = task();
        let fp32 = cfg(Optimizer::Adam, 6);
        let bf16 = TrainCfg {
            precision: crate::config::Precision::Bf16,
            ..fp32.clone()
        };
        let m = [member(1, 4.0, 0.9), member(2, 1.0, 0.0)];
        let (p16, p32) = (
            pack(&spec(0.1), &m, &bf16, &task),
            pack(&spec(0.1), &m, &fp32, &task),
        );
        for (a, b) in p16.iter().zip(&p32) {
            assert_eq!(a.status, Status::Ok, "{:?}", a.message);
            assert_ne!(
                a.epochs[0].train_loss, b.epochs[0].train_loss,
                "bf16 in effect"
            );
            let (x, y) = (a.test_acc.unwrap(), b.test_acc.unwrap());
            assert!((x - y).abs() < 0.1, "bf16 {x} vs fp32 {y}");
        }
        assert!(p16[1].test_acc.unwrap() > 0.3, "the baseline learns");
        let spec = ModelSpec::ResNet(kd_model_zoo::ResNetSpec {
            channels_last: false,
            depth: 8,
            widths: vec![4, 4, 8, 8],
        });
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = spec.build(&vs, INPUT, 10).unwrap();
        let d = data(&task);
        let o = crate::train::train(
            &net,
            &vs,
            &bf16,
            &m[0].weights,
            3,
            &d,
            "r",
            Durability::none(),
            |_| {},
        )
        .unwrap();
        assert_eq!(o.status, Status::Ok, "{:?}", o.message);
        assert!(o.test_acc.unwrap() > 0.15, "{:?}", o.test_acc);
        for (name, v) in vs.variables() {
            assert_eq!(v.kind(), Kind::Float, "{name}");
        }
    }

    /// No transfer between host and device inside a training step (on a GPU each would wait for
    /// the device): a pack of KD students and baselines, and a lone KD student with jitter,
    /// crop and flip learning from an online teacher, make as many transfers in an epoch of 4x
    /// the steps as in one of a quarter of them. Their per-step inputs (the pack's temperatures
    /// and weights, the augmentation draws) are uploaded once per pack or per epoch.
    #[test]
    fn the_transfers_of_an_epoch_do_not_grow_with_its_steps() {
        let _l = lock();
        let task = task();
        let count = |f: &dyn Fn()| {
            let before = crate::train::host::transfers();
            f();
            crate::train::host::transfers() - before
        };
        let members = [
            member(1, 4.0, 0.9),
            member(2, 2.0, 0.5),
            member(3, 1.0, 0.0),
        ];
        let teacher_vs = nn::VarStore::new(Device::Cpu);
        let teacher = spec(0.0).build(&teacher_vs, INPUT, 10).unwrap();
        // Tested after every epoch: with `best`, whether the kept best epoch needs its own test
        // pass after training (one more read) depends on the run, not on its steps.
        let recipe = |optimizer, batch_size| TrainCfg {
            batch_size,
            test_every: crate::config::TestEvery::Every(1),
            ..cfg(optimizer, 2)
        };
        let augmented = |batch: usize| TrainCfg {
            jitter: 1,
            crop: 1,
            flip: true,
            ..recipe(Optimizer::Sgd, batch)
        };
        let online = |c: &TrainCfg| {
            let m = &members[0];
            tch::manual_seed(m.seed as i64);
            let vs = nn::VarStore::new(Device::Cpu);
            let net = spec(0.0).build(&vs, INPUT, 10).unwrap();
            let d = TrainData {
                soft_targets: Some(&task.teacher),
                online_teacher: Some(&teacher),
                ..data(&task)
            };
            crate::train::train(
                &net,
                &vs,
                c,
                &m.weights,
                m.seed,
                &d,
                "t",
                Durability::none(),
                |_| {},
            )
            .unwrap();
        };
        for (what, run) in [
            (
                "pack",
                &(|b: usize| {
                    let _ = pack(&spec(0.0), &members, &recipe(Optimizer::Adam, b), &task);
                }) as &dyn Fn(usize),
            ),
            ("alone, augmented, online teacher", &|b: usize| {
                online(&augmented(b))
            }),
        ] {
            let few = count(&|| run(120));
            let many = count(&|| run(30));
            assert_eq!(
                few, many,
                "{what}: transfers with 5 and with 20 steps an epoch"
            );
            assert!(few > 0, "{what}: the counter counts");
        }
    }

    #[test]
    fn pack_size_follows_memory() {
        let mlp = |h: usize| {
            ModelSpec::Mlp(MlpSpec {
                hidden: vec![h, h],
                dropout: 0.0,
                input_dropout: 0.0,
                init: Init::Torch,
            })
        };
        let mnist = InputShape {
            channels: 1,
            height: 28,
            width: 28,
        };
        // 800-800: 1.28M parameters, 20 MB with gradients and Adam's moments, 25 MB with the
        // activations of a batch of 128: 84 fit in 2 GiB, the cap is 64.
        assert_eq!(auto_pack_size(&mlp(800), mnist, 10, 128, false), 64);
        // 4000-4000: 19.2M parameters, 325 MB: 6 in 2 GiB, 26 in 8 GiB on a GPU.
        assert_eq!(auto_pack_size(&mlp(4000), mnist, 10, 128, false), 6);
        assert_eq!(auto_pack_size(&mlp(4000), mnist, 10, 128, true), 26);
        assert_eq!(auto_pack_size(&mlp(30), mnist, 10, 128, false), 64);
        assert_eq!(auto_pack_size(&mlp(20000), mnist, 10, 128, false), 1);
    }
}
