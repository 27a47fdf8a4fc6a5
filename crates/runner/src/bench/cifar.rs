//! `kd bench`'s CIFAR rows: is the CIFAR benchmark feasible here, and how does kd-sweep's step
//! compare with the same model in PyTorch eager? One training step of resnet8x4 at RepDistiller's
//! recipe (batch 64, crop 4 + flip on the batch, SGD 0.05 with momentum 0.9 and weight decay
//! 5e-4), alone on hard labels (a baseline) and distilled from an online resnet32x4 teacher in
//! eval mode (`0.9 * T^2 * KL + 0.1 * CE` at T = 4, RepDistiller's `-r 0.1 -a 0.9`). kd-sweep's
//! step is the training driver's own ([`Learner::step`] of [`Single`]); PyTorch's is
//! `bench/pytorch_cifar.py` on our transcription of the same models, in NCHW and channels_last.
//! Random standardised 3x32x32 images and 100 classes: only time is measured. Images per second
//! are medians of `steps` timed steps after 2 untimed ones; the epoch column is 50,000 images
//! (CIFAR's training set) at that rate.

use std::path::Path;

use kd_loss::{KdWeights, SoftLoss};
use kd_model_zoo::{InputShape, ModelSpec, Role};
use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};

use super::step::{median, timings};
use super::{run_script, BenchOptions};
use crate::config::{Optimizer, Schedule, TrainCfg};
use crate::data::SplitTensors;
use crate::error::RunError;
use crate::train::driver::{Batch, Learner};
use crate::train::single::Single;
use crate::train::TrainData;

const CIFAR: InputShape = InputShape {
    channels: 3,
    height: 32,
    width: 32,
};
const BATCH: i64 = 64;
/// CIFAR's training images: what one epoch is.
pub(super) const EPOCH_IMAGES: f64 = 50_000.0;

/// One CIFAR row: images per second of each implementation.
#[derive(Debug, Clone, Serialize)]
pub(super) struct CifarRow {
    pub what: String,
    pub batch: i64,
    pub steps: usize,
    pub kd_sweep: f64,
    pub pytorch_nchw: f64,
    pub pytorch_channels_last: f64,
}

fn model(yaml: &str) -> ModelSpec {
    let map: serde_yaml::Mapping = serde_yaml::from_str(yaml).expect("a literal mapping");
    ModelSpec::from_config(&map, Role::Student).expect("a zoo model")
}

/// Images per second of kd-sweep's step: `teacher` distils into resnet8x4 when given.
fn kd_sweep(device: Device, steps: usize, teacher: bool) -> f64 {
    tch::manual_seed(0);
    let n = 4 * BATCH;
    let split = SplitTensors {
        x: Tensor::randn([n, 3, 32, 32], (Kind::Float, device)),
        y: Tensor::randint(100, [n], (Kind::Int64, device)),
    };
    let empty = SplitTensors {
        x: Tensor::zeros([0, 3, 32, 32], (Kind::Float, device)),
        y: Tensor::zeros([0], (Kind::Int64, device)),
    };
    let cfg = TrainCfg {
        epochs: 1,
        batch_size: BATCH as usize,
        optimizer: Optimizer::Sgd,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        schedule: Schedule::Constant,
        eval_every: 1,
        test_every: Default::default(),
        jitter: 0,
        max_norm: None,
        milestones: vec![],
        gamma: None,
        crop: 4,
        flip: true,
        label_smoothing: 0.0,
    };
    let vs = nn::VarStore::new(device);
    let student = model("{arch: resnet, depth: 8, widths: [32, 64, 128, 256]}")
        .build(&vs.root(), CIFAR, 100)
        .expect("resnet8x4 builds");
    let tvs = nn::VarStore::new(device);
    let teacher_net = model("{arch: resnet, depth: 32, widths: [32, 64, 128, 256]}")
        .build(&tvs.root(), CIFAR, 100)
        .expect("resnet32x4 builds");
    // Never read with an online teacher; it says "distil" to the learner.
    let placeholder = Tensor::zeros([n, 100], (Kind::Float, device));
    let data = TrainData {
        train: &split,
        val: &empty,
        test: &empty,
        soft_targets: teacher.then_some(&placeholder),
        online_teacher: teacher.then_some(&teacher_net),
        reference: None,
    };
    let weights = if teacher {
        KdWeights {
            temperature: 4.0,
            alpha: 0.9,
            beta: 0.1,
            soft_loss: SoftLoss::Kl,
            ..KdWeights::hard_only()
        }
    } else {
        KdWeights::hard_only()
    };
    let mut learner = Single::new(&student, &vs, &cfg, &weights, 0, &data).expect("sgd builds");
    let mut step = 0usize;
    let times = timings(2, steps, &mut || {
        let start = (step as i64 % 4) * BATCH;
        let idx = Tensor::arange_start(start, start + BATCH, (Kind::Int64, device)).unsqueeze(0);
        let b = Batch {
            idx: &idx,
            epoch: 1,
            index: step,
            step,
            lr: cfg.lr,
        };
        let l = learner.step(&b).expect("a resnet8x4 step");
        // Wait for the device, as a host would once per step.
        let _ = l.total.double_value(&[0]);
        step += 1;
    });
    BATCH as f64 / median(&times)
}

/// The CIFAR rows, kd-sweep and PyTorch interleaved.
pub(super) fn rows(
    opts: &BenchOptions,
    device: Device,
    threads: usize,
    steps: usize,
) -> Result<Vec<CifarRow>, RunError> {
    let mut out = vec![];
    for (what, teacher) in [
        ("resnet8x4 alone (hard labels)", false),
        ("resnet8x4 from an online resnet32x4", true),
    ] {
        let ours = kd_sweep(device, steps, teacher);
        let mut theirs = [0.0; 2];
        for (i, format) in ["nchw", "channels_last"].into_iter().enumerate() {
            let mut args = vec![
                "pytorch_cifar.py".to_string(),
                "--steps".into(),
                steps.to_string(),
                "--format".into(),
                format.into(),
                "--device".into(),
                if device.is_cuda() { "cuda" } else { "cpu" }.into(),
            ];
            if teacher {
                args.push("--teacher".into());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            theirs[i] = run_script(opts, &args, threads)?
                .samples_per_s
                .unwrap_or(f64::NAN);
        }
        out.push(CifarRow {
            what: what.into(),
            batch: BATCH,
            steps,
            kd_sweep: ours,
            pytorch_nchw: theirs[0],
            pytorch_channels_last: theirs[1],
        });
    }
    Ok(out)
}

/// The CIFAR table of the report.
pub(super) fn render(rows: &[CifarRow], s: &mut String) {
    use std::fmt::Write as _;
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\nCIFAR-100 step of RepDistiller's recipe (batch {BATCH}, crop 4 + flip, SGD 0.05, \
         momentum 0.9, weight decay 5e-4), images/s, median of {} steps; the epoch is {} images \
         at that rate:\n\n| step | kd-sweep | PyTorch NCHW | PyTorch channels_last | kd-sweep / \
         best PyTorch | kd-sweep epoch s | PyTorch best epoch s |\n|---|---:|---:|---:|---:|---:|---:|",
        rows[0].steps, EPOCH_IMAGES
    );
    for r in rows {
        let best = r.pytorch_nchw.max(r.pytorch_channels_last);
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.0} | {:.0} |",
            r.what,
            r.kd_sweep,
            r.pytorch_nchw,
            r.pytorch_channels_last,
            r.kd_sweep / best,
            EPOCH_IMAGES / r.kd_sweep,
            EPOCH_IMAGES / best
        );
    }
}

/// Whether the PyTorch script can find the transcription it times.
pub(super) fn check_scripts(scripts: &Path) -> Result<(), RunError> {
    let zoo = scripts.join("../crates/model-zoo/tests/reference/cifar_zoo.py");
    if zoo.exists() {
        Ok(())
    } else {
        Err(RunError::Worker(format!(
            "{}: missing; bench/pytorch_cifar.py times the zoo's PyTorch transcription and runs \
             from a checkout of kd-sweep",
            zoo.display()
        )))
    }
}
