//! `kd`: the kd-sweep command line. Exit codes: 0 ok, 1 some trials failed (or another runtime
//! failure), 2 bad input or environment. Every command returns a [`Done`] or an error; `main`
//! prints and exits in one place.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kd_runner::error::RunError;
use kd_runner::sweep::{dry_run, load_config, run_sweep, RunOptions};

#[derive(Parser)]
#[command(
    name = "kd",
    version,
    about = "Knowledge-distillation sweeps on libtorch"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train the teacher, the KD student(s) and the hard-target baseline(s) of a config.
    Sweep {
        config: PathBuf,
        /// Output folder (default results/<name>/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override a config key, e.g. --set kd.temperature=8 (VALUE is YAML). Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Print the planned trials (with the ids a run writes) and an estimated cost; train
        /// nothing.
        #[arg(long)]
        dry_run: bool,
        /// Ignore finished trials in OUT and run everything again.
        #[arg(long)]
        fresh: bool,
    },
    /// Report libtorch, CUDA, the CPU's kernel class, threads and datasets.
    Doctor,
    /// Regenerate OUT/report.md from OUT/trials.parquet and OUT/epochs.parquet alone.
    Report { out: PathBuf },
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
        #[arg(long, default_value = "results/bench")]
        out: PathBuf,
        /// The Python with torch that runs the PyTorch scripts.
        #[arg(long, default_value = ".venv/bin/python")]
        python: PathBuf,
        /// The folder of the PyTorch scripts.
        #[arg(long, default_value = "bench")]
        scripts: PathBuf,
    },
    /// Download a dataset (mnist or fashion-mnist) with checksums.
    Download {
        dataset: String,
        /// Target folder (default $KD_DATA_DIR/<dataset>).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Why a command failed, with its exit code.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Run(#[from] RunError),
    /// `kd report` and `kd download` fail on their input: exit 2.
    #[error("{0}")]
    Input(String),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Run(e) => e.exit_code(),
            Failure::Input(_) => 2,
        }
    }
}

/// What a command leaves to print: stdout text, a stderr line, and the exit code.
struct Done {
    stdout: String,
    stderr: Option<String>,
    code: u8,
}

impl Done {
    fn ok(stdout: String) -> Done {
        Done {
            stdout,
            stderr: None,
            code: 0,
        }
    }
}

fn execute(cmd: Cmd) -> Result<Done, Failure> {
    match cmd {
        Cmd::Sweep {
            config,
            sets,
            dry_run: true,
            ..
        } => Ok(Done::ok(dry_run(&load_config(&config, &sets)?)?)),
        Cmd::Sweep {
            config,
            out,
            sets,
            fresh,
            ..
        } => {
            let summary = run_sweep(&config, &sets, &RunOptions { out, fresh })?;
            let claims = if summary.verdicts.is_empty() {
                String::new()
            } else {
                format!(
                    "claims (a FAIL is a finding, not an error):\n{}\n",
                    kd_report::claims::summary(&summary.verdicts)
                )
            };
            let stdout = format!(
                "{}\n{}\n{claims}results: {}\n",
                kd_report::trials_table(&summary.trials),
                kd_report::kd_vs_baseline(&summary.trials),
                summary.out.display()
            );
            let bad = summary.unfinished;
            Ok(Done {
                stdout,
                stderr: (bad > 0).then(|| format!("{bad} trial(s) did not finish; see the report")),
                code: u8::from(bad > 0),
            })
        }
        Cmd::Bench {
            epochs,
            repeats,
            out,
            python,
            scripts,
        } => {
            if epochs == 0 || repeats == 0 {
                return Err(Failure::Input("--epochs and --repeats must be > 0".into()));
            }
            let table = kd_runner::bench::run(&kd_runner::bench::BenchOptions {
                epochs,
                repeats,
                out: out.clone(),
                python,
                scripts,
                temp_config: "experiments/temp.yaml".into(),
                size_config: "experiments/student_size.yaml".into(),
            })?;
            Ok(Done::ok(format!(
                "{table}
results: {}
",
                out.display()
            )))
        }
        Cmd::Worker => {
            kd_runner::pool::worker_main()?;
            Ok(Done::ok(String::new()))
        }
        Cmd::Doctor => {
            let (text, ok) = kd_runner::doctor::report();
            Ok(Done {
                stdout: text,
                stderr: None,
                code: if ok { 0 } else { 2 },
            })
        }
        Cmd::Report { out } => {
            let name = out
                .file_name()
                .map_or_else(|| "report".into(), |n| n.to_string_lossy().into_owned());
            let path =
                kd_report::regenerate(&out, &name).map_err(|e| Failure::Input(e.to_string()))?;
            Ok(Done::ok(format!("{}\n", path.display())))
        }
        Cmd::Download { dataset, dir } => {
            let name = kd_data::DatasetName::parse(&dataset).ok_or_else(|| {
                Failure::Input(format!(
                    "unknown dataset `{dataset}` (downloadable: mnist, fashion-mnist)"
                ))
            })?;
            let remote = kd_data::download::Remote::for_dataset(name).ok_or_else(|| {
                Failure::Input(format!(
                    "`{dataset}` cannot be downloaded; point dataset.dir at your files"
                ))
            })?;
            let dir = dir.unwrap_or_else(|| kd_data::data_root().join(name.as_str()));
            let files = kd_data::download::download(&remote, &dir)
                .map_err(|e| Failure::Input(e.to_string()))?;
            Ok(Done::ok(
                files.iter().map(|f| format!("{}\n", f.display())).collect(),
            ))
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let worker = matches!(cli.cmd, Cmd::Worker);
    match execute(cli.cmd) {
        Ok(done) => {
            print!("{}", done.stdout);
            if let Some(line) = done.stderr {
                eprintln!("error: {line}");
            }
            ExitCode::from(done.code)
        }
        Err(e) => {
            let who = if worker { "kd worker: " } else { "" };
            eprintln!("error: {who}{e}");
            ExitCode::from(e.exit_code())
        }
    }
}
