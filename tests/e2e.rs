//! End to end on a slice of the real Fashion-MNIST (seconds, not minutes): teacher, KD student and
//! baseline train, every file is written with the expected columns and rows, numbers beat chance
//! by a wide margin, and the same seed gives the same numbers.

use kd_report::record::trial_records;
use kd_report::{EpochRecord, Kind, Status, TrialRecord};
use kd_runner::config::Resolved;
use kd_runner::run::sweep::{run_resolved, RunOptions, Summary};
use kd_sweep::{out_dir, private_cache, read_frame, resolve, torch_lock};

const SLICE: &str = r#"
name: e2e
dataset: {name: fashion-mnist, val_size: 1000, train_limit: 3000}
device: cpu
threads: 2
seeds: [0]
teacher:
  model: {arch: mlp, hidden: [256], dropout: 0.2, input_dropout: 0.0}
  train: {epochs: 3, optimizer: adam, lr: 0.002}
student:
  model: {arch: mlp, hidden: [64]}
  train: {epochs: 3, optimizer: adam, lr: 0.002}
kd: {temperature: 4, alpha: 0.9}
baseline: true
"#;

/// `cfg` swept into `out` with the default options.
fn sweep(cfg: &Resolved, out: std::path::PathBuf) -> Summary {
    run_resolved(
        cfg,
        &RunOptions {
            out: Some(out),
            ..Default::default()
        },
    )
    .unwrap()
}

fn columns(df: &polars::prelude::DataFrame) -> Vec<String> {
    df.get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn a_slice_run_writes_every_file_and_learns() {
    let _guard = torch_lock();
    private_cache();
    let root = tempfile::tempdir().unwrap();
    let out = out_dir(root.path(), "a");
    let cfg = resolve(SLICE);
    let summary = sweep(&cfg, out.clone());
    assert_eq!(summary.unfinished, 0);

    // The resolved config is written and reads back to the same config, followed by what this
    // machine made of it.
    let text = std::fs::read_to_string(out.join("config.resolved.yaml")).unwrap();
    let back: kd_runner::config::Resolved = serde_yaml::from_str(&text).unwrap();
    assert_eq!(back, cfg);
    assert!(text.contains("\nexecution:\n"), "{text}");
    assert!(
        text.contains("hardware:") && text.contains("libtorch:"),
        "{text}"
    );

    let file = out.join("trials.parquet");
    let trials = read_frame(&file);
    assert_eq!(columns(&trials), TrialRecord::COLUMNS);
    let rows = trial_records(&trials, &file).unwrap();
    let kinds: Vec<Kind> = rows.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [Kind::Teacher, Kind::Baseline, Kind::Kd]);
    assert_eq!(
        rows[2].baseline_id.as_deref(),
        Some(rows[1].trial_id.as_str())
    );
    assert_eq!(
        rows[2].teacher_id.as_deref(),
        Some(rows[0].trial_id.as_str())
    );
    for r in &rows {
        assert_eq!(r.status, Status::Ok);
        assert_eq!((r.device.as_str(), r.threads), ("cpu", 2));
        assert_eq!(r.init, "torch");
        assert!(r.libtorch.starts_with("2."), "{}", r.libtorch);
        assert_eq!(r.data_fingerprint.len(), 16);
        let acc = r.test_acc.unwrap();
        // Chance is 10%; 3 epochs on 3000 images reach ~75-80%.
        assert!(acc > 0.70, "{} test accuracy {acc}", r.kind);
        assert_eq!(
            r.test_errors.unwrap(),
            ((1.0 - acc) * 10_000.0).round() as u64
        );
        assert!(r.train_acc.unwrap() > 0.70 && r.val_acc.unwrap() > 0.65);
        assert_eq!((r.val_images, r.test_images), (1000, 10_000));
    }
    assert_eq!(rows[0].train_images, 3000);
    assert_eq!(rows[0].params, (784 * 256 + 256 + 256 * 10 + 10) as u64);
    assert_eq!(rows[2].temperature, Some(4.0));
    assert_eq!(rows[2].alpha, Some(0.9));
    assert!((rows[2].beta.unwrap() - 0.1).abs() < 1e-12);
    assert_eq!(rows[1].temperature, None, "the baseline has no soft term");

    let epochs = read_frame(&out.join("epochs.parquet"));
    assert_eq!(columns(&epochs), EpochRecord::COLUMNS);
    assert_eq!(epochs.height(), 9, "3 epochs for each of 3 trials");
    let soft = epochs.column("soft_loss").unwrap();
    assert_eq!(soft.null_count(), 6, "only the KD trial has a soft loss");

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Distillation against the hard-target-only baseline"));
    assert!(
        report.contains("one seed: no spread, no interval"),
        "{report}"
    );
    assert!(
        std::fs::read_to_string(out.join("trials.csv"))
            .unwrap()
            .lines()
            .count()
            == 4
    );
}

#[test]
fn same_seed_gives_the_same_numbers_and_the_teacher_is_cached() {
    let _guard = torch_lock();
    let cache = private_cache();
    let root = tempfile::tempdir().unwrap();
    let yaml = SLICE
        .replace("seeds: [0]", "seeds: [7]")
        .replace("name: e2e", "name: det");
    let cfg = resolve(&yaml);
    let run = |name: &str| {
        let out = out_dir(root.path(), name);
        sweep(&cfg, out).trials
    };
    let first = run("one");
    let cached: Vec<_> = std::fs::read_dir(cache.join("teachers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let teacher_file = format!("{}.ot", first[0].trial_id.trim_start_matches("teacher-"));
    assert!(cached.contains(&teacher_file), "{cached:?}");
    let second = run("two");
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.trial_id, b.trial_id);
        assert_eq!(
            a.test_acc, b.test_acc,
            "{}: same seed, same numbers",
            a.kind
        );
        assert_eq!(a.val_acc, b.val_acc);
    }
    // The cached teacher reports the training record it was saved with.
    assert_eq!(first[0].wall_s, second[0].wall_s);
    // Another seed changes the students but not the teacher.
    let other = resolve(&yaml.replace("seeds: [7]", "seeds: [8]"));
    let third = sweep(&other, out_dir(root.path(), "three")).trials;
    assert_eq!(third[0].trial_id, first[0].trial_id);
    assert_ne!(third[2].trial_id, first[2].trial_id);
    assert_ne!(third[2].test_acc, first[2].test_acc);
}

/// A teacher trained in bfloat16 (`precision: bf16`) ends as its float32 masters, which are
/// cached and give the students' logits: fresh and reused, it reports the same accuracies (those
/// of the float32 model; once they were the bfloat16 model's when fresh and the float32 model's
/// when reused, 8 test images apart on a small run), and its students the same numbers.
#[test]
fn a_bf16_teacher_reports_the_same_numbers_fresh_and_reused() {
    let _guard = torch_lock();
    let cache = private_cache();
    let root = tempfile::tempdir().unwrap();
    let yaml = SLICE
        .replace(
            "train: {epochs: 3, optimizer: adam, lr: 0.002}\nstudent",
            "train: {epochs: 3, optimizer: adam, lr: 0.002, precision: bf16}\nstudent",
        )
        .replace("name: e2e", "name: bf16t");
    assert!(yaml.contains("precision: bf16}\nstudent"), "{yaml}");
    let cfg = resolve(&yaml);
    let run = |name: &str| sweep(&cfg, out_dir(root.path(), name)).trials;
    let fresh = run("fresh");
    assert!(std::fs::read_dir(cache.join("teachers")).unwrap().count() > 0);
    let reused = run("reused");
    assert!(fresh[0].trial_id.starts_with("teacher-"));
    for (a, b) in fresh.iter().zip(&reused) {
        assert_eq!(a.trial_id, b.trial_id);
        let what = &a.trial_id;
        assert_eq!(a.test_acc, b.test_acc, "{what}: test_acc");
        assert_eq!(a.val_acc, b.val_acc, "{what}: val_acc");
        assert_eq!(a.train_acc, b.train_acc, "{what}: train_acc");
        assert_eq!(a.test_errors, b.test_errors, "{what}: test_errors");
    }
    assert!(fresh[0].test_acc.unwrap() > 0.7, "{:?}", fresh[0].test_acc);
}

#[test]
fn a_cnn_teacher_trains_and_teaches() {
    let _guard = torch_lock();
    private_cache();
    let root = tempfile::tempdir().unwrap();
    let yaml = SLICE
        .replace(
            "model: {arch: mlp, hidden: [256], dropout: 0.2, input_dropout: 0.0}",
            "model: {arch: cnn, channels: [8, 16], fc: [64], dropout: 0.25}",
        )
        .replace(
            "train: {epochs: 3, optimizer: adam, lr: 0.002}\nstudent",
            "train: {epochs: 4, optimizer: adam, lr: 0.002}\nstudent",
        )
        .replace("name: e2e", "name: cnn");
    let cfg = resolve(&yaml);
    let s = sweep(&cfg, out_dir(root.path(), "cnn"));
    let teacher = &s.trials[0];
    assert_eq!(teacher.arch, "cnn");
    assert_eq!(teacher.hidden, "c8-c16-f64");
    assert!(teacher.test_acc.unwrap() > 0.70, "{:?}", teacher.test_acc);
    assert!(s.trials[2].test_acc.unwrap() > 0.70);
}

#[test]
fn a_kd_trial_with_alpha_0_and_beta_1_is_exactly_its_baseline() {
    let _guard = torch_lock();
    private_cache();
    let root = tempfile::tempdir().unwrap();
    let yaml = SLICE
        .replace(
            "kd: {temperature: 4, alpha: 0.9}",
            "kd: {temperature: 4, alpha: 0, beta: 1}",
        )
        .replace("name: e2e", "name: pair");
    let s = sweep(&resolve(&yaml), out_dir(root.path(), "pair"));
    let (base, kd) = (&s.trials[1], &s.trials[2]);
    assert_eq!((base.kind, kd.kind), (Kind::Baseline, Kind::Kd));
    assert_eq!(kd.baseline_id.as_deref(), Some(base.trial_id.as_str()));
    assert_ne!(kd.trial_id, base.trial_id);
    // Same initialisation, same batches, a zero soft term: the same numbers to the last bit.
    assert_eq!(kd.test_acc, base.test_acc);
    assert_eq!(kd.val_acc, base.val_acc);
    assert_eq!(kd.train_acc, base.train_acc);
    assert_eq!(kd.test_errors, base.test_errors);
    let (_, epochs) = kd_report::read_frames(&out_dir(root.path(), "pair")).unwrap();
    let curve = |id: &str| -> Vec<(f64, f64)> {
        epochs
            .iter()
            .filter(|e| e.trial_id == id)
            .map(|e| (e.train_loss, e.hard_loss))
            .collect()
    };
    assert_eq!(curve(&kd.trial_id), curve(&base.trial_id));
    assert_eq!(curve(&kd.trial_id).len(), 3);
}
