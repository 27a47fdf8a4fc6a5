//! `kd export MODEL --format onnx`: a kept student (`OUT/models/<trial id>.safetensors`) as an
//! ONNX model (opset 17, IR version 8), written from Rust: the family's evaluation-mode forward
//! pass ([`kd_model_zoo::Family::graph`]) with the file's tensors as float32 initializers under
//! their reference names. Its input `input` is a `[batch, C, H, W]` float32 batch of
//! standardised images, or with `--pixels`, `pixels`, a `[batch, C, H, W]` uint8 batch of raw
//! pixels that the graph standardises itself (`Cast`, `/ 255`, `- mean`, `/ std`, the model's
//! statistics); its output `logits` is `[batch, classes]` at T = 1. A bf16 student's weights are
//! written in float32 (exact), and the graph computes in float32.

mod proto;

use std::path::{Path, PathBuf};

use kd_model_zoo::graph::{Attr, Constant, Graph};
use kd_model_zoo::InputShape;
use prost::Message;
use tch::{Kind, Tensor};

use crate::error::RunError;
use crate::run::models::{self, ModelMeta};
use proto::*;

/// `kd export`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// A kept student: OUT/models/<trial id>.safetensors, or a trial id kept in one
    /// `results/*/models/`.
    pub model: PathBuf,
    /// `onnx` (a zoo student), `torchscript` (a TorchScript student: the trained module, as
    /// `torch.jit.save` writes it), or `safetensors` (the kept tensors under their reference
    /// names, with the kept file's metadata).
    #[arg(long, value_enum, default_value_t = Format::Onnx)]
    pub format: Format,
    /// The model takes raw uint8 pixels and standardises them itself (default: standardised
    /// float32 images).
    #[arg(long)]
    pub pixels: bool,
    /// Where to write it (default: beside MODEL, `<trial id>.onnx`, `<trial id>.pixels.onnx` or
    /// `<trial id>.pt`; safetensors needs it).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Onnx,
    Torchscript,
    Safetensors,
}

/// Export `args.model`; where it was written.
pub fn export(args: &ExportArgs) -> Result<PathBuf, RunError> {
    let (meta, tensors) = match args.format {
        Format::Torchscript => models::read_any(&args.model)?,
        _ => models::read(&args.model)?,
    };
    let fail = |reason: String| RunError::ModelFile {
        file: args.model.clone(),
        reason,
    };
    if args.pixels && args.format != Format::Onnx {
        return Err(fail(
            "--pixels is an ONNX graph's input; a TorchScript or safetensors export takes \
             standardised images"
                .into(),
        ));
    }
    match args.format {
        Format::Onnx => {
            let bytes = onnx(&meta, &tensors, args.pixels).map_err(fail)?;
            let out = args
                .output
                .clone()
                .unwrap_or_else(|| default_output(&args.model, args.pixels));
            kd_report::write_atomic(&out, &bytes)?;
            Ok(out)
        }
        Format::Torchscript => {
            let out = args
                .output
                .clone()
                .unwrap_or_else(|| args.model.with_extension("pt"));
            models::write_torchscript(&out, &meta.model, &tensors)?;
            Ok(out)
        }
        Format::Safetensors => {
            let out = args.output.clone().ok_or_else(|| {
                fail("--format safetensors needs -o FILE (MODEL is already one)".into())
            })?;
            let bytes = std::fs::read(&args.model).map_err(|e| RunError::Io {
                file: args.model.clone(),
                source: e,
            })?;
            kd_report::write_atomic(&out, &bytes)?;
            Ok(out)
        }
    }
}

fn attr(name: &str, a: &Attr) -> AttributeProto {
    let base = AttributeProto {
        name: name.into(),
        ..Default::default()
    };
    match a {
        Attr::Int(i) => AttributeProto {
            i: Some(*i),
            r#type: Some(ATTR_INT),
            ..base
        },
        Attr::Float(f) => AttributeProto {
            f: Some(*f),
            r#type: Some(ATTR_FLOAT),
            ..base
        },
        Attr::Ints(v) => AttributeProto {
            ints: v.clone(),
            r#type: Some(ATTR_INTS),
            ..base
        },
    }
}

/// A float32 initializer of `t`'s values.
fn initializer(name: &str, t: &Tensor) -> TensorProto {
    let t = t.to_kind(Kind::Float).contiguous();
    let n = t.numel();
    let mut values = vec![0f32; n];
    t.copy_data(&mut values, n);
    TensorProto {
        dims: t.size(),
        data_type: FLOAT,
        name: name.into(),
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn constant(c: &Constant) -> TensorProto {
    match c {
        Constant::Floats(name, dims, v) => TensorProto {
            dims: dims.clone(),
            data_type: FLOAT,
            name: name.clone(),
            raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        },
        Constant::Ints(name, dims, v) => TensorProto {
            dims: dims.clone(),
            data_type: INT64,
            name: name.clone(),
            int64_data: v.clone(),
            ..Default::default()
        },
    }
}

fn value_info(name: &str, elem_type: i32, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => DimValue::DimValue(*v),
                None => DimValue::DimParam("batch".into()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TypeProtoTensor {
                elem_type,
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
    }
}

/// The nodes that standardise raw uint8 pixels as the data pipeline does: `(x / 255 - mean) /
/// std` per channel, in float32.
fn standardise(g: &mut Graph, meta: &ModelMeta) {
    let c = meta.input[0] as i64;
    let per = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    g.constants.extend([
        Constant::Floats("pixel_scale".into(), vec![], vec![255.0]),
        Constant::Floats("pixel_mean".into(), vec![1, c, 1, 1], per(&meta.mean)),
        Constant::Floats("pixel_std".into(), vec![1, c, 1, 1], per(&meta.std)),
    ]);
    g.then("Cast", &[], vec![("to", Attr::Int(FLOAT as i64))]);
    g.then("Div", &["pixel_scale"], vec![]);
    g.then("Sub", &["pixel_mean"], vec![]);
    g.then("Div", &["pixel_std"], vec![]);
}

/// The ONNX model of a kept student, serialised.
pub fn onnx(
    meta: &ModelMeta,
    tensors: &[(String, Tensor)],
    pixels: bool,
) -> Result<Vec<u8>, String> {
    let [c, h, w] = meta.input;
    let shape = InputShape {
        channels: c,
        height: h,
        width: w,
    };
    let input = if pixels { "pixels" } else { "input" };
    let mut g = Graph::new(input);
    if pixels {
        standardise(&mut g, meta);
    }
    meta.model
        .graph(&mut g, shape, meta.classes)
        .map_err(|e| format!("model.{e}"))?;
    let (c, h, w) = (c as i64, h as i64, w as i64);
    let graph = GraphProto {
        input: vec![value_info(
            input,
            if pixels { UINT8 } else { FLOAT },
            &[None, Some(c), Some(h), Some(w)],
        )],
        output: vec![value_info(
            "logits",
            FLOAT,
            &[None, Some(meta.classes as i64)],
        )],
        name: meta.trial_id.clone(),
        ..graph_proto(&g, input, meta, tensors)?
    };
    Ok(model_proto(meta, graph, input, pixels).encode_to_vec())
}

/// `g`'s nodes and initializers: the last value is named `logits`; every node input that no
/// node makes, nor `input` nor a constant, is a model tensor, renamed to its reference name.
fn graph_proto(
    g: &Graph,
    input: &str,
    meta: &ModelMeta,
    tensors: &[(String, Tensor)],
) -> Result<GraphProto, String> {
    let made: std::collections::HashSet<&str> = g
        .nodes
        .iter()
        .map(|n| n.output.as_str())
        .chain(std::iter::once(input))
        .chain(g.constants.iter().map(|c| match c {
            Constant::Floats(n, ..) | Constant::Ints(n, ..) => n.as_str(),
        }))
        .collect();
    let by_name: std::collections::HashMap<&str, &Tensor> =
        tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut used = std::collections::BTreeSet::new();
    let mut nodes = Vec::with_capacity(g.nodes.len());
    for (i, n) in g.nodes.iter().enumerate() {
        let mut inputs = Vec::with_capacity(n.inputs.len());
        for v in &n.inputs {
            if made.contains(v.as_str()) {
                inputs.push(v.clone());
                continue;
            }
            let name = meta.model.reference_name(v);
            if !by_name.contains_key(name.as_str()) {
                return Err(format!("it has no tensor `{name}`, which the graph reads"));
            }
            used.insert(name.clone());
            inputs.push(name);
        }
        let output = if n.output == g.last {
            "logits".into()
        } else {
            n.output.clone()
        };
        nodes.push(NodeProto {
            input: inputs,
            output: vec![output],
            name: format!("{}_{i}", n.op),
            op_type: n.op.into(),
            attribute: n.attrs.iter().map(|(k, a)| attr(k, a)).collect(),
            ..Default::default()
        });
    }
    let mut initializer: Vec<TensorProto> = used
        .iter()
        .map(|n| self::initializer(n, by_name[n.as_str()]))
        .collect();
    initializer.extend(g.constants.iter().map(constant));
    Ok(GraphProto {
        node: nodes,
        initializer,
        ..Default::default()
    })
}

/// The model around `graph`: the opset, the producer, what the input is, the metadata.
fn model_proto(meta: &ModelMeta, graph: GraphProto, input: &str, pixels: bool) -> ModelProto {
    let json = |v: serde_json::Result<String>| v.expect("serialises");
    let props = [
        ("trial_id", meta.trial_id.clone()),
        ("model", json(serde_json::to_string(&meta.model))),
        ("mean", json(serde_json::to_string(&meta.mean))),
        ("std", json(serde_json::to_string(&meta.std))),
        ("input", input.to_string()),
    ];
    ModelProto {
        ir_version: IR_VERSION,
        producer_name: "kd-sweep".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!(
            "{} ({} {}), exported by kd export: input `{input}` ({}), output `logits` at T = 1",
            meta.trial_id,
            meta.model.arch(),
            meta.model.shape_label(),
            if pixels {
                "uint8 raw pixels [batch, C, H, W]"
            } else {
                "float32 standardised images [batch, C, H, W]"
            }
        ),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        metadata_props: props
            .into_iter()
            .map(|(k, v)| StringStringEntryProto {
                key: k.into(),
                value: v,
            })
            .collect(),
    }
}

/// Where `kd export` writes by default: beside the kept file.
pub fn default_output(model: &Path, pixels: bool) -> PathBuf {
    model.with_extension(if pixels { "pixels.onnx" } else { "onnx" })
}
