//! Timing: medians of repeated calls, the matmul roof, one KD step of the training driver, and
//! one training step of any zoo model on random images ([`kd_sweep_step`], the convolutional rows).

use std::time::Instant;

use kd_loss::{KdWeights, SoftLoss};
use kd_model_zoo::{Init, InputShape, MlpSpec, ModelSpec, Role};
use tch::{nn, Device, Kind, Tensor};

use crate::config::{Optimizer, TrainCfg};
use crate::data::{SplitTensors, Tensors};
use crate::train::driver::{Batch, Learner};
use crate::train::packed::Packed;
use crate::train::single::Single;
use crate::train::{Member, TrainData};

/// The median of `v` (NaN when empty).
pub(super) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

/// Seconds of each of `runs` calls of `f` on `device` after `warmup` untimed ones. On CUDA the
/// device is synchronised before the clock is read (kernels run asynchronously: without it a
/// step's time is its launch time).
pub(super) fn timings(device: Device, warmup: usize, runs: usize, f: &mut dyn FnMut()) -> Vec<f64> {
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    sync();
    (0..warmup + runs)
        .filter_map(|i| {
            let t0 = Instant::now();
            f();
            sync();
            (i >= warmup).then(|| t0.elapsed().as_secs_f64())
        })
        .collect()
}

/// GFLOP/s of a 2048^3 float32 matrix product here: the best of 7 (a roof is what the machine
/// can do; a shared machine's neighbours only ever lower a measurement).
pub(super) fn roof(device: Device) -> f64 {
    let a = Tensor::randn([2048, 2048], (tch::Kind::Float, device));
    let b = Tensor::randn([2048, 2048], (tch::Kind::Float, device));
    let times = timings(device, 2, 7, &mut || {
        let _ = a.mm(&b).double_value(&[0, 0]);
    });
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    2.0 * 2048f64.powi(3) / best / 1e9
}

/// Samples/s of one 800-800 KD step (Adam, as temp.yaml) at `batch`: alone, and 18 students
/// packed. Each is the training driver's own step ([`Learner::step`]) on the first `batch`
/// rows, so what is timed is what a sweep runs.
pub(super) fn kd_step(ctx: &Tensors, logits: &Tensor, batch: i64, input: InputShape) -> (f64, f64) {
    let device = ctx.train.x.device();
    let spec = ModelSpec::Mlp(MlpSpec {
        hidden: vec![800, 800],
        dropout: 0.0,
        input_dropout: 0.0,
        init: Init::Torch,
    });
    let cfg = TrainCfg {
        momentum: 0.0,
        ..TrainCfg::plain(Optimizer::Adam, 1e-3, batch as usize)
    };
    let classes = logits.size()[1] as usize;
    let teacher = logits.to_device(device);
    let data = TrainData {
        train: &ctx.train,
        val: &ctx.val,
        test: &ctx.test,
        soft_targets: Some(&teacher),
        online_teacher: None,
        reference: None,
    };
    let w = KdWeights {
        temperature: 4.0,
        alpha: 0.9,
        beta: 0.1,
        ..KdWeights::hard_only()
    };
    let rows = Tensor::arange(batch, (tch::Kind::Int64, device));
    let time = |learner: &mut dyn Learner, k: i64| {
        let idx = rows.unsqueeze(0).expand([k, batch], false);
        let mut step = 0;
        median(&timings(device, 5, 20, &mut || {
            let b = Batch {
                idx: &idx,
                epoch: 1,
                index: 0,
                step,
                lr: cfg.lr,
            };
            learner.step(&b).expect("a KD step");
            step += 1;
        }))
    };
    // Alone.
    let vs = nn::VarStore::new(device);
    let net = spec.build(&vs, input, classes).expect("a valid spec");
    let mut single = Single::new(&net, &vs, &cfg, &w, 0, &data).expect("adam builds");
    let alone = time(&mut single, 1);
    // 18 packed.
    let k = 18;
    let members: Vec<Member> = (0..k)
        .map(|seed| Member {
            trial_id: format!("bench-{seed}"),
            seed,
            weights: w,
            kd: true,
        })
        .collect();
    let mut pack =
        Packed::new(&spec, &members, &cfg, &data, input, classes).expect("mlps of one spec");
    let packed = time(&mut pack, k as i64);
    (batch as f64 / alone, (k as i64 * batch) as f64 / packed)
}

/// The zoo model that `yaml` (a literal `model:` mapping) describes for `role`, with the
/// `channels_last` key set as asked (a sweep's own route to channels_last conv weights).
pub(super) fn model(yaml: &str, role: Role, channels_last: bool) -> ModelSpec {
    let mut map: serde_yaml::Mapping = serde_yaml::from_str(yaml).expect("a literal mapping");
    if channels_last {
        map.insert("channels_last".into(), true.into());
    }
    ModelSpec::from_config(&map, role).expect("a zoo model")
}

/// One timed step: a student (config keys), optionally distilled from an online teacher, on
/// random standardised images of `input` with `classes` labels, trained with `cfg`.
pub(super) struct StepWork<'a> {
    pub student: &'a str,
    pub teacher: Option<&'a str>,
    pub input: InputShape,
    pub classes: i64,
    pub cfg: TrainCfg,
    /// The models' `channels_last` key (conv weights in channels_last memory format).
    pub channels_last: bool,
}

/// Images per second of kd-sweep's training step ([`Learner::step`] of [`Single`]) on `w`, the
/// median of `steps` steps after 2, over 4 batches of the epoch's plan (so augmentation draws
/// come from the epoch, as in a sweep).
pub(super) fn kd_sweep_step(device: Device, steps: usize, w: &StepWork) -> f64 {
    tch::manual_seed(0);
    let batch = w.cfg.batch_size as i64;
    let n = 4 * batch;
    let (c, h, wd) = (
        w.input.channels as i64,
        w.input.height as i64,
        w.input.width as i64,
    );
    let split = SplitTensors {
        x: Tensor::randn([n, c, h, wd], (Kind::Float, device)),
        y: Tensor::randint(w.classes, [n], (Kind::Int64, device)),
    };
    let empty = SplitTensors {
        x: Tensor::zeros([0, c, h, wd], (Kind::Float, device)),
        y: Tensor::zeros([0], (Kind::Int64, device)),
    };
    let classes = w.classes as usize;
    let vs = nn::VarStore::new(device);
    let student = model(w.student, Role::Student, w.channels_last)
        .build(&vs, w.input, classes)
        .expect("the student builds");
    let tvs = nn::VarStore::new(device);
    let teacher_net = w.teacher.map(|t| {
        model(t, Role::Student, w.channels_last)
            .build(&tvs, w.input, classes)
            .expect("the teacher builds")
    });
    // Never read with an online teacher; it says "distil" to the learner.
    let placeholder = Tensor::zeros([n, w.classes], (Kind::Float, device));
    let data = TrainData {
        train: &split,
        val: &empty,
        test: &empty,
        soft_targets: teacher_net.as_ref().map(|_| &placeholder),
        online_teacher: teacher_net.as_ref(),
        reference: None,
    };
    let weights = match teacher_net {
        Some(_) => KdWeights {
            temperature: 4.0,
            alpha: 0.9,
            beta: 0.1,
            soft_loss: SoftLoss::Kl,
            ..KdWeights::hard_only()
        },
        None => KdWeights::hard_only(),
    };
    let mut learner =
        Single::new(&student, &vs, &w.cfg, &weights, 0, &data).expect("the optimiser builds");
    let mut step = 0usize;
    let times = timings(device, 2, steps, &mut || {
        let start = (step as i64 % 4) * batch;
        let idx = Tensor::arange_start(start, start + batch, (Kind::Int64, device)).unsqueeze(0);
        let b = Batch {
            idx: &idx,
            epoch: step as u32 / 4 + 1,
            index: step % 4,
            step,
            lr: w.cfg.lr,
        };
        let l = learner.step(&b).expect("a training step");
        // Wait for the device, as a host would once per step.
        let _ = l.total.double_value(&[0]);
        step += 1;
    });
    batch as f64 / median(&times)
}
