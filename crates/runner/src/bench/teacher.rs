//! `kd bench`'s teacher rows: temp.yaml's CNN teacher (`{arch: cnn, channels: [32, 64], fc:
//! [256], dropout: 0.5}` on 1x28x28 images, 10 classes, Adam 0.001, batch 128), kd-sweep against
//! the same net in PyTorch eager (`bench/pytorch_conv.py --model cnn`), NCHW and channels_last:
//! images per second of a training step and of the evaluation forward pass (chunks of 1000 rows,
//! as kd-sweep's evaluation and the logits pass), and the epoch they make (55,000 training
//! images, 5,000 validation and 10,000 test images evaluated). kd-sweep in channels_last is its
//! own step with the conv weights in that memory format (libtorch's convolutions then run, and
//! keep their outputs, channels_last), and the largest difference of its first steps' losses
//! from NCHW's says whether it changes numbers beyond the last bits.

use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};

use super::step::{kd_sweep_step, median, model, timings, StepWork};
use super::{run_script, BenchOptions};
use crate::config::{Optimizer, TrainCfg};
use crate::error::RunError;

const MNIST: kd_model_zoo::InputShape = kd_model_zoo::InputShape {
    channels: 1,
    height: 28,
    width: 28,
};
const CNN: &str = "{arch: cnn, channels: [32, 64], kernel: 3, fc: [256], dropout: 0.5}";
/// Images of one temp.yaml teacher epoch: trained, then evaluated (validation and test).
pub(super) const TRAIN_IMAGES: f64 = 55_000.0;
pub(super) const EVAL_IMAGES: f64 = 15_000.0;

/// One implementation's rates.
#[derive(Debug, Clone, Serialize)]
pub(super) struct TeacherRow {
    pub what: String,
    /// Training images per second (batch 128, Adam).
    pub train: f64,
    /// Evaluation images per second (eval mode, no gradients, chunks of 1000).
    pub eval: f64,
}

impl TeacherRow {
    /// Seconds of one teacher epoch at these rates.
    pub fn epoch_s(&self) -> f64 {
        TRAIN_IMAGES / self.train + EVAL_IMAGES / self.eval
    }
}

fn cfg() -> TrainCfg {
    TrainCfg::plain(Optimizer::Adam, 0.001, 128)
}

/// Images per second of kd-sweep's evaluation forward pass of the CNN over 5,000 images.
fn kd_sweep_eval(device: Device, repeats: usize, channels_last: bool) -> f64 {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let net = model(CNN, kd_model_zoo::Role::Teacher, channels_last)
        .build(&vs, MNIST, 10)
        .expect("the cnn builds");
    let x = Tensor::randn([5000, 1, 28, 28], (Kind::Float, device));
    let times = timings(device, 1, repeats, &mut || {
        let l = crate::train::eval::predict(&net, &x, 1000);
        let _ = l.double_value(&[0, 0]);
    });
    5000.0 / median(&times)
}

/// The teacher rows: kd-sweep NCHW and channels_last, PyTorch NCHW and channels_last.
pub(super) fn rows(
    opts: &BenchOptions,
    device: Device,
    threads: usize,
    steps: usize,
) -> Result<Vec<TeacherRow>, RunError> {
    let mut out = vec![];
    for (what, channels_last) in [("kd-sweep NCHW", false), ("kd-sweep channels_last", true)] {
        let work = StepWork {
            student: CNN,
            teacher: None,
            input: MNIST,
            classes: 10,
            cfg: cfg(),
            channels_last,
        };
        out.push(TeacherRow {
            what: what.into(),
            train: kd_sweep_step(device, steps, &work),
            eval: kd_sweep_eval(device, 5, channels_last),
        });
    }
    let steps = steps.to_string();
    for format in ["nchw", "channels_last"] {
        let rate = |extra: &[&str]| -> Result<f64, RunError> {
            let mut args = vec![
                "pytorch_conv.py",
                "--model",
                "cnn",
                "--steps",
                &steps,
                "--format",
                format,
                "--device",
                if device.is_cuda() { "cuda" } else { "cpu" },
            ];
            args.extend_from_slice(extra);
            Ok(run_script(opts, &args, threads)?
                .samples_per_s
                .unwrap_or(f64::NAN))
        };
        out.push(TeacherRow {
            what: format!("PyTorch eager {format}"),
            train: rate(&[])?,
            eval: rate(&["--eval"])?,
        });
    }
    Ok(out)
}

/// The teacher table of the report.
pub(super) fn render(rows: &[TeacherRow], s: &mut String) {
    use std::fmt::Write as _;
    if rows.is_empty() {
        return;
    }
    let best = rows
        .iter()
        .filter(|r| r.what.starts_with("PyTorch"))
        .map(TeacherRow::epoch_s)
        .fold(f64::INFINITY, f64::min);
    let _ = writeln!(
        s,
        "\ntemp.yaml's CNN teacher (batch 128, Adam), images/s; the epoch is {TRAIN_IMAGES} \
         training images and {EVAL_IMAGES} evaluated at those rates:\n\n| implementation | \
         train img/s | eval img/s | epoch s | x best PyTorch |\n|---|---:|---:|---:|---:|"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} | {:.1} | {:.2} |",
            r.what,
            r.train,
            r.eval,
            r.epoch_s(),
            best / r.epoch_s()
        );
    }
}
