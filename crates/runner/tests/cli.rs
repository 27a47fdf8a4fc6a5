//! The `kd` binary as a user meets it: exit codes and messages for bad input, `doctor`, `report`.
//! Tests that train use a small slice of the real Fashion-MNIST (installed by `.ci/run`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kd(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kd"))
        .args(args)
        .env("KD_CACHE_DIR", cache)
        .env("CI", "1")
        .output()
        .expect("kd runs")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A config that trains tiny models on a tiny slice, with `extra` appended.
fn tiny(extra: &str) -> String {
    format!(
        "name: tiny\ndataset: {{val_size: 500, train_limit: 1000}}\ndevice: cpu\n\
         teacher: {{model: {{arch: mlp, hidden: [64], dropout: 0.0, input_dropout: 0.0}}, train: {{epochs: 1, optimizer: adam, lr: 0.002}}}}\n\
         student: {{model: {{arch: mlp, hidden: [32]}}, train: {{epochs: 1, optimizer: adam, lr: 0.002}}}}\n{extra}"
    )
}

fn sweep_exit(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.yaml", config);
    let out = dir.path().join("out");
    let o = kd(
        &[
            "sweep",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &dir.path().join("cache"),
    );
    (o.status.code().unwrap_or(-1), stderr(&o))
}

#[test]
fn unknown_key_exits_2_and_names_it() {
    let (code, err) = sweep_exit(&tiny("kd: {temperature: 2, alpah: 0.5}\n"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown field `alpah`"), "{err}");
    assert!(err.contains("line 6"), "{err}");
}

#[test]
fn non_positive_temperature_exits_2() {
    let (code, err) = sweep_exit(&tiny("kd: {temperature: 0}\n"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("kd.temperature: must be > 0, got 0"), "{err}");
}

#[test]
fn alpha_outside_unit_interval_exits_2() {
    let (code, err) = sweep_exit(&tiny("kd: {alpha: 1.2}\n"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("kd.alpha: must be in [0, 1], got 1.2"),
        "{err}"
    );
}

#[test]
fn missing_config_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let o = kd(&["sweep", "/nonexistent/x.yaml"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/x.yaml"), "{}", stderr(&o));
}

#[test]
fn cuda_without_cuda_exits_2() {
    if tch::Cuda::is_available() {
        return;
    }
    let (code, err) = sweep_exit(&tiny("").replace("device: cpu", "device: cuda"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("device: `cuda` was asked for"), "{err}");
    assert!(err.contains("kd doctor"), "{err}");
}

#[test]
fn missing_dataset_folder_exits_2_and_names_the_file() {
    let (code, err) = sweep_exit(&tiny("").replace(
        "dataset: {val_size: 500, train_limit: 1000}",
        "dataset: {name: mnist, dir: /nonexistent/mnist}",
    ));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("/nonexistent/mnist/train-images-idx3-ubyte.gz: not found"),
        "{err}"
    );
    assert!(err.contains("kd download mnist"), "{err}");
}

#[test]
fn corrupt_idx_file_exits_2_and_names_the_file() {
    let data = tempfile::tempdir().unwrap();
    kd_data::idx::testing::write_idx_set(data.path(), 8, 8, 100, 20, true);
    // Cut the test labels short: the header promises 20 bytes.
    let labels = data.path().join("t10k-labels-idx1-ubyte.gz");
    std::fs::remove_file(&labels).unwrap();
    kd_data::idx::testing::write(
        data.path(),
        "t10k-labels-idx1-ubyte",
        &kd_data::idx::encode_idx(&[20], &[1; 20])[..18],
        false,
    );
    let cfg = tiny("").replace(
        "dataset: {val_size: 500, train_limit: 1000}",
        &format!(
            "dataset: {{name: idx, dir: {}, val_size: 10}}",
            data.path().display()
        ),
    );
    let (code, err) = sweep_exit(&cfg);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("t10k-labels-idx1-ubyte: corrupt IDX file"),
        "{err}"
    );
}

#[test]
fn zero_width_student_exits_2() {
    let (code, err) = sweep_exit(&tiny("").replace("hidden: [32]", "hidden: [32, 0]"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("student.model.hidden[1]: must be > 0"),
        "{err}"
    );
}

#[test]
fn doctor_reports_torch_and_the_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let o = kd(&["doctor"], dir.path());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("libtorch: 2.13.0"), "{text}");
    assert!(text.contains("CUDA: "), "{text}");
    assert!(text.contains("threads: libtorch intra-op"), "{text}");
    assert!(text.contains("fashion-mnist: found in"), "{text}");
    assert_eq!(o.status.code(), Some(0), "{text}");
}

#[test]
fn a_diverging_student_is_recorded_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.yaml",
        &tiny("").replace(
            "student: {model: {arch: mlp, hidden: [32]}, train: {epochs: 1, optimizer: adam, lr: 0.002}}",
            "student: {model: {arch: mlp, hidden: [32]}, train: {epochs: 2, optimizer: sgd, lr: 1.0e+6, schedule: constant}}",
        ),
    );
    let out = dir.path().join("out");
    let o = kd(
        &[
            "sweep",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &dir.path().join("cache"),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Trials that did not finish"), "{report}");
    assert!(report.contains("diverged"), "{report}");
    // The teacher finished, and every trial has a row.
    let csv = std::fs::read_to_string(out.join("trials.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
}

#[test]
fn report_regenerates_from_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.yaml", &tiny(""));
    let out = dir.path().join("out");
    let o = kd(
        &[
            "sweep",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &dir.path().join("cache"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let first = std::fs::read_to_string(out.join("report.md")).unwrap();
    std::fs::remove_file(out.join("report.md")).unwrap();
    let o = kd(&["report", out.to_str().unwrap()], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let again = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert_eq!(
        again.lines().skip(1).collect::<Vec<_>>(),
        first.lines().skip(1).collect::<Vec<_>>()
    );
    // The summary printed on stdout has the same trials table.
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("report.md"), "{stdout}");
}
