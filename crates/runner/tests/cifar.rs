//! CIFAR on a CPU: a small CIFAR-100 folder in the python layout (written with the venv's numpy,
//! as the published pickles are) and one in the binary layout, swept with the CIFAR recipe's
//! augmentation (crop 4 + flip, online teacher) and a multistep schedule.

mod common;

use std::path::Path;

use common::{python, records, run_python, stderr, sweep};
use kd_data::formats::{cifar_bin, cifar_py};

fn config(dataset: &str) -> String {
    format!(
        "name: cifar-smoke\ndataset: {dataset}\ndevice: cpu\nthreads: 1\nseeds: [0]\n\
         teacher: {{model: {{arch: cnn, channels: [8, 16], fc: [32]}}, \
                    train: {{epochs: 2, batch_size: 64, crop: 4, flip: true, \
                             schedule: multistep, milestones: [1], gamma: 0.5}}}}\n\
         student: {{model: {{arch: mlp, hidden: [32]}}, \
                    train: {{epochs: 2, batch_size: 64, crop: 4, flip: true, \
                             schedule: multistep, milestones: [1]}}}}\n\
         kd: {{temperature: 4, alpha: 0.9}}\nbaseline: true\n"
    )
}

#[test]
fn a_cifar100_python_folder_sweeps_with_crop_flip_and_multistep() {
    let dir = tempfile::tempdir().unwrap();
    // torchvision's root: the distribution's folder inside the one named.
    let root = dir.path().join("data");
    cifar_py::testing::write_py_set(
        &cifar_py::CIFAR100,
        &python(),
        &root.join("cifar-100-python"),
        400,
        100,
        true,
    );
    let ds = format!("{{name: cifar100, dir: {}, val_size: 100}}", root.display());
    let (o, out) = sweep(dir.path(), &config(&ds), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = records(&out);
    assert_eq!(rows.len(), 3, "teacher, baseline, KD");
    for r in &rows {
        assert_eq!(r.dataset, "cifar100");
        assert_eq!(
            (r.train_images, r.val_images, r.test_images),
            (300, 100, 100)
        );
        assert_eq!(r.augment.as_deref(), Some("crop4+flip"), "{}", r.trial_id);
    }
    let teacher = rows
        .iter()
        .find(|r| r.kind == kd_report::Kind::Teacher)
        .unwrap();
    assert_eq!(teacher.schedule, "multistep 1 x0.5");
    // conv 3->8 and 8->16 (3x3), 16*8*8 -> 32 -> 100.
    assert_eq!(
        teacher.params,
        (3 * 8 * 9 + 8) + (8 * 16 * 9 + 16) + (1024 * 32 + 32) + (32 * 100 + 100)
    );
    let kd = rows.iter().find(|r| r.kind == kd_report::Kind::Kd).unwrap();
    assert_eq!(kd.schedule, "multistep 1 x0.1", "gamma's default");
    assert_eq!(kd.teacher_mode.as_deref(), Some("online"));
    // 3x32x32 inputs, 100 classes: 3072*32+32 + 32*100+100.
    assert_eq!(kd.params, 101_636);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("augmented on the device (crop4+flip"),
        "{report}"
    );
}

#[test]
fn the_binary_layout_reads_the_same_images_and_a_missing_folder_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cifar-10-batches-bin");
    cifar_bin::testing::write_bin_set(&cifar_bin::CIFAR10, &bin, 250, 50);
    let ds = format!("{{name: cifar10, dir: {}, val_size: 50}}", bin.display());
    let (o, out) = sweep(dir.path(), &config(&ds), &["--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(plan.contains("cifar10"), "{plan}");
    let _ = out;

    let missing = format!(
        "{{name: cifar10, dir: {}, val_size: 50}}",
        dir.path().join("none").display()
    );
    let (o, _) = sweep(dir.path(), &config(&missing), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("none/data_batch_1: not found"), "{err}");
    assert!(err.contains("kd download cifar10"), "{err}");
}

#[test]
fn a_resnet_teacher_and_student_train_on_cifar_with_batchnorm() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cifar-100-binary");
    cifar_bin::testing::write_bin_set(&cifar_bin::CIFAR100, &bin, 300, 100);
    let config = format!(
        "name: resnet-smoke\ndataset: {{name: cifar100, dir: {}, val_size: 100}}\ndevice: cpu\n\
         threads: 1\nseeds: [0]\n\
         teacher: {{model: {{arch: resnet, depth: 8, widths: [8, 8, 16, 32]}}, \
                    train: {{epochs: 1, batch_size: 64, lr: 0.05, weight_decay: 5e-4}}}}\n\
         student: {{model: {{arch: resnet, depth: 8}}, \
                    train: {{epochs: 1, batch_size: 64, lr: 0.05, weight_decay: 5e-4, crop: 4, flip: true}}}}\n\
         kd: {{soft_loss: dkd, alpha: 1, beta: 1, dkd: {{warmup: 1}}}}\nbaseline: true\n",
        dir.path().display()
    );
    let (o, out) = sweep(dir.path(), &config, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = records(&out);
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(
            r.status,
            kd_report::Status::Ok,
            "{}: {:?}",
            r.trial_id,
            r.message
        );
        assert_eq!(r.arch, "resnet");
        assert!(r.test_acc.is_some());
    }
    let kd = rows.iter().find(|r| r.kind == kd_report::Kind::Kd).unwrap();
    assert_eq!((kd.hidden.as_str(), kd.params), ("resnet8", 83_892));
    let teacher = rows
        .iter()
        .find(|r| r.kind == kd_report::Kind::Teacher)
        .unwrap();
    assert_eq!(teacher.hidden, "resnet8-8-8-16-32");
}

#[test]
fn a_pytorch_teacher_checkpoint_is_used_and_a_wrong_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cifar-100-binary");
    cifar_bin::testing::write_bin_set(&cifar_bin::CIFAR100, &bin, 200, 50);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let pth = dir.path().join("teacher.pth");
    let script = format!(
        "import sys, torch\nsys.path.insert(0, {:?})\nimport cifar_zoo\ntorch.manual_seed(0)\n\
         m = cifar_zoo.ResNet(8, [8, 8, 16, 32], num_classes=100)\n\
         torch.save({{'model': m.state_dict(), 'epoch': 240}}, {:?})",
        root.join("crates/model-zoo/tests/reference")
            .display()
            .to_string(),
        pth.display().to_string()
    );
    run_python(&["-c", &script]);
    let safe = dir.path().join("teacher.safetensors");
    run_python(&[
        root.join("tools/pth_to_safetensors.py"),
        pth.clone(),
        safe.clone(),
    ]);
    let config = |widths: &str| {
        format!(
            "name: ckpt\ndataset: {{name: cifar100, dir: {}, val_size: 50}}\ndevice: cpu\n\
             threads: 1\nseeds: [0]\nbaseline: false\n\
             teacher: {{checkpoint: {}, model: {{arch: resnet, depth: 8, widths: {widths}}}}}\n\
             student: {{model: {{arch: mlp, hidden: [16]}}, train: {{epochs: 1}}}}\n",
            bin.display(),
            safe.display()
        )
    };
    let (o, out) = sweep(dir.path(), &config("[8, 8, 16, 32]"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("teacher: loaded"), "{}", stderr(&o));
    let rows = records(&out);
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.status == kd_report::Status::Ok));

    let (o, _) = sweep(dir.path(), &config("[8, 8, 16, 64]"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("teacher.safetensors: cannot load the teacher checkpoint: tensor `"),
        "{err}"
    );
    assert!(
        err.contains("`fc.weight` has shape [100, 32], the model's is [100, 64]"),
        "{err}"
    );
}

#[test]
fn a_torchscript_teacher_teaches_cached_and_online_and_its_file_is_in_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cifar-100-binary");
    cifar_bin::testing::write_bin_set(&cifar_bin::CIFAR100, &bin, 200, 50);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let export = |file: &Path, seed: u32| {
        let script = format!(
            "import sys, torch\nsys.path.insert(0, {:?})\nimport cifar_zoo\ntorch.manual_seed({seed})\n\
             m = cifar_zoo.ResNet(8, [8, 8, 16, 32], num_classes=100).eval()\n\
             torch.jit.trace(m, torch.randn(2, 3, 32, 32)).save({:?})",
            root.join("crates/model-zoo/tests/reference")
                .display()
                .to_string(),
            file.display().to_string()
        );
        run_python(&["-c", &script]);
    };
    let pt = dir.path().join("teacher.pt");
    export(&pt, 0);
    let config = |teacher: &str| {
        format!(
            "name: scripted\ndataset: {{name: cifar100, dir: {}, val_size: 50}}\ndevice: cpu\n\
             threads: 1\nseeds: [0]\nbaseline: false\nteacher: {teacher}\n\
             student: {{model: {{arch: mlp, hidden: [16]}}, train: {{epochs: 1}}}}\n\
             grid: {{student.train.flip: [false, true]}}\n",
            bin.display(),
        )
    };
    let good = config(&format!("{{torchscript: {}}}", pt.display()));
    let (o, out) = sweep(dir.path(), &good, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("teacher: loaded TorchScript"),
        "{}",
        stderr(&o)
    );
    let rows = records(&out);
    assert_eq!(rows.len(), 3, "teacher and two KD students");
    assert!(rows.iter().all(|r| r.status == kd_report::Status::Ok));
    let teacher = rows
        .iter()
        .find(|r| r.kind == kd_report::Kind::Teacher)
        .unwrap();
    assert_eq!(
        (
            teacher.arch.as_str(),
            teacher.hidden.as_str(),
            teacher.epochs
        ),
        ("torchscript", "teacher.pt", 0)
    );
    // resnet8 with widths 8, 8, 16, 32 for 100 classes (`cifar_zoo.py`'s count).
    assert_eq!(teacher.params, 22_924);
    let modes: Vec<_> = rows
        .iter()
        .filter_map(|r| r.teacher_mode.as_deref())
        .collect();
    assert!(
        modes.contains(&"online") && modes.contains(&"cached"),
        "{modes:?}"
    );

    // Other weights in the same file name: another teacher id, and the students' ids with it.
    let (o, _) = sweep(dir.path(), &good, &["--dry-run"]);
    let before = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(before.contains(&teacher.trial_id), "{before}");
    export(&pt, 1);
    let (o, _) = sweep(dir.path(), &good, &["--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let after = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(!after.contains(&teacher.trial_id), "{after}");
    assert!(after.contains("torchscript"), "{after}");

    // With a model of its own, or a file that is not TorchScript: exit 2, naming what.
    let both = config(&format!(
        "{{torchscript: {}, model: {{arch: cnn}}}}",
        pt.display()
    ));
    let (o, _) = sweep(dir.path(), &both, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("teacher.model: not used with teacher.torchscript"),
        "{}",
        stderr(&o)
    );
    let bad = dir.path().join("bad.pt");
    std::fs::write(&bad, b"PK not really").unwrap();
    let (o, _) = sweep(
        dir.path(),
        &config(&format!("{{torchscript: {}}}", bad.display())),
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("bad.pt: cannot use the TorchScript teacher: not a TorchScript module"),
        "{err}"
    );
}

/// `experiments/cifar100/smoke.yaml` as shipped, on a small CIFAR-100 folder: a resnet teacher,
/// the four objectives of the CIFAR benchmark configs (KD, DKD, KD + logit standardisation,
/// DIST) at their papers' weights in one `kd` grid axis, and one paired baseline. Every row
/// finishes, says its objective, and the report compares the objectives in one table against
/// the same baseline.
#[test]
fn the_shipped_cifar_smoke_config_compares_the_objectives_with_one_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cifar-100-binary");
    cifar_bin::testing::write_bin_set(&cifar_bin::CIFAR100, &bin, 300, 100);
    let config =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/cifar100/smoke.yaml");
    let out = dir.path().join("out");
    let set = format!("dataset.dir={}", bin.display());
    let o = common::kd(
        &[
            "sweep",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--set",
            &set,
        ],
        &dir.path().join("cache"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = records(&out);
    assert_eq!(rows.len(), 6, "teacher, baseline and four KD students");
    for r in &rows {
        assert_eq!(
            r.status,
            kd_report::Status::Ok,
            "{}: {:?}",
            r.trial_id,
            r.message
        );
        assert!(r.test_acc.is_some());
    }
    let baseline = rows
        .iter()
        .find(|r| r.kind == kd_report::Kind::Baseline)
        .unwrap();
    let kd: Vec<_> = rows
        .iter()
        .filter(|r| r.kind == kd_report::Kind::Kd)
        .collect();
    assert!(kd
        .iter()
        .all(|r| r.baseline_id.as_deref() == Some(baseline.trial_id.as_str())));
    assert!(kd
        .iter()
        .all(|r| r.teacher_mode.as_deref() == Some("online")));
    let losses: Vec<&str> = kd.iter().map(|r| r.loss.as_deref().unwrap()).collect();
    let want = [
        "0.9 * T^2 (= 16) * KL(p_T || q_T) at T = 4 + 0.1 * CE(y, q_1)",
        "min(epoch / 20, 1) * 1 * T^2 (= 16) * (1 * TCKD + 8 * NCKD) at T = 4 + 1 * CE(y, q_1)",
        "9 * T^2 (= 4) * KL(p_T || q_T) at T = 2 on z-scored logits + 0.1 * CE(y, q_1)",
        "1 * T^2 (= 16) * (2 * inter + 2 * intra)(y_s, y_t) at T = 4 + 1 * CE(y, q_1)",
    ];
    assert_eq!(losses, want);
    // The swept objective is a column of its own, written out.
    let swept: Vec<String> = kd
        .iter()
        .map(|r| {
            r.swept
                .iter()
                .find(|(k, _)| k == "kd")
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(swept, ["KD", "DKD", "KD+LS", "DIST"]);
    // One table of gains, each objective against the same baseline, labelled by its name.
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let gains = report
        .split("## Distillation against the hard-target-only baseline")
        .nth(1)
        .unwrap();
    for name in ["KD", "DKD", "KD+LS", "DIST"] {
        assert!(
            gains.contains(&format!("kd={name} |")),
            "{name} in the gains table:\n{report}"
        );
    }
    // The dry run counts the online teacher's forward passes in each KD student's cost.
    let o = common::kd(
        &[
            "sweep",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--set",
            &set,
            "--dry-run",
        ],
        &dir.path().join("cache"),
    );
    let plan = String::from_utf8_lossy(&o.stdout).into_owned();
    let online = plan
        .lines()
        .filter(|l| l.ends_with("(with the online teacher)"));
    assert_eq!(online.count(), 4, "{plan}");
    // The claims find their cells by those names.
    let claims = report.split("## Claims").nth(1).unwrap();
    assert_eq!(claims.matches("PASS").count(), 2, "{claims}");
}
