//! CIFAR on a CPU: a small CIFAR-100 folder in the python layout (written with the venv's numpy,
//! as the published pickles are) and one in the binary layout, swept with the CIFAR recipe's
//! augmentation (crop 4 + flip, online teacher) and a multistep schedule.

mod common;

use std::path::Path;

use common::{records, stderr, sweep};
use kd_data::formats::{cifar_bin, cifar_py};

fn python() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
}

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
    let o = std::process::Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let safe = dir.path().join("teacher.safetensors");
    let o = std::process::Command::new(python())
        .arg(root.join("tools/pth_to_safetensors.py"))
        .args([&pth, &safe])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
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
