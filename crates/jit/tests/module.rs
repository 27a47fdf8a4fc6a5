//! kd_jit::Module against PyTorch: a scripted net with batch norm, its parameters and buffers
//! by name, the mode switch, and a save that keeps what training changed.

use std::path::{Path, PathBuf};
use std::process::Command;

use kd_jit::Module;
use tch::{Device, Kind, Tensor};

fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
}

/// Run `script` (which may read `sys.argv[1]`, a folder) with the venv's Python, from a file
/// (`torch.jit.script` reads the source of what it compiles).
fn run_python(script: &str, dir: &Path) {
    let file = dir.join("make.py");
    std::fs::write(&file, script).unwrap();
    let o = Command::new(python())
        .args([file.to_str().unwrap(), dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

const NET: &str = r#"
import sys, torch
torch.manual_seed(0)
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 3)
    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x))) + x
        return self.fc(h.mean(dim=(2, 3)))
m = torch.jit.script(Net())
torch.jit.save(m, sys.argv[1] + '/net.pt')
"#;

#[test]
fn lists_parameters_and_buffers_switches_mode_and_saves_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    run_python(NET, dir.path());
    let m = Module::load(&dir.path().join("net.pt"), Device::Cpu).unwrap();
    let names = |v: Vec<(String, Tensor)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(
        names(m.parameters().unwrap()),
        [
            "conv.weight",
            "conv.bias",
            "bn.weight",
            "bn.bias",
            "fc.weight",
            "fc.bias"
        ]
    );
    assert_eq!(
        names(m.buffers().unwrap()),
        [
            "bn.running_mean",
            "bn.running_var",
            "bn.num_batches_tracked"
        ]
    );
    let x = Tensor::randn([5, 1, 6, 6], (Kind::Float, Device::Cpu));
    // Training mode moves the running statistics, in the tensors the buffers listed share.
    let buffers = m.buffers().unwrap();
    m.set_train(true).unwrap();
    let train_out = m.forward(&x).unwrap();
    assert_eq!(train_out.size(), [5, 3]);
    assert_ne!(buffers[0].1.abs().sum(Kind::Float).double_value(&[]), 0.0);
    assert_eq!(buffers[2].1.int64_value(&[]), 1);
    m.set_train(false).unwrap();
    let eval_out = m.forward(&x).unwrap();
    assert!(!train_out.allclose(&m.forward(&x).unwrap(), 0.0, 0.0, false));
    // A parameter changed through its listed tensor is the module's, and a save keeps it all.
    let (_, w) = &m.parameters().unwrap()[4];
    tch::no_grad(|| {
        let _ = w.shallow_clone().fill_(0.25);
    });
    let changed = m.forward(&x).unwrap();
    assert!(!changed.allclose(&eval_out, 0.0, 0.0, false));
    let saved = dir.path().join("saved.pt");
    m.save(&saved).unwrap();
    let again = Module::load(&saved, Device::Cpu).unwrap();
    again.set_train(false).unwrap();
    assert!(again.forward(&x).unwrap().equal(&changed));
    assert_eq!(again.buffers().unwrap()[2].1.int64_value(&[]), 1);
}

#[test]
fn errors_are_one_line_messages() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pt");
    std::fs::write(&bad, b"not a zip").unwrap();
    let e = Module::load(&bad, Device::Cpu).unwrap_err();
    assert!(!e.contains('\n') && !e.is_empty(), "{e}");
    run_python(NET, dir.path());
    let m = Module::load(&dir.path().join("net.pt"), Device::Cpu).unwrap();
    let e = m
        .forward(&Tensor::zeros([2, 5], (Kind::Float, Device::Cpu)))
        .unwrap_err();
    // The cause, not the interpreter's opening sentence.
    assert!(!e.contains('\n') && e.contains("Expected"), "{e}");
}
