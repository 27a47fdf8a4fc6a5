//! `kd bench --only step`: the matmul roof and one 800-800 KD step, kd-sweep alone and 18 packed
//! against PyTorch eager, on the device of temp.yaml (or `--set device=...`); into
//! `OUT/step.json` and `OUT/step.md`. The smallest bench with a PyTorch comparison: what the GPU
//! check's smoke mode runs, and a first number on a new device.

use tch::{Kind, Tensor};

use super::mlp::{export_data, step_rows};
use super::render::step_table;
use super::step::roof;
use super::{python_torch, BenchOptions};
use crate::data::{self, Tensors};
use crate::env;
use crate::error::{io_err, RunError};
use crate::run::teacher::Logits;

/// Run the step rows; the Markdown written to `OUT/step.md`.
pub(super) fn run_step(opts: &BenchOptions) -> Result<String, RunError> {
    let (base, threads, device, opts) = opts.on_device()?;
    let opts = &opts;
    let data = data::load(&base.dataset)?;
    let d = &data.plan;
    let largest = opts.step_batches.iter().copied().max().unwrap_or(0);
    if (d.transfer_rows as i64) < largest {
        return Err(RunError::Worker(format!(
            "kd bench's step rows time batches of up to {largest} transfer images and the \
             config leaves {}: raise dataset.train_limit or dataset.transfer_fraction, or pass \
             a smaller --step-batch",
            d.transfer_rows
        )));
    }
    let tensors = Tensors::new(&data, device);
    // A step's time does not depend on the teacher's values: seeded random logits stand in.
    tch::manual_seed(0);
    let rand = |n: usize| Tensor::randn([n as i64, d.classes as i64], (Kind::Float, device));
    let logits = Logits {
        train: rand(tensors.train.x.size()[0] as usize),
        test: rand(d.test),
        tempered: vec![],
    };
    let export = std::path::absolute(opts.out.join(".data")).map_err(io_err(&opts.out))?;
    export_data(&export, &tensors, &data, &logits, &[])?;
    let roof_gflops = roof(device);
    let export_arg = export.display().to_string();
    let steps = step_rows(opts, &tensors, &logits.train, d.input, &export_arg, threads)?;
    let _ = std::fs::remove_dir_all(&export);
    let machine = env::class_of(device, threads).describe();
    let json = serde_json::json!({
        "machine": machine,
        "cpu": env::cpu_model(),
        "threads": threads,
        "device": env::device_label(device),
        "libtorch": env::LIBTORCH_VERSION,
        "python_torch": python_torch(opts),
        "roof_gflops": roof_gflops,
        "step": steps,
    });
    let text = serde_json::to_string_pretty(&json).expect("bench results serialise");
    std::fs::create_dir_all(&opts.out).map_err(io_err(&opts.out))?;
    kd_report::write_atomic(&opts.out.join("step.json"), text.as_bytes())?;
    let mut md = format!(
        "# kd bench: one KD step\n\n{} ({machine}) on {}, PyTorch {} for the script. Roof: \
         {roof_gflops:.0} GFLOP/s (the best 2048^3 float32 matmul). Regenerate with `just bench \
         --only step`.\n\n",
        env::cpu_model(),
        env::device_label(device),
        python_torch(opts),
    );
    step_table(&steps, &mut md);
    kd_report::write_atomic(&opts.out.join("step.md"), md.as_bytes())?;
    Ok(md)
}
