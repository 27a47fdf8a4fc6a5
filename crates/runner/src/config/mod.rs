//! The user-facing config: raw serde structs that mirror the YAML (unknown keys are errors), and
//! [`RawConfig::resolve`] (in `grid.rs`), which expands the grid into cells and resolves each
//! through `resolve.rs` (validation, and every default: they live there alone) into the
//! [`Resolved`] config that a run writes to
//! `OUT/config.resolved.yaml` before training. The plan (`crate::plan`) turns it into trials.

mod checks;
mod device;
pub mod ensemble;
pub mod every;
mod grid;
mod kd;
mod model;
mod resolve;
pub mod search;
mod train;

use std::path::{Path, PathBuf};

use kd_data::DatasetName;
use kd_loss::KdWeights;
/// The `kd:` block as written; it holds each objective's own keys, so the loss crate declares it.
pub use kd_loss::RawKd;
use kd_model_zoo::ModelSpec;
use serde::{Deserialize, Serialize};

pub use device::{expand_all, parse_device_name};
pub use grid::{grid_key, value_text};
pub use kd::{DEFAULT_ALPHA, DEFAULT_TEMPERATURE};
pub use model::RawModel;
pub use resolve::DEFAULT_VAL_SIZE;
pub use train::{Optimizer, Precision, Save, Schedule, TestEvery, TrainCfg, Weights};

/// A config problem: the dotted key (or file) and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// A unit enum's name as serde reads and writes it (`Optimizer::Adamw` -> `adamw`): the one
/// spelling of config values, record columns and ids.
pub fn enum_name<T: Serialize>(value: &T) -> String {
    match serde_yaml::to_value(value) {
        Ok(serde_yaml::Value::String(s)) => s,
        other => unreachable!("a unit enum serialises to a string, got {other:?}"),
    }
}

/// The unit enum named `text` (its serde spelling), one of `all`; `key` and `what` name the
/// setting in the error, which lists the known names.
pub(crate) fn parse_enum<T: Serialize + serde::de::DeserializeOwned>(
    key: String,
    what: &str,
    text: &str,
    all: &[T],
) -> Result<T, ConfigError> {
    serde_yaml::from_value(serde_yaml::Value::String(text.into())).map_err(|_| {
        let known: Vec<String> = all.iter().map(enum_name).collect();
        invalid(
            key,
            format!("unknown {what} `{text}` (known: {})", known.join(", ")),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Raw: exactly the YAML's shape. Every field optional except `name`, so defaults are filled in
// `resolve.rs` and nowhere else.

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub name: String,
    #[serde(default)]
    pub dataset: RawDataset,
    /// `auto | all | cpu | cuda | cuda:N`, or a list of those but `all` (every visible GPU).
    #[serde(default)]
    pub device: Option<serde_yaml::Value>,
    #[serde(default)]
    pub threads: Option<usize>,
    /// Trials trained at once, each in a worker process of its own.
    #[serde(default)]
    pub workers: Option<usize>,
    /// `auto | off | N`: MLP students of one shape trained as one packed model.
    #[serde(default)]
    pub pack: Option<serde_yaml::Value>,
    #[serde(default)]
    pub seeds: Option<Vec<u64>>,
    #[serde(default)]
    pub teacher: RawTeacher,
    #[serde(default)]
    pub student: RawStudent,
    #[serde(default)]
    pub kd: RawKd,
    #[serde(default)]
    pub baseline: Option<bool>,
    /// Sweep axes: each key a list; the sweep is their Cartesian product times `seeds`.
    #[serde(default)]
    pub grid: Option<serde_yaml::Mapping>,
    /// Claims checked after the sweep, each PASS or FAIL in the report (`kd_report::claims`).
    #[serde(default)]
    pub expect: Option<Vec<serde_yaml::Value>>,
    /// How often a trial in flight writes a checkpoint (`30s`, `5m`, `1h`; `0`: never). A run
    /// option: in no id, not sweepable.
    #[serde(default)]
    pub checkpoint_every: Option<serde_yaml::Value>,
    /// `grid` (default) or successive halving over the KD cells ([`search::Search`]).
    #[serde(default)]
    pub search: Option<search::RawSearch>,
    /// `best | last | none`: the students' weights kept in `OUT/models/` ([`Save`]).
    #[serde(default)]
    pub save: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDataset {
    pub name: Option<String>,
    pub dir: Option<PathBuf>,
    pub val_size: Option<usize>,
    pub train_limit: Option<usize>,
    pub data_seed: Option<u64>,
    pub transfer_fraction: Option<f64>,
    pub omit_classes: Option<Vec<usize>>,
    pub keep_classes: Option<Vec<usize>>,
    pub classes: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTeacher {
    pub seed: Option<u64>,
    pub checkpoint: Option<PathBuf>,
    /// A PyTorch teacher of any architecture, exported with `torch.jit.trace`/`script`.
    pub torchscript: Option<PathBuf>,
    pub model: Option<RawModel>,
    pub train: Option<RawTrain>,
    /// `K`: an ensemble of K members of this recipe, seeds seed..seed+K-1 ([`ensemble`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<usize>,
    /// An ensemble of these teachers, each a teacher block of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<RawTeacher>>,
    /// The members' weights in the ensemble (default equal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<f64>>,
    /// `arithmetic | geometric`: how the members combine ([`ensemble::Rule`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStudent {
    pub model: Option<RawModel>,
    /// A PyTorch student of any architecture, a `torch.jit.script` export: the same as
    /// `model: {arch: torchscript, file: FILE}` (`kd_model_zoo::TorchscriptSpec`).
    pub torchscript: Option<PathBuf>,
    pub train: Option<RawTrain>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrain {
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub optimizer: Option<String>,
    pub lr: Option<f64>,
    pub momentum: Option<f64>,
    pub weight_decay: Option<f64>,
    pub schedule: Option<String>,
    pub eval_every: Option<usize>,
    /// `best` or a number of epochs (see [`TestEvery`]).
    pub test_every: Option<serde_yaml::Value>,
    pub jitter: Option<usize>,
    pub max_norm: Option<f64>,
    pub milestones: Option<Vec<usize>>,
    pub gamma: Option<f64>,
    pub crop: Option<usize>,
    pub flip: Option<bool>,
    pub label_smoothing: Option<f64>,
    pub precision: Option<String>,
    pub cudnn_benchmark: Option<bool>,
    /// `last` or `best`: the weights a trial ends with ([`Weights`]).
    pub weights: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Resolved: every value explicit.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    pub name: String,
    pub dataset: DatasetCfg,
    pub device: Vec<String>,
    /// libtorch intra-op threads per worker; `null` shares the cores among the workers.
    pub threads: Option<usize>,
    /// Trials trained at once, each in a worker process; worker i uses `device[i % len]`.
    /// Default: one per listed device.
    pub workers: usize,
    /// Whether and how many MLP students train as one packed model.
    pub pack: Pack,
    pub seeds: Vec<u64>,
    /// The teacher; of an ensemble, its first member (`ensemble` says the rest).
    pub teacher: TeacherCfg,
    /// An ensemble teacher's members, weights and rule (none: a lone teacher). Left out of the
    /// serialised form when unset, so configs without one keep their digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<ensemble::EnsembleCfg>,
    pub student: StudentCfg,
    pub kd: KdWeights,
    pub baseline: bool,
    /// The grid axes as written (aliases expanded to dotted keys), in order.
    pub grid: Vec<GridAxis>,
    /// Every cell of the grid, fully resolved (one cell when there is no grid).
    pub cells: Vec<Cell>,
    /// The claims the report checks (`expect:`), validated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect: Vec<kd_report::Claim>,
    /// How the KD cells are trained: all to the end, or successive halving. In no id.
    #[serde(default, skip_serializing_if = "search::Search::is_grid")]
    pub search: search::Search,
    /// Which weights of each student are kept in `OUT/models/`. In no id.
    #[serde(default, skip_serializing_if = "Save::is_best")]
    pub save: Save,
    /// `checkpoint_every` (none: off): a run option, so in no id and not in the config's
    /// digest (never serialised).
    #[serde(skip, default = "default_checkpoint_every")]
    pub checkpoint_every: Option<std::time::Duration>,
}

fn default_checkpoint_every() -> Option<std::time::Duration> {
    Some(every::DEFAULT_EVERY)
}

/// One axis of the grid: a dotted key and its values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridAxis {
    pub key: String,
    pub values: Vec<serde_yaml::Value>,
}

/// One grid cell: the swept values and the student and KD settings they produce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// `(key as written in grid, value)`, in grid order.
    pub swept: Vec<(String, serde_yaml::Value)>,
    pub student: StudentCfg,
    pub kd: KdWeights,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetCfg {
    pub name: DatasetName,
    pub dir: Option<PathBuf>,
    pub val_size: usize,
    pub train_limit: Option<usize>,
    pub data_seed: u64,
    /// The share of the training split the students learn from (a seeded random subset, see
    /// `kd_data::transfer_rows`); the teacher always trains on all of it.
    pub transfer_fraction: f64,
    /// Classes left out of the students' transfer set (the teacher sees every class).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omit_classes: Vec<usize>,
    /// The only classes in the students' transfer set (empty: all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_classes: Vec<usize>,
    /// A folder's class count (`idx`: its labels must lie below it); unset: a named dataset's
    /// own, or one more than a folder's largest training label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherCfg {
    pub seed: u64,
    pub checkpoint: Option<PathBuf>,
    /// A TorchScript teacher (`kd_model_zoo::Scripted`): it stands for `model` and is not
    /// trained here. Left out of the serialised form when unset (ids made before it stay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torchscript: Option<PathBuf>,
    pub model: ModelSpec,
    pub train: TrainCfg,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudentCfg {
    pub model: ModelSpec,
    pub train: TrainCfg,
}

/// `pack`: students of one MLP shape and training recipe train as one model with their weights
/// stacked along a leading axis. Packed trials record `exec: packed` and hash it into their id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pack {
    /// Packed, pack size chosen from memory.
    #[default]
    Auto,
    /// One student at a time (`nn::Linear` layers).
    Off,
    /// Packed, at most this many students per pack.
    Max(usize),
}

impl Serialize for Pack {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Pack::Auto => s.serialize_str("auto"),
            Pack::Off => s.serialize_str("off"),
            Pack::Max(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Pack {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_yaml::Value::deserialize(d)?;
        resolve::parse_pack(Some(&v)).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------

/// Parse YAML text. Syntax errors and unknown keys name the file, the key path and the line.
pub fn parse(text: &str, file: &Path) -> Result<RawConfig, ConfigError> {
    serde_yaml::from_str(text).map_err(|e| {
        let mut message = e.to_string();
        if message.contains("repetition limit exceeded") {
            message.push_str(
                " (the file expands YAML aliases, `*name`, too many times: an alias bomb, or a \
                 config that repeats an anchor; write the values out instead)",
            );
        }
        ConfigError::Syntax {
            file: file.to_path_buf(),
            message,
        }
    })
}

/// Read and parse a config file.
pub fn load(path: &Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        file: path.to_path_buf(),
        source: e,
    })?;
    parse(&text, path)
}

impl Resolved {
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a resolved config always serialises")
    }
}
