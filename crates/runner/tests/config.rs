//! Config fixtures: good YAML resolves to the documented defaults; bad YAML names its key.

use std::path::Path;

use kd_loss::SoftLoss;
use kd_model_zoo::Init;
use kd_model_zoo::{CnnSpec, MlpSpec, ModelSpec};
use kd_runner::config::{self, value_text, Optimizer, Resolved, Schedule};

fn resolve(yaml: &str) -> Result<Resolved, String> {
    config::parse(yaml, Path::new("test.yaml"))
        .and_then(|raw| raw.resolve())
        .map_err(|e| e.to_string())
}

fn err(yaml: &str) -> String {
    resolve(yaml).expect_err("config should be rejected")
}

/// The schema exactly as the issue writes it.
const FULL: &str = r#"
name: temp                      # OUT defaults to results/<name>/
dataset:
  name: fashion-mnist           # fashion-mnist | mnist | idx
  dir: null                     # folder holding the four IDX files; default by name
  val_size: 5000                # held out of train, fixed by data_seed
  train_limit: null             # keep only the first N training images (quick runs)
  data_seed: 0
  transfer_fraction: 1.0        # share of the training images the students learn from
device: auto                    # auto | all | cpu | cuda | cuda:N | [cuda:0, cuda:1]
workers: null                   # trials at once, a process each; null = one per device
seeds: [0]                      # student seeds: every KD trial and baseline repeats per seed
teacher:
  seed: 0                       # one teacher for all students
  checkpoint: null              # a saved teacher instead of training one
  model: {arch: mlp, hidden: [1200, 1200], dropout: 0.5, input_dropout: 0.2}
  train: {epochs: 20, batch_size: 128, optimizer: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.0, schedule: cosine}
student:
  model: {arch: mlp, hidden: [800, 800], dropout: 0.0, input_dropout: 0.0}
  train: {epochs: 15, batch_size: 128, optimizer: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.0, schedule: cosine, test_every: best, crop: 0, flip: false, precision: fp32, cudnn_benchmark: false}
kd: {temperature: 4, alpha: 0.9, beta: null, soft_loss: ce, t2_scaling: true, standardise: false}   # soft_loss: ce | kl | mse_logits | dkd | dist
baseline: true                  # also train the student on hard targets only (alpha 0, beta 1)
"#;

#[test]
fn the_documented_schema_equals_the_defaults() {
    let full = resolve(FULL).unwrap();
    let minimal = resolve("name: temp").unwrap();
    assert_eq!(full, minimal, "every value in the schema is its default");
    assert_eq!(full.device, ["auto"]);
    assert_eq!(full.seeds, [0]);
    assert_eq!(full.dataset.val_size, 5000);
    assert_eq!(
        full.teacher.model,
        ModelSpec::Mlp(MlpSpec {
            hidden: vec![1200, 1200],
            dropout: 0.5,
            input_dropout: 0.2,
            init: Init::Torch,
        })
    );
    assert_eq!(full.student.train.epochs, 15);
    assert_eq!(full.teacher.train.epochs, 20);
    assert_eq!(full.student.train.optimizer, Optimizer::Sgd);
    assert_eq!(full.student.train.schedule, Schedule::Cosine);
    assert_eq!(full.kd.temperature, 4.0);
    assert!(
        (full.kd.beta - 0.1).abs() < 1e-12,
        "beta defaults to 1 - alpha"
    );
    assert_eq!(full.kd.soft_loss, SoftLoss::Ce);
    assert!(full.kd.t2_scaling && full.baseline);
}

#[test]
fn resolved_yaml_round_trips() {
    let r = resolve(FULL).unwrap();
    let back: Resolved = serde_yaml::from_str(&r.to_yaml()).unwrap();
    assert_eq!(back, r);
}

#[test]
fn cnn_keys_and_defaults() {
    let r = resolve(
        "name: x\nteacher:\n  model: {arch: cnn, channels: [16, 32]}\n  train: {optimizer: adam}",
    )
    .unwrap();
    assert_eq!(
        r.teacher.model,
        ModelSpec::Cnn(CnnSpec {
            channels: vec![16, 32],
            kernel: 3,
            fc: vec![256],
            dropout: 0.5,
            init: Init::Torch,
            channels_last: false,
        })
    );
    assert_eq!(r.teacher.train.lr, 1e-3, "adam's default lr");
}

#[test]
fn explicit_beta_and_kl_and_device_list() {
    let r = resolve("name: x\nkd: {alpha: 0.5, beta: 0.2, soft_loss: kl, t2_scaling: false}\ndevice: [cuda:0, cuda:1]").unwrap();
    assert_eq!((r.kd.alpha, r.kd.beta), (0.5, 0.2));
    assert_eq!(r.kd.soft_loss, SoftLoss::Kl);
    assert!(!r.kd.t2_scaling);
    assert_eq!(r.device, ["cuda:0", "cuda:1"]);
}

#[test]
fn device_all_takes_every_visible_gpu_and_refuses_none() {
    use kd_runner::config::expand_all;
    assert_eq!(
        expand_all(3, Some("2,5,7")).unwrap(),
        ["cuda:0", "cuda:1", "cuda:2"]
    );
    let e = expand_all(0, Some("")).unwrap_err().to_string();
    assert!(
        e.starts_with("device: `all` takes every visible GPU"),
        "{e}"
    );
    assert!(e.contains("CUDA_VISIBLE_DEVICES=)"), "{e}");
    assert!(expand_all(0, None)
        .unwrap_err()
        .to_string()
        .contains("=unset"));
    // On this machine: one worker per visible GPU, or the error above.
    let n = tch::Cuda::device_count() as usize;
    match resolve("name: x\ndevice: all\n") {
        Ok(r) => {
            assert_eq!(r.device.len(), n);
            assert_eq!(r.workers, n);
        }
        Err(e) => {
            assert_eq!(n, 0);
            assert!(e.contains("`all` takes every visible GPU"), "{e}");
        }
    }
    let e = err("name: x\ndevice: [all]\n");
    assert!(e.contains("device[0]: `all` is not a device"), "{e}");
}

#[test]
fn unknown_top_level_key_names_key_and_line() {
    let e = err("name: x\nbaseline: true\ntemprature: 4\n");
    assert!(e.contains("unknown field `temprature`"), "{e}");
    assert!(e.contains("line 3"), "{e}");
    assert!(e.starts_with("test.yaml: "), "{e}");
}

#[test]
fn unknown_nested_key_names_its_path() {
    let e = err("name: x\nteacher:\n  model:\n    arch: mlp\n    widthz: [3]\n");
    assert!(e.contains("teacher.model"), "{e}");
    assert!(e.contains("unknown field `widthz`"), "{e}");
    assert!(e.contains("line 5"), "{e}");
    // An objective's own block (declared in its file in the loss crate) is checked the same.
    let e = err("name: x\nkd:\n  soft_loss: dkd\n  dkd:\n    nckk: 2\n");
    assert!(
        e.contains("kd.dkd: unknown field `nckk`, expected one of `tckd`, `nckd`, `warmup`"),
        "{e}"
    );
    assert!(e.contains("line 5"), "{e}");
    let e = err("name: x\nkd:\n  dks: {nckd: 2}\n");
    assert!(
        e.contains("kd: unknown field `dks`, expected one of"),
        "{e}"
    );
    assert!(e.contains("`dkd`, `dist`"), "{e}");
}

#[test]
fn yaml_syntax_error_names_the_line() {
    let e = err("name: x\nkd: {temperature: 4\nseeds: [0]\n");
    assert!(e.starts_with("test.yaml: "), "{e}");
    assert!(e.contains("line"), "{e}");
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        ("kd: {temperature: 0}", "kd.temperature: must be > 0, got 0"),
        (
            "kd: {temperature: -1}",
            "kd.temperature: must be > 0, got -1",
        ),
        (
            "kd: {alpha: 1.5}",
            "kd.alpha: must be in [0, 1] while kd.beta is unset (beta defaults to 1 - alpha); \
             got 1.5: set kd.beta too for a free weight",
        ),
        (
            "kd: {alpha: -0.1}",
            "kd.alpha: must be in [0, 1] while kd.beta is unset",
        ),
        ("kd: {alpha: -1, beta: 1}", "kd.alpha: must be >= 0, got -1"),
        (
            "student: {train: {test_every: 0}}",
            "student.train.test_every: must be `best` (the test split at the best validation",
        ),
        (
            "teacher: {train: {test_every: worst}}",
            "teacher.train.test_every: must be `best`",
        ),
        ("kd: {beta: -1}", "kd.beta: must be >= 0, got -1"),
        (
            "kd: {alpha: 0, beta: 0}",
            "kd.beta: alpha and beta are both 0",
        ),
        (
            "kd: {soft_loss: js}",
            "kd.soft_loss: unknown soft loss `js`",
        ),
        (
            "student: {train: {epochs: 0}}",
            "student.train.epochs: must be > 0, got 0",
        ),
        (
            "teacher: {train: {batch_size: 0}}",
            "teacher.train.batch_size: must be > 0",
        ),
        (
            "student: {train: {lr: 0}}",
            "student.train.lr: must be > 0, got 0",
        ),
        (
            "student: {train: {optimizer: lbfgs}}",
            "student.train.optimizer: unknown optimizer `lbfgs`",
        ),
        (
            "student: {train: {schedule: step}}",
            "student.train.schedule: unknown schedule `step`",
        ),
        (
            "kd: {soft_loss: mse_logits, standardise: true}",
            "kd.standardise: logit standardisation z-scores logits before the tempered softmax; soft_loss mse_logits has none",
        ),
        (
            "kd: {soft_loss: dkd, dkd: {nckd: -8}}",
            "kd.dkd.nckd: must be >= 0, got -8",
        ),
        (
            "kd: {soft_loss: dist, dist: {inter: .nan}}",
            "kd.dist.inter: must be >= 0, got NaN",
        ),
        (
            "student: {train: {label_smoothing: 1}}",
            "student.train.label_smoothing: must be in [0, 1) (0.1 is usual), got 1",
        ),
        (
            "student: {train: {schedule: multistep}}",
            "student.train.milestones: required with schedule: multistep",
        ),
        (
            "student: {train: {epochs: 10, schedule: multistep, milestones: [5, 3]}}",
            "student.train.milestones: must increase, got 5 then 3",
        ),
        (
            "student: {train: {epochs: 10, schedule: multistep, milestones: [10]}}",
            "student.train.milestones: 10 is not between 1 and 9 (epochs: 10)",
        ),
        (
            "student: {train: {epochs: 10, schedule: multistep, milestones: [5], gamma: 2}}",
            "student.train.gamma: must be in (0, 1], got 2",
        ),
        (
            "teacher: {train: {milestones: [5]}}",
            "teacher.train.milestones: only with schedule: multistep (the schedule is cosine)",
        ),
        (
            "student: {train: {crop: 4, jitter: 2}}",
            "student.train.crop: and train.jitter both shift the images; use one",
        ),
        (
            "student: {train: {crop: 17}}",
            "student.train.crop: must be at most 16 pixels",
        ),
        (
            "student: {model: {hidden: [800, 0]}}",
            "student.model.hidden[1]: must be > 0, got 0",
        ),
        (
            "student: {model: {dropout: 1.0}}",
            "student.model.dropout: must be in [0, 1), got 1",
        ),
        (
            "teacher: {model: {arch: mlp, channels: [8]}}",
            "teacher.model.channels: not a key of arch `mlp`",
        ),
        (
            "teacher: {model: {arch: cnn, hidden: [8]}}",
            "teacher.model.hidden: not a key of arch `cnn`",
        ),
        (
            "teacher: {model: {arch: cnn, kernel: 4}}",
            "teacher.model.kernel: must be odd and > 0, got 4",
        ),
        (
            "teacher: {model: {arch: cnn, channels: []}}",
            "teacher.model.channels: must not be empty",
        ),
        (
            "teacher: {model: {arch: vit}}",
            "teacher.model.arch: unknown architecture `vit`",
        ),
        (
            "dataset: {name: cifar}",
            "dataset.name: unknown dataset `cifar`",
        ),
        (
            "dataset: {name: idx}",
            "dataset.dir: required when dataset.name is idx",
        ),
        (
            "dataset: {train_limit: 0}",
            "dataset.train_limit: must be > 0",
        ),
        (
            "dataset: {transfer_fraction: 0}",
            "dataset.transfer_fraction: must be in (0, 1]",
        ),
        (
            "dataset: {transfer_fraction: 1.5}",
            "dataset.transfer_fraction: must be in (0, 1]",
        ),
        ("workers: 0", "workers: must be > 0"),
        ("device: gpu", "device: `gpu` is not a device"),
        ("device: [cpu, tpu]", "device[1]: `tpu` is not a device"),
        ("device: []", "device: the list is empty"),
        ("seeds: []", "seeds: the list is empty"),
        ("seeds: [1, 2, 1]", "seeds[2]: 1 appears twice"),
        ("threads: 0", "threads: must be > 0"),
        (
            "student: {train: {precision: tf32}}",
            "student.train.precision: tf32 is not offered",
        ),
        (
            "student: {train: {precision: fp16}}",
            "student.train.precision: unknown precision `fp16` (known: fp32, bf16)",
        ),
        (
            "student: {train: {precision: bf16, max_norm: 3}}",
            "student.train.precision: bf16 and train.max_norm do not combine",
        ),
        (
            "device: cpu\nteacher: {train: {cudnn_benchmark: true}}",
            "teacher.train.cudnn_benchmark: needs a CUDA device: cuDNN does not run on the CPU \
             (device: cpu)",
        ),
    ];
    for (yaml, want) in cases {
        let e = err(&format!("name: x\n{yaml}\n"));
        assert!(e.starts_with(want), "{yaml}\n  got:  {e}\n  want: {want}");
    }
}

#[test]
fn negative_width_is_a_typed_error_with_line() {
    let e = err("name: x\nstudent:\n  model: {hidden: [-3]}\n");
    assert!(e.contains("student.model.hidden"), "{e}");
    assert!(e.contains("line 3"), "{e}");
}

#[test]
fn bad_names_are_rejected() {
    assert!(err("name: ''").starts_with("name:"));
    assert!(err("name: a/b").starts_with("name:"));
}

fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

#[test]
fn every_shipped_experiment_resolves() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    let mut names = std::collections::HashSet::new();
    for path in &files {
        let cfg = config::load(path)
            .and_then(|raw| raw.resolve())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            names.insert(cfg.name.clone()),
            "two experiments named {}",
            cfg.name
        );
    }
    // Hinton et al. 2015: six experiments, each in an MNIST and a Fashion-MNIST version, each
    // with claims.
    for (version, first) in [("mnist", "hinton_mnist"), ("fashion", "hinton_fashion")] {
        let dir = dir.join("hinton2015").join(version);
        for name in [
            first,
            "size_vs_temperature",
            "omit_class",
            "keep_two",
            "few_data",
            "logit_matching",
        ] {
            let p = dir.join(format!("{name}.yaml"));
            let cfg = config::load(&p)
                .and_then(|raw| raw.resolve())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(!cfg.expect.is_empty(), "{}: no claims", p.display());
        }
    }
}

/// The CIFAR-100 benchmark configs (they need a GPU and the data, so only resolution is tested
/// here): each resolves; each benchmark pair (not the ensemble) compares the four objectives with a paired baseline in one grid at its
/// paper's weights, and states the published numbers as claims, listed here.
#[test]
fn every_cifar100_experiment_resolves_and_lists_its_claims() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/cifar100");
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    files.sort();
    let mut pairs = 0;
    for path in &files {
        let cfg = config::load(path)
            .and_then(|raw| raw.resolve())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let what = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(cfg.dataset.name.as_str(), "cifar100", "{what}");
        // The two-teacher ensemble is no benchmark pair: one objective (tests/ensemble.rs).
        if cfg.ensemble.is_some() {
            assert!(cfg.baseline && !cfg.expect.is_empty(), "{what}");
            continue;
        }
        let objectives: Vec<String> = cfg
            .cells
            .iter()
            .map(|c| {
                let k = &c.kd;
                format!(
                    "{:?} T={} a={} b={}{}",
                    k.soft_loss,
                    k.temperature,
                    k.alpha,
                    k.beta,
                    if k.standardise { " +LS" } else { "" }
                )
            })
            .collect();
        // KD+LS at its published base temperature: 3 for the vgg13 teacher, 2 elsewhere.
        let ls = if what.starts_with("vgg13_") {
            "Kl T=3 a=9 b=0.1 +LS"
        } else {
            "Kl T=2 a=9 b=0.1 +LS"
        };
        assert_eq!(
            objectives,
            [
                "Kl T=4 a=0.9 b=0.1",
                "Dkd T=4 a=1 b=1",
                ls,
                "Dist T=4 a=1 b=1"
            ],
            "{what}"
        );
        assert!(cfg.baseline, "{what}");
        if what == "smoke.yaml" {
            continue;
        }
        pairs += 1;
        let train = &cfg.student.train;
        assert_eq!(
            (
                train.epochs,
                train.batch_size,
                train.milestones.clone(),
                train.crop,
                train.flip
            ),
            (240, 64, vec![150, 180, 210], 4, true),
            "{what}: RepDistiller's recipe"
        );
        assert!(
            cfg.teacher.checkpoint.is_some(),
            "{what}: a published teacher"
        );
        assert!(cfg.expect.len() >= 5, "{what}: {} claims", cfg.expect.len());
        eprintln!("{what}:");
        for c in &cfg.expect {
            eprintln!("  {}", serde_json::to_string(c).unwrap());
        }
    }
    assert_eq!(pairs, 10, "the RepDistiller pairs");
}

#[test]
fn class_filters_jitter_and_claims_are_validated() {
    assert!(
        err("name: x\ndataset: {omit_classes: [3], keep_classes: [7]}")
            .starts_with("dataset.keep_classes:")
    );
    assert!(err("name: x\ndataset: {omit_classes: [3, 3]}").starts_with("dataset.omit_classes[1]:"));
    assert!(err("name: x\nstudent: {train: {jitter: 9}}").starts_with("student.train.jitter:"));
    for bad in ["0", "-1", ".nan", ".inf"] {
        let e = err(&format!("name: x\nteacher: {{train: {{max_norm: {bad}}}}}"));
        assert!(
            e.starts_with("teacher.train.max_norm: must be > 0"),
            "{bad}: {e}"
        );
    }
    let r = resolve("name: x\nteacher: {train: {max_norm: 3.5}}").unwrap();
    assert_eq!(r.teacher.train.max_norm, Some(3.5));
    assert_eq!(r.student.train.max_norm, None);
    // Unset, it is not in the serialised recipe (so ids made before it existed stay).
    assert!(!serde_yaml::to_string(&r.student.train)
        .unwrap()
        .contains("max_norm"));
    assert!(serde_yaml::to_string(&r.teacher.train)
        .unwrap()
        .contains("max_norm: 3.5"));
    let e = err("name: x\nexpect:\n  - {claim: best_temprature_in, range: [1, 2]}");
    assert!(
        e.starts_with("expect[0]:") && e.contains("best_temperature_in"),
        "{e}"
    );
    let e = err("name: x\nexpect:\n  - {claim: flat_above, temperature: 8}");
    assert!(
        e.starts_with("expect[0]:") && e.contains("tolerance"),
        "{e}"
    );
    let e = err("name: x\nexpect:\n  - {claim: reference, select: {kind: kd}, metric: acc, value: 1, tolerance: 1}");
    assert!(
        e.starts_with("expect[0]:") && e.contains("unknown metric `acc`"),
        "{e}"
    );
    let e = err("name: x\nexpect:\n  - {claim: errors_at_most, select: {colour: red}, errors: 1}");
    assert!(e.contains("unknown column `colour`"), "{e}");
    let e = err("name: x\nexpect:\n  - {claim: best_temperature_in, range: [4, 2]}");
    assert!(e.contains("range"), "{e}");
    let e = err("name: x\nexpect:\n  - {claim: gain_at_least, points: 1, extra: 2}");
    assert!(e.starts_with("expect[0]:") && e.contains("extra"), "{e}");
}

const GRID: &str =
    "name: g\nseeds: [0, 1]\ngrid:\n  temperature: [1, 2, 4]\n  hidden: [[800, 800], [30, 30]]\n";

#[test]
fn grid_expands_to_the_cartesian_product_times_seeds() {
    let r = resolve(GRID).unwrap();
    assert_eq!(r.cells.len(), 6);
    assert_eq!(r.grid[0].key, "kd.temperature");
    assert_eq!(r.grid[1].key, "student.model.hidden");
    // Last axis fastest.
    let swept: Vec<String> = r
        .cells
        .iter()
        .map(|c| {
            format!(
                "{}/{}",
                value_text(&c.swept[0].1),
                value_text(&c.swept[1].1)
            )
        })
        .collect();
    assert_eq!(
        swept,
        [
            "1/800-800",
            "1/30-30",
            "2/800-800",
            "2/30-30",
            "4/800-800",
            "4/30-30"
        ]
    );
    assert_eq!(r.cells[3].kd.temperature, 2.0);
}

#[test]
fn grid_errors_name_the_axis_and_index() {
    let cases = [
        (
            "grid: {temperature: [1, 2, -1]}",
            "grid.temperature[2]: must be > 0, got -1",
        ),
        (
            "grid: {alpha: [0.5, 1.5]}",
            "grid.alpha[1]: must be in [0, 1] while kd.beta is unset",
        ),
        (
            "grid: {temperature: []}",
            "grid.temperature: the list is empty",
        ),
        ("grid: {temperature: 4}", "grid.temperature: must be a list"),
        (
            "grid: {teacher.train.lr: [0.1]}",
            "grid.teacher.train.lr: not a grid key",
        ),
        (
            "grid: {hidden: [[10, 0]]}",
            "grid.hidden[0]: student.model.hidden[1]: must be > 0",
        ),
        (
            "grid: {student.train.epochs: [0]}",
            "grid.student.train.epochs[0]: must be > 0, got 0",
        ),
        (
            "grid: {student.train.lrr: [0.1]}",
            "grid.student.train.lrr[0]: ",
        ),
        (
            "grid: {temperature: [1], kd.temperature: [2]}",
            "grid.kd.temperature: sweeps kd.temperature a second time",
        ),
    ];
    for (yaml, want) in cases {
        let e = err(&format!("name: x\n{yaml}\n"));
        assert!(e.starts_with(want), "{yaml}\n  got:  {e}\n  want: {want}");
    }
}

#[test]
fn dotted_student_keys_can_be_swept() {
    let r = resolve("name: x\ngrid: {student.train.lr: [0.1, 0.01], soft_loss: [ce, kl]}").unwrap();
    assert_eq!(r.cells.len(), 4);
    assert_eq!(r.cells[2].student.train.lr, 0.01);
    assert_eq!(r.cells[3].kd.soft_loss, SoftLoss::Kl);
}

#[test]
fn init_defaults_to_pytorchs_and_can_be_kaiming() {
    let r = resolve("name: x").unwrap();
    assert_eq!(r.student.model.init(), Init::Torch);
    assert_eq!(r.teacher.model.init(), Init::Torch);
    let r = resolve(
        "name: x\nstudent: {model: {init: kaiming}}\nteacher: {model: {arch: cnn, init: torch}}",
    )
    .unwrap();
    assert_eq!(r.student.model.init(), Init::Kaiming);
    assert!(r.to_yaml().contains("init: kaiming"), "{}", r.to_yaml());
    let e = err("name: x\nstudent: {model: {init: xavier}}");
    assert!(
        e.starts_with("student.model.init: unknown initialisation `xavier`"),
        "{e}"
    );
    let r = resolve("name: x\ngrid: {student.model.init: [torch, kaiming]}").unwrap();
    assert_eq!(r.cells[1].student.model.init(), Init::Kaiming);
}

/// `train.test_every`: `best` by default and then absent from the serialised recipe (so from
/// every id: the reported numbers are the same), or a number of epochs.
#[test]
fn test_every_is_best_by_default_and_out_of_the_ids() {
    let r = resolve("name: x").unwrap();
    assert_eq!(r.student.train.test_every, config::TestEvery::Best);
    assert!(!serde_yaml::to_string(&r.student.train)
        .unwrap()
        .contains("test_every"));
    let r =
        resolve("name: x\nstudent: {train: {test_every: 3}}\nteacher: {train: {test_every: best}}")
            .unwrap();
    assert_eq!(r.student.train.test_every, config::TestEvery::Every(3));
    assert_eq!(r.teacher.train.test_every, config::TestEvery::Best);
    let yaml = serde_yaml::to_string(&r.student.train).unwrap();
    assert!(yaml.contains("test_every: 3"), "{yaml}");
    let back: config::TrainCfg = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(back, r.student.train);
}

/// The `kd` axis: each value a mapping of kd keys set together over the `kd:` block (whole
/// objectives at their own weights), named by `name`, which sets nothing.
#[test]
fn the_kd_axis_sets_several_keys_per_cell() {
    let yaml = "name: x\nkd: {temperature: 4, soft_loss: ce}\ngrid:\n  kd:\n    \
                - {name: KD, soft_loss: kl, alpha: 0.9, beta: 0.1}\n    \
                - {name: DKD, soft_loss: dkd, alpha: 1, beta: 1, dkd: {nckd: 6}}\n    \
                - {soft_loss: kl, standardise: true, temperature: 2, alpha: 9, beta: 0.1}\n";
    let r = resolve(yaml).unwrap();
    assert_eq!(r.cells.len(), 3);
    let kd: Vec<_> = r.cells.iter().map(|c| c.kd).collect();
    assert_eq!(
        (kd[0].soft_loss, kd[0].alpha, kd[0].beta),
        (SoftLoss::Kl, 0.9, 0.1)
    );
    assert_eq!(kd[0].temperature, 4.0, "the kd: block's temperature stays");
    assert_eq!(kd[1].soft_loss, SoftLoss::Dkd);
    assert_eq!(
        serde_json::to_value(kd[1]).unwrap()["dkd"],
        serde_json::json!({"tckd": 1.0, "nckd": 6.0, "warmup": 20}),
        "defaults fill the rest"
    );
    assert!(kd[2].standardise && kd[2].temperature == 2.0 && kd[2].alpha == 9.0);
    let names: Vec<String> = r.cells.iter().map(|c| value_text(&c.swept[0].1)).collect();
    assert_eq!(
        names,
        [
            "KD",
            "DKD",
            "soft_loss=kl standardise=true temperature=2 alpha=9 beta=0.1"
        ]
    );
    // `--set` of a key no value sets applies to every cell; of one a value sets, refused.
    let raw = config::parse(yaml, Path::new("t.yaml")).unwrap();
    let r = raw
        .with_sets(&["kd.t2_scaling=false".into()])
        .unwrap()
        .resolve()
        .unwrap();
    assert!(r.cells.iter().all(|c| !c.kd.t2_scaling));
    let e = raw
        .with_sets(&["kd.alpha=0.5".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("--set kd.alpha: grid.kd sweeps this key"),
        "{e}"
    );

    let cases = [
        (
            "grid: {kd: [1]}",
            "grid.kd[0]: a value of the kd axis must be a mapping of kd keys",
        ),
        (
            "grid: {kd: [{alpha: 2}]}",
            "grid.kd[0]: kd.alpha: must be in [0, 1] while kd.beta is unset",
        ),
        ("grid: {kd: [{temperatur: 2}]}", "grid.kd[0]: "),
        (
            "grid: {kd: [{soft_loss: kl, temperature: 2}], temperature: [1, 4]}",
            "grid.kd[0]: sets kd.temperature, which grid.temperature sweeps",
        ),
    ];
    for (g, want) in cases {
        let e = err(&format!("name: x\n{g}\n"));
        assert!(e.starts_with(want), "{g}\n  got:  {e}\n  want: {want}");
    }
}

#[test]
fn set_overrides_any_key() {
    let raw = config::parse("name: x\nkd: {temperature: 4}", Path::new("t.yaml")).unwrap();
    let r = raw
        .with_sets(&[
            "kd.temperature=8".into(),
            "teacher.train.epochs=3".into(),
            "seeds=[1, 2]".into(),
        ])
        .unwrap()
        .resolve()
        .unwrap();
    assert_eq!(r.kd.temperature, 8.0);
    assert_eq!(r.teacher.train.epochs, 3);
    assert_eq!(r.seeds, [1, 2]);
    let e = raw
        .with_sets(&["kd.temprature=8".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `temprature`"), "{e}");
    let e = raw
        .with_sets(&["kd.temperature".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("--set kd.temperature: expected KEY=VALUE"),
        "{e}"
    );
}

/// Issue 17: `--set kd.temperature=8` on a config that sweeps `temperature` was ignored.
#[test]
fn set_on_a_swept_key_is_refused_and_says_how_to_sweep_the_value() {
    let raw = config::parse(
        "name: x\ngrid: {temperature: [1, 2], student.train.lr: [0.1], hidden: [[8]]}",
        Path::new("t.yaml"),
    )
    .unwrap();
    for (set, axis) in [
        ("kd.temperature=8", "temperature"),
        ("temperature=8", "temperature"),
        ("student.train.lr=0.5", "student.train.lr"),
        ("student.model.hidden=[4]", "hidden"),
    ] {
        let e = raw.with_sets(&[set.into()]).unwrap_err().to_string();
        assert!(
            e.contains(&format!("grid.{axis} sweeps this key")),
            "{set}: {e}"
        );
        let value = set.split_once('=').unwrap().1;
        assert!(
            e.contains(&format!("use --set grid.{axis}=[{value}]")),
            "{set}: {e}"
        );
    }
    // A mapping holding a swept key is set key by key (issue 32: it suggested
    // `--set grid.student.train.lr=[{lr: 0.5}]`).
    let e = raw
        .with_sets(&["student.train={lr: 0.5, epochs: 2}".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`student.train` is a mapping that holds student.train.lr"),
        "{e}"
    );
    assert!(
        e.contains("--set grid.student.train.lr=[0.5] --set student.train.epochs=2"),
        "{e}"
    );
    // The grid itself, and keys beside the swept ones, can be set.
    let r = raw
        .with_sets(&[
            "grid.temperature=[8]".into(),
            "kd.alpha=0.5".into(),
            "student.train.epochs=2".into(),
        ])
        .unwrap()
        .resolve()
        .unwrap();
    assert_eq!(r.cells.len(), 1);
    assert_eq!(r.cells[0].kd.temperature, 8.0);
    assert_eq!(r.cells[0].kd.alpha, 0.5);
    // Once the grid no longer sweeps a key, setting it works.
    let r = raw
        .with_sets(&["grid={hidden: [[8]]}".into(), "kd.temperature=8".into()])
        .unwrap()
        .resolve()
        .unwrap();
    assert_eq!(r.cells[0].kd.temperature, 8.0);
}

/// Issue 17: a `name:` with a newline was accepted; an alias bomb's "repetition limit exceeded"
/// did not say it means YAML aliases.
#[test]
fn a_name_on_two_lines_and_an_alias_bomb_are_refused_with_what_they_are() {
    let e = err("name: \"two\\nlines\"");
    assert!(
        e.starts_with("name: \"two\\nlines\" must be a non-empty file name on one line"),
        "{e}"
    );
    let e = err("name: \"tab\\there\"");
    assert!(e.starts_with("name: "), "{e}");
    // Anchors inside a value kd reads (a grid axis), each level ten aliases of the last.
    let mut levels = vec![String::from("&a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]")];
    for i in 1..9u8 {
        let (prev, me) = ((b'a' + i - 1) as char, (b'a' + i) as char);
        levels.push(format!(
            "&{me} [{}]",
            vec![format!("*{prev}"); 10].join(", ")
        ));
    }
    let bomb = format!("name: x\ngrid: {{temperature: [{}]}}\n", levels.join(", "));
    let e = err(&bomb);
    assert!(e.contains("repetition limit exceeded"), "{e}");
    assert!(e.contains("expands YAML aliases"), "{e}");
}
