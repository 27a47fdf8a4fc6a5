//! Issue 37, items 1 to 3: every finished student's weights kept in `OUT/models/` (`save:`),
//! and `kd eval` on a kept file giving the record's test errors exactly: trained alone in
//! float32 and in bfloat16, trained in a pack (evaluated alone), the best validation epoch's
//! weights and the last; PyTorch's reference definitions (`experiments/reference/models.py`)
//! load the MLP and CNN files strictly and give the same errors; `kd export --format onnx`
//! (standardised or raw-pixel input) runs in onnxruntime with kd's logits to 1e-4 and the
//! same errors.

mod common;

use std::path::Path;

use common::*;
use kd_report::{Status, TrialRecord};

/// `kd eval FILE`: its exit code, stdout and stderr.
fn eval(file: &Path, cache: &Path) -> (i32, String, String) {
    let o = kd(&["eval", file.to_str().unwrap()], cache);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr(&o),
    )
}

/// The test errors a line `accuracy A% (E errors of N images)` gives.
fn errors_in(text: &str) -> u64 {
    let line = text.lines().find(|l| l.starts_with("accuracy ")).unwrap();
    let (_, rest) = line.split_once('(').unwrap();
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// The errors of `acc` on `r`'s test images.
fn errors_of(r: &TrialRecord, acc: f64) -> u64 {
    ((1.0 - acc) * r.test_images as f64).round() as u64
}

/// Every finished student of `out` has its file, and `kd eval` gives its record's errors for the
/// weights `save` keeps; the files' metadata epochs. PyTorch's reference definitions give the
/// same errors for float32 students when `pytorch`.
fn check_kept(out: &Path, cache: &Path, save: &str, pytorch: bool) -> Vec<TrialRecord> {
    let rows: Vec<TrialRecord> = records(out)
        .into_iter()
        .filter(|r| r.kind != kd_report::Kind::Teacher)
        .collect();
    assert!(!rows.is_empty());
    for r in &rows {
        assert_eq!(r.status, Status::Ok, "{r:?}");
        let rel = format!("models/{}.safetensors", r.trial_id);
        assert_eq!(r.model_file.as_deref(), Some(rel.as_str()));
        let file = out.join(&rel);
        let (code, text, err) = eval(&file, cache);
        assert_eq!(code, 0, "{text}{err}");
        let want = match save {
            "best" => errors_of(r, r.best_test_acc.unwrap()),
            _ => r.test_errors.unwrap(),
        };
        assert_eq!(errors_in(&text), want, "{}: {text}", r.trial_id);
        assert!(text.contains(": the same"), "{text}");
        let epoch = match save {
            "best" => r.best_epoch.unwrap(),
            _ => r.epochs,
        };
        assert!(
            text.contains(&format!("the {save} weights of epoch {epoch})")),
            "{text}"
        );
        if pytorch && r.precision.is_none() {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/reference/models.py");
            let o = std::process::Command::new(python())
                .args([script.as_os_str(), file.as_os_str()])
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success(), "{said}{}", stderr(&o));
            assert!(said.contains(&format!("errors {want} of 10000")), "{said}");
        }
    }
    rows
}

/// `kd export FILE --format onnx` (and `--pixels`) run in onnxruntime on the images `kd eval`
/// evaluated: its errors on `n` images, and its logits to 1e-4.
fn check_onnx(file: &Path, cache: &Path, n: usize) {
    let dump = file.with_extension("eval.safetensors");
    let o = kd(
        &[
            "eval",
            file.to_str().unwrap(),
            "--dump",
            dump.to_str().unwrap(),
        ],
        cache,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let errors = errors_in(&String::from_utf8_lossy(&o.stdout));
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/reference/onnx_run.py");
    for pixels in [false, true] {
        let mut args = vec!["export", file.to_str().unwrap(), "--format", "onnx"];
        if pixels {
            args.push("--pixels");
        }
        let o = kd(&args, cache);
        assert!(o.status.success(), "{}", stderr(&o));
        let onnx = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let o = std::process::Command::new(python())
            .args([script.as_os_str(), onnx.as_ref(), dump.as_os_str()])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{said}{}", stderr(&o));
        assert!(said.contains(&format!("errors {errors} of {n}")), "{said}");
        let diff: f64 = said.split_whitespace().last().unwrap().parse().unwrap();
        assert!(diff < 1e-4, "pixels {pixels}: {said}");
    }
}

/// Students trained alone, in float32 and bfloat16, with baselines; `save: best` (the default)
/// with `train.weights: last`: each file holds its best validation epoch's weights.
#[test]
fn students_alone_keep_their_best_epochs_weights_fp32_and_bf16() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(
        "pack: off\nseeds: [0]\nkd: {alpha: 0.9}\nbaseline: true\n\
         grid: {student.train.precision: [fp32, bf16]}\n",
    )
    .replace(
        "train: {epochs: 1, optimizer: adam, lr: 0.002}}\n",
        "train: {epochs: 4, optimizer: adam, lr: 0.01}}\n",
    );
    let (o, out) = sweep(dir.path(), &cfg, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = check_kept(&out, &dir.path().join("cache"), "best", true);
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().any(|r| r.precision.as_deref() == Some("bf16")));
    // A bf16 student's file holds bfloat16 tensors: half a float32 one's size, about.
    let size = |r: &TrialRecord| {
        std::fs::metadata(out.join(r.model_file.as_ref().unwrap()))
            .unwrap()
            .len()
    };
    let (bf16, fp32): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r.precision.is_some());
    assert!(
        size(bf16[0]) * 10 < size(fp32[0]) * 6,
        "{} vs {}",
        size(bf16[0]),
        size(fp32[0])
    );
}

/// Students trained in packs, float32 and bfloat16, each kept and evaluated alone; `save:
/// last`.
#[test]
fn packed_students_keep_their_last_weights_fp32_and_bf16() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(
        "seeds: [0, 1]\nkd: {alpha: 0.9}\nbaseline: true\nsave: last\n\
         grid: {temperature: [2, 4], student.train.precision: [fp32, bf16]}\n",
    )
    .replace(
        "train: {epochs: 1, optimizer: adam, lr: 0.002}}\n",
        "train: {epochs: 3, optimizer: adam, lr: 0.01}}\n",
    );
    let (o, out) = sweep(dir.path(), &cfg, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = check_kept(&out, &dir.path().join("cache"), "last", true);
    assert_eq!(rows.len(), 12);
    assert!(rows.iter().all(|r| r.exec == kd_report::Exec::Packed));
    let kd = rows
        .iter()
        .find(|r| r.kind == kd_report::Kind::Kd && r.precision.is_none())
        .unwrap();
    check_onnx(
        &out.join(kd.model_file.as_ref().unwrap()),
        &dir.path().join("cache"),
        10_000,
    );
}

/// A CNN student (`save: best`), read by PyTorch's reference `Cnn` too; `save: none` keeps
/// nothing.
#[test]
fn a_cnn_student_is_kept_and_save_none_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cnn = "student: {model: {arch: cnn, channels: [6], kernel: 3, fc: [16], dropout: 0.0}, \
               train: {epochs: 3, optimizer: adam, lr: 0.005}}\n";
    let cfg = tiny(&format!(
        "seeds: [0]\nkd: {{alpha: 0.5}}\nbaseline: false\n{cnn}"
    ));
    let cfg = cfg.replace(
        "student: {model: {arch: mlp, hidden: [32]}, train: {epochs: 1, optimizer: adam, lr: 0.002}}\n",
        "",
    );
    let (o, out) = sweep(dir.path(), &cfg, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = check_kept(&out, &dir.path().join("cache"), "best", true);
    check_onnx(
        &out.join(rows[0].model_file.as_ref().unwrap()),
        &dir.path().join("cache"),
        10_000,
    );
    // --fresh sets the earlier model (and its exports) aside with the earlier record.
    let (o, out) = sweep(dir.path(), &cfg, &["--fresh"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let replaced = std::fs::read_dir(out.join("replaced"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let id = &rows[0].trial_id;
    for name in [format!("{id}.safetensors"), format!("{id}.onnx")] {
        assert!(
            replaced.path().join("models").join(&name).exists(),
            "{name}"
        );
    }
    assert!(out.join(format!("models/{id}.safetensors")).exists());
    assert!(!out.join(format!("models/{id}.onnx")).exists());

    // A trial id names the file a `results/*/models/` here keeps (the sweep's OUT is one).
    std::fs::create_dir_all(dir.path().join("results")).unwrap();
    std::fs::rename(&out, dir.path().join("results/tiny")).unwrap();
    let by_id = |id: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kd"))
            .args(["eval", id])
            .current_dir(dir.path())
            .env("KD_CACHE_DIR", dir.path().join("cache"))
            .output()
            .unwrap()
    };
    let o = by_id(id);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(": the same"));
    let o = by_id("kd-000000000000");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no results/*/models/ here keeps"),
        "{}",
        stderr(&o)
    );

    let none = tempfile::tempdir().unwrap();
    let (o, out) = sweep(none.path(), &tiny("save: none\n"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!out.join("models").exists());
    assert!(records(&out).iter().all(|r| r.model_file.is_none()));
}

/// A kept file that was changed, or a safetensors file kd-sweep did not write, is refused with
/// the file's name and what is wrong (exit 2).
#[test]
fn a_damaged_or_foreign_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep(dir.path(), &tiny("seeds: [0]\n"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let cache = dir.path().join("cache");
    let r = &records(&out)
        .into_iter()
        .find(|r| r.model_file.is_some())
        .unwrap();
    let file = out.join(r.model_file.as_ref().unwrap());
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let (code, _, err) = eval(&file, &cache);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&r.trial_id) && err.contains("changed or damaged"),
        "{err}"
    );

    // A safetensors file of the teacher-checkpoint kind: no metadata.
    let foreign = dir.path().join("foreign.safetensors");
    tch::Tensor::write_safetensors(
        &[("w", tch::Tensor::zeros([2], tch::kind::FLOAT_CPU))],
        &foreign,
    )
    .unwrap();
    let (code, _, err) = eval(&foreign, &cache);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("foreign.safetensors") && err.contains("not a model kd-sweep kept"),
        "{err}"
    );
}

/// Every CIFAR family that exports (batch norm, residual sums and projections, depthwise
/// convolutions, global average pooling) as a student on synthetic 32x32 colour images, trained
/// two epochs so its batch-norm statistics have moved: kept, evaluated to its record, and
/// exported to ONNX with kd's logits.
#[test]
fn the_cifar_families_export_to_onnx_with_moved_batch_norm_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cifar-100-binary");
    let format = &kd_data::formats::cifar_bin::CIFAR100;
    kd_data::formats::cifar_bin::testing::write_bin_set(format, &bin, 300, 100);
    let cache = dir.path().join("cache");
    for (name, model, bn) in [
        (
            "resnet",
            "{arch: resnet, depth: 8, widths: [8, 8, 16, 32]}",
            "bn1",
        ),
        ("wrn", "{arch: wrn, depth: 10, widen: 1}", "bn1"),
        ("vgg", "{arch: vgg, depth: 8}", "block0.1"),
        ("mobilenetv2", "{arch: mobilenetv2, width: 0.25}", "conv1.1"),
        ("shufflev1", "{arch: shufflev1}", "bn1"),
        ("shufflev2", "{arch: shufflev2}", "bn1"),
    ] {
        let config = format!(
            "name: {name}-onnx\ndataset: {{name: cifar100, dir: {}, val_size: 100}}\n\
             device: cpu\nthreads: 1\nseeds: [0]\n\
             teacher: {{model: {{arch: cnn, channels: [8], fc: []}}, \
                        train: {{epochs: 1, batch_size: 64}}}}\n\
             student: {{model: {model}, train: {{epochs: 2, batch_size: 64, lr: 0.05}}}}\n\
             kd: {{temperature: 4, alpha: 0.9}}\nbaseline: false\n",
            dir.path().display()
        );
        let cfg = write(dir.path(), &format!("{name}.yaml"), &config);
        let out = dir.path().join(name);
        let o = kd(
            &[
                "sweep",
                cfg.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            &cache,
        );
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let rows = check_kept(&out, &cache, "best", false);
        let file = out.join(rows[0].model_file.as_ref().unwrap());
        // Its running variances are not their initial ones.
        let (_, tensors) = kd_runner::run::models::read(&file).unwrap();
        let key = format!("{bn}.running_var");
        let var = &tensors.iter().find(|(n, _)| *n == key).expect(&key).1;
        assert!(
            f64::try_from((var - 1.0).abs().max()).unwrap() > 1e-2,
            "{name}"
        );
        check_onnx(&file, &cache, 100);
    }
}
