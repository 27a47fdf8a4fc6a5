//! Issue 32, item 5: each case of bad input or an odd result gets the message it deserves (what
//! is wrong, naming the key or file, and the way out), never a misleading one, a libtorch
//! backtrace or a line of megabytes. Every test failed on the code before its fix.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A TorchScript teacher for Fashion-MNIST (`[N, 1, 28, 28]` -> `[N, 10]`) whose forward returns
/// `expr` (of `x`), traced with the venv's PyTorch into `dir/name`.
fn scripted_teacher(dir: &Path, name: &str, expr: &str) -> PathBuf {
    let file = dir.join(name);
    let script = format!(
        "import torch\n\
         class M(torch.nn.Module):\n    def forward(self, x):\n        return {expr}\n\
         torch.jit.trace(M(), torch.zeros(2, 1, 28, 28)).save({:?})\n",
        file.display().to_string()
    );
    run_python(&["-c", &script]);
    file
}

/// [`tiny`] with `teacher` as its teacher block.
fn with_teacher(teacher: &str, extra: &str) -> String {
    let config = tiny(extra);
    let start = config.find("teacher: ").unwrap();
    let end = start + config[start..].find('\n').unwrap();
    format!("{}teacher: {teacher}{}", &config[..start], &config[end..])
}

/// Case 1: a TorchScript teacher whose outputs are NaN exited 1 with "the teacher diverged
/// (...); lower teacher.train.lr", a key such a teacher cannot have.
#[test]
fn a_loaded_teacher_with_nan_outputs_is_bad_input_naming_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let pt = scripted_teacher(dir.path(), "nan.pt", "x.flatten(1)[:, :10] * float('nan')");
    let config = with_teacher(&format!("{{torchscript: {}}}", pt.display()), "");
    let (o, _) = sweep(dir.path(), &config, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{}: the teacher in this file", pt.display())),
        "{err}"
    );
    assert!(err.contains("NaN or infinite outputs"), "{err}");
    assert!(!err.contains("teacher.train.lr"), "{err}");
}

/// Case 1, a checkpoint: its weights NaN (a trained teacher's, overwritten).
#[test]
fn a_checkpoint_with_nan_weights_is_bad_input_naming_its_file() {
    let dir = tempfile::tempdir().unwrap();
    // Train the teacher once (its weights land in the cache), then poison a copy.
    let (o, _) = sweep(dir.path(), &tiny("baseline: false\n"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let cached = std::fs::read_dir(dir.path().join("cache/teachers"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "ot"))
        .expect("a cached teacher");
    let named = tch::Tensor::load_multi(&cached).unwrap();
    let poisoned: Vec<(String, tch::Tensor)> = named
        .iter()
        .map(|(n, t)| (n.clone(), t.full_like(f64::NAN)))
        .collect();
    let ckpt = dir.path().join("nan.ot");
    tch::Tensor::save_multi(&poisoned, &ckpt).unwrap();
    let config = tiny("baseline: false\n").replace(
        "teacher: {model:",
        &format!("teacher: {{checkpoint: {}, model:", ckpt.display()),
    );
    let (o, _) = sweep(dir.path(), &config, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{}: the teacher in this file (teacher.checkpoint)",
            ckpt.display()
        )),
        "{err}"
    );
    assert!(!err.contains("teacher.train.lr"), "{err}");
}

/// Case 2: students at or below chance get a warning; a teacher at chance (an untrained net
/// that always says class 0: 10%) got none, though every student learns from it.
#[test]
fn a_teacher_at_chance_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let pt = scripted_teacher(dir.path(), "flat.pt", "x.flatten(1)[:, :10] * 0.0");
    let config = with_teacher(
        &format!("{{torchscript: {}}}", pt.display()),
        "baseline: false\n",
    );
    let (o, _) = sweep(dir.path(), &config, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let warning = err
        .lines()
        .find(|l| l.contains("warning: the teacher"))
        .unwrap_or_else(|| panic!("no warning for the teacher: {err}"));
    assert!(
        warning.contains("10.00% test accuracy, at or below chance (10.00%, 10 classes)"),
        "{warning}"
    );
    assert!(warning.contains("check teacher.torchscript"), "{warning}");
}

/// Case 3: `grid.temperature: [2, 2.0, 4]` planned the same trials twice and trained them twice.
#[test]
fn a_value_twice_in_a_grid_axis_is_refused_naming_it() {
    for (grid, want) in [
        (
            "temperature: [2, 2.0, 4]",
            "grid.temperature[1]: 2.0 appears twice: it is grid.temperature[0] (2) again",
        ),
        (
            "hidden: [[32], [16], [16]]",
            "grid.hidden[2]: 16 appears twice: it is grid.hidden[1] (16) again",
        ),
        (
            "soft_loss: [ce, kl, ce]",
            "grid.soft_loss[2]: ce appears twice",
        ),
        (
            "kd: [{name: A, alpha: 0.5}, {name: B, alpha: 0.50}]",
            "grid.kd[1]: B appears twice: it is grid.kd[0] (A) again",
        ),
    ] {
        let (code, err) = sweep_exit(&tiny(&format!("grid: {{{grid}}}\n")));
        assert_eq!(code, 2, "{grid}: {err}");
        assert!(err.contains(want), "{grid}: {err}");
    }
}

/// Case 4: a file that is no TorchScript module, or no checkpoint, gave a good first line and
/// then libtorch's C++ backtrace (25-30 `frame #N` lines).
#[test]
fn a_teacher_file_libtorch_cannot_read_gives_no_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let notes = write(dir.path(), "notes.txt", "some notes, not a model\n");
    let junk = write(dir.path(), "junk.ot", "junk\n");
    for (teacher, file, what) in [
        (
            format!("{{torchscript: {}}}", notes.display()),
            &notes,
            "cannot use the TorchScript teacher: not a TorchScript module torch.jit.load can read",
        ),
        (
            format!(
                "{{checkpoint: {}, model: {{arch: mlp, hidden: [64]}}}}",
                junk.display()
            ),
            &junk,
            "cannot load the teacher checkpoint",
        ),
    ] {
        let (o, _) = sweep_env(
            dir.path(),
            &with_teacher(&teacher, ""),
            &[],
            &[("RUST_BACKTRACE", "0")],
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("{}: {what}", file.display())),
            "{err}"
        );
        assert!(!err.contains("frame #"), "{err}");
        assert!(!err.contains("Exception raised from"), "{err}");
        assert!(err.lines().count() <= 3, "{err}");
    }
}

/// Case 5: `kd report` of an OUT where one shard of three ran (one that trained nothing: the
/// three students are one pack, shard 0's) said "There is no validation split
/// (`dataset.val_size: 0`)" and not that every planned trial was missing.
#[test]
fn a_report_of_one_shard_says_how_many_trials_are_missing_and_which_shards() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny("grid: {temperature: [2, 4]}\n");
    let (o, out) = sweep(dir.path(), &config, &["--shard", "1/3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = kd(
        &["report", out.to_str().unwrap()],
        &dir.path().join("cache"),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let said = "4 planned trial(s) have no result yet, of the 4 in";
    let shards = "Shard(s) 1/3 ran in this folder; shard(s) 0/3, 2/3 did not";
    for text in [said, shards, "--shard I/3"] {
        assert!(err.contains(text), "{err}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Trials without results"), "{report}");
    assert!(report.contains(said) && report.contains(shards), "{report}");
}

/// Case 6: `--set 'kd={alpha: 0.5}'` with a temperature grid suggested
/// `--set grid.temperature=[{alpha: 0.5}]`.
#[test]
fn a_set_of_a_mapping_holding_a_swept_key_suggests_its_keys_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let (o, _) = sweep(
        dir.path(),
        &tiny("grid: {temperature: [2, 4]}\n"),
        &["--set", "kd={alpha: 0.5, temperature: 3}", "--dry-run"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`kd` is a mapping that holds kd.temperature, which grid.temperature sweeps"),
        "{err}"
    );
    assert!(
        err.contains("set its keys one by one: --set kd.alpha=0.5 --set grid.temperature=[3]"),
        "{err}"
    );
    assert!(!err.contains("[{alpha"), "{err}");
}

/// Case 8: a 10 MB `name:` passed `--dry-run`, then failed with a 10 MB error line.
#[test]
fn a_long_name_is_refused_at_resolve_with_a_short_message() {
    let long = "n".repeat(10 << 20);
    let dir = tempfile::tempdir().unwrap();
    let (o, _) = sweep(
        dir.path(),
        &tiny("").replace("name: tiny", &format!("name: {long}")),
        &["--dry-run"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{}", &err[..err.len().min(500)]);
    assert!(err.len() < 500, "{} bytes", err.len());
    assert!(
        err.contains("name: 10485760 bytes long, at most 200"),
        "{err}"
    );
    assert!(err.contains("it starts \"nnnn"), "{err}");
}

/// Case 9: a garbage `plan.json` made `kd report` say "expected value at line 1 column 1".
#[test]
fn a_garbage_plan_file_names_itself_and_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep(dir.path(), &tiny("baseline: false\n"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let plan = out.join("plan.json");
    std::fs::write(&plan, "garbage").unwrap();
    let o = kd(
        &["report", out.to_str().unwrap()],
        &dir.path().join("cache"),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{}: not a plan kd can read", plan.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("mv {} {}.bad", plan.display(), plan.display())),
        "{err}"
    );
    // The way out works: moved aside, the frames are reported.
    std::fs::rename(&plan, out.join("plan.json.bad")).unwrap();
    let o = kd(
        &["report", out.to_str().unwrap()],
        &dir.path().join("cache"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// Case 10: `workers: 1000` printed a 28 KB header line, listing 1000 workers, though 3 start.
#[test]
fn many_workers_print_what_will_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny("pack: off\nworkers: 1000\ngrid: {temperature: [2, 4]}\n");
    let (o, _) = sweep(dir.path(), &config, &["--dry-run"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        text.contains("workers: 1000 requested; at most 3 start (one per student trial)"),
        "{text}"
    );
    let (o, _) = sweep(dir.path(), &config, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let longest = err.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 1000, "a line of {longest} bytes");
    assert!(err.contains("3 trials on 3 workers"), "{err}");
}

/// `omit_classes` that leave the students nothing was reported as `dataset.keep_classes: ...`,
/// a key the user did not write.
#[test]
fn omitting_every_class_names_omit_classes() {
    let (code, err) = sweep_exit(&tiny("").replace(
        "train_limit: 1000}",
        "train_limit: 1000, omit_classes: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}",
    ));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "dataset.omit_classes: leaves the students no training image; leave out fewer classes"
        ),
        "{err}"
    );
    assert!(!err.contains("keep_classes"), "{err}");
}
