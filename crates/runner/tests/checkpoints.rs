//! Issue 33: a sweep killed in the middle of a trial continues it from its last checkpoint, and
//! the finished rows and epochs are an uninterrupted run's to the last digit. The kill is
//! deterministic (`KD_TEST_ABORT_AFTER_CHECKPOINTS=N`: exit 137 once N checkpoints are
//! written, as `kill -9` would end it); the checkpoints are written after every epoch
//! (`--checkpoint-every 1ms`).

mod common;

use std::path::Path;

use common::*;
use kd_data::formats::cifar_bin;

/// Every number of OUT's rows and epochs, by trial: timings, the resume note and the trial
/// file's digest left out.
fn numbers(out: &Path) -> Vec<String> {
    let (mut rows, mut epochs) = kd_report::read_frames(out).unwrap();
    rows.sort_by(|a, b| a.trial_id.cmp(&b.trial_id));
    epochs.sort_by(|a, b| (&a.trial_id, a.epoch).cmp(&(&b.trial_id, b.epoch)));
    let rows = rows.into_iter().map(|mut r| {
        r.wall_s = 0.0;
        r.finished_at.clear();
        r.resumed = None;
        format!("{r:?}")
    });
    let epochs = epochs.into_iter().map(|mut e| {
        e.seconds = 0.0;
        format!("{e:?}")
    });
    rows.chain(epochs).collect()
}

/// The trials' resume notes, by trial kind.
fn notes(out: &Path) -> Vec<(String, Option<String>)> {
    let mut rows: Vec<_> = records(out)
        .into_iter()
        .map(|r| (r.kind.to_string(), r.resumed))
        .collect();
    rows.sort();
    rows
}

fn files_in(dir: &Path, ext: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(ext))
                .collect()
        })
        .unwrap_or_default()
}

/// `config` swept whole in one folder; in another, killed after its `k`th checkpoint and run
/// again. Returns both OUTs and the second's folder, after checking that the kill left a
/// checkpoint (under `where_` of the folder), that the rerun used it up, and that both give
/// the same numbers.
fn killed_and_continued(
    config: &str,
    k: usize,
    where_: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let whole = tempfile::tempdir().unwrap();
    let (o, whole_out) = sweep(whole.path(), config, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let dir = tempfile::tempdir().unwrap();
    let k = k.to_string();
    let (o, out) = sweep_env(
        dir.path(),
        config,
        &["--checkpoint-every", "1ms"],
        &[("KD_TEST_ABORT_AFTER_CHECKPOINTS", k.as_str())],
    );
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    let ckpt_dir = dir.path().join(where_);
    assert_eq!(
        files_in(&ckpt_dir, ".ckpt").len(),
        1,
        "{}",
        ckpt_dir.display()
    );
    let (o, _) = sweep(dir.path(), config, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        files_in(&ckpt_dir, ".ckpt"),
        Vec::<String>::new(),
        "used up"
    );
    assert_eq!(numbers(&out), numbers(&whole_out));
    (dir, out)
}

fn on_fashion(student: &str, teacher: &str, extra: &str) -> String {
    format!(
        "name: ckpt\ndataset: {{val_size: 300, train_limit: 900}}\ndevice: cpu\nthreads: 1\n\
         seeds: [0]\nteacher: {teacher}\nstudent: {student}\n{extra}"
    )
}

const TEACHER: &str = "{model: {arch: mlp, hidden: [64], dropout: 0.0, input_dropout: 0.0}, \
                       train: {epochs: 1, optimizer: adam, lr: 0.002}}";

/// Students alone, with dropout (its masks replayed): the baseline trains first and is killed
/// after its second epoch's checkpoint; the rerun continues it at epoch 2.
#[test]
fn a_student_alone_with_dropout_continues_from_its_checkpoint() {
    let student = "{model: {arch: mlp, hidden: [48], dropout: 0.3, input_dropout: 0.1}, \
                   train: {epochs: 4, batch_size: 64, lr: 0.05, schedule: cosine}}";
    let config = on_fashion(student, TEACHER, "pack: off\n");
    let (_dir, out) = killed_and_continued(&config, 2, "out/.checkpoints");
    let note = |s: &str| s.to_string();
    assert_eq!(
        notes(&out),
        [
            (note("baseline"), Some(note("continued at epoch 2"))),
            (note("kd"), None),
            (note("teacher"), None)
        ]
    );
}

/// Issue 37: a TorchScript student with batch norm continues from its checkpoint with its
/// buffers (running statistics) and its optimiser's momentum: the numbers of an uninterrupted
/// run.
#[test]
fn a_torchscript_student_continues_from_its_checkpoint() {
    let files = tempfile::tempdir().unwrap();
    write_scripted_nets(files.path());
    let student = format!(
        "{{torchscript: {}/student.pt, train: {{epochs: 3, batch_size: 128, optimizer: sgd, \
         lr: 0.05, momentum: 0.9}}}}",
        files.path().display()
    );
    let config = on_fashion(&student, TEACHER, "");
    let (_dir, out) = killed_and_continued(&config, 2, "out/.checkpoints");
    let notes = notes(&out);
    assert!(
        notes[0]
            .1
            .as_deref()
            .unwrap()
            .starts_with("continued at epoch 2"),
        "{notes:?}"
    );
}

/// Issue 36: a resume on another CPU model of the same execution class continues (the ids do
/// not hold the model), says so on stderr, and records it: the row says which CPU finished it
/// and where it continued, and the report which trials each CPU model finished.
#[test]
fn a_resume_on_another_cpu_model_continues_says_so_and_records_it() {
    const XEON: &str = "Intel Xeon (GenuineIntel family 6 model 143)";
    const EPYC: &str = "AMD EPYC (AuthenticAMD family 25 model 17)";
    let student = "{model: {arch: mlp, hidden: [48], dropout: 0.3, input_dropout: 0.1}, \
                   train: {epochs: 4, batch_size: 64, lr: 0.05, schedule: cosine}}";
    let config = on_fashion(student, TEACHER, "pack: off\n");
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep_env(
        dir.path(),
        &config,
        &["--checkpoint-every", "1ms"],
        &[
            ("KD_TEST_ABORT_AFTER_CHECKPOINTS", "2"),
            ("KD_TEST_CPU_MODEL", XEON),
        ],
    );
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    let (o, _) = sweep_env(dir.path(), &config, &[], &[("KD_TEST_CPU_MODEL", EPYC)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "continuing from a checkpoint written on another CPU model of the same execution \
             class ({XEON}; this machine: {EPYC})"
        )),
        "{err}"
    );
    let mut rows: Vec<_> = records(&out)
        .into_iter()
        .map(|r| (r.kind.to_string(), r.cpu, r.resumed))
        .collect();
    rows.sort();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        rows,
        [
            (
                "baseline".into(),
                s(EPYC),
                s(&format!(
                    "continued at epoch 2, from a checkpoint written on {XEON} (this machine: \
                     {EPYC})"
                ))
            ),
            ("kd".into(), s(EPYC), None),
            ("teacher".into(), s(XEON), None),
        ]
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let teacher = records(&out)
        .into_iter()
        .find(|r| r.kind.to_string() == "teacher")
        .unwrap()
        .trial_id;
    assert!(
        report.contains(&format!(
            "**The trials ran on 2 CPU models** (one execution class, so the same ids; a seed on \
             another CPU model is another draw of the same recipe, whose last digits may \
             differ): {XEON}: {teacher}; {EPYC}: "
        )),
        "{report}"
    );
}

/// A pack (the KD student and its baseline) in bfloat16, killed after its first epoch.
#[test]
fn a_bf16_pack_continues_from_its_checkpoint() {
    let student = "{model: {arch: mlp, hidden: [48], dropout: 0.2}, \
                   train: {epochs: 3, batch_size: 64, optimizer: adam, lr: 0.002, precision: bf16}}";
    let config = on_fashion(student, TEACHER, "pack: 2\n");
    let (_dir, out) = killed_and_continued(&config, 1, "out/.checkpoints");
    for (kind, note) in notes(&out) {
        let want = (kind != "teacher").then_some("continued at epoch 1");
        assert_eq!(note.as_deref(), want, "{kind}");
    }
}

/// The teacher (dropout, max-norm) killed after its second epoch: its checkpoint is beside
/// its cache entry, and the rerun continues it there, then trains the students on its logits.
#[test]
fn a_teacher_with_dropout_continues_from_its_checkpoint_in_the_cache() {
    let teacher = "{model: {arch: mlp, hidden: [64, 64], dropout: 0.5, input_dropout: 0.2}, \
                   train: {epochs: 4, batch_size: 64, lr: 0.05, max_norm: 3.0}}";
    let student = "{model: {arch: mlp, hidden: [32]}, train: {epochs: 1, lr: 0.05}}";
    let config = on_fashion(student, teacher, "");
    let (_dir, out) = killed_and_continued(&config, 2, "cache/teachers");
    let notes = notes(&out);
    assert!(
        notes.contains(&("teacher".into(), Some("continued at epoch 2".into()))),
        "{notes:?}"
    );
}

/// A batch-norm ResNet student with crop and flip (its online teacher on each augmented
/// batch), killed after its first epoch.
#[test]
fn a_resnet_with_crop_and_flip_continues_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cifar-100-binary");
    cifar_bin::testing::write_bin_set(&cifar_bin::CIFAR100, &bin, 200, 60);
    let config = format!(
        "name: ckpt\ndataset: {{name: cifar100, dir: {}, val_size: 60}}\ndevice: cpu\n\
         threads: 1\nseeds: [0]\nbaseline: false\n\
         teacher: {{model: {{arch: resnet, depth: 8, widths: [4, 4, 8, 8]}}, \
                    train: {{epochs: 1, batch_size: 50, lr: 0.05}}}}\n\
         student: {{model: {{arch: resnet, depth: 8, widths: [4, 4, 8, 8]}}, \
                    train: {{epochs: 3, batch_size: 50, lr: 0.05, weight_decay: 5e-4, crop: 4, flip: true}}}}\n",
        dir.path().display()
    );
    let (_d, out) = killed_and_continued(&config, 1, "out/.checkpoints");
    assert!(
        notes(&out).contains(&("kd".into(), Some("continued at epoch 1".into()))),
        "{:?}",
        notes(&out)
    );
}

/// A damaged checkpoint is refused by name and set aside; the trial starts over and gives the
/// uninterrupted numbers.
#[test]
fn a_damaged_checkpoint_is_refused_by_name_and_the_trial_starts_over() {
    let student =
        "{model: {arch: mlp, hidden: [48]}, train: {epochs: 3, batch_size: 64, lr: 0.05}}";
    let config = on_fashion(student, TEACHER, "pack: off\nbaseline: false\n");
    let whole = tempfile::tempdir().unwrap();
    let (o, whole_out) = sweep(whole.path(), &config, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep_env(
        dir.path(),
        &config,
        &["--checkpoint-every", "1ms"],
        &[("KD_TEST_ABORT_AFTER_CHECKPOINTS", "1")],
    );
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    let ckpts = out.join(".checkpoints");
    let name = files_in(&ckpts, ".ckpt").pop().unwrap();
    let file = ckpts.join(&name);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    let (o, _) = sweep(dir.path(), &config, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("checkpoint {} cannot be used", file.display())),
        "{err}"
    );
    assert!(
        err.contains("changed or damaged") && err.contains("starts over"),
        "{err}"
    );
    assert!(ckpts.join(format!("{name}.refused")).exists());
    assert_eq!(numbers(&out), numbers(&whole_out));
    assert_eq!(
        notes(&out),
        [("kd".to_string(), None), ("teacher".to_string(), None)]
    );
}

/// `checkpoint_every` is a run option: a bad value is named, and it changes no id.
#[test]
fn checkpoint_every_is_checked_and_in_no_id() {
    let student = "{model: {arch: mlp, hidden: [8]}}";
    let (code, err) = sweep_exit(&on_fashion(student, TEACHER, "checkpoint_every: 10\n"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("checkpoint_every") && err.contains("30s, 5m, 1h"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let plan = |extra: &str, args: &[&str]| {
        let (o, _) = sweep(
            dir.path(),
            &on_fashion(student, TEACHER, extra),
            &[&["--dry-run"], args].concat(),
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let plain = plan("", &[]);
    assert_eq!(plan("checkpoint_every: 30s\n", &[]), plain);
    assert_eq!(
        plan("checkpoint_every: 0\n", &["--checkpoint-every", "1h"]),
        plain
    );
    let o = kd(
        &["sweep", "x.yaml", "--checkpoint-every", "5 min"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("30s, 5m, 1h"), "{}", stderr(&o));
}

/// SIGTERM (or SIGUSR1) while students train, alone in the sweep's process or on two workers
/// (the signal goes to the sweep only, as `kill PID` sends it): each trial in flight writes a
/// checkpoint after its current step, the sweep exits 3, and the same command continues them
/// to the numbers of an uninterrupted run.
#[test]
fn a_signal_checkpoints_the_trials_in_flight_and_exits_3() {
    let student = "{model: {arch: mlp, hidden: [256, 256]}, \
                   train: {epochs: 6, batch_size: 64, optimizer: adam, lr: 0.001}}";
    for (workers, signal) in [(1, "-TERM"), (2, "-USR1")] {
        let config = on_fashion(
            student,
            TEACHER,
            &format!("pack: off\nworkers: {workers}\n"),
        )
        .replace("train_limit: 900", "train_limit: 3000");
        let whole = tempfile::tempdir().unwrap();
        let (o, whole_out) = sweep(whole.path(), &config, &[]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

        let dir = tempfile::tempdir().unwrap();
        let cfg = write(dir.path(), "c.yaml", &config);
        let out = dir.path().join("out");
        let args: Vec<String> = [
            "sweep",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--checkpoint-every".into(), "1ms".into()])
        .collect();
        let cache = dir.path().join("cache");
        let child = spawn_kd(&args, &cache);
        // A student's first checkpoint: it is inside its training now.
        let ckpts = out.join(".checkpoints");
        let start = std::time::Instant::now();
        while files_in(&ckpts, ".ckpt").is_empty() {
            assert!(
                start.elapsed().as_secs() < 300,
                "no checkpoint in 5 minutes"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let kill = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let o = child.wait_with_output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(3), "workers {workers}: {err}");
        assert!(err.contains("its checkpoint is written"), "{err}");
        assert!(!files_in(&ckpts, ".ckpt").is_empty());

        let (o, _) = sweep(dir.path(), &config, &[]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(numbers(&out), numbers(&whole_out), "workers {workers}");
        let continued = notes(&out)
            .into_iter()
            .filter(|(_, n)| n.as_deref().is_some_and(|n| n.starts_with("continued ")))
            .count();
        assert!(continued >= 1, "{:?}", notes(&out));
        assert!(files_in(&ckpts, ".ckpt").is_empty());
    }
}

/// `--fresh` trains from the start: a checkpoint left by an earlier run (perhaps of other
/// code) is removed, not continued.
#[test]
fn fresh_does_not_continue_from_an_earlier_checkpoint() {
    let student =
        "{model: {arch: mlp, hidden: [48]}, train: {epochs: 3, batch_size: 64, lr: 0.05}}";
    let config = on_fashion(student, TEACHER, "pack: off\nbaseline: false\n");
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep_env(
        dir.path(),
        &config,
        &["--checkpoint-every", "1ms"],
        &[("KD_TEST_ABORT_AFTER_CHECKPOINTS", "1")],
    );
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert_eq!(files_in(&out.join(".checkpoints"), ".ckpt").len(), 1);
    let (o, _) = sweep(dir.path(), &config, &["--fresh"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        notes(&out),
        [("kd".to_string(), None), ("teacher".to_string(), None)]
    );
    assert!(files_in(&out.join(".checkpoints"), ".ckpt").is_empty());
}
