//! `kd bench`'s CIFAR rows: is the CIFAR benchmark feasible here, and how does kd-sweep's step
//! compare with the same model in PyTorch eager? One training step of resnet8x4 at RepDistiller's
//! recipe (batch 64, crop 4 + flip on the batch, SGD 0.05 with momentum 0.9 and weight decay
//! 5e-4), alone on hard labels (a baseline) and distilled from an online resnet32x4 teacher in
//! eval mode (`0.9 * T^2 * KL + 0.1 * CE` at T = 4, RepDistiller's `-r 0.1 -a 0.9`). kd-sweep's
//! step is the training driver's own ([`Learner::step`] of [`Single`]); PyTorch's is
//! `bench/pytorch_conv.py` on our transcription of the same models, in NCHW and channels_last.
//! Random standardised 3x32x32 images and 100 classes: only time is measured. Images per second
//! are medians of `steps` timed steps after 2 untimed ones; the epoch column is 50,000 images
//! (CIFAR's training set) at that rate.

use std::path::Path;

use kd_model_zoo::InputShape;
use serde::Serialize;
use tch::Device;

use super::step::{kd_sweep_step, StepWork};
use super::{run_script, BenchOptions};
use crate::config::{Optimizer, TrainCfg};
use crate::error::RunError;

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
    /// kd-sweep with the conv weights channels_last (a bench experiment: the CIFAR zoo has no
    /// `channels_last` key yet).
    pub kd_sweep_channels_last: f64,
    pub pytorch_nchw: f64,
    pub pytorch_channels_last: f64,
}

/// RepDistiller's CIFAR recipe for resnet8x4, alone or from an online resnet32x4.
fn cifar_work(teacher: bool, channels_last: bool) -> StepWork<'static> {
    StepWork {
        student: "{arch: resnet, depth: 8, widths: [32, 64, 128, 256]}",
        teacher: teacher.then_some("{arch: resnet, depth: 32, widths: [32, 64, 128, 256]}"),
        input: CIFAR,
        classes: 100,
        cfg: TrainCfg {
            weight_decay: 5e-4,
            crop: 4,
            flip: true,
            ..TrainCfg::plain(Optimizer::Sgd, 0.05, BATCH as usize)
        },
        channels_last,
    }
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
        let ours = kd_sweep_step(device, steps, &cifar_work(teacher, false));
        let ours_cl = kd_sweep_step(device, steps, &cifar_work(teacher, true));
        let mut theirs = [0.0; 2];
        for (i, format) in ["nchw", "channels_last"].into_iter().enumerate() {
            let mut args = vec![
                "pytorch_conv.py".to_string(),
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
            kd_sweep_channels_last: ours_cl,
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
         at that rate:\n\n| step | kd-sweep | kd-sweep channels_last | PyTorch NCHW | PyTorch \
         channels_last | kd-sweep / best PyTorch | channels_last / best PyTorch | kd-sweep epoch \
         s | PyTorch best epoch s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        rows[0].steps, EPOCH_IMAGES
    );
    for r in rows {
        let best = r.pytorch_nchw.max(r.pytorch_channels_last);
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.0} | {:.0} |",
            r.what,
            r.kd_sweep,
            r.kd_sweep_channels_last,
            r.pytorch_nchw,
            r.pytorch_channels_last,
            r.kd_sweep / best,
            r.kd_sweep_channels_last / best,
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
            "{}: missing; bench/pytorch_conv.py times the zoo's PyTorch transcription and runs \
             from a checkout of kd-sweep",
            zoo.display()
        )))
    }
}
