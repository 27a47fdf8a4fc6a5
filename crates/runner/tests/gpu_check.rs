//! `tools/gpu-check.sh --smoke`: the GPU check's every step, timeout and summary line, on the
//! CPU with tiny configs (issue 39). Once as it runs, once with a step made to hang: the
//! timeout cuts it, the other steps still run and report, and OUT holds only `summary.txt` and
//! `logs.tgz`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

/// `bash tools/gpu-check.sh --smoke` from the project root, OUT and TMPDIR in `dir`, `env` set.
fn check(dir: &Path, env: &[(&str, &str)]) -> (Output, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (out, tmp) = (dir.join("out"), dir.join("tmp"));
    std::fs::create_dir_all(&tmp).unwrap();
    let o = Command::new("bash")
        .args(["tools/gpu-check.sh", "--smoke"])
        .current_dir(&root)
        .env("OUT", &out)
        .env("TMPDIR", &tmp)
        .env("KD_BIN", env!("CARGO_BIN_EXE_kd"))
        .env("PYTHON", common::python())
        .envs(env.iter().copied())
        .output()
        .expect("bash runs");
    let summary = std::fs::read_to_string(out.join("summary.txt")).unwrap_or_default();
    (o, summary)
}

/// The summary line of `step`.
fn line<'a>(summary: &'a str, step: &str) -> &'a str {
    summary
        .lines()
        .find(|l| l.split_whitespace().next() == Some(step))
        .unwrap_or_else(|| panic!("no line for {step}:\n{summary}"))
}

/// What OUT holds, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The names in `OUT/logs.tgz`.
fn archived(dir: &Path) -> String {
    let o = Command::new("tar")
        .arg("-tzf")
        .arg(dir.join("out/logs.tgz"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_gpu_checks_smoke_mode_runs_every_step_and_reports_each() {
    let dir = tempfile::tempdir().unwrap();
    let (o, summary) = check(dir.path(), &[]);
    let log = common::stderr(&o);
    assert!(o.status.success(), "{summary}\n{log}");
    for step in [
        "preflight",
        "temp",
        "students-fp32",
        "students-bf16",
        "bench-step",
    ] {
        let l = line(&summary, step);
        assert!(l.contains(" ok "), "{l}");
    }
    assert!(line(&summary, "preflight").contains("CUDA:"), "{summary}");
    // Accuracies of the sweeps and the bench's ratios, in the lines themselves.
    let temp = line(&summary, "temp");
    assert!(
        temp.contains("teacher ") && temp.contains("KD best T=4") && temp.contains("baseline"),
        "{temp}"
    );
    let bench = line(&summary, "bench-step");
    assert!(
        bench.contains("step b128: alone/eager") && bench.contains("roof"),
        "{bench}"
    );
    assert!(summary.contains("every step ok"), "{summary}");
    assert_eq!(files(dir.path()), ["logs.tgz", "summary.txt"]);
    let names = archived(dir.path());
    for f in ["logs/temp.log", "logs/bench-step.log", "logs/summary.txt"] {
        assert!(
            names.lines().any(|n| n == f),
            "{f} not in logs.tgz: {names}"
        );
    }
    // The work (sweeps, caches, bench folders) was under TMPDIR, not OUT.
    let work: Vec<_> = std::fs::read_dir(dir.path().join("tmp"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("kd-gpu-check."))
        .collect();
    assert_eq!(work.len(), 1);
    assert!(work[0].path().join("temp/trials.csv").exists());
}

#[test]
fn a_hanging_step_is_cut_by_its_timeout_and_the_summary_still_comes() {
    let dir = tempfile::tempdir().unwrap();
    let (o, summary) = check(
        dir.path(),
        &[
            ("KD_GPU_CHECK_HANG", "students-fp32"),
            ("KD_GPU_CHECK_HANG_S", "2"),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{summary}");
    let hung = line(&summary, "students-fp32");
    assert!(hung.contains("TIMEOUT (cut at 2 s)"), "{hung}");
    // The steps after it ran and reported.
    assert!(
        line(&summary, "students-bf16").contains(" ok "),
        "{summary}"
    );
    assert!(line(&summary, "bench-step").contains(" ok "), "{summary}");
    assert!(summary.contains("SOME STEP DID NOT PASS"), "{summary}");
    assert_eq!(files(dir.path()), ["logs.tgz", "summary.txt"]);
}

#[test]
fn a_spent_budget_stops_the_steps_it_leaves_no_time_for() {
    let dir = tempfile::tempdir().unwrap();
    let (o, summary) = check(
        dir.path(),
        &[("KD_GPU_CHECK_HANG", "temp"), ("KD_GPU_CHECK_BUDGET", "20")],
    );
    assert_eq!(o.status.code(), Some(1), "{summary}");
    assert!(line(&summary, "temp").contains("TIMEOUT"), "{summary}");
    assert!(
        line(&summary, "bench-step").contains("NOT RUN (budget spent)"),
        "{summary}"
    );
    assert_eq!(files(dir.path()), ["logs.tgz", "summary.txt"]);
}
