//! What the CLI test files share: running `kd` as a user does, tiny configs, reading OUT.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn kd(args: &[&str], cache: &Path) -> Output {
    kd_env(args, cache, &[])
}

/// `kd ARGS` with its cache in `cache`, plain progress lines, and `env` set.
pub fn kd_env(args: &[&str], cache: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kd"))
        .args(args)
        .env("KD_CACHE_DIR", cache)
        .env("CI", "1")
        .envs(env.iter().copied())
        .output()
        .expect("kd runs")
}

/// The project venv's Python (`just setup` makes it), for golden values and PyTorch fixtures.
pub fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
}

/// Run the venv's Python with `args`; a failure fails the test with Python's stderr.
pub fn run_python<S: AsRef<std::ffi::OsStr>>(args: &[S]) {
    let o = Command::new(python()).args(args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A config that trains tiny models on a tiny slice, with `extra` appended.
pub fn tiny(extra: &str) -> String {
    format!(
        "name: tiny\ndataset: {{val_size: 500, train_limit: 1000}}\ndevice: cpu\nthreads: 1\n\
         teacher: {{model: {{arch: mlp, hidden: [64], dropout: 0.0, input_dropout: 0.0}}, train: {{epochs: 1, optimizer: adam, lr: 0.002}}}}\n\
         student: {{model: {{arch: mlp, hidden: [32]}}, train: {{epochs: 1, optimizer: adam, lr: 0.002}}}}\n{extra}"
    )
}

/// `kd sweep DIR/c.yaml --out DIR/out EXTRA...` with its cache in `DIR/cache`.
pub fn sweep(dir: &Path, config: &str, extra: &[&str]) -> (Output, PathBuf) {
    sweep_env(dir, config, extra, &[])
}

/// [`sweep`] with `env` set.
pub fn sweep_env(
    dir: &Path,
    config: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Output, PathBuf) {
    let cfg = write(dir, "c.yaml", config);
    let out = dir.join("out");
    let args = [
        &[
            "sweep",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ][..],
        extra,
    ]
    .concat();
    (kd_env(&args, &dir.join("cache"), env), out)
}

pub fn sweep_exit(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let (o, _) = sweep(dir.path(), config, &[]);
    (o.status.code().unwrap_or(-1), stderr(&o))
}

/// The trials of OUT (from its Parquet file), in file order.
pub fn records(out: &Path) -> Vec<kd_report::TrialRecord> {
    kd_report::read_frames(out)
        .map(|(rows, _)| rows)
        .unwrap_or_default()
}

/// The rows as (trial_id, test_acc, val_acc, train_acc), in file order; a missing accuracy is
/// an empty string.
pub fn accuracies(out: &Path) -> Vec<(String, String, String, String)> {
    let text = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    records(out)
        .into_iter()
        .map(|r| {
            (
                r.trial_id,
                text(r.test_acc),
                text(r.val_acc),
                text(r.train_acc),
            )
        })
        .collect()
}

pub fn record_files(out: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(out.join("records"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A sweep in `dir` whose students take about a second each (`extra` appended to the config):
/// its `kd sweep` arguments, OUT and cache.
pub fn slow_sweep(dir: &Path, extra: &str) -> (Vec<String>, PathBuf, PathBuf) {
    let cfg = write(
        dir,
        "c.yaml",
        &format!(
            "name: slow\ndataset: {{val_size: 500, train_limit: 3000}}\ndevice: cpu\nthreads: 1\n\
             teacher: {{model: {{arch: mlp, hidden: [64], dropout: 0.0, input_dropout: 0.0}}, train: {{epochs: 1, optimizer: adam, lr: 0.002}}}}\n\
             student: {{model: {{arch: mlp, hidden: [256, 256]}}, train: {{epochs: 2, optimizer: adam, lr: 0.001}}}}\n\
             grid: {{temperature: [2, 4, 8]}}\n{extra}"
        ),
    );
    let out = dir.join("out");
    let args = [
        "sweep",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    (args, out, dir.join("cache"))
}

/// Start `kd ARGS` in the background, its output piped.
pub fn spawn_kd(args: &[String], cache: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_kd"))
        .args(args)
        .env("KD_CACHE_DIR", cache)
        .env("CI", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Writes `student.pt` (conv, batch norm, a residual block, pooling, linear) and `teacher.pt`
/// (a small MLP) into `sys.argv[1]`.
pub const SCRIPTED_NETS: &str = r#"
import sys, torch
import torch.nn as nn
class Student(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)
    def forward(self, x):
        h = torch.relu(self.bn0(self.stem(x)))
        h = torch.relu(h + self.bn1(self.conv(h)))
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(h, 1).flatten(1))
class Teacher(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(784, 64)
        self.b = nn.Linear(64, 10)
    def forward(self, x):
        return self.b(torch.relu(self.a(x.flatten(1))))
torch.manual_seed(0)
torch.jit.save(torch.jit.script(Student()), sys.argv[1] + '/student.pt')
torch.manual_seed(1)
torch.jit.save(torch.jit.script(Teacher()), sys.argv[1] + '/teacher.pt')
"#;

/// Write [`SCRIPTED_NETS`]'s `student.pt` and `teacher.pt` into `dir`.
pub fn write_scripted_nets(dir: &Path) {
    let script = write(dir, "nets.py", SCRIPTED_NETS);
    run_python(&[script.as_os_str(), dir.as_os_str()]);
}
