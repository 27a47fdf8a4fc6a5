//! Timing: medians of repeated calls, the matmul roof, and one KD step of the training driver.

use std::time::Instant;

use kd_loss::KdWeights;
use kd_model_zoo::{Init, InputShape, MlpSpec, ModelSpec};
use tch::{nn, Device, Tensor};

use crate::config::{Optimizer, TrainCfg};
use crate::data::Tensors;
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

/// Seconds of each of `runs` calls of `f` after `warmup` untimed ones.
pub(super) fn timings(warmup: usize, runs: usize, f: &mut dyn FnMut()) -> Vec<f64> {
    (0..warmup + runs)
        .filter_map(|i| {
            let t0 = Instant::now();
            f();
            (i >= warmup).then(|| t0.elapsed().as_secs_f64())
        })
        .collect()
}

/// GFLOP/s of a 2048^3 float32 matrix product here: the best of 7 (a roof is what the machine
/// can do; a shared machine's neighbours only ever lower a measurement).
pub(super) fn roof(device: Device) -> f64 {
    let a = Tensor::randn([2048, 2048], (tch::Kind::Float, device));
    let b = Tensor::randn([2048, 2048], (tch::Kind::Float, device));
    let times = timings(2, 7, &mut || {
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
        median(&timings(5, 20, &mut || {
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
    let net = spec
        .build(&vs.root(), input, classes)
        .expect("a valid spec");
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

/// The 4-d variables of `vs` (conv weights) in channels_last memory format, in place
/// ([`kd_model_zoo::channels_last_`]): libtorch's convolutions then run channels_last and keep
/// their outputs so.
pub(super) fn to_channels_last(vs: &nn::VarStore) {
    for (_, v) in vs.variables() {
        if v.dim() == 4 {
            kd_model_zoo::channels_last_(&v);
        }
    }
}
