//! Issue 32: four ways a sweep gave wrong or lost numbers with exit 0, each reproduced on a tiny
//! sweep. Every case failed before its fix.

mod common;

use std::path::Path;

use common::*;

/// A tiny sweep on the IDX folder `data` read as `name`.
fn on_folder(name: &str, data: &Path, extra: &str) -> String {
    format!(
        "name: tiny\ndataset: {{name: {name}, dir: {}, val_size: 20}}\ndevice: cpu\nthreads: 1\n\
         teacher: {{model: {{arch: mlp, hidden: [16], dropout: 0.0, input_dropout: 0.0}}, train: {{epochs: 1, optimizer: adam, lr: 0.002}}}}\n\
         student: {{model: {{arch: mlp, hidden: [8]}}, train: {{epochs: 1, optimizer: adam, lr: 0.002}}}}\n{extra}",
        data.display()
    )
}

/// Overwrite byte `at` of `file` with `value`.
fn poke(file: &Path, at: usize, value: u8) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at] = value;
    std::fs::write(file, bytes).unwrap();
}

/// Case 1: one training label of 200 in a Fashion-MNIST folder gave a 201-output model, exit 0.
#[test]
fn an_out_of_range_label_exits_2_naming_the_file_index_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    kd_data::idx::testing::write_idx_set(&data, 8, 8, 200, 40, false);
    // The label of training image 5 (after the 8-byte header), as the issue's `dd` wrote it.
    poke(&data.join(kd_data::FILE_STEMS[1]), 8 + 5, 200);
    for (name, says) in [
        (
            "fashion-mnist",
            "label 200 at index 5 is out of range: fashion-mnist gives 10 classes (0 to 9)",
        ),
        (
            "idx",
            "no training image has label 10, though the labels go up to 200 (first at index 5)",
        ),
    ] {
        let (o, out) = sweep(dir.path(), &on_folder(name, &data, ""), &[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("train-labels-idx1-ubyte"), "{err}");
        assert!(err.contains(says), "{err}");
        assert!(!out.join("trials.parquet").exists(), "nothing trained");
    }
    // A folder that declares its classes takes the label.
    let (o, _) = sweep(
        dir.path(),
        &on_folder("idx", &data, "").replace("val_size: 20", "val_size: 20, classes: 201"),
        &["--dry-run"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// The first line of `text` starting with `key` replaced by `key` and `value`.
fn set_line(text: &str, key: &str, value: &str) -> String {
    let at = text.find(&format!("\n{key}")).expect("the key is there") + 1;
    let end = at + text[at..].find('\n').unwrap();
    format!("{}{key}{value}{}", &text[..at], &text[end..])
}

/// Case 2: a hand-edited record was trusted: `kd report` showed its value, overwrote the right one in
/// trials.parquet, and a resumed sweep skipped the trial as done.
#[test]
fn a_tampered_record_is_quarantined_and_never_trusted_by_a_resumed_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny("pack: off\ngrid: {temperature: [2, 4]}\n");
    let (o, out) = sweep(dir.path(), &config, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let before = accuracies(&out);
    let kd_file = record_files(&out)
        .into_iter()
        .find(|f| f.starts_with("kd-"))
        .unwrap();
    let path = out.join("records").join(&kd_file);
    let tamper = || {
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, set_line(&text, "  test_acc: ", "0.9912")).unwrap();
    };
    tamper();
    let o = kd(
        &["report", out.to_str().unwrap()],
        &dir.path().join("cache"),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("tampered or damaged"), "{err}");
    assert_eq!(accuracies(&out), before, "the frames' right value stands");
    assert!(
        out.join("quarantine").join(&kd_file).exists(),
        "moved aside"
    );

    // Tampered again, through a resumed sweep: the frames' row stands, nothing trains.
    let (o, _) = sweep(dir.path(), &config, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    tamper();
    let (o, _) = sweep(dir.path(), &config, &[]);
    let err = stderr(&o);
    assert!(err.contains("tampered or damaged"), "{err}");
    assert!(
        err.contains("3 trial(s) were finished before and kept"),
        "{err}"
    );
    assert_eq!(accuracies(&out), before);

    // Record and row both wrong: the trial trains again, to the same numbers.
    tamper();
    let (mut rows, epochs) = kd_report::read_frames(&out).unwrap();
    let id = kd_file.trim_end_matches(".yaml");
    let row = rows.iter_mut().find(|r| r.trial_id == id).unwrap();
    row.val_acc = Some(0.123_456);
    kd_report::write_frames(&out, &rows, &epochs).unwrap();
    let (o, _) = sweep(dir.path(), &config, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("contradicts itself"), "{err}");
    assert!(
        err.contains("2 trial(s) were finished before and kept"),
        "{err}"
    );
    assert_eq!(accuracies(&out), before, "retrained to the same numbers");
}

/// Case 3: `--fresh` deleted the finished results before replacing them: a kill during it left 2 of
/// 9 rows. The kill is deterministic here: the process ends after its first finished trial.
#[test]
fn a_fresh_run_killed_keeps_every_row_and_the_next_resume_continues_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny("pack: off\ngrid: {temperature: [2, 4]}\n");
    let (o, out) = sweep(dir.path(), &config, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let before = accuracies(&out);
    assert_eq!(before.len(), 4);

    let (o, _) = sweep_env(
        dir.path(),
        &config,
        &["--fresh"],
        &[("KD_TEST_ABORT_AFTER_TRIALS", "1")],
    );
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert_eq!(
        accuracies(&out),
        before,
        "every row: the old ones and one new"
    );
    assert!(out.join(".fresh-whole.json").exists(), "the marker");
    let replaced: Vec<_> = std::fs::read_dir(out.join("replaced"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(replaced.len(), 1);
    let (aside, _) = kd_report::read_frames(&replaced[0]).unwrap();
    assert_eq!(aside.len(), 3, "the three students' earlier rows");
    assert_eq!(record_files(&replaced[0]).len(), 3, "and their records");

    // A plain resume continues the fresh run: the two trials it had not reached train again.
    let (o, _) = sweep(dir.path(), &config, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("2 trial(s) of an interrupted --fresh run train again"),
        "{err}"
    );
    assert!(
        err.contains("1 trial(s) were finished before and kept"),
        "{err}"
    );
    assert!(
        !out.join(".fresh-whole.json").exists(),
        "done: the marker goes"
    );
    assert_eq!(accuracies(&out), before);
}

/// Case 4: a training file rewritten in place with its old size and mtime kept its old fingerprint:
/// every trial was reused, trained on the old data.
#[test]
fn a_file_rewritten_with_its_old_size_and_mtime_is_new_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    kd_data::idx::testing::write_idx_set(&data, 8, 8, 200, 40, false);
    let config = on_folder("idx", &data, "");
    let (o, out) = sweep(dir.path(), &config, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let before = accuracies(&out);
    let images = data.join(kd_data::FILE_STEMS[0]);
    let mtime = std::fs::metadata(&images).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    // A pixel of the last image changed, the size and the mtime as before (`touch -r`).
    let n = std::fs::metadata(&images).unwrap().len() as usize;
    poke(&images, n - 1, 255);
    std::fs::File::options()
        .write(true)
        .open(&images)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let (o, _) = sweep(dir.path(), &config, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("finished before and kept"), "{err}");
    let after = accuracies(&out);
    assert_eq!(after.len(), before.len());
    for (a, b) in after.iter().zip(&before) {
        assert_ne!(a.0, b.0, "new data, new ids");
    }
}

/// A KD student with dropout and augmented images (online teacher) drew its dropout masks after
/// the teacher's build in the first such trial of a process only, so its numbers depended on
/// which trials its process had run before. The teacher is now loaded before the student's
/// seed: a trial gives the same numbers with other cells before it or alone.
#[test]
fn an_online_kd_student_with_dropout_gives_its_numbers_whatever_ran_before_it() {
    let config = |grid: &str| {
        tiny(&format!(
            "pack: off\nbaseline: false\ngrid: {{temperature: {grid}}}\n"
        ))
        .replace(
            "student: {model: {arch: mlp, hidden: [32]}, train: {",
            "student: {model: {arch: mlp, hidden: [32], dropout: 0.3}, train: {jitter: 1, ",
        )
    };
    assert!(config("[4]").contains("dropout: 0.3"), "{}", config("[4]"));
    let (both, alone) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (o, out_both) = sweep(both.path(), &config("[2, 4]"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (o, out_alone) = sweep(alone.path(), &config("[4]"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let after = accuracies(&out_both);
    let first = accuracies(&out_alone);
    assert_eq!(first.len(), 2, "teacher and the T = 4 student: {first:?}");
    let t4 = after
        .iter()
        .find(|r| r.0 == first[1].0)
        .expect("the same id");
    assert_eq!(
        *t4, first[1],
        "the same numbers after the T = 2 trial as alone"
    );
}
