//! `kd bench --only inference`: what the report's **What the student buys** measures
//! (`run/footprint.rs`), against PyTorch's inference of the same kept model and ONNX Runtime's
//! of its export. For temp.yaml's teacher (the CNN) and student (the 800-800 MLP): a fresh net
//! of each, kept as a sweep keeps it (`OUT/inference/<name>.safetensors`) and exported to ONNX;
//! kd times it in evaluation mode, `bench/pytorch_infer.py` times the reference definition
//! (`experiments/reference/models.py`, under `torch.inference_mode`) and the ONNX graph, by the
//! same rule (median of repeated passes after warm-up), at batch 1 and batch 256, with the
//! same threads.

use std::path::Path;

use kd_model_zoo::ModelSpec;
use serde::Serialize;
use tch::{nn, Device};

use super::BenchOptions;
use crate::config::{Precision, Resolved, Save};
use crate::data::Data;
use crate::error::{io_err, RunError};
use crate::export::{self, ExportArgs, Format};
use crate::run::footprint;
use crate::run::models::{self, ModelMeta};
use crate::train::snapshot::KeptModel;

/// One model's row: kd's medians and PyTorch's and ONNX Runtime's, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub(super) struct InferenceRow {
    pub model: String,
    pub params: u64,
    pub kd_ms: [f64; 2],
    pub torch_ms: [f64; 2],
    pub ort_ms: [f64; 2],
    /// The versions the script ran.
    pub torch: String,
    pub onnxruntime: String,
}

/// A fresh net of `spec`, kept in `dir` as `<name>.safetensors` and exported beside it.
fn keep_and_export(
    dir: &Path,
    name: &str,
    spec: &ModelSpec,
    data: &Data,
) -> Result<(std::path::PathBuf, std::path::PathBuf), RunError> {
    let d = &data.plan;
    let vs = nn::VarStore::new(Device::Cpu);
    spec.build(&vs, d.input, d.classes)
        .map_err(|e| RunError::Worker(format!("bench model {name}: {e}")))?;
    let mut tensors: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let meta = ModelMeta {
        format: models::FORMAT.into(),
        trial_id: name.into(),
        model: spec.clone(),
        input: [d.input.channels, d.input.height, d.input.width],
        classes: d.classes,
        mean: data.dataset.mean.clone(),
        std: data.dataset.std.clone(),
        data: d.clone(),
        precision: Precision::Fp32,
        exec: kd_report::Exec::Single,
        device: "cpu".into(),
        threads: tch::get_num_threads().max(1) as usize,
        weights: Save::Last,
        epoch: 0,
        test_acc: None,
        test_errors: None,
    };
    let kept = KeptModel {
        tensors,
        which: Save::Last,
        epoch: 0,
        test: None,
    };
    let file = models::write(dir, &meta, &kept)?;
    let onnx = export::export(&ExportArgs {
        model: file.clone(),
        format: Format::Onnx,
        pixels: false,
        output: None,
    })?;
    Ok((file, onnx))
}

/// The rows, on the CPU with temp.yaml's threads.
pub(super) fn rows(
    opts: &BenchOptions,
    base: &Resolved,
    data: &Data,
    threads: usize,
) -> Result<Vec<InferenceRow>, RunError> {
    // Absolute: the script runs in the scripts' folder.
    let dir = std::path::absolute(opts.out.join("inference")).map_err(io_err(&opts.out))?;
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let d = &data.plan;
    let mut rows = Vec::new();
    for (name, spec) in [
        ("teacher", &base.teacher.model),
        ("student", &base.student.model),
    ] {
        let (file, onnx) = keep_and_export(&dir, name, spec, data)?;
        let vs = nn::VarStore::new(Device::Cpu);
        let net = spec
            .build(&vs, d.input, d.classes)
            .map_err(|e| RunError::Worker(format!("bench model {name}: {e}")))?;
        let (kd, _) = footprint::timed(&net, d.input, tch::Kind::Float, Device::Cpu);
        let threads_arg = threads.to_string();
        let args = [
            "pytorch_infer.py",
            file.to_str().unwrap_or_default(),
            onnx.to_str().unwrap_or_default(),
            threads_arg.as_str(),
        ];
        let theirs: serde_json::Value = run_script_json(opts, &args, threads)?;
        let ms = |k: &str| theirs[k].as_f64().unwrap_or(f64::NAN);
        rows.push(InferenceRow {
            model: format!("{} {} ({name})", spec.arch(), spec.shape_label()),
            params: spec.param_count(d.input, d.classes) as u64,
            kd_ms: kd,
            torch_ms: [ms("torch_b1_ms"), ms("torch_b256_ms")],
            ort_ms: [ms("ort_b1_ms"), ms("ort_b256_ms")],
            torch: theirs["torch"].as_str().unwrap_or_default().into(),
            onnxruntime: theirs["onnxruntime"].as_str().unwrap_or_default().into(),
        });
    }
    Ok(rows)
}

fn run_script_json(
    opts: &BenchOptions,
    args: &[&str],
    threads: usize,
) -> Result<serde_json::Value, RunError> {
    let out = std::process::Command::new(&opts.python)
        .args(args)
        .current_dir(&opts.scripts)
        .env("KD_BENCH_THREADS", threads.to_string())
        .output()
        .map_err(|e| RunError::Worker(format!("{}: {e}", opts.python.display())))?;
    if !out.status.success() {
        return Err(RunError::Worker(format!(
            "{} {} failed:\n{}",
            opts.scripts.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).map_err(|e| {
        RunError::Worker(format!(
            "{} {}: {e}\n{}",
            opts.scripts.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    })
}

/// The rows' table.
pub(super) fn render(rows: &[InferenceRow], s: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "\nInference of temp.yaml's models in evaluation mode, median ms per forward pass \
         (`run/footprint.rs`, the report's **What the student buys**; PyTorch eager under \
         `torch.inference_mode` with `experiments/reference/models.py`; ONNX Runtime's CPU \
         provider on `kd export --format onnx`; versions in inference.json):\n\n\
         | model | params | kd batch 1 | PyTorch batch 1 | ONNX Runtime batch 1 | kd batch 256 | \
         PyTorch batch 256 | ONNX Runtime batch 256 | PyTorch / kd (1 / 256) | ONNX Runtime / kd \
         (1 / 256) |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
            r.model,
            r.params,
            r.kd_ms[0],
            r.torch_ms[0],
            r.ort_ms[0],
            r.kd_ms[1],
            r.torch_ms[1],
            r.ort_ms[1],
            r.torch_ms[0] / r.kd_ms[0],
            r.torch_ms[1] / r.kd_ms[1],
            r.ort_ms[0] / r.kd_ms[0],
            r.ort_ms[1] / r.kd_ms[1],
        );
    }
}
