//! A student of any architecture, written in PyTorch: `student.torchscript: FILE` (the same as
//! `student.model: {arch: torchscript, file: FILE}`), a `torch.jit.script` export saved with
//! `torch.jit.save` (a trace would freeze batch norm's and dropout's mode at trace time). kd-sweep trains the module itself ([`kd_jit::Module`]): its
//! parameters join the VarStore under their PyTorch names (`layer1.0.conv1.weight`) as
//! trainable variables, its buffers (batch-norm running statistics) as non-trainable ones, so
//! the optimiser, checkpoints and kept copies see every tensor the module reads, and
//! `module.train()` / `module.eval()` follow the forward pass's `train` flag.
//!
//! The initial weights are the file's: a baseline and its KD cells start from the same
//! weights, and seeds differ only in data order and dropout. The module takes the float32
//! `[batch, C, H, W]` standardised images every kd-sweep net takes and returns `[batch, classes]`
//! logits. It trains in float32, alone (never packed); its FLOPs are not known (counted 0).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{nn, Tensor};

use crate::keys::{Configure, Role};
use crate::scripted::probe;
use crate::{spec_err, Family, Init, InputShape, Layers, ModelError, Net};

/// A TorchScript student: its file, and what the plan read from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TorchscriptSpec {
    /// As written in the config (relative to the working directory).
    pub file: PathBuf,
    /// The file's SHA-256, read when the plan is made ([`TorchscriptSpec::read`]); it stands in
    /// every trial id for the module's code and initial weights.
    #[serde(default)]
    pub sha256: String,
    /// Its parameter count (`sum(p.numel() for p in model.parameters())`), read with the digest.
    #[serde(default)]
    pub params: usize,
}

/// The config keys of `arch: torchscript`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorchscriptKeys {
    file: Option<PathBuf>,
}

impl Configure for TorchscriptSpec {
    type Keys = TorchscriptKeys;

    fn from_keys(k: TorchscriptKeys, role: Role) -> Result<TorchscriptSpec, ModelError> {
        if role == Role::Teacher {
            return Err(spec_err(
                "arch",
                "a TorchScript teacher is `teacher.torchscript: FILE`, not a model of arch \
                 torchscript",
            ));
        }
        let file = k.file.ok_or_else(|| {
            spec_err("file", "required: the TorchScript file (torch.jit.save) of the student")
        })?;
        Ok(TorchscriptSpec {
            file,
            sha256: String::new(),
            params: 0,
        })
    }
}

/// The SHA-256 of `file`, in hex.
pub fn file_sha256(file: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(file)?, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

impl TorchscriptSpec {
    /// The spec with the file's digest and parameter count, the module loaded on the CPU and
    /// checked to give `classes` logits for `input` images. The error says what is wrong with
    /// the file.
    pub fn read(&self, input: InputShape, classes: usize) -> Result<TorchscriptSpec, String> {
        let sha256 = file_sha256(&self.file).map_err(|e| format!("cannot be read ({e})"))?;
        let module = kd_jit::Module::load(&self.file, tch::Device::Cpu).map_err(not_torchscript)?;
        let (parameters, buffers) = (module.parameters()?, module.buffers()?);
        check_tensors(&parameters, &buffers)?;
        module.set_train(false)?;
        probe(&|x| module.forward(x), tch::Device::Cpu, input, classes)?;
        // Training mode too (batch statistics, dropout): this copy's buffers may move.
        module.set_train(true)?;
        probe(&|x| module.forward(x), tch::Device::Cpu, input, classes)
            .map_err(|e| format!("in training mode (module.train()), {e}"))?;
        let params = parameters.iter().map(|(_, t)| t.numel()).sum();
        Ok(TorchscriptSpec {
            file: self.file.clone(),
            sha256,
            params,
        })
    }

    /// Load the module onto `p`'s device, its tensors into `p` (see the module's doc), after
    /// checking the file is still the one the plan read.
    fn load(&self, p: &nn::Path) -> Result<Net, ModelError> {
        let err = |m: String| spec_err("file", format!("{}: {m}", self.file.display()));
        if !self.sha256.is_empty() {
            let now = file_sha256(&self.file).map_err(|e| err(format!("cannot be read ({e})")))?;
            if now != self.sha256 {
                return Err(err(format!(
                    "changed since the plan was made (SHA-256 {} then, {now} now); run the sweep \
                     again to plan it anew",
                    self.sha256
                )));
            }
        }
        let module = kd_jit::Module::load(&self.file, p.device())
            .map_err(|e| err(not_torchscript(e)))?;
        for (name, t) in module.parameters().map_err(err)? {
            let trainable = t.requires_grad();
            add_named(p, &name, t, trainable);
        }
        for (name, t) in module.buffers().map_err(err)? {
            add_named(p, &name, t, false);
        }
        Ok(Net::new(ScriptedStudent { module }))
    }
}

/// What kd-sweep can train and keep: float32 parameters, at least one of them trainable, none
/// shared between two names; float32 or int64 buffers (batch norm's `num_batches_tracked`).
fn check_tensors(
    parameters: &[(String, Tensor)],
    buffers: &[(String, Tensor)],
) -> Result<(), String> {
    for (name, t) in parameters {
        if t.kind() != tch::Kind::Float {
            return Err(format!(
                "parameter `{name}` is {:?}; kd-sweep trains float32 parameters (call .float() \
                 before scripting)",
                t.kind()
            ));
        }
    }
    for (name, t) in buffers {
        if !matches!(t.kind(), tch::Kind::Float | tch::Kind::Int64) {
            return Err(format!(
                "buffer `{name}` is {:?}; kd-sweep keeps float32 and int64 buffers",
                t.kind()
            ));
        }
    }
    if !parameters.iter().any(|(_, t)| t.requires_grad()) {
        return Err("it has no trainable parameter (every requires_grad is False)".into());
    }
    for (i, (a, t)) in parameters.iter().enumerate() {
        if let Some((b, _)) = parameters[..i].iter().find(|(_, u)| u.data_ptr() == t.data_ptr()) {
            return Err(format!(
                "parameters `{b}` and `{a}` are one tensor (tied weights), which kd-sweep's \
                 optimiser would update twice; untie them"
            ));
        }
    }
    Ok(())
}

fn not_torchscript(e: String) -> String {
    format!("not a TorchScript module torch.jit.load can read ({e})")
}

/// Add `t` to `p` under the dotted PyTorch name `name` (`a.b.weight` goes to `p / a / b` as
/// `weight`), so that the variable's name is the PyTorch name.
fn add_named(p: &nn::Path, name: &str, t: Tensor, trainable: bool) {
    let mut parts: Vec<&str> = name.split('.').collect();
    let last = parts.pop().unwrap_or_default();
    match parts.split_first() {
        None => drop(p.add(last, t, trainable)),
        Some((first, rest)) => {
            let q = rest.iter().fold(p.sub(*first), |q, part| q.sub(*part));
            drop(q.add(last, t, trainable));
        }
    }
}

impl Family for TorchscriptSpec {
    fn init(&self) -> Init {
        Init::Torch
    }

    /// The file's stem: `resnet_small.pt` is `resnet_small` (a TorchScript teacher's row names it
    /// so too).
    fn shape_label(&self) -> String {
        self.file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "torchscript".into())
    }

    fn check(&self) -> Result<(), ModelError> {
        if self.file.as_os_str().is_empty() {
            return Err(spec_err("file", "must name a TorchScript file"));
        }
        Ok(())
    }

    fn param_count(&self, _input: InputShape, _classes: usize) -> usize {
        self.params
    }

    /// Not known for a TorchScript module: 0.
    fn flops_per_sample(&self, _input: InputShape, _classes: usize) -> usize {
        0
    }

    fn packs(&self) -> bool {
        false
    }

    fn packed_widths(&self, _input: InputShape, _classes: usize) -> usize {
        0
    }

    fn build(&self, _p: &nn::Path, _input: InputShape, _classes: usize) -> Net {
        unreachable!("a TorchScript student is built by try_build, which can fail")
    }

    fn try_build(&self, p: &nn::Path, _input: InputShape, _classes: usize) -> Result<Net, ModelError> {
        self.load(p)
    }

    fn graph(&self, _g: &mut crate::Graph, _i: InputShape, _c: usize) -> Result<(), ModelError> {
        Err(spec_err(
            "arch",
            "a TorchScript student is exported with --format torchscript, not to ONNX (export \
             its PyTorch definition with torch.onnx.export)",
        ))
    }
}

/// The built student: the module, switched to training or evaluation mode by each forward pass.
#[derive(Debug)]
pub struct ScriptedStudent {
    module: kd_jit::Module,
}

impl ScriptedStudent {
    /// Write the module as it is now (its code, parameters and buffers) with `torch.jit.save`.
    pub fn save(&self, file: &Path) -> Result<(), String> {
        self.module.save(file)
    }
}

impl Layers for ScriptedStudent {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        // Checked on batches at plan time; a failure here is libtorch's own (out of memory).
        self.module
            .set_train(train)
            .and_then(|()| self.module.forward(xs))
            .unwrap_or_else(|e| panic!("the TorchScript student's forward failed: {e}"))
    }

    fn linears(&self) -> &[nn::Linear] {
        &[]
    }
}
