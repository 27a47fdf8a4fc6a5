//! Issue 37, item 4: a PyTorch student of any architecture (`student.torchscript`), trained by
//! kd through its TorchScript module. A scripted CNN with batch norm and a residual connection,
//! written by the snippet below, distils (and trains as its paired baseline) with full-batch
//! SGD; PyTorch trains the same file on the same images and gives the same losses to 1e-4.
//! The trained module, written back as TorchScript beside the kept safetensors file, loads in
//! PyTorch and gives `kd eval`'s logits on the test set.

mod common;

use std::path::Path;

use common::*;
use kd_report::Kind;

/// Writes modules kd-sweep refuses to train: tied weights, float64 parameters, no trainable
/// parameter.
const UNTRAINABLE: &str = r#"
import sys, torch
import torch.nn as nn
class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(784, 10)
        self.b = nn.Linear(784, 10)
        self.b.weight = self.a.weight
    def forward(self, x):
        x = x.flatten(1)
        return self.a(x) + self.b(x)
class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(784, 10)
    def forward(self, x):
        return self.a(x.flatten(1).to(self.a.weight.dtype)).float()
d = sys.argv[1]
torch.jit.save(torch.jit.script(Tied()), d + '/tied.pt')
torch.jit.save(torch.jit.script(Plain().double()), d + '/double.pt')
frozen = Plain()
for p in frozen.parameters():
    p.requires_grad_(False)
torch.jit.save(torch.jit.script(frozen), d + '/frozen.pt')
"#;

/// Trains `student.pt` as the sweep does, on the training images `kd eval --split train`
/// dumped (full batches: their order does not matter), and prints the per-step losses of the
/// KD objective and of the baseline's cross-entropy as JSON.
const GOLDEN: &str = r#"
import sys, json, torch
import torch.nn.functional as F
import os
sys.path.insert(0, os.environ['KD_REFERENCE'])
from models import read_safetensors
d = sys.argv[1]
data, _ = read_safetensors(d + '/train.safetensors')
x, y = data['input'], data['labels']
teacher = torch.jit.load(d + '/teacher.pt').eval()
with torch.no_grad():
    t_logits = teacher(x)
T, alpha, beta = 4.0, 0.9, 0.1
def run(kd):
    s = torch.jit.load(d + '/student.pt').train()
    opt = torch.optim.SGD(s.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(4):
        z = s(x)
        hard = F.cross_entropy(z, y)
        if kd:
            p = F.softmax(t_logits / T, dim=1)
            soft = -(p * F.log_softmax(z / T, dim=1)).sum(1).mean()
            loss = alpha * T * T * soft + beta * hard
        else:
            loss = hard
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
print(json.dumps({'kd': run(True), 'baseline': run(False)}))
"#;

/// Loads the trained module kd wrote and prints its largest logit difference from `kd eval`'s
/// on the dumped test images, and its errors.
const LOADS: &str = r#"
import sys, torch
import os
sys.path.insert(0, os.environ['KD_REFERENCE'])
from models import read_safetensors
m = torch.jit.load(sys.argv[2])
assert not m.training, "kd-sweep saves the trained module in evaluation mode"
d, _ = read_safetensors(sys.argv[3])
with torch.no_grad():
    z = m(d['input'])
errors = int((z.argmax(1) != d['labels']).sum())
print(f"errors {errors} diff {float((z - d['logits']).abs().max())}")
"#;

fn python_out(script: &str, dir: &Path, args: &[&str]) -> String {
    let file = dir.join("script.py");
    std::fs::write(&file, script).unwrap();
    let mut all = vec![file.to_str().unwrap(), dir.to_str().unwrap()];
    all.extend(args);
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/reference");
    let o = std::process::Command::new(python())
        .args(&all)
        .env("KD_REFERENCE", reference)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_scripted_cnn_trains_as_in_pytorch_and_its_trained_module_loads_there() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_scripted_nets(d);
    let train = "train: {epochs: 4, batch_size: 100000, optimizer: sgd, lr: 0.05, momentum: 0.9, \
                 schedule: constant}";
    let cfg = format!(
        "name: scripted\ndataset: {{val_size: 500, train_limit: 1000}}\ndevice: cpu\nthreads: 1\n\
         seeds: [0]\nbaseline: true\n\
         teacher: {{torchscript: {d}/teacher.pt}}\n\
         student: {{torchscript: {d}/student.pt, {train}}}\n\
         kd: {{temperature: 4, alpha: 0.9, beta: 0.1, soft_loss: ce}}\n",
        d = d.display()
    );
    let (o, out) = sweep(d, &cfg, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (rows, epochs) = kd_report::read_frames(&out).unwrap();
    let distilled = rows.iter().find(|r| r.kind == Kind::Kd).unwrap();
    let baseline = rows.iter().find(|r| r.kind == Kind::Baseline).unwrap();
    assert_eq!(
        distilled.baseline_id.as_deref(),
        Some(baseline.trial_id.as_str())
    );
    assert_eq!(distilled.arch, "torchscript");
    // What the student buys: both modules timed, in the report with their accuracies.
    let fps = kd_report::deployment::read(&out).unwrap();
    let names: Vec<(&str, &str, &str)> = fps
        .iter()
        .map(|f| (f.role.as_str(), f.arch.as_str(), f.hidden.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("teacher", "torchscript", "teacher.pt"),
            ("student", "torchscript", "student")
        ]
    );
    assert!(fps
        .iter()
        .all(|f| f.batch1_ms > 0.0 && f.batch256_ms >= f.batch1_ms));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("| torchscript student | student | 786 |"),
        "{report}"
    );

    // The same losses as PyTorch's, step by step (one full batch an epoch).
    let cache = d.join("cache");
    let kept = out.join(distilled.model_file.as_ref().unwrap());
    let train_dump = d.join("train.safetensors");
    let o = kd_env_args(
        &["eval", kept.to_str().unwrap(), "--split", "train", "--dump"],
        &train_dump,
        &cache,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let golden: serde_json::Value = serde_json::from_str(&python_out(GOLDEN, d, &[])).unwrap();
    for (r, key) in [(distilled, "kd"), (baseline, "baseline")] {
        let ours: Vec<f64> = epochs
            .iter()
            .filter(|e| e.trial_id == r.trial_id)
            .map(|e| e.train_loss)
            .collect();
        let theirs: Vec<f64> = golden[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(ours.len(), 4, "{key}");
        for (a, b) in ours.iter().zip(&theirs) {
            assert!(
                (a - b).abs() < 1e-4,
                "{key}: kd {ours:?}, PyTorch {theirs:?}"
            );
        }
        // Training moved the weights: the losses fall.
        assert!(ours[3] < ours[0], "{key}: {ours:?}");
    }

    // The trained module (best epoch, batch-norm statistics included) loads in PyTorch and
    // gives kd eval's logits; kd eval gives the record's errors.
    let pt = kept.with_extension("pt");
    assert!(pt.exists() && pt.with_extension("pt.sha256").exists());
    let test_dump = d.join("test.safetensors");
    let o = kd_env_args(
        &["eval", kept.to_str().unwrap(), "--dump"],
        &test_dump,
        &cache,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(": the same"), "{text}");
    let said = python_out(
        LOADS,
        d,
        &[pt.to_str().unwrap(), test_dump.to_str().unwrap()],
    );
    let want =
        ((1.0 - distilled.best_test_acc.unwrap()) * distilled.test_images as f64).round() as u64;
    assert!(said.starts_with(&format!("errors {want} ")), "{said}");
    let diff: f64 = said.split_whitespace().last().unwrap().parse().unwrap();
    assert!(diff < 1e-4, "{said}");

    // ONNX is refused with the way out; --format torchscript writes the module again.
    let o = kd(
        &["export", kept.to_str().unwrap(), "--format", "onnx"],
        &cache,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--format torchscript"),
        "{}",
        stderr(&o)
    );
    let again = d.join("again.pt");
    let o = kd(
        &[
            "export",
            kept.to_str().unwrap(),
            "--format",
            "torchscript",
            "-o",
            again.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let said = python_out(
        LOADS,
        d,
        &[again.to_str().unwrap(), test_dump.to_str().unwrap()],
    );
    assert!(said.starts_with(&format!("errors {want} ")), "{said}");
    // kd eval reads the module itself, with the kept file's metadata.
    let o = kd(&["eval", pt.to_str().unwrap()], &cache);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        text.contains(&format!("({want} errors of 10000 images)")),
        "{text}"
    );
    assert!(text.contains(": the same"), "{text}");
}

/// What a TorchScript student cannot be, each refused with the key and the way out.
#[test]
fn refusals_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_scripted_nets(d);
    python_out(UNTRAINABLE, d, &[]);
    let student = format!("{}/student.pt", d.display());
    let module = |name: &str| format!("student: {{torchscript: {}/{name}}}\n", d.display());
    let cases = [
        (
            module("tied.pt"),
            "parameters `a.weight` and `b.weight` are one tensor",
        ),
        (module("double.pt"), "parameter `a.weight` is Double"),
        (module("frozen.pt"), "it has no trainable parameter"),
        (
            format!("student: {{torchscript: {student}, train: {{max_norm: 3.5}}}}\n"),
            "student.train.max_norm: not offered for a TorchScript student",
        ),
        (
            format!("student: {{torchscript: {}/missing.pt}}\n", d.display()),
            "cannot use the TorchScript student",
        ),
        (
            format!("student: {{torchscript: {student}, model: {{arch: mlp}}}}\n"),
            "student.model: not used with student.torchscript",
        ),
        (
            format!("student: {{torchscript: {student}, train: {{precision: bf16}}}}\n"),
            "student.train.precision: bf16 is not offered for a TorchScript student",
        ),
        (
            "teacher: {model: {arch: torchscript, file: t.pt}}\n".to_string(),
            "teacher.torchscript: FILE",
        ),
    ];
    for (extra, want) in cases.iter() {
        let cfg = format!(
            "name: bad\ndataset: {{val_size: 500, train_limit: 1000}}\ndevice: cpu\nthreads: 1\n\
             seeds: [0]\nteacher: {{torchscript: {}/teacher.pt}}\n{extra}",
            d.display()
        );
        let cfg = if extra.starts_with("teacher") {
            cfg.replace(
                &format!("teacher: {{torchscript: {}/teacher.pt}}\n", d.display()),
                "",
            )
        } else {
            cfg
        };
        let (code, err) = sweep_exit(&cfg);
        assert_eq!(code, 2, "{extra}: {err}");
        assert!(err.contains(want), "{extra}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `kd ARGS FILE` with the cache in `cache`.
fn kd_env_args(args: &[&str], file: &Path, cache: &Path) -> std::process::Output {
    let mut all = args.to_vec();
    all.push(file.to_str().unwrap());
    kd(&all, cache)
}
