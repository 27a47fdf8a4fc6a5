//! `kd bench`: kd-sweep's student phase against the PyTorch loops a user would write, in one
//! run on one machine. Workloads: the temp.yaml students (18 800-800 MLPs) and the
//! student_size grid (15 students each of 800-800, 300-300 and 30-30), at `--epochs` epochs with
//! the teacher's logits given. Modes: kd-sweep packed, kd-sweep one student at a time, a PyTorch
//! eager loop over the grid (`bench/pytorch_eager.py`) and PyTorch `stack_module_state` + `vmap`
//! (`bench/pytorch_vmap.py`), run with the same data, epochs and evaluation work (val and test
//! after every epoch, train and test at the end). Also: samples/s of one KD step, and the FLOP/s
//! roof of a large matrix product, which each mode's achieved FLOP/s is a share of.
//!
//! `--only checkpoint` runs the checkpoint row alone ([`checkpoint`]: what checkpoints cost
//! a long trial). `--only conv` runs the convolutional rows alone ([`cifar`]: a resnet8x4 step of
//! RepDistiller's recipe; [`teacher`]: temp.yaml's CNN teacher's step and evaluation pass; both
//! against PyTorch eager, NCHW and channels_last), `--only halving` the search rows
//! ([`halving`]: successive halving against the full grid, real sweeps), `--only mlp` the rest.
//!
//! Every number is a median of `--repeats` runs, the modes interleaved within each repeat so a
//! noisy neighbour hits them alike; ratios are what to compare, absolute times are context.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use serde::Serialize;

mod checkpoint;
mod cifar;
mod evaluation;
mod halving;
mod inference;
mod mlp;
mod render;
mod step;
mod step_part;
mod teacher;

use crate::config::Resolved;
use crate::env;
use crate::error::{io_err, RunError};
use crate::run::sweep::load_config;
use crate::track::Progress;

/// What `kd bench` runs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub epochs: usize,
    pub repeats: usize,
    pub out: PathBuf,
    /// The Python with torch (default: the project's .venv).
    pub python: PathBuf,
    /// The folder with the PyTorch scripts.
    pub scripts: PathBuf,
    /// The configs of the two grids.
    pub temp_config: PathBuf,
    pub size_config: PathBuf,
    /// Which part runs: the MLP student phase, the CIFAR step, or both (`None`).
    pub only: Option<BenchPart>,
    /// Timed steps of each CIFAR row.
    pub cifar_steps: usize,
    /// `KEY=VALUE` overrides of both workload configs (`--set`, as `kd sweep`'s): the device, a
    /// smaller dataset for a smoke run.
    pub sets: Vec<String>,
    /// Where the PyTorch scripts run (`cpu`, `cuda:0`): the device kd runs on, set by each part
    /// once it has picked it.
    pub device: String,
    /// The batch sizes of the one-step rows (128 and 1024 unless `--step-batch` says).
    pub step_batches: Vec<i64>,
}

impl BenchOptions {
    /// The workload config at `path` with `--set`'s overrides, then `extra`.
    fn config(&self, path: &std::path::Path, extra: &[String]) -> Result<Resolved, RunError> {
        load_config(path, &[self.sets.as_slice(), extra].concat())
    }

    /// What the parts that compare with PyTorch share: temp.yaml's config with `--set`, its
    /// thread count (set for libtorch), its device, and these options with absolute paths and
    /// that device for the scripts, so both sides run where kd does.
    fn on_device(&self) -> Result<(Resolved, usize, tch::Device, BenchOptions), RunError> {
        let base = self.config(&self.temp_config, &[])?;
        let threads = base.threads.unwrap_or(env::cores());
        tch::set_num_threads(threads as i32);
        let device = env::select_device(&base.device[0])?;
        let opts = BenchOptions {
            device: torch_device(device),
            ..absolute(self)?
        };
        Ok((base, threads, device, opts))
    }
}

/// A part of `kd bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchPart {
    /// The temp.yaml and student_size students (MLPs) against PyTorch eager and vmap.
    Mlp,
    /// The convolutional rows: a resnet8x4 step of RepDistiller's CIFAR recipe and temp.yaml's
    /// CNN teacher, against PyTorch eager.
    Conv,
    /// What checkpoints cost a long trial (the MNIST headline's teacher): writes, size, replay.
    Checkpoint,
    /// Time to the best cell: successive halving against the full grid, on two grids.
    Halving,
    /// Inference of temp.yaml's teacher and student: kd against PyTorch and ONNX Runtime.
    Inference,
    /// The matmul roof and one 800-800 KD step against PyTorch eager: the smallest bench with a
    /// PyTorch comparison (the GPU check's smoke mode). Not part of a full run (`mlp` has it).
    Step,
}

/// The convolutional rows' file (`OUT/conv.json`).
#[derive(Debug, Serialize)]
struct ConvFile {
    machine: String,
    cpu: String,
    threads: usize,
    libtorch: String,
    python_torch: String,
    device: String,
    rows: Vec<cifar::CifarRow>,
    teacher: Vec<teacher::TeacherRow>,
}

#[derive(Debug, Clone, Serialize)]
struct ModeResult {
    /// Wall seconds of each repeat.
    runs: Vec<f64>,
    median_s: f64,
    /// Mean final test accuracy over the workload's students.
    mean_test_acc: f64,
    /// Training and evaluation FLOPs of the workload / median seconds.
    gflops: f64,
    /// Share of the matmul roof.
    roof_share: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Workload {
    name: String,
    students: usize,
    hidden: String,
    /// Forward+backward (3x forward) on every training image and epoch, plus the forwards of
    /// the evaluations.
    flops: f64,
    modes: BTreeMap<String, ModeResult>,
}

#[derive(Debug, Serialize)]
struct BenchFile {
    machine: String,
    cpu: String,
    threads: usize,
    libtorch: String,
    python_torch: String,
    epochs: usize,
    repeats: usize,
    teacher: String,
    roof_gflops: f64,
    workloads: Vec<Workload>,
    /// Samples per second of one 800-800 KD training step (forward, loss, backward, Adam).
    step: Vec<StepResult>,
    /// The temp.yaml students at full epochs, testing after every epoch or at the best one and the last.
    test_every: evaluation::TestEveryResult,
}

#[derive(Debug, Serialize)]
struct StepResult {
    batch: i64,
    kd_single: f64,
    kd_packed_18: f64,
    pytorch_eager: f64,
}

/// Wall seconds and mean test accuracy of each repeat of one mode on one workload.
type Runs = (Vec<f64>, Vec<f64>);

#[derive(serde::Deserialize)]
struct ScriptOut {
    wall_s: Option<f64>,
    test_acc: Option<Vec<f64>>,
    samples_per_s: Option<f64>,
}

fn run_script(opts: &BenchOptions, args: &[&str], threads: usize) -> Result<ScriptOut, RunError> {
    let out = Command::new(&opts.python)
        .args(args)
        .current_dir(&opts.scripts)
        .env("KD_BENCH_THREADS", threads.to_string())
        .env("KD_BENCH_DEVICE", &opts.device)
        .output()
        .map_err(|e| {
            RunError::Worker(format!(
                "{}: {e} (kd bench runs the PyTorch scripts with the venv's python; `just \
                 setup` makes it, --python picks another)",
                opts.python.display()
            ))
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| {
        RunError::Worker(format!(
            "{} {}: {e}\n{}",
            opts.scripts.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    })
}

/// Run the benchmark; returns the tables it wrote into `OUT/report.md` and `OUT/conv.md`.
pub fn run(opts: &BenchOptions) -> Result<String, RunError> {
    let mut report = String::new();
    if opts.only.is_none() || opts.only == Some(BenchPart::Mlp) {
        report += &mlp::run_mlp(opts)?;
    }
    if opts.only.is_none() || opts.only == Some(BenchPart::Conv) {
        report += &run_conv(opts)?;
    }
    if opts.only.is_none() || opts.only == Some(BenchPart::Checkpoint) {
        report += &run_checkpoint(opts)?;
    }
    if opts.only.is_none() || opts.only == Some(BenchPart::Halving) {
        report += &run_halving(opts)?;
    }
    if opts.only.is_none() || opts.only == Some(BenchPart::Inference) {
        report += &run_inference(opts)?;
    }
    if opts.only == Some(BenchPart::Step) {
        report += &step_part::run_step(opts)?;
    }
    Ok(report)
}

/// The halving rows, into `OUT/halving.json` and `OUT/halving.md`.
fn run_halving(opts: &BenchOptions) -> Result<String, RunError> {
    std::fs::create_dir_all(&opts.out).map_err(io_err(&opts.out))?;
    let rows = halving::rows(opts)?;
    let json = serde_json::json!({
        "cpu": env::cpu_model(),
        "search": halving::SEARCH,
        "rows": rows,
    });
    let text = serde_json::to_string_pretty(&json).expect("bench results serialise");
    kd_report::write_atomic(&opts.out.join("halving.json"), text.as_bytes())?;
    let mut md = format!(
        "# kd bench: successive halving\n\n{}. Regenerate with `just bench --only halving` \
         (the sweeps' folders are under OUT/halving/).\n",
        env::cpu_model()
    );
    halving::render(&rows, &mut md);
    kd_report::write_atomic(&opts.out.join("halving.md"), md.as_bytes())?;
    Ok(md)
}

/// The inference rows, into `OUT/inference.json` and `OUT/inference.md`.
fn run_inference(opts: &BenchOptions) -> Result<String, RunError> {
    let opts = &absolute(opts)?;
    let base = opts.config(&opts.temp_config, &[])?;
    let threads = base.threads.unwrap_or(env::cores());
    tch::set_num_threads(threads as i32);
    let data = crate::data::load(&base.dataset)?;
    std::fs::create_dir_all(&opts.out).map_err(io_err(&opts.out))?;
    let rows = inference::rows(opts, &base, &data, threads)?;
    let json = serde_json::json!({
        "cpu": env::cpu_model(),
        "threads": threads,
        "libtorch": env::LIBTORCH_VERSION,
        "rows": rows,
    });
    let text = serde_json::to_string_pretty(&json).expect("bench results serialise");
    kd_report::write_atomic(&opts.out.join("inference.json"), text.as_bytes())?;
    let mut md = format!(
        "# kd bench: inference\n\n{}, {threads} threads on the CPU. Regenerate with `just bench \
         --only inference`.\n",
        env::cpu_model()
    );
    inference::render(&rows, &mut md);
    kd_report::write_atomic(&opts.out.join("inference.md"), md.as_bytes())?;
    Ok(md)
}

/// The checkpoint row, into `OUT/checkpoint.json` and `OUT/checkpoint.md`.
fn run_checkpoint(opts: &BenchOptions) -> Result<String, RunError> {
    let base = opts.config(&opts.temp_config, &[])?;
    let threads = base.threads.unwrap_or(env::cores());
    tch::set_num_threads(threads as i32);
    let device = env::select_device(&base.device[0])?;
    std::fs::create_dir_all(&opts.out).map_err(io_err(&opts.out))?;
    let row = checkpoint::row(device, &opts.out)?;
    let machine = env::class_of(device, threads).describe();
    let json = serde_json::json!({
        "machine": machine,
        "cpu": env::cpu_model(),
        "threads": threads,
        "device": env::device_label(device),
        "row": row,
    });
    let text = serde_json::to_string_pretty(&json).expect("bench results serialise");
    kd_report::write_atomic(&opts.out.join("checkpoint.json"), text.as_bytes())?;
    let mut md = format!(
        "# kd bench: checkpoints\n\n{} ({machine}), {threads} threads on {}. Regenerate with \
         `just bench --only checkpoint`.\n",
        env::cpu_model(),
        env::device_label(device)
    );
    checkpoint::render(&row, &mut md);
    kd_report::write_atomic(&opts.out.join("checkpoint.md"), md.as_bytes())?;
    Ok(md)
}

/// The scripts' folder and the python, absolute (the scripts run in their folder).
fn absolute(opts: &BenchOptions) -> Result<BenchOptions, RunError> {
    let scripts = std::fs::canonicalize(&opts.scripts).map_err(io_err(&opts.scripts))?;
    let python = if opts.python.components().count() > 1 {
        // Absolute, not canonical: a venv's python is a symlink that must stay one.
        std::path::absolute(&opts.python).map_err(io_err(&opts.python))?
    } else {
        opts.python.clone() // a bare name is looked up on PATH
    };
    Ok(BenchOptions {
        scripts,
        python,
        ..opts.clone()
    })
}

/// `d` as PyTorch names it (`cpu`, `cuda:0`).
fn torch_device(d: tch::Device) -> String {
    match d {
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

fn python_torch(opts: &BenchOptions) -> String {
    Command::new(&opts.python)
        .args(["-c", "import torch; print(torch.__version__)"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The convolutional rows, into `OUT/conv.json` and `OUT/conv.md`.
fn run_conv(opts: &BenchOptions) -> Result<String, RunError> {
    cifar::check_scripts(&opts.scripts)?;
    let (_, threads, device, opts) = opts.on_device()?;
    let opts = &opts;
    let mut progress = crate::track::Outputs::new(Progress::new(0), vec![]);
    progress.note(&format!(
        "kd bench: CIFAR resnet8x4 steps ({} timed each) on {}, {threads} threads",
        opts.cifar_steps,
        env::device_label(device)
    ));
    let rows = cifar::rows(opts, device, threads, opts.cifar_steps)?;
    progress.note("kd bench: temp.yaml's CNN teacher, step and evaluation");
    let teacher = teacher::rows(opts, device, threads, 4 * opts.cifar_steps)?;
    let file = ConvFile {
        teacher,
        machine: env::class_of(device, threads).describe(),
        cpu: env::cpu_model(),
        threads,
        libtorch: env::LIBTORCH_VERSION.to_string(),
        python_torch: python_torch(opts),
        device: env::device_label(device),
        rows,
    };
    std::fs::create_dir_all(&opts.out).map_err(io_err(&opts.out))?;
    let json = serde_json::to_string_pretty(&file).expect("bench results serialise");
    kd_report::write_atomic(&opts.out.join("conv.json"), json.as_bytes())?;
    let mut md = format!(
        "# kd bench: convolutional nets\n\n{} ({}), {} threads on {}, libtorch {}, PyTorch {} for the \
         script. Regenerate with `just bench --only conv`.\n",
        file.cpu, file.machine, file.threads, file.device, file.libtorch, file.python_torch
    );
    cifar::render(&file.rows, &mut md);
    teacher::render(&file.teacher, &mut md);
    kd_report::write_atomic(&opts.out.join("conv.md"), md.as_bytes())?;
    Ok(md)
}
