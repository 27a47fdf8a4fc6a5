//! The CIFAR zoo (ResNets, wide ResNets, VGGs with BN) against our PyTorch transcription of
//! RepDistiller's `models/resnet.py`, `wrn.py` and `vgg.py`
//! (`tests/reference/cifar_zoo.py`, run with the venv's torch): parameter counts for CIFAR-100
//! heads, and eval-mode logits for the same weights (BN running statistics included) to 1e-5
//! (relative to the logits' largest magnitude, at least 1).

use std::path::{Path, PathBuf};

use kd_model_zoo::{InputShape, ModelSpec, ResNetSpec, Role};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

const CIFAR: InputShape = InputShape {
    channels: 3,
    height: 32,
    width: 32,
};

/// `python cifar_zoo.py counts`: the reference's `sum(p.numel() for p in model.parameters())`.
const COUNTS: [(&str, usize); 18] = [
    ("resnet8", 83_892),
    ("resnet14", 181_108),
    ("resnet20", 278_324),
    ("resnet32", 472_756),
    ("resnet44", 667_188),
    ("resnet56", 861_620),
    ("resnet110", 1_736_564),
    ("resnet8x4", 1_233_540),
    ("resnet32x4", 7_433_860),
    ("wrn_16_1", 180_916),
    ("wrn_16_2", 703_284),
    ("wrn_40_1", 569_780),
    ("wrn_40_2", 2_255_156),
    ("vgg8", 3_965_028),
    ("vgg11", 9_277_284),
    ("vgg13", 9_462_180),
    ("vgg16", 14_774_436),
    ("vgg19", 20_086_692),
];

/// The zoo's spec of a reference model, through the config keys a user writes.
fn spec(name: &str) -> ModelSpec {
    let yaml = if let Some(rest) = name.strip_prefix("resnet") {
        let (depth, x4) = rest.strip_suffix("x4").map_or((rest, false), |d| (d, true));
        let widths = if x4 {
            "[32, 64, 128, 256]"
        } else {
            "[16, 16, 32, 64]"
        };
        format!("{{arch: resnet, depth: {depth}, widths: {widths}}}")
    } else if let Some(rest) = name.strip_prefix("wrn_") {
        let (d, k) = rest.split_once('_').unwrap();
        format!("{{arch: wrn, depth: {d}, widen: {k}}}")
    } else {
        format!(
            "{{arch: vgg, depth: {}}}",
            name.strip_prefix("vgg").unwrap()
        )
    };
    let map: serde_yaml::Mapping = serde_yaml::from_str(&yaml).unwrap();
    ModelSpec::from_config(&map, Role::Student).unwrap()
}

#[test]
fn parameter_counts_equal_the_references() {
    for (name, want) in COUNTS {
        let m = spec(name);
        m.validate(CIFAR).unwrap();
        assert_eq!(m.shape_label(), name);
        assert_eq!(m.param_count(CIFAR, 100), want, "{name}: counted");
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = m.build(&vs.root(), CIFAR, 100).unwrap();
        let built: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        assert_eq!(built as usize, want, "{name}: built");
    }
}

fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
}

#[test]
fn the_same_weights_give_the_transcriptions_logits() {
    for name in [
        "resnet8x4",
        "resnet32x4",
        "resnet20",
        "resnet56",
        "wrn_16_2",
        "wrn_40_2",
        "vgg8",
        "vgg13",
    ] {
        tch::manual_seed(3);
        let m = spec(name);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = m.build(&vs.root(), CIFAR, 100).unwrap();
        // A few training-mode passes move the BN running statistics off their initial values.
        for _ in 0..3 {
            let x = Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu)) * 2.0 + 0.5;
            let _ = tch::no_grad(|| net.forward_t(&x, true));
        }
        let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        let ours = tch::no_grad(|| net.forward_t(&x, false));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.safetensors");
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.push(("input".into(), x.shallow_clone()));
        Tensor::write_safetensors(&named, &file).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/cifar_zoo.py");
        let o = std::process::Command::new(python())
            .arg(&script)
            .args(["forward", name])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let theirs: Vec<f64> = serde_json::from_slice(&o.stdout).unwrap();
        let ours: Vec<f32> = ours.flatten(0, -1).try_into().unwrap();
        assert_eq!(ours.len(), 400);
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        // float32 through up to 110 layers: 1e-5 relative to the logits' scale (the deep
        // untrained nets' logits reach tens).
        let scale = theirs.iter().fold(1.0f64, |m, b| m.max(b.abs()));
        assert!(
            worst < 1e-5 * scale,
            "{name}: logits differ by {worst} (scale {scale})"
        );
        let (lo, hi) = theirs
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), b| (l.min(*b), h.max(*b)));
        assert!(
            hi - lo > 1e-3,
            "{name}: logits span only {lo}..{hi}: the test would prove nothing"
        );
        eprintln!("{name}: worst |difference| {worst:.2e}, logits {lo:.3}..{hi:.3}");
    }
}

#[test]
fn bad_depths_and_widths_name_the_key() {
    let map: serde_yaml::Mapping = serde_yaml::from_str("{arch: vgg, depth: 12}").unwrap();
    let e = ModelSpec::from_config(&map, Role::Student)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("depth") && e.contains("8, 11, 13, 16 or 19"),
        "{e}"
    );
    let map: serde_yaml::Mapping = serde_yaml::from_str("{arch: wrn, depth: 18}").unwrap();
    let e = ModelSpec::from_config(&map, Role::Student)
        .and_then(|m| m.validate(CIFAR).map(|_| m))
        .unwrap_err()
        .to_string();
    assert!(e.contains("6n + 4"), "{e}");
    let e = ModelSpec::ResNet(ResNetSpec {
        depth: 9,
        widths: vec![16, 16, 32, 64],
    })
    .validate(CIFAR)
    .unwrap_err()
    .to_string();
    assert!(e.contains("depth") && e.contains("6n + 2"), "{e}");
    let m = ModelSpec::ResNet(ResNetSpec {
        depth: 20,
        widths: vec![16, 32],
    });
    let e = m.validate(CIFAR).unwrap_err().to_string();
    assert!(e.contains("widths") && e.contains("4 widths"), "{e}");
}

#[test]
fn initialisation_is_the_references() {
    for name in ["resnet32x4", "wrn_40_2", "vgg13"] {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = spec(name).build(&vs.root(), CIFAR, 100).unwrap();
        for (var, t) in vs.variables() {
            let size = t.size();
            if size.len() == 4 && size[0] >= 128 {
                // kaiming_normal_(mode="fan_out", nonlinearity="relu"): std sqrt(2 / (out * k * k)).
                let want = (2.0 / (size[0] * size[2] * size[3]) as f64).sqrt();
                let got = t.std(true).double_value(&[]);
                assert!(
                    (got / want - 1.0).abs() < 0.05,
                    "{name} {var}: std {got}, want {want}"
                );
                assert!(t.mean(Kind::Float).double_value(&[]).abs() < 0.1 * want);
            }
            let value = |x: f64| t.eq(x).all().int64_value(&[]) == 1;
            if var.contains("bn")
                || (var.starts_with("block") && size.len() == 1 && !name.starts_with("wrn"))
            {
                if var.ends_with(".weight") || var.ends_with("running_var") {
                    assert!(value(1.0), "{name} {var}: ones");
                }
                if var.ends_with(".bias") || var.ends_with("running_mean") {
                    assert!(value(0.0), "{name} {var}: zeros");
                }
            }
        }
        let fc = vs
            .variables()
            .into_iter()
            .find(|(v, _)| v == "fc.bias" || v == "classifier.bias")
            .unwrap()
            .1;
        let zero_bias = fc.eq(0.0).all().int64_value(&[]) == 1;
        // RepDistiller's ResNet keeps nn.Linear's default bias; WRN and VGG zero it.
        assert_eq!(zero_bias, !name.starts_with("resnet"), "{name}");
        if name.starts_with("vgg") {
            let w = vs.variables()["classifier.weight"]
                .std(true)
                .double_value(&[]);
            assert!((w / 0.01 - 1.0).abs() < 0.05, "vgg classifier std {w}");
        }
    }
}

/// A teacher in the layout of RepDistiller's published `.pth` files (`{"model": state_dict}`
/// with its parameter names, written here by the transcription since the files cannot be
/// downloaded) converts with `tools/pth_to_safetensors.py`, loads by name, and gives the
/// transcription's logits.
#[test]
fn a_repdistiller_checkpoint_converts_loads_and_gives_its_logits() {
    let dir = tempfile::tempdir().unwrap();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pth = dir.path().join("resnet8x4_best.pth");
    let script = format!(
        "import json, sys, torch\n\
         sys.path.insert(0, {reference:?})\n\
         import cifar_zoo\n\
         torch.manual_seed(5)\n\
         m = cifar_zoo.MODELS['resnet8x4']()\n\
         for _ in range(3): m(torch.randn(8, 3, 32, 32) * 2 + 0.5)\n\
         m.eval()\n\
         torch.save({{'epoch': 240, 'model': m.state_dict(), 'accuracy': 73.0}}, {pth:?})\n\
         x = torch.randn(4, 3, 32, 32)\n\
         with torch.no_grad(): y = m(x)\n\
         print(json.dumps({{'x': x.flatten().tolist(), 'y': y.flatten().tolist()}}))",
        reference = here.join("tests/reference").display().to_string(),
        pth = pth.display().to_string(),
    );
    let o = std::process::Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let floats = |k: &str| -> Vec<f32> {
        out[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    let safe = dir.path().join("resnet8x4.safetensors");
    let o = std::process::Command::new(python())
        .arg(here.join("../../tools/pth_to_safetensors.py"))
        .args([&pth, &safe])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = spec("resnet8x4").build(&vs.root(), CIFAR, 100).unwrap();
    kd_model_zoo::load_weights(&mut vs, &safe).unwrap();
    let x = Tensor::from_slice(&floats("x")).view([4, 3, 32, 32]);
    let ours: Vec<f32> = tch::no_grad(|| net.forward_t(&x, false))
        .flatten(0, -1)
        .try_into()
        .unwrap();
    let theirs = floats("y");
    let worst = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "logits differ by {worst}");

    // The wrong model for the file: a missing tensor and a wrong shape name the tensor.
    let mut vs = nn::VarStore::new(Device::Cpu);
    let _ = spec("resnet32x4").build(&vs.root(), CIFAR, 100).unwrap();
    let err = kd_model_zoo::load_weights(&mut vs, &safe).unwrap_err();
    assert!(
        err.starts_with("no tensor `layer1.1.bn1.bias` (the model needs it"),
        "{err}"
    );
    let mut vs = nn::VarStore::new(Device::Cpu);
    let _ = spec("resnet8").build(&vs.root(), CIFAR, 100).unwrap();
    let err = kd_model_zoo::load_weights(&mut vs, &safe).unwrap_err();
    assert_eq!(
        err,
        "tensor `bn1.bias` has shape [32], the model's is [16] (another model's weights?)"
    );
}
