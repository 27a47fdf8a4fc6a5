//! `kd`: the kd-sweep command line. Exit codes: 0 ok, 1 some trials failed (or another runtime
//! failure), 2 bad input or environment.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kd_runner::run::{dry_run, load_config, run_sweep, RunOptions};

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
        /// Print the trials and an estimated cost; train nothing.
        #[arg(long)]
        dry_run: bool,
        /// Ignore finished trials in OUT and run everything again.
        #[arg(long)]
        fresh: bool,
    },
    /// Report libtorch, CUDA, threads and datasets.
    Doctor,
    /// Regenerate OUT/report.md from OUT/trials.parquet alone.
    Report { out: PathBuf },
    /// Internal: train the trials a parent `kd sweep` hands out on stdin (workers > 1).
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        logits: PathBuf,
        #[arg(long)]
        teacher_id: String,
        #[arg(long)]
        device: String,
        #[arg(long)]
        threads: usize,
    },
    /// Download a dataset (mnist or fashion-mnist) with checksums.
    Download {
        dataset: String,
        /// Target folder (default $KD_DATA_DIR/<dataset>).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match cli.cmd {
        Cmd::Sweep {
            config,
            sets,
            dry_run: true,
            ..
        } => match load_config(&config, &sets).and_then(|cfg| dry_run(&cfg)) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Cmd::Sweep {
            config,
            out,
            sets,
            fresh,
            ..
        } => match run_sweep(&config, &sets, &RunOptions { out, fresh }) {
            Ok(summary) => {
                println!("{}", kd_report::trials_table(&summary.trials));
                println!("{}", kd_report::kd_vs_baseline(&summary.trials));
                println!("results: {}", summary.out.display());
                if summary.unfinished > 0 {
                    eprintln!(
                        "error: {} trial(s) did not finish; see the report",
                        summary.unfinished
                    );
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Cmd::Worker {
            config,
            logits,
            teacher_id,
            device,
            threads,
        } => match kd_runner::pool::worker_main(&config, &logits, &teacher_id, &device, threads) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: kd worker on {device}: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Cmd::Doctor => {
            let (text, ok) = kd_runner::doctor::report();
            print!("{text}");
            ExitCode::from(if ok { 0 } else { 2 })
        }
        Cmd::Report { out } => {
            let name = out
                .file_name()
                .map_or_else(|| "report".into(), |n| n.to_string_lossy().into_owned());
            match kd_report::regenerate(&out, &name) {
                Ok(p) => {
                    println!("{}", p.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Download { dataset, dir } => {
            let Some(name) = kd_data::DatasetName::parse(&dataset) else {
                eprintln!(
                    "error: unknown dataset `{dataset}` (downloadable: mnist, fashion-mnist)"
                );
                return ExitCode::from(2);
            };
            let Some(remote) = kd_data::download::Remote::for_dataset(name) else {
                eprintln!(
                    "error: `{dataset}` cannot be downloaded; point dataset.dir at your files"
                );
                return ExitCode::from(2);
            };
            let dir = dir.unwrap_or_else(|| kd_data::data_root().join(name.as_str()));
            match kd_data::download::download(&remote, &dir) {
                Ok(files) => {
                    for f in files {
                        println!("{}", f.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
