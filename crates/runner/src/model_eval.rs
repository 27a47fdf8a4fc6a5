//! `kd eval MODEL`: a kept student (`OUT/models/<trial id>.safetensors`, `save:`) evaluated
//! again at T = 1 on a split of the data its sweep planned (or of another dataset of the same
//! image shape and classes): accuracy, errors, per-class errors and the confusion matrix, and,
//! on the test split of its own data, whether they are its record's for the epoch it kept.

use std::path::PathBuf;

use kd_model_zoo::InputShape;
use tch::Tensor;

use crate::data::{self, Data};
use crate::error::RunError;
use crate::run::models::{self, ModelMeta};
use crate::train::reload::Reloaded;

/// The split `kd eval` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalSplit {
    Test,
    Val,
    /// The whole training split (not only a student's transfer set).
    Train,
}

/// `kd eval`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// A kept student: OUT/models/<trial id>.safetensors, a TorchScript student's trained
    /// module (`<trial id>.pt`, with its `.safetensors` beside it), or a trial id kept in one
    /// `results/*/models/`.
    pub model: PathBuf,
    /// Evaluate on another dataset of the same image shape and classes (default: the model's,
    /// as its sweep planned it). Its images are standardised with the model's statistics.
    #[arg(long)]
    pub dataset: Option<String>,
    /// The dataset's folder, where it is not where the sweep found it.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = EvalSplit::Test)]
    pub split: EvalSplit,
    /// `cpu`, `cuda` or `cuda:N` (default: where it was evaluated for its record).
    #[arg(long)]
    pub device: Option<String>,
    /// libtorch's intra-op threads (default: those of its record's evaluation).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also write what was evaluated to this safetensors file: `pixels` (uint8 `[n, C, H,
    /// W]`), `input` (the standardised float32 images), `labels` (int64) and `logits` (float32
    /// `[n, classes]`), to check an export against (`experiments/reference/onnx_run.py`).
    #[arg(long)]
    pub dump: Option<PathBuf>,
}

/// What `kd eval` found: its text, and whether it contradicts the model's record.
pub struct Evaluated {
    pub text: String,
    pub differs: Option<String>,
}

/// The data `meta`'s sweep planned, or `args`' other dataset or folder, with the model's
/// standardisation; a note where it is not the planned data.
fn data_of(meta: &ModelMeta, args: &EvalArgs) -> Result<(Data, Option<String>), RunError> {
    let mut cfg = data::planned_cfg(&meta.data);
    if let Some(name) = &args.dataset {
        cfg.name = kd_data::DatasetName::parse(name).ok_or_else(|| {
            crate::config::invalid("--dataset", format!("unknown dataset `{name}`"))
        })?;
        cfg.dir = None;
    }
    if let Some(dir) = &args.data_dir {
        cfg.dir = Some(dir.clone());
    }
    let mut data = data::load(&cfg)?;
    let p = &data.plan;
    if (p.input, p.classes) != (input_of(meta), meta.classes) {
        return Err(crate::config::invalid(
            "--dataset",
            format!(
                "{} has {}x{}x{} images of {} classes; the model takes {:?} images of {} classes",
                p.name.as_str(),
                p.input.channels,
                p.input.height,
                p.input.width,
                p.classes,
                meta.input,
                meta.classes
            ),
        )
        .into());
    }
    let note = (p.fingerprint != meta.data.fingerprint).then(|| {
        format!(
            "not the data the model's sweep planned (fingerprint {} there, {} here): its record's \
             numbers are not comparable",
            meta.data.fingerprint, p.fingerprint
        )
    });
    data.dataset.mean = meta.mean.clone();
    data.dataset.std = meta.std.clone();
    Ok((data, note))
}

fn input_of(meta: &ModelMeta) -> InputShape {
    let [channels, height, width] = meta.input;
    InputShape {
        channels,
        height,
        width,
    }
}

/// Evaluate the kept student `args.model`.
pub fn eval(args: &EvalArgs) -> Result<Evaluated, RunError> {
    let (meta, tensors) = models::read_any(&args.model)?;
    let (data, mut note) = data_of(&meta, args)?;
    let device = crate::env::select_device(args.device.as_deref().unwrap_or(&meta.device))?;
    let threads = args.threads.unwrap_or(meta.threads);
    tch::set_num_threads(threads as i32);
    let here = crate::env::device_label(device);
    if note.is_none() && (here != meta.device || threads != meta.threads) {
        note = Some(format!(
            "evaluated on {here} with {threads} threads, its record on {} with {}: the last \
             bits of its logits may differ, so its record's numbers are not compared",
            meta.device, meta.threads
        ));
    }
    let model = Reloaded::new(
        &meta.model,
        (input_of(&meta), meta.classes),
        meta.precision,
        meta.exec == kd_report::Exec::Packed,
        tensors,
        device,
    )
    .map_err(|reason| RunError::ModelFile {
        file: args.model.clone(),
        reason,
    })?;
    let ds = &data.dataset;
    let split = match args.split {
        EvalSplit::Test => &ds.test,
        EvalSplit::Val => &ds.val,
        EvalSplit::Train => &ds.train,
    };
    if split.labels.is_empty() {
        return Err(crate::config::invalid(
            "--split",
            "the split has no images (a sweep without a validation split has no `val`)",
        )
        .into());
    }
    let (x, y) = ds.tensors(split, device);
    let logits = model.logits(&x);
    if let Some(file) = &args.dump {
        let cpu = |t: &Tensor| t.to_device(tch::Device::Cpu);
        let pixels = Tensor::from_slice(&split.images).view(x.size().as_slice());
        let named = [
            ("pixels", pixels),
            ("input", cpu(&x)),
            ("labels", cpu(&y)),
            ("logits", cpu(&logits)),
        ];
        Tensor::write_safetensors(&named, file).map_err(crate::error::torch_err(file))?;
    }
    let predicted = crate::train::host::i64s(&logits.argmax(-1, false));
    let truth = crate::train::host::i64s(&y);
    let k = meta.classes;
    let mut confusion = vec![vec![0u64; k]; k];
    for (&t, &p) in truth.iter().zip(&predicted) {
        confusion[t as usize][p as usize] += 1;
    }
    let n = truth.len() as u64;
    let errors = n - (0..k).map(|c| confusion[c][c]).sum::<u64>();
    let mut text = header(&meta, args, &data, note.as_deref());
    text += &format!(
        "accuracy {:.2}% ({} errors of {n} images)\n",
        100.0 * (n - errors) as f64 / n.max(1) as f64,
        errors
    );
    let differs = match (args.split, note, meta.test_errors) {
        (EvalSplit::Test, None, Some(want)) => {
            text += &format!(
                "its record: {want} errors with these weights ({} epoch {}): {}\n",
                enum_text(&meta.weights),
                meta.epoch,
                if want == errors {
                    "the same"
                } else {
                    "DIFFERENT"
                }
            );
            (want != errors).then(|| {
                format!(
                    "{}: {errors} test errors here, {want} in its record",
                    args.model.display()
                )
            })
        }
        _ => None,
    };
    text += &per_class(&confusion);
    Ok(Evaluated { text, differs })
}

fn enum_text<T: serde::Serialize>(v: &T) -> String {
    crate::config::enum_name(v)
}

fn header(meta: &ModelMeta, args: &EvalArgs, data: &Data, note: Option<&str>) -> String {
    let mut s = format!(
        "{}: {} ({} {}, {}, trained {}, the {} weights of epoch {})\n",
        args.model.display(),
        meta.trial_id,
        meta.model.arch(),
        meta.model.shape_label(),
        enum_text(&meta.precision),
        enum_text(&meta.exec),
        enum_text(&meta.weights),
        meta.epoch
    );
    s += &format!(
        "data: {} {} split ({}, fingerprint {})\n",
        data.plan.name.as_str(),
        match args.split {
            EvalSplit::Test => "test",
            EvalSplit::Val => "validation",
            EvalSplit::Train => "training",
        },
        data.plan.dir.display(),
        data.plan.fingerprint
    );
    if let Some(n) = note {
        s += &format!("note: {n}\n");
    }
    s
}

/// Per class: its errors and its row of the confusion matrix.
fn per_class(confusion: &[Vec<u64>]) -> String {
    let k = confusion.len();
    let mut s = String::from("\nerrors per class, and the confusion matrix (rows: the true class, columns: the predicted one)\n");
    s += &format!("{:>5} {:>7} {:>7} |", "class", "images", "errors");
    for c in 0..k {
        s += &format!(" {c:>5}");
    }
    s.push('\n');
    for (c, row) in confusion.iter().enumerate() {
        let images: u64 = row.iter().sum();
        s += &format!("{c:>5} {images:>7} {:>7} |", images - row[c]);
        for v in row {
            s += &format!(" {v:>5}");
        }
        s.push('\n');
    }
    s
}
