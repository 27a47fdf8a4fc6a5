//! Kept students (`save:`): each finished student's weights and buffers, as its record measured
//! them, in `OUT/models/<trial id>.safetensors`, written through a temporary file and a rename
//! with its SHA-256 beside it (the caches' mechanism, `cache_file.rs`). Tensors are named as
//! the family's PyTorch reference definition names them ([`kd_model_zoo::Family::reference_name`]:
//! `experiments/reference/models.py` for mlp and cnn, RepDistiller's for the CIFAR families)
//! and kept in the number format the student was evaluated in (bfloat16 for a bf16 student).
//! The file's metadata ([`ModelMeta`], one JSON value per key) says what it is and how its
//! inputs were standardised; `kd eval` reads it back (`model_eval.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kd_model_zoo::ModelSpec;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::config::{Precision, Save};
use crate::data::DataPlan;
use crate::error::{io_err, RunError};
use crate::train::snapshot::KeptModel;

/// The format written in every kept file's metadata (`format`).
pub const FORMAT: &str = "kd-sweep student 1";

/// Where and which students' weights a sweep keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelsOut {
    /// `OUT/models`.
    pub dir: PathBuf,
    pub save: Save,
}

impl ModelsOut {
    /// Where a sweep writing to `out` keeps its students, as `save` says (none: nowhere).
    pub fn of_sweep(save: Save, out: &Path) -> Option<ModelsOut> {
        (save != Save::None).then(|| ModelsOut {
            dir: models_dir(out),
            save,
        })
    }
}

/// The folder of a sweep's kept students: `OUT/models`.
pub fn models_dir(out: &Path) -> PathBuf {
    out.join("models")
}

/// Move the kept files of trials `ids` (`models/<id>.*`: the weights, their digest, exports) to
/// `replaced/models/`, so a trial trained again never leaves its earlier model beside its new
/// record (`--fresh`).
pub fn set_aside(
    out: &Path,
    ids: &std::collections::HashSet<String>,
    replaced: &Path,
) -> Result<(), RunError> {
    let Ok(entries) = std::fs::read_dir(models_dir(out)) else {
        return Ok(());
    };
    let to = replaced.join("models");
    for path in entries.flatten().map(|e| e.path()) {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let id = name.split('.').next().unwrap_or_default();
        if ids.contains(id) {
            std::fs::create_dir_all(&to).map_err(io_err(&to))?;
            let dest = to.join(path.file_name().unwrap_or_default());
            std::fs::rename(&path, &dest).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

/// What a kept file says of itself: its safetensors metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// [`FORMAT`].
    pub format: String,
    pub trial_id: String,
    /// The student's model spec, as the config resolves it (`{"arch": "mlp", ...}`).
    pub model: ModelSpec,
    /// `[channels, height, width]` of an input image.
    pub input: [usize; 3],
    pub classes: usize,
    /// Per channel, the mean and std the inputs were standardised with: `x = (pixel / 255 -
    /// mean) / std`, from the training split.
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// The data the sweep planned (dataset, folder, fingerprint, split).
    pub data: DataPlan,
    /// `fp32` or `bf16`: the number format of the tensors and of the evaluation.
    pub precision: Precision,
    /// `single`, or `packed` when it trained in a pack (evaluated as a pack of one, as its
    /// record was).
    pub exec: kd_report::Exec,
    /// Where it was evaluated for its record: `cpu`, `cuda:0`, ..., and libtorch's threads
    /// (the arithmetic's order, and so the last bits, may depend on both).
    pub device: String,
    pub threads: usize,
    /// `best` (its best validation epoch's weights) or `last` (those it ended with).
    pub weights: Save,
    pub epoch: u32,
    /// Its record's test accuracy and errors for these weights.
    pub test_acc: Option<f64>,
    pub test_errors: Option<u64>,
}

/// The keys whose metadata values are plain strings; every other value is JSON.
const TEXT_KEYS: [&str; 3] = ["format", "trial_id", "precision"];

impl ModelMeta {
    fn to_metadata(&self) -> HashMap<String, String> {
        let serde_json::Value::Object(map) = serde_json::to_value(self).expect("serialises") else {
            unreachable!("a struct serialises to an object")
        };
        map.into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) if TEXT_KEYS.contains(&k.as_str()) => (k, s),
                v => (k, v.to_string()),
            })
            .collect()
    }

    fn from_metadata(meta: &HashMap<String, String>) -> Result<ModelMeta, String> {
        let map: serde_json::Map<String, serde_json::Value> = meta
            .iter()
            .map(|(k, v)| {
                let value = if TEXT_KEYS.contains(&k.as_str()) {
                    Ok(serde_json::Value::String(v.clone()))
                } else {
                    serde_json::from_str(v).map_err(|e| format!("metadata `{k}`: {e}"))
                };
                value.map(|v| (k.clone(), v))
            })
            .collect::<Result<_, String>>()?;
        serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| format!("metadata: {e}"))
    }
}

/// A tensor's bytes, as safetensors stores them.
struct Raw {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &Raw {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn raw(t: &Tensor) -> Result<Raw, String> {
    let t = t.detach().to_device(tch::Device::Cpu).contiguous();
    let dtype = match t.kind() {
        Kind::Float => safetensors::Dtype::F32,
        Kind::BFloat16 => safetensors::Dtype::BF16,
        Kind::Int64 => safetensors::Dtype::I64,
        k => return Err(format!("a tensor of kind {k:?} cannot be kept")),
    };
    let numel = t.numel();
    let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, numel)
        .map_err(|e| e.to_string())?;
    let shape = t.size().iter().map(|&d| d as usize).collect();
    Ok(Raw { dtype, shape, data })
}

/// Write `model` as `dir/<meta.trial_id>.safetensors`, its tensors under their reference
/// names, with its digest beside it; the path written.
pub fn write(dir: &Path, meta: &ModelMeta, model: &KeptModel) -> Result<PathBuf, RunError> {
    let file = dir.join(format!("{}.safetensors", meta.trial_id));
    let fail = |reason: String| RunError::ModelFile {
        file: file.to_path_buf(),
        reason,
    };
    let mut raws = Vec::with_capacity(model.tensors.len());
    for (name, t) in &model.tensors {
        raws.push((meta.model.reference_name(name), raw(t).map_err(fail)?));
    }
    let views = raws.iter().map(|(n, r)| (n.as_str(), r));
    let bytes = safetensors::serialize(views, &Some(meta.to_metadata()))
        .map_err(|e| fail(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    super::cache_file::write_verified(&file, &bytes)?;
    Ok(file)
}

/// A TorchScript student's trained module: the module of its spec's file (its code), its
/// parameters and buffers replaced by `tensors` (named as the module names them), written with
/// `torch.jit.save` to `file` atomically with its digest beside it. Loads in PyTorch with
/// `torch.jit.load(file)`.
/// Write `model` (its weights, and for a TorchScript student its module beside them) into
/// `m`'s folder; its path relative to OUT (`models/<id>.safetensors`).
pub fn write_kept(m: &ModelsOut, meta: &ModelMeta, model: &KeptModel) -> Result<String, RunError> {
    let file = write(&m.dir, meta, model)?;
    if let ModelSpec::Torchscript(_) = &meta.model {
        write_torchscript(&file.with_extension("pt"), &meta.model, &model.tensors)?;
    }
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    Ok(format!(
        "{}/{}",
        name(&m.dir).unwrap_or_default(),
        name(&file).unwrap_or_default()
    ))
}

pub fn write_torchscript(
    file: &Path,
    spec: &ModelSpec,
    tensors: &[(String, Tensor)],
) -> Result<(), RunError> {
    let fail = |reason: String| RunError::ModelFile {
        file: file.to_path_buf(),
        reason,
    };
    let ModelSpec::Torchscript(s) = spec else {
        return Err(fail(format!(
            "a student of arch `{}` is not TorchScript: only a TorchScript student \
             (student.torchscript) exports as TorchScript (export a zoo student to ONNX)",
            spec.arch()
        )));
    };
    let source = |m: String| fail(format!("its module's file {}: {m}", s.file.display()));
    let now = kd_model_zoo::file_sha256(&s.file).map_err(|e| source(e.to_string()))?;
    if now != s.sha256 {
        return Err(source(format!(
            "changed since the student trained (SHA-256 {} then, {now} now): the trained \
             module needs the code it trained with",
            s.sha256
        )));
    }
    let module = kd_jit::Module::load(&s.file, tch::Device::Cpu).map_err(source)?;
    // Saved in evaluation mode, so `torch.jit.load(file)(x)` predicts at once.
    module.set_train(false).map_err(source)?;
    let mut named = module.parameters().map_err(source)?;
    named.extend(module.buffers().map_err(source)?);
    for (name, t) in &named {
        let Some((_, v)) = tensors.iter().find(|(n, _)| n == name) else {
            return Err(fail(format!(
                "it has no tensor `{name}`, which the module reads"
            )));
        };
        if v.size() != t.size() {
            return Err(fail(format!(
                "tensor `{name}` is {:?}, the module's {:?}",
                v.size(),
                t.size()
            )));
        }
        tch::no_grad(|| t.shallow_clone().copy_(v));
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let scratch = tempfile::Builder::new()
        .suffix(".pt")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    module.save(scratch.path()).map_err(fail)?;
    let bytes = std::fs::read(scratch.path()).map_err(io_err(scratch.path()))?;
    super::cache_file::write_verified(file, &bytes)
}

/// [`read`], or for a TorchScript student's trained module (`OUT/models/<id>.pt`, or a
/// `kd export --format torchscript` copy beside its kept file) the metadata of the kept
/// `.safetensors` file of the same name and the module's own tensors, its spec naming the
/// module itself.
pub fn read_any(file: &Path) -> Result<(ModelMeta, Vec<(String, Tensor)>), RunError> {
    if file.extension().is_none_or(|e| e != "pt") {
        return read(file);
    }
    let fail = |reason: String| RunError::ModelFile {
        file: file.to_path_buf(),
        reason,
    };
    let kept = file.with_extension("safetensors");
    if !kept.exists() {
        return Err(fail(format!(
            "a TorchScript student is evaluated with its kept file beside it ({} is missing: \
             it holds the data plan and the standardisation); or evaluate that file",
            kept.display()
        )));
    }
    if let super::cache_file::Check::Bad(why) = super::cache_file::check(file) {
        return Err(fail(why));
    }
    let (mut meta, _) = read(&kept)?;
    let ModelSpec::Torchscript(spec) = &mut meta.model else {
        return Err(fail(format!(
            "{} is not a TorchScript student's",
            kept.display()
        )));
    };
    spec.file = file.to_path_buf();
    spec.sha256 = kd_model_zoo::file_sha256(file).map_err(|e| fail(e.to_string()))?;
    let module = kd_jit::Module::load(file, tch::Device::Cpu).map_err(fail)?;
    let mut tensors = module.parameters().map_err(fail)?;
    tensors.extend(module.buffers().map_err(fail)?);
    let tensors = tensors
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect();
    Ok((meta, tensors))
}

/// The kept file `model` names: itself when it is a path, or for a trial id
/// (`kd-17ea8fc05acd`) the one `results/*/models/<id>.safetensors` under the working directory.
pub fn locate(model: &Path) -> Result<PathBuf, RunError> {
    let fail = |reason: String| RunError::ModelFile {
        file: model.to_path_buf(),
        reason,
    };
    let text = model.to_string_lossy();
    let is_id = ["kd-", "baseline-"].iter().any(|p| {
        text.strip_prefix(p)
            .is_some_and(|h| h.len() == 12 && h.chars().all(|c| c.is_ascii_hexdigit()))
    });
    if model.exists() || !is_id {
        return Ok(model.to_path_buf());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("results")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("models").join(format!("{text}.safetensors")))
        .filter(|f| f.exists())
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(fail(
            "no such file, and no results/*/models/ here keeps a student of that trial id: give \
             the kept file's path (OUT/models/<id>.safetensors)"
                .into(),
        )),
        _ => Err(fail(format!(
            "kept in several folders ({}): give the path of the one you mean",
            found
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A kept file's metadata and tensors (under their reference names), its digest checked when
/// it has one beside it (a file copied without it is read as it is).
pub fn read(file: &Path) -> Result<(ModelMeta, Vec<(String, Tensor)>), RunError> {
    let fail = |reason: String| RunError::ModelFile {
        file: file.to_path_buf(),
        reason,
    };
    if let super::cache_file::Check::Bad(why) = super::cache_file::check(file) {
        return Err(fail(why));
    }
    let bytes = std::fs::read(file).map_err(io_err(file))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| fail(format!("not a safetensors file ({e})")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| fail(format!("not a safetensors file ({e})")))?;
    let meta = header
        .metadata()
        .as_ref()
        .ok_or_else(|| fail("it has no metadata: not a model kd-sweep kept".into()))?;
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(fail(format!(
            "its metadata does not say `format: {FORMAT}`: not a model kd-sweep kept"
        )));
    }
    let meta = ModelMeta::from_metadata(meta).map_err(fail)?;
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        let t = Tensor::try_from(view).map_err(|e| fail(format!("tensor `{name}`: {e}")))?;
        tensors.push((name, t));
    }
    Ok((meta, tensors))
}
