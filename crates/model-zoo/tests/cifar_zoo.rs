//! The CIFAR zoo (ResNets, wide ResNets, VGGs with BN, MobileNetV2, ShuffleNet V1 and V2) against
//! our PyTorch transcription of RepDistiller's `models/resnet.py`, `wrn.py`, `vgg.py`,
//! `mobilenetv2.py`, `ShuffleNetv1.py` and `ShuffleNetv2.py`
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
const COUNTS: [(&str, usize); 23] = [
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
    ("MobileNetV2", 812_836),
    ("mobilenetv2_T6_w1", 2_353_060),
    ("ShuffleV1", 949_258),
    ("ShuffleV2", 1_355_528),
    ("ShuffleV2_0.5", 443_716),
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
    } else if let Some(depth) = name.strip_prefix("vgg") {
        format!("{{arch: vgg, depth: {depth}}}")
    } else {
        match name {
            "MobileNetV2" => "{arch: mobilenetv2}".into(),
            "mobilenetv2_T6_w1" => "{arch: mobilenetv2, expand: 6, width: 1.0}".into(),
            "ShuffleV1" => "{arch: shufflev1}".into(),
            "ShuffleV2" => "{arch: shufflev2}".into(),
            "ShuffleV2_0.5" => "{arch: shufflev2, size: 0.5}".into(),
            _ => panic!("no spec for {name}"),
        }
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
        let _net = m.build(&vs, CIFAR, 100).unwrap();
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

/// Run `script` with the venv's python; its stdout is one JSON value.
fn python_json(script: &str) -> serde_json::Value {
    let o = std::process::Command::new(python())
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The list of numbers at `key` of `out`, as float32.
fn floats(out: &serde_json::Value, key: &str) -> Vec<f32> {
    out[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// The largest absolute difference between `a` and `b`.
fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
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
        "MobileNetV2",
        "ShuffleV1",
        "ShuffleV2",
    ] {
        tch::manual_seed(3);
        let m = spec(name);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = m.build(&vs, CIFAR, 100).unwrap();
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
        channels_last: false,
        depth: 9,
        widths: vec![16, 16, 32, 64],
    })
    .validate(CIFAR)
    .unwrap_err()
    .to_string();
    assert!(e.contains("depth") && e.contains("6n + 2"), "{e}");
    let m = ModelSpec::ResNet(ResNetSpec {
        channels_last: false,
        depth: 20,
        widths: vec![16, 32],
    });
    let e = m.validate(CIFAR).unwrap_err().to_string();
    assert!(e.contains("widths") && e.contains("4 widths"), "{e}");

    let read = |yaml: &str| {
        let map: serde_yaml::Mapping = serde_yaml::from_str(yaml).unwrap();
        ModelSpec::from_config(&map, Role::Student)
    };
    let e = read("{arch: shufflev2, size: 0.7}")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("size: must be 0.2, 0.3, 0.5, 1, 1.5 or 2"),
        "{e}"
    );
    let e = read("{arch: shufflev2, widths: [116, 233, 464, 1024], blocks: [3, 7, 3]}")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("widths[1]: must be even"), "{e}");
    let e = read("{arch: shufflev2, widths: [116, 232, 464, 1024]}")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("blocks: give widths and blocks together"),
        "{e}"
    );
    let e = read("{arch: shufflev1, widths: [240, 482, 960]}")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("widths: a block from") && e.contains("3 groups"),
        "{e}"
    );
    let e = read("{arch: mobilenetv2, width: 0.01}")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("width: must leave every stage a channel"),
        "{e}"
    );
    let mnist = InputShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    let e = read("{arch: mobilenetv2}")
        .unwrap()
        .validate(mnist)
        .unwrap_err()
        .to_string();
    assert!(e.contains("multiple of 32") && e.contains("28x28"), "{e}");
    // 28 pixels end in a 4x4 map as 32 do: the ShuffleNets take Fashion-MNIST.
    read("{arch: shufflev2}").unwrap().validate(mnist).unwrap();
    let tiny = InputShape {
        channels: 3,
        height: 16,
        width: 16,
    };
    let e = read("{arch: shufflev1}")
        .unwrap()
        .validate(tiny)
        .unwrap_err()
        .to_string();
    assert!(e.contains("avg_pool2d(4)") && e.contains("16x16"), "{e}");
}

#[test]
fn initialisation_is_the_references() {
    for name in ["resnet32x4", "wrn_40_2", "vgg13"] {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = spec(name).build(&vs, CIFAR, 100).unwrap();
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

/// MobileNetV2 as the reference initialises it (`normal_(0, sqrt(2 / (k * k * out)))` for every
/// conv, depthwise included; classifier `normal_(0, 0.01)`, zero bias); the ShuffleNets with
/// PyTorch's defaults, which the reference leaves alone (`|w| <= 1 / sqrt(in / groups * k * k)`,
/// filled to the bound; `nn.Linear`'s default classifier with a non-zero bias).
#[test]
fn the_mobile_nets_start_as_the_references() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = spec("MobileNetV2").build(&vs, CIFAR, 100).unwrap();
    let vars = vs.variables();
    let mut checked = 0;
    for (var, t) in &vars {
        let size = t.size();
        if size.len() == 4 && t.numel() >= 4096 {
            let want = (2.0 / (size[0] * size[2] * size[3]) as f64).sqrt();
            let got = t.std(true).double_value(&[]);
            assert!(
                (got / want - 1.0).abs() < 0.06,
                "{var}: std {got}, want {want}"
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked} convs checked");
    let w = vars["classifier.0.weight"].std(true).double_value(&[]);
    assert!((w / 0.01 - 1.0).abs() < 0.05, "classifier std {w}");
    assert_eq!(vars["classifier.0.bias"].abs().max().double_value(&[]), 0.0);

    for name in ["ShuffleV1", "ShuffleV2"] {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = spec(name).build(&vs, CIFAR, 100).unwrap();
        let mut checked = 0;
        for (var, t) in vs.variables() {
            let size = t.size();
            if size.len() == 4 {
                let fan_in = (size[1] * size[2] * size[3]) as f64;
                let bound = 1.0 / fan_in.sqrt();
                let max = t.abs().max().double_value(&[]);
                assert!(max <= bound, "{name} {var}: |w| {max} > {bound}");
                if t.numel() >= 2000 {
                    assert!(max > 0.98 * bound, "{name} {var}: |w| {max} << {bound}");
                    checked += 1;
                }
            }
            if var.contains("bn") && var.ends_with(".weight") {
                assert_eq!(t.eq(1.0).all().int64_value(&[]), 1, "{name} {var}");
            }
        }
        assert!(checked > 10, "{name}: {checked} convs checked");
        let b = vs.variables()["linear.bias"].abs().max().double_value(&[]);
        assert!(b > 0.0, "{name}: nn.Linear's default bias is not zero");
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
    let out = python_json(&script);
    let floats = |k: &str| floats(&out, k);
    let safe = dir.path().join("resnet8x4.safetensors");
    let o = std::process::Command::new(python())
        .arg(here.join("../../tools/pth_to_safetensors.py"))
        .args([&pth, &safe])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = spec("resnet8x4").build(&vs, CIFAR, 100).unwrap();
    kd_model_zoo::load_weights(&mut vs, &safe).unwrap();
    let x = Tensor::from_slice(&floats("x")).view([4, 3, 32, 32]);
    let ours: Vec<f32> = tch::no_grad(|| net.forward_t(&x, false))
        .flatten(0, -1)
        .try_into()
        .unwrap();
    let theirs = floats("y");
    let worst = worst(&ours, &theirs);
    assert!(worst < 1e-5, "logits differ by {worst}");

    // The wrong model for the file: a missing tensor and a wrong shape name the tensor.
    let mut vs = nn::VarStore::new(Device::Cpu);
    let _ = spec("resnet32x4").build(&vs, CIFAR, 100).unwrap();
    let err = kd_model_zoo::load_weights(&mut vs, &safe).unwrap_err();
    assert!(
        err.starts_with("no tensor `layer1.1.bn1.bias` (the model needs it"),
        "{err}"
    );
    let mut vs = nn::VarStore::new(Device::Cpu);
    let _ = spec("resnet8").build(&vs, CIFAR, 100).unwrap();
    let err = kd_model_zoo::load_weights(&mut vs, &safe).unwrap_err();
    assert_eq!(
        err,
        "tensor `bn1.bias` has shape [32], the model's is [16] (another model's weights?)"
    );
}

/// Any PyTorch teacher: the transcription's resnet8x4 exported with `torch.jit.trace` (BN
/// statistics moved, so eval mode matters) gives its logits through `Scripted`, with the
/// reference's parameter count; a `torch.jit.script` export loads too; a module with the wrong
/// number of classes, or a file that is not TorchScript, is refused saying why.
#[test]
fn a_torchscript_teacher_gives_the_transcriptions_logits() {
    let dir = tempfile::tempdir().unwrap();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let traced = dir.path().join("resnet8x4.pt");
    let scripted = dir.path().join("small.pt");
    let fixed = dir.path().join("fixed.pt");
    let script = format!(
        "import json, sys, torch\n\
         sys.path.insert(0, {reference:?})\n\
         import cifar_zoo\n\
         torch.manual_seed(6)\n\
         m = cifar_zoo.MODELS['resnet8x4']()\n\
         for _ in range(3): m(torch.randn(8, 3, 32, 32) * 2 + 0.5)\n\
         m.eval()\n\
         torch.jit.trace(m, torch.randn(2, 3, 32, 32)).save({traced:?})\n\
         s = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))\n\
         torch.jit.script(s).save({scripted:?})\n\
         class Fixed(torch.nn.Module):\n\
         \x20   def __init__(self):\n\
         \x20       super().__init__(); self.l = torch.nn.Linear(3 * 32 * 32, 10)\n\
         \x20   def forward(self, x): return self.l(x.view(2, -1))\n\
         torch.jit.trace(Fixed(), torch.randn(2, 3, 32, 32)).save({fixed:?})\n\
         x = torch.randn(4, 3, 32, 32)\n\
         with torch.no_grad(): y = m(x)\n\
         print(json.dumps({{'x': x.flatten().tolist(), 'y': y.flatten().tolist()}}))",
        reference = here.join("tests/reference").display().to_string(),
        traced = traced.display().to_string(),
        scripted = scripted.display().to_string(),
        fixed = fixed.display().to_string(),
    );
    let out = python_json(&script);
    let floats = |k: &str| floats(&out, k);
    let teacher = kd_model_zoo::Scripted::load(&traced, Device::Cpu, CIFAR, 100).unwrap();
    // resnet8x4's count from `cifar_zoo.py counts` (the test above checks ours against it).
    assert_eq!(teacher.params(), 1_233_540);
    let net = teacher.into_net();
    let x = Tensor::from_slice(&floats("x")).view([4, 3, 32, 32]);
    let ours: Vec<f32> = tch::no_grad(|| net.forward_t(&x, true))
        .flatten(0, -1)
        .try_into()
        .unwrap();
    let theirs = floats("y");
    let worst = worst(&ours, &theirs);
    assert!(
        worst < 1e-5,
        "logits differ by {worst} (eval mode even when asked to train)"
    );

    let small = kd_model_zoo::Scripted::load(&scripted, Device::Cpu, CIFAR, 10).unwrap();
    assert_eq!(small.params(), 3 * 32 * 32 * 10 + 10);
    let err = kd_model_zoo::Scripted::load(&scripted, Device::Cpu, CIFAR, 100).unwrap_err();
    assert_eq!(
        err,
        "it gives a tensor of shape [2, 10] for a batch of 2 3x32x32 images; the dataset needs \
         [2, 100] logits"
    );
    let gray = InputShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    let err = kd_model_zoo::Scripted::load(&scripted, Device::Cpu, gray, 10).unwrap_err();
    assert!(
        err.starts_with("its forward fails on a [2, 1x28x28] float32 batch ("),
        "{err}"
    );
    // A trace that fixed its batch size runs on a batch of 2 and fails on 3: refused up front.
    let err = kd_model_zoo::Scripted::load(&fixed, Device::Cpu, CIFAR, 10).unwrap_err();
    assert!(
        err.starts_with("its forward fails on a [3, 3x32x32] float32 batch (")
            && err.ends_with("was it traced with a fixed batch size?"),
        "{err}"
    );
    let not = dir.path().join("weights.pt");
    std::fs::write(&not, b"not a zip").unwrap();
    let err = kd_model_zoo::Scripted::load(&not, Device::Cpu, CIFAR, 10).unwrap_err();
    assert!(
        err.starts_with("not a TorchScript module torch.jit.load can read ("),
        "{err}"
    );
}

/// `channels_last: true` on every CIFAR family (one model of each, small ones): the conv weights
/// (grouped and depthwise ones too) are channels_last, the eval-mode logits are those of the NCHW
/// model with the same weights to float rounding, and the key is in the serialised spec (the ids)
/// only when on. (That restriding keeps the values: the cnn family's test in the crate.)
#[test]
fn every_cifar_family_takes_channels_last() {
    for name in [
        "resnet8",
        "wrn_16_1",
        "vgg8",
        "MobileNetV2",
        "ShuffleV1",
        "ShuffleV2_0.5",
    ] {
        let nchw = spec(name);
        // The serialised spec (`arch` and the family's fields) is a mapping of config keys.
        let mut keys: serde_yaml::Mapping =
            serde_yaml::from_value(serde_yaml::to_value(&nchw).unwrap()).unwrap();
        keys.insert("channels_last".into(), true.into());
        let cl =
            ModelSpec::from_config(&keys, Role::Student).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(cl.channels_last() && !nchw.channels_last(), "{name}");
        let build = |m: &ModelSpec| {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = m.build(&vs, CIFAR, 100).unwrap();
            (vs, net)
        };
        let ((a_vs, a), (mut b_vs, b)) = (build(&nchw), build(&cl));
        let channels_last = |vs: &nn::VarStore| {
            let mut convs = 0;
            for (v, t) in vs.variables() {
                if t.dim() == 4 {
                    let [_, c, h, w] = t.size()[..] else {
                        unreachable!()
                    };
                    assert_eq!(t.stride(), [h * w * c, 1, w * c, c], "{name} {v}");
                    convs += 1;
                }
            }
            assert!(convs >= 5, "{name}: {convs} conv weights");
        };
        channels_last(&b_vs);
        // The same values (tests here draw from libtorch's one generator in parallel, so a seed
        // does not give both builds the same draws): copied in place, the strides stay.
        b_vs.copy(&a_vs).unwrap();
        channels_last(&b_vs);
        tch::manual_seed(6);
        let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        let (ya, yb) = (a.forward_t(&x, false), b.forward_t(&x, false));
        let scale = ya.abs().max().double_value(&[]).max(1.0);
        let worst = (ya - yb).abs().max().double_value(&[]) / scale;
        assert!(worst < 1e-5, "{name}: logits differ by {worst}");
        let json = |m: &ModelSpec| serde_json::to_string(m).unwrap();
        assert!(!json(&nchw).contains("channels_last"), "{}", json(&nchw));
        assert!(
            json(&cl).contains("\"channels_last\":true"),
            "{}",
            json(&cl)
        );
    }
}
