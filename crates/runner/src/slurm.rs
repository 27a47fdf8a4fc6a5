//! `kd slurm`: a sweep as a Slurm array job. Task i of N runs `kd sweep CONFIG --shard i/N`
//! into one OUT; a second job, started when every task has ended (`afterany`), runs
//! `kd report OUT`, which merges the shards' record files into the frames and the report.
//!
//! Ahead of a task's time limit Slurm sends the batch script SIGUSR1 (`--signal=B:USR1@120`);
//! the script passes it to kd, which checkpoints the units in flight and starts no more, and
//! then requeues the task (`--requeue`), which continues its shard from the checkpoints
//! (docs/checkpoints.md). Each task takes `kd sweep`'s per-run options
//! (`crate::cli::TaskOptions`: `--set`, `--tensorboard`, `--checkpoint-every`), never the
//! ones that must run once. Nothing else is scheduled by kd: the plan is handed to Slurm.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::Resolved;
use crate::error::{io_err, RunError};
use crate::plan::Plan;

/// What `kd slurm` was asked for.
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    pub config: PathBuf,
    /// The `kd sweep` options every task takes (`crate::cli::TaskOptions::args`).
    pub task_args: Vec<String>,
    pub out: Option<PathBuf>,
    pub resources: Resources,
    /// N; by default one task per `packs_per_task` units of the plan.
    pub shards: Option<usize>,
    pub packs_per_task: usize,
    pub submit: bool,
}

/// What each array task asks Slurm for (each `None` is left to the cluster's defaults).
#[derive(Debug, Clone, Default)]
pub struct Resources {
    pub partition: Option<String>,
    pub gpus_per_task: Option<u32>,
    pub cpus_per_task: Option<u32>,
    /// `--time` as Slurm reads it (`4:00:00`, `2-00:00:00`).
    pub time: Option<String>,
    /// At most this many tasks at once (`--array=0-(N-1)%K`).
    pub max_parallel: Option<usize>,
}

/// The two batch scripts, as text, with what they run.
#[derive(Debug, Clone, PartialEq)]
pub struct Scripts {
    pub sweep: String,
    pub report: String,
}

/// Everything a script needs, absolute.
#[derive(Debug, Clone)]
pub struct ScriptSpec {
    pub name: String,
    pub kd: PathBuf,
    pub workdir: PathBuf,
    pub config: PathBuf,
    pub out: PathBuf,
    /// The `kd sweep` options every task takes, as arguments.
    pub task_args: Vec<String>,
    pub shards: usize,
    pub resources: Resources,
    /// Environment the jobs need (`KD_CACHE_DIR`, `KD_DATA_DIR` when set).
    pub env: Vec<(String, String)>,
}

/// `s` quoted for bash.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn q(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

/// `#SBATCH` lines.
fn directives(options: impl Iterator<Item = String>) -> String {
    options.map(|o| format!("#SBATCH {o}\n")).collect()
}

/// The array job's script and the report job's script.
pub fn scripts(s: &ScriptSpec) -> Scripts {
    let logs = s.out.join("slurm");
    let r = &s.resources;
    let partition = r
        .partition
        .as_ref()
        .map(|p| format!("--partition={}", quote(p)));
    let head = directives(
        [
            Some(format!("--job-name=kd-{}", s.name)),
            Some(format!(
                "--array=0-{}{}",
                s.shards.saturating_sub(1),
                r.max_parallel.map_or(String::new(), |k| format!("%{k}"))
            )),
            Some(format!("--output={}", q(&logs.join("shard-%a.out")))),
            Some("--open-mode=append".into()),
            Some("--requeue".into()),
            Some("--signal=B:USR1@120".into()),
            partition.clone(),
            r.gpus_per_task.map(|g| format!("--gpus-per-task={g}")),
            r.cpus_per_task.map(|c| format!("--cpus-per-task={c}")),
            r.time.as_ref().map(|t| format!("--time={}", quote(t))),
        ]
        .into_iter()
        .flatten(),
    );
    let env: String = s
        .env
        .iter()
        .map(|(k, v)| format!("export {k}={}\n", quote(v)))
        .collect();
    let sets: String = s
        .task_args
        .iter()
        .map(|v| format!(" {}", quote(v)))
        .collect();
    let sweep = format!(
        r#"#!/bin/bash
# Sweep `{name}` as a Slurm array job: task i of {n} runs shard i/{n} of the plan into one OUT.
# Written by `kd slurm`; edit it freely. Resubmitting resumes: finished trials are kept.
{head}set -u
cd {workdir}
{env}stopping=0
timer=
# Ahead of the time limit (--signal=B:USR1@120): kd checkpoints the trials in flight after
# their current step, starts no more and exits 3; the task is then requeued and its shard
# continues them from their checkpoints (a trial longer than the time limit still finishes,
# over several requeues). SIGTERM (scancel, the limit itself) does the same in kd.
on_usr1() {{
    echo "kd slurm: time limit near; checkpointing the trials in flight, then requeueing"
    stopping=1
    kill -USR1 "$pid" 2>/dev/null
    ( sleep 90; scontrol requeue "$SLURM_JOB_ID" ) &
    timer=$!
}}
trap on_usr1 USR1
{kd} sweep {config} --out {out} --shard "$SLURM_ARRAY_TASK_ID/{n}"{sets} &
pid=$!
while :; do
    wait "$pid"
    rc=$?
    kill -0 "$pid" 2>/dev/null || break
done
if [ "$stopping" = 1 ]; then
    [ -n "$timer" ] && kill "$timer" 2>/dev/null
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$rc"
"#,
        name = s.name,
        n = s.shards,
        workdir = q(&s.workdir),
        kd = q(&s.kd),
        config = q(&s.config),
        out = q(&s.out),
    );
    let head = directives(
        [
            Some(format!("--job-name=kd-{}-report", s.name)),
            Some(format!("--output={}", q(&logs.join("report.out")))),
            Some("--open-mode=append".into()),
            Some("--ntasks=1".into()),
            Some("--cpus-per-task=1".into()),
            partition,
        ]
        .into_iter()
        .flatten(),
    );
    let report = format!(
        "#!/bin/bash\n# Merge the shards' record files of `{name}` into the frames and write the report.\n\
         # Submitted with --dependency=afterany on the array job; resubmit it any time.\n\
         {head}set -u\ncd {workdir}\n{env}exec {kd} report {out}\n",
        name = s.name,
        workdir = q(&s.workdir),
        kd = q(&s.kd),
        out = q(&s.out),
    );
    Scripts { sweep, report }
}

fn absolute(p: &Path) -> Result<PathBuf, RunError> {
    std::path::absolute(p).map_err(io_err(p))
}

/// Write `OUT/slurm/{sweep,report}.sbatch` for the config, and submit them with `--submit`;
/// returns what to print.
pub fn run(cfg: &Resolved, opts: &SlurmOptions) -> Result<String, RunError> {
    if opts.packs_per_task == 0 {
        return Err(RunError::Slurm("--packs-per-task must be > 0".into()));
    }
    if opts.shards == Some(0) || opts.resources.max_parallel == Some(0) {
        return Err(RunError::Slurm(
            "--shards and --max-parallel must be > 0".into(),
        ));
    }
    // The plan decides N unless it is given: its units (packs, or single trials),
    // `packs_per_task` to a task. With `--shards` the data need not be on this machine.
    let (shards, how) = match opts.shards {
        Some(n) => (n, "as given".to_string()),
        None => {
            let data = crate::data::load(&cfg.dataset)?;
            let plan = Plan::build(cfg, &data)?;
            let all: Vec<usize> = (0..plan.trials.len()).collect();
            let units = plan.units(&all).len();
            (
                units.div_ceil(opts.packs_per_task).max(1),
                format!(
                    "{units} unit(s) of work in the plan of {} student trial(s) (packs or \
                     single trials), {} per task",
                    plan.trials.len(),
                    opts.packs_per_task
                ),
            )
        }
    };
    let out = absolute(
        &opts
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("results").join(&cfg.name)),
    )?;
    let logs = out.join("slurm");
    std::fs::create_dir_all(&logs).map_err(io_err(&logs))?;
    let env = ["KD_CACHE_DIR", "KD_DATA_DIR"]
        .iter()
        .filter_map(|k| {
            std::env::var(k).ok().filter(|v| !v.is_empty()).map(
                |v| -> Result<(String, String), RunError> {
                    Ok((
                        k.to_string(),
                        absolute(Path::new(&v))?.to_string_lossy().into_owned(),
                    ))
                },
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let spec = ScriptSpec {
        name: cfg.name.clone(),
        kd: std::env::current_exe().map_err(io_err(Path::new("kd")))?,
        workdir: std::env::current_dir().map_err(io_err(Path::new(".")))?,
        config: absolute(&opts.config)?,
        out: out.clone(),
        task_args: opts.task_args.clone(),
        shards,
        resources: opts.resources.clone(),
        env,
    };
    let s = scripts(&spec);
    let sweep = logs.join("sweep.sbatch");
    let report = logs.join("report.sbatch");
    kd_report::write_atomic(&sweep, s.sweep.as_bytes())?;
    kd_report::write_atomic(&report, s.report.as_bytes())?;
    let mut text = format!(
        "{shards} array task(s) ({how})\nwrote {}\nwrote {}\n",
        sweep.display(),
        report.display(),
    );
    if !opts.submit {
        text = format!(
            "{}\n{text}submit with:\n  jid=$(sbatch --parsable {})\n  \
             sbatch --dependency=afterany:${{jid%%;*}} {}\n",
            s.sweep,
            q(&sweep),
            q(&report)
        );
        return Ok(text);
    }
    let array = sbatch(&[&sweep.to_string_lossy()])?;
    let dependency = format!("--dependency=afterany:{array}");
    let after = sbatch(&[&dependency, &report.to_string_lossy()])?;
    text.push_str(&format!(
        "submitted: array job {array} (tasks {array}_0 .. {array}_{last}), report job {after} \
         (runs when every task has ended)\n\
         jobs: {array} {after}\n\
         watch:   squeue -j {array},{after}\n\
         after:   sacct -j {array},{after} --format=JobID,State,Elapsed,ExitCode\n\
         logs:    {logs}/shard-*.out, {logs}/report.out\n\
         results: {out}/report.md once job {after} ends. To resume (a task failed, was \
         cancelled or timed out), run this command again: finished trials are kept.\n",
        last = shards - 1,
        logs = logs.display(),
        out = out.display(),
    ));
    Ok(text)
}

/// `sbatch --parsable ARGS`: the job id it prints.
fn sbatch(args: &[&str]) -> Result<String, RunError> {
    let o = Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .output()
        .map_err(|e| {
            RunError::Slurm(format!(
                "cannot run sbatch ({e}): is this a Slurm login node? Without --submit, \
                 kd slurm writes the scripts and prints how to submit them"
            ))
        })?;
    if !o.status.success() {
        return Err(RunError::Slurm(format!(
            "sbatch {} failed ({}): {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    let id = String::from_utf8_lossy(&o.stdout);
    // `--parsable` prints `jobid` or `jobid;cluster`.
    let id = id.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() {
        return Err(RunError::Slurm("sbatch printed no job id".into()));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ScriptSpec {
        ScriptSpec {
            name: "temp".into(),
            kd: "/opt/kd sweep/kd".into(),
            workdir: "/home/r/kd-sweep".into(),
            config: "/home/r/kd-sweep/experiments/temp.yaml".into(),
            out: "/scratch/r/temp".into(),
            task_args: vec![
                "--set".into(),
                "kd.alpha=0.5".into(),
                "--set".into(),
                "name=it's".into(),
            ],
            shards: 12,
            resources: Resources {
                partition: Some("gpu".into()),
                gpus_per_task: Some(2),
                cpus_per_task: Some(8),
                time: Some("4:00:00".into()),
                max_parallel: Some(4),
            },
            env: vec![("KD_CACHE_DIR".into(), "/scratch/r/cache".into())],
        }
    }

    #[test]
    fn the_array_script_runs_one_shard_per_task_with_requeue_and_the_usr1_handler() {
        let s = scripts(&spec());
        for line in [
            "#SBATCH --job-name=kd-temp\n",
            "#SBATCH --array=0-11%4\n",
            "#SBATCH --output=/scratch/r/temp/slurm/shard-%a.out\n",
            "#SBATCH --requeue\n",
            "#SBATCH --signal=B:USR1@120\n",
            "#SBATCH --partition=gpu\n",
            "#SBATCH --gpus-per-task=2\n",
            "#SBATCH --cpus-per-task=8\n",
            "#SBATCH --time=4:00:00\n",
            "cd /home/r/kd-sweep\n",
            "export KD_CACHE_DIR=/scratch/r/cache\n",
            "trap on_usr1 USR1\n",
            "'/opt/kd sweep/kd' sweep /home/r/kd-sweep/experiments/temp.yaml --out \
             /scratch/r/temp --shard \"$SLURM_ARRAY_TASK_ID/12\" --set kd.alpha=0.5 \
             --set 'name=it'\\''s' &\n",
            "scontrol requeue \"$SLURM_JOB_ID\"\n",
        ] {
            assert!(s.sweep.contains(line), "missing {line:?} in\n{}", s.sweep);
        }
        assert!(s
            .report
            .contains("exec '/opt/kd sweep/kd' report /scratch/r/temp\n"));
        assert!(s.report.contains("#SBATCH --partition=gpu\n"));
        assert!(!s.report.contains("--array"));
    }

    #[test]
    fn the_scripts_are_valid_bash() {
        let dir = tempfile::tempdir().unwrap();
        let s = scripts(&spec());
        for (name, text) in [("sweep", &s.sweep), ("report", &s.report)] {
            let f = dir.path().join(name);
            std::fs::write(&f, text).unwrap();
            let o = Command::new("bash").arg("-n").arg(&f).output().unwrap();
            assert!(
                o.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }

    #[test]
    fn quoting_survives_the_shell() {
        for s in ["plain", "with space", "it's", "a\"b$c`d`", ""] {
            let o = Command::new("bash")
                .arg("-c")
                .arg(format!("printf %s {}", quote(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&o.stdout), s);
        }
    }
}
