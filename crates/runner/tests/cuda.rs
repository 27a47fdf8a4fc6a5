//! CUDA checks, compiled only with `--features cuda-tests` (`just test-cuda`) on a GPU machine,
//! or shipped prebuilt in a GPU bundle (`tools/gpu-bundle.sh`), where `$KD_BIN` names the `kd`
//! binary to run (the one this binary was built beside is on another machine).
#![cfg(feature = "cuda-tests")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `kd` binary under test: `$KD_BIN`, else the one cargo built beside this test.
fn kd_bin() -> PathBuf {
    std::env::var_os("KD_BIN").map_or_else(|| env!("CARGO_BIN_EXE_kd").into(), PathBuf::from)
}

/// `kd sweep DIR/c.yaml --out DIR/out` with its cache in `DIR/cache`.
fn sweep(dir: &Path, config: &str) -> (Output, PathBuf) {
    let cfg = dir.join("c.yaml");
    std::fs::write(&cfg, config).unwrap();
    let out = dir.join("out");
    let o = Command::new(kd_bin())
        .args([
            "sweep",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .env("KD_CACHE_DIR", dir.join("cache"))
        .env("CI", "1")
        .output()
        .unwrap();
    (o, out)
}

#[test]
fn libtorch_sees_cuda() {
    assert!(
        tch::Cuda::is_available(),
        "CUDA not available: is libtorch_cuda.so linked? (readelf -d target/debug/kd | grep cuda)"
    );
    assert!(tch::Cuda::device_count() >= 1);
}

#[test]
fn a_teacher_epoch_runs_on_cuda_and_learns() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep(
        dir.path(),
        "name: cuda\ndataset: {val_size: 5000}\ndevice: cuda\nseeds: [0]\n\
         teacher: {model: {arch: cnn}, train: {epochs: 1, optimizer: adam, lr: 0.001}}\n\
         student: {model: {arch: mlp, hidden: [800, 800]}, train: {epochs: 1, optimizer: adam, lr: 0.001}}\n\
         kd: {temperature: 2, alpha: 0.9}\n",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("teacher on cuda:0"), "{err}");
    let csv = std::fs::read_to_string(out.join("trials.csv")).unwrap();
    println!("{err}\n{csv}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| teacher |"));
}

#[test]
fn device_all_runs_a_worker_per_visible_gpu_and_honours_cuda_visible_devices() {
    let n = tch::Cuda::device_count() as usize;
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep(
        dir.path(),
        "name: all\ndataset: {val_size: 1000, train_limit: 3000}\ndevice: all\nseeds: [0, 1]\npack: off\n\
         teacher: {model: {arch: mlp, hidden: [128]}, train: {epochs: 1, optimizer: adam, lr: 0.001}}\n\
         student: {model: {arch: mlp, hidden: [64]}, train: {epochs: 1, optimizer: adam, lr: 0.001}}\n\
         grid: {temperature: [2, 4]}\n",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let slots: Vec<String> = (0..n).map(|i| format!("cuda:{i}")).collect();
    // The sweep starts min(slots, trials) workers.
    if n > 1 {
        let workers = n.min(6);
        assert!(
            err.contains(&format!("6 trials on {workers} workers")),
            "{err}"
        );
    }
    for s in &slots {
        assert!(err.contains(s.as_str()), "{s} unused: {err}");
    }
    let csv = std::fs::read_to_string(out.join("trials.csv")).unwrap();
    assert_eq!(csv.matches(",ok,").count(), 7, "{csv}");
    // Slurm's way of giving a task its GPUs: only the last one visible, seen as cuda:0.
    let one = dir.path().join("one");
    let o = Command::new(kd_bin())
        .args(["sweep", dir.path().join("c.yaml").to_str().unwrap()])
        .args(["--out", one.to_str().unwrap()])
        .env("CUDA_VISIBLE_DEVICES", (n - 1).to_string())
        .env("KD_CACHE_DIR", dir.path().join("cache"))
        .env("CI", "1")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let resolved = std::fs::read_to_string(one.join("config.resolved.yaml")).unwrap();
    assert!(
        resolved.contains("device:\n- cuda:0\nthreads:"),
        "{resolved}"
    );
    assert!(resolved.contains("\nworkers: 1\n"), "{resolved}");
}

#[test]
fn two_workers_share_the_gpus_and_every_trial_finishes() {
    // Two workers on every GPU there is (cuda:0 twice on a one-GPU machine).
    let n = tch::Cuda::device_count().max(1);
    let devices: Vec<String> = (0..2).map(|i| format!("cuda:{}", i % n)).collect();
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep(
        dir.path(),
        &format!(
            "name: pool\ndataset: {{val_size: 1000, train_limit: 5000, transfer_fraction: 0.5}}\n\
             device: [{}]\nseeds: [0, 1]\n\
             teacher: {{model: {{arch: mlp, hidden: [256]}}, train: {{epochs: 2, optimizer: adam, lr: 0.001}}}}\n\
             student: {{model: {{arch: mlp, hidden: [64]}}, train: {{epochs: 2, optimizer: adam, lr: 0.001}}}}\n\
             grid: {{temperature: [2, 4]}}\n",
            devices.join(", ")
        ),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("6 trials on 2 workers"), "{err}");
    let csv = std::fs::read_to_string(out.join("trials.csv")).unwrap();
    // teacher + 2 seeds x (baseline + 2 KD cells), all ok
    assert_eq!(csv.lines().count(), 1 + 7, "{csv}");
    assert_eq!(csv.matches(",ok,").count(), 7, "{csv}");
}

#[test]
fn a_mixed_device_list_keeps_every_pair_on_one_kind_of_device() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep(
        dir.path(),
        "name: mixed\ndataset: {val_size: 1000, train_limit: 3000}\ndevice: [cuda:0, cpu]\n\
         seeds: [0, 1, 2, 3]\n\
         teacher: {model: {arch: mlp, hidden: [64]}, train: {epochs: 1, optimizer: adam, lr: 0.001}}\n\
         student: {model: {arch: mlp, hidden: [32]}, train: {epochs: 1, optimizer: adam, lr: 0.001}}\n\
         grid: {temperature: [2, 4]}\n",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let csv = std::fs::read_to_string(out.join("trials.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let device_of = |id: &str| rows.iter().find(|r| r[0] == id).map(|r| r[col("device")]);
    let mut kinds = std::collections::BTreeSet::new();
    for r in rows.iter().filter(|r| r[col("kind")] == "kd") {
        let own = r[col("device")];
        let base = device_of(r[col("baseline_id")]).unwrap();
        assert_eq!(own.starts_with("cuda"), base.starts_with("cuda"), "{csv}");
        kinds.insert(own.starts_with("cuda"));
    }
    assert_eq!(kinds.len(), 2, "both devices trained some pairs: {csv}");
}

/// The rows of `out` as (id, exec, test accuracy), students only; every row finished on a
/// CUDA device with an accuracy well above chance.
fn students(out: &Path) -> Vec<(String, String, f64)> {
    let (rows, _) = kd_report::read_frames(out).unwrap();
    rows.into_iter()
        .filter(|r| r.kind != kd_report::Kind::Teacher)
        .map(|r| {
            assert!(
                r.device.starts_with("cuda:"),
                "{}: device {}",
                r.trial_id,
                r.device
            );
            assert!(
                r.hardware.contains(" cudart "),
                "{}: {}",
                r.trial_id,
                r.hardware
            );
            let acc = r.test_acc.unwrap();
            assert!(acc > 0.5, "{}: test accuracy {acc}", r.trial_id);
            (r.trial_id, r.exec.to_string(), acc)
        })
        .collect()
}

#[test]
fn packed_students_on_cuda_match_students_alone_and_ignore_their_pack_mates() {
    let config = |pack: &str| {
        format!(
            "name: packs\ndataset: {{val_size: 1000, train_limit: 5000}}\ndevice: cuda\n\
             seeds: [0, 1]\npack: {pack}\n\
             teacher: {{model: {{arch: mlp, hidden: [256]}}, train: {{epochs: 2, optimizer: adam, lr: 0.001}}}}\n\
             student: {{model: {{arch: mlp, hidden: [64]}}, train: {{epochs: 3, optimizer: adam, lr: 0.001}}}}\n\
             grid: {{temperature: [2, 4]}}\n"
        )
    };
    let run = |pack: &str| {
        let dir = tempfile::tempdir().unwrap();
        let (o, out) = sweep(dir.path(), &config(pack));
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        (students(&out), dir)
    };
    let (auto, _a) = run("auto");
    let (two, _b) = run("2");
    let (off, _c) = run("off");
    assert!(auto.iter().all(|r| r.1 == "packed"), "{auto:?}");
    assert!(off.iter().all(|r| r.1 == "single"), "{off:?}");
    // Same ids whatever the pack size. cuBLAS does not promise the same bits for a batched
    // product of another batch count (it may pick another kernel), so the numbers are held to
    // a tolerance, not bit for bit: 0.5 points of test accuracy between pack sizes, 1 point
    // against the students alone. The largest differences are printed, to be recorded.
    let ids = |v: &[(String, String, f64)]| v.iter().map(|r| r.0.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&auto), ids(&two));
    let worst = |a: &[(String, String, f64)], b: &[(String, String, f64)]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x.2 - y.2).abs())
            .fold(0.0, f64::max)
    };
    let (sizes, alone) = (worst(&auto, &two), worst(&auto, &off));
    println!("test accuracy: pack sizes differ by at most {sizes}, packed and alone by {alone}");
    assert!(sizes <= 0.005, "pack sizes: {auto:?} vs {two:?}");
    assert!(alone <= 0.01, "packed {auto:?} vs alone {off:?}");
}

/// `train.precision: bf16` on the GPU: packed MLP students and a CNN student alone (with
/// `cudnn_benchmark`) train through float32 masters, learn, and say so in their records; their
/// accuracies stay within 2 points of the same students in float32.
#[test]
fn bf16_students_learn_on_cuda_and_are_recorded() {
    let config = |precision: &str, pack: &str| {
        format!(
            "name: bf16\ndataset: {{val_size: 1000, train_limit: 5000}}\ndevice: cuda\n\
             seeds: [0]\npack: {pack}\n\
             teacher: {{model: {{arch: mlp, hidden: [256]}}, train: {{epochs: 2, optimizer: adam, lr: 0.001}}}}\n\
             student: {{model: {{arch: mlp, hidden: [64]}}, train: {{epochs: 3, optimizer: adam, lr: 0.001, precision: {precision}}}}}\n\
             grid: {{temperature: [2, 4]}}\n"
        )
    };
    let run = |config: &str| {
        let dir = tempfile::tempdir().unwrap();
        let (o, out) = sweep(dir.path(), config);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (rows, _) = kd_report::read_frames(&out).unwrap();
        (students(&out), rows, dir)
    };
    let (b16, rows, _a) = run(&config("bf16", "auto"));
    let (f32s, _, _b) = run(&config("fp32", "auto"));
    for r in rows.iter().filter(|r| r.kind != kd_report::Kind::Teacher) {
        assert_eq!(r.precision.as_deref(), Some("bf16"), "{}", r.trial_id);
    }
    assert!(b16.iter().all(|r| r.1 == "packed"), "{b16:?}");
    for (x, y) in b16.iter().zip(&f32s) {
        assert!((x.2 - y.2).abs() <= 0.02, "bf16 {b16:?} vs fp32 {f32s:?}");
    }
    let cnn = config("bf16", "off").replace(
        "student: {model: {arch: mlp, hidden: [64]}, train: {",
        "student: {model: {arch: cnn, channels: [8, 16], fc: [32]}, train: {cudnn_benchmark: true, ",
    );
    let (alone, rows, _c) = run(&cnn);
    assert!(alone.iter().all(|r| r.1 == "single"), "{alone:?}");
    for r in rows.iter().filter(|r| r.kind != kd_report::Kind::Teacher) {
        assert_eq!(r.precision.as_deref(), Some("bf16"), "{}", r.trial_id);
        assert_eq!(r.cudnn_benchmark, Some(true), "{}", r.trial_id);
    }
    println!("bf16 packed {b16:?}\nfp32 packed {f32s:?}\nbf16 cnn alone {alone:?}");
}
