//! The user-facing config: raw serde structs that mirror the YAML (unknown keys are errors), and
//! [`RawConfig::resolve`], which validates, fills every default (they live in this file alone) and
//! produces the [`Resolved`] config that a run writes to `OUT/config.resolved.yaml` before training.

use std::path::{Path, PathBuf};

use kd_data::DatasetName;
use kd_loss::{KdWeights, SoftLoss};
use kd_model_zoo::{CnnSpec, MlpSpec, ModelSpec};
use serde::{Deserialize, Serialize};

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

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw: exactly the YAML's shape. Every field optional except `name`, so defaults are filled in
// `resolve` and nowhere else.

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub name: String,
    #[serde(default)]
    pub dataset: RawDataset,
    /// `auto | cpu | cuda | cuda:N`, or a list of those.
    #[serde(default)]
    pub device: Option<serde_yaml::Value>,
    #[serde(default)]
    pub threads: Option<usize>,
    /// Trials trained at once, each in a worker process of its own.
    #[serde(default)]
    pub workers: Option<usize>,
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
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTeacher {
    pub seed: Option<u64>,
    pub checkpoint: Option<PathBuf>,
    pub model: Option<RawModel>,
    pub train: Option<RawTrain>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStudent {
    pub model: Option<RawModel>,
    pub train: Option<RawTrain>,
}

/// One struct for every architecture; `resolve` rejects keys that do not belong to `arch`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub arch: Option<String>,
    pub hidden: Option<Vec<usize>>,
    pub dropout: Option<f64>,
    pub input_dropout: Option<f64>,
    pub channels: Option<Vec<usize>>,
    pub kernel: Option<usize>,
    pub fc: Option<Vec<usize>>,
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
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKd {
    pub temperature: Option<f64>,
    pub alpha: Option<f64>,
    pub beta: Option<f64>,
    pub soft_loss: Option<String>,
    pub t2_scaling: Option<bool>,
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
    pub seeds: Vec<u64>,
    pub teacher: TeacherCfg,
    pub student: StudentCfg,
    pub kd: KdWeights,
    pub baseline: bool,
    /// The grid axes as written (aliases expanded to dotted keys), in order.
    pub grid: Vec<GridAxis>,
    /// Every cell of the grid, fully resolved (one cell when there is no grid).
    pub cells: Vec<Cell>,
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
    /// `(key as written in grid, value as text)`, in grid order.
    pub swept: Vec<(String, String)>,
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
}

/// The dataset keys the teacher depends on: all but `transfer_fraction`, so students that see
/// less data share the teacher (and its cache) with students that see all of it.
#[derive(Debug, Serialize)]
pub struct TeacherData<'a> {
    pub name: DatasetName,
    pub dir: &'a Option<PathBuf>,
    pub val_size: usize,
    pub train_limit: Option<usize>,
    pub data_seed: u64,
}

/// The dataset keys a student trial's id depends on. `transfer_fraction` is left out when it is
/// 1, so trials on all the data keep the ids they had before the key existed (and stay
/// resumable).
#[derive(Debug, Serialize)]
pub struct StudentData<'a> {
    #[serde(flatten)]
    pub teacher: TeacherData<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_fraction: Option<f64>,
}

impl DatasetCfg {
    pub fn student_view(&self) -> StudentData<'_> {
        StudentData {
            teacher: self.teacher_view(),
            transfer_fraction: (self.transfer_fraction < 1.0).then_some(self.transfer_fraction),
        }
    }

    pub fn teacher_view(&self) -> TeacherData<'_> {
        TeacherData {
            name: self.name,
            dir: &self.dir,
            val_size: self.val_size,
            train_limit: self.train_limit,
            data_seed: self.data_seed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherCfg {
    pub seed: u64,
    pub checkpoint: Option<PathBuf>,
    pub model: ModelSpec,
    pub train: TrainCfg,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudentCfg {
    pub model: ModelSpec,
    pub train: TrainCfg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    Sgd,
    Adam,
    Adamw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Cosine decay from `lr` to 0 over all steps.
    Cosine,
    Constant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainCfg {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: Optimizer,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub schedule: Schedule,
}

// ---------------------------------------------------------------------------------------------
// Defaults: the only place they are written.

pub const DEFAULT_VAL_SIZE: usize = 5000;
pub const DEFAULT_TEMPERATURE: f64 = 4.0;
pub const DEFAULT_ALPHA: f64 = 0.9;

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Teacher,
    Student,
}

impl Role {
    fn key(self) -> &'static str {
        match self {
            Role::Teacher => "teacher",
            Role::Student => "student",
        }
    }

    fn default_mlp(self) -> MlpSpec {
        match self {
            Role::Teacher => MlpSpec {
                hidden: vec![1200, 1200],
                dropout: 0.5,
                input_dropout: 0.2,
            },
            Role::Student => MlpSpec {
                hidden: vec![800, 800],
                dropout: 0.0,
                input_dropout: 0.0,
            },
        }
    }

    fn default_epochs(self) -> usize {
        match self {
            Role::Teacher => 20,
            Role::Student => 15,
        }
    }
}

fn default_cnn() -> CnnSpec {
    CnnSpec {
        channels: vec![32, 64],
        kernel: 3,
        fc: vec![256],
        dropout: 0.5,
    }
}

// ---------------------------------------------------------------------------------------------

/// Parse YAML text. Syntax errors and unknown keys name the file, the key path and the line.
pub fn parse(text: &str, file: &Path) -> Result<RawConfig, ConfigError> {
    serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.to_path_buf(),
        message: e.to_string(),
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

fn check_prob(key: &str, p: f64, closed_top: bool) -> Result<f64, ConfigError> {
    let ok = p.is_finite() && p >= 0.0 && if closed_top { p <= 1.0 } else { p < 1.0 };
    if ok {
        Ok(p)
    } else {
        let range = if closed_top { "[0, 1]" } else { "[0, 1)" };
        Err(invalid(key, format!("must be in {range}, got {p}")))
    }
}

fn check_widths(key: &str, widths: &[usize], allow_empty: bool) -> Result<(), ConfigError> {
    if widths.is_empty() && !allow_empty {
        return Err(invalid(key, "must not be empty"));
    }
    match widths.iter().position(|&w| w == 0) {
        Some(i) => Err(invalid(format!("{key}[{i}]"), "must be > 0, got 0")),
        None => Ok(()),
    }
}

impl RawModel {
    fn resolve(&self, key: &str, role: Role) -> Result<ModelSpec, ConfigError> {
        let arch = self.arch.as_deref().unwrap_or("mlp");
        let foreign = |names: &[(&str, bool)], keys: &str| -> Result<(), ConfigError> {
            match names.iter().find(|(_, set)| *set) {
                Some((name, _)) => Err(invalid(
                    format!("{key}.{name}"),
                    format!("not a key of arch `{arch}` (its keys: {keys})"),
                )),
                None => Ok(()),
            }
        };
        match arch {
            "mlp" => {
                foreign(
                    &[
                        ("channels", self.channels.is_some()),
                        ("kernel", self.kernel.is_some()),
                        ("fc", self.fc.is_some()),
                    ],
                    "hidden, dropout, input_dropout",
                )?;
                let d = role.default_mlp();
                let spec = MlpSpec {
                    hidden: self.hidden.clone().unwrap_or(d.hidden),
                    dropout: check_prob(
                        &format!("{key}.dropout"),
                        self.dropout.unwrap_or(d.dropout),
                        false,
                    )?,
                    input_dropout: check_prob(
                        &format!("{key}.input_dropout"),
                        self.input_dropout.unwrap_or(d.input_dropout),
                        false,
                    )?,
                };
                check_widths(&format!("{key}.hidden"), &spec.hidden, true)?;
                Ok(ModelSpec::Mlp(spec))
            }
            "cnn" => {
                foreign(
                    &[
                        ("hidden", self.hidden.is_some()),
                        ("input_dropout", self.input_dropout.is_some()),
                    ],
                    "channels, kernel, fc, dropout",
                )?;
                let d = default_cnn();
                let spec = CnnSpec {
                    channels: self.channels.clone().unwrap_or(d.channels),
                    kernel: self.kernel.unwrap_or(d.kernel),
                    fc: self.fc.clone().unwrap_or(d.fc),
                    dropout: check_prob(
                        &format!("{key}.dropout"),
                        self.dropout.unwrap_or(d.dropout),
                        false,
                    )?,
                };
                check_widths(&format!("{key}.channels"), &spec.channels, false)?;
                check_widths(&format!("{key}.fc"), &spec.fc, true)?;
                if spec.kernel == 0 || spec.kernel.is_multiple_of(2) {
                    return Err(invalid(
                        format!("{key}.kernel"),
                        format!("must be odd and > 0, got {}", spec.kernel),
                    ));
                }
                Ok(ModelSpec::Cnn(spec))
            }
            other => Err(invalid(
                format!("{key}.arch"),
                format!("unknown architecture `{other}` (known: mlp, cnn)"),
            )),
        }
    }
}

impl RawTrain {
    fn resolve(&self, key: &str, role: Role) -> Result<TrainCfg, ConfigError> {
        let epochs = self.epochs.unwrap_or(role.default_epochs());
        if epochs == 0 {
            return Err(invalid(format!("{key}.epochs"), "must be > 0, got 0"));
        }
        let batch_size = self.batch_size.unwrap_or(128);
        if batch_size == 0 {
            return Err(invalid(format!("{key}.batch_size"), "must be > 0, got 0"));
        }
        let optimizer = match self.optimizer.as_deref().unwrap_or("sgd") {
            "sgd" => Optimizer::Sgd,
            "adam" => Optimizer::Adam,
            "adamw" => Optimizer::Adamw,
            other => {
                return Err(invalid(
                    format!("{key}.optimizer"),
                    format!("unknown optimizer `{other}` (known: sgd, adam, adamw)"),
                ))
            }
        };
        let schedule = match self.schedule.as_deref().unwrap_or("cosine") {
            "cosine" => Schedule::Cosine,
            "constant" => Schedule::Constant,
            other => {
                return Err(invalid(
                    format!("{key}.schedule"),
                    format!("unknown schedule `{other}` (known: cosine, constant)"),
                ))
            }
        };
        let default_lr = if optimizer == Optimizer::Sgd {
            0.05
        } else {
            1e-3
        };
        let lr = self.lr.unwrap_or(default_lr);
        if !(lr.is_finite() && lr > 0.0) {
            return Err(invalid(
                format!("{key}.lr"),
                format!("must be > 0, got {lr}"),
            ));
        }
        let momentum = check_prob(
            &format!("{key}.momentum"),
            self.momentum.unwrap_or(0.9),
            false,
        )?;
        let weight_decay = self.weight_decay.unwrap_or(0.0);
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return Err(invalid(
                format!("{key}.weight_decay"),
                format!("must be >= 0, got {weight_decay}"),
            ));
        }
        Ok(TrainCfg {
            epochs,
            batch_size,
            optimizer,
            lr,
            momentum,
            weight_decay,
            schedule,
        })
    }
}

impl RawKd {
    fn resolve(&self) -> Result<KdWeights, ConfigError> {
        let temperature = self.temperature.unwrap_or(DEFAULT_TEMPERATURE);
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(invalid(
                "kd.temperature",
                format!("must be > 0, got {temperature}"),
            ));
        }
        let alpha = check_prob("kd.alpha", self.alpha.unwrap_or(DEFAULT_ALPHA), true)?;
        let beta = match self.beta {
            Some(b) if b.is_finite() && b >= 0.0 => b,
            Some(b) => return Err(invalid("kd.beta", format!("must be >= 0, got {b}"))),
            // Rounded so that 1 - 0.9 reads as 0.1 in the resolved config and the frames.
            None => ((1.0 - alpha) * 1e12).round() / 1e12,
        };
        if alpha == 0.0 && beta == 0.0 {
            return Err(invalid(
                "kd.beta",
                "alpha and beta are both 0: nothing to train on",
            ));
        }
        let soft_loss = match self.soft_loss.as_deref().unwrap_or("ce") {
            "ce" => SoftLoss::Ce,
            "kl" => SoftLoss::Kl,
            "mse_logits" => SoftLoss::MseLogits,
            other => {
                return Err(invalid(
                    "kd.soft_loss",
                    format!("unknown soft loss `{other}` (known: ce, kl, mse_logits)"),
                ))
            }
        };
        Ok(KdWeights {
            temperature,
            alpha,
            beta,
            soft_loss,
            t2_scaling: self.t2_scaling.unwrap_or(true),
        })
    }
}

/// `auto | cpu | cuda | cuda:N`, checked for form only (availability is checked at run time).
pub fn parse_device_name(key: &str, s: &str) -> Result<String, ConfigError> {
    let ok = matches!(s, "auto" | "cpu" | "cuda")
        || s.strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok());
    if ok {
        Ok(s.to_string())
    } else {
        Err(invalid(
            key,
            format!("`{s}` is not a device (use auto, cpu, cuda or cuda:N)"),
        ))
    }
}

/// The dotted key a grid key stands for: the short aliases, or a dotted key under `student.` or
/// `kd.` (one teacher per sweep, so teacher keys cannot be swept).
pub fn grid_key(written: &str) -> Option<String> {
    Some(match written {
        "temperature" | "alpha" | "beta" | "soft_loss" | "t2_scaling" => format!("kd.{written}"),
        "hidden" => "student.model.hidden".into(),
        k if (k.starts_with("student.") || k.starts_with("kd.")) && !k.ends_with('.') => k.into(),
        _ => return None,
    })
}

/// The text of a swept value, for tables and column values.
pub fn value_text(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Sequence(items) => {
            let parts: Vec<String> = items.iter().map(value_text).collect();
            parts.join("-")
        }
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

/// Set each dotted key of `overrides` in the config `value` and parse the result back.
fn apply_overrides(
    value: &serde_yaml::Value,
    overrides: &[(&str, &serde_yaml::Value)],
) -> Result<RawConfig, String> {
    use serde_yaml::Value;
    let mut root = value.clone();
    for (key, v) in overrides {
        let mut node = &mut root;
        for part in key.split('.') {
            if node.is_null() {
                *node = Value::Mapping(Default::default());
            }
            let Value::Mapping(map) = node else {
                return Err(format!(
                    "`{key}`: `{part}` is inside a value that is not a mapping"
                ));
            };
            node = map
                .entry(Value::String(part.to_string()))
                .or_insert(Value::Null);
        }
        *node = (*v).clone();
    }
    serde_yaml::from_value(root).map_err(|e| format!("{e}"))
}

fn resolve_device(v: Option<&serde_yaml::Value>) -> Result<Vec<String>, ConfigError> {
    use serde_yaml::Value;
    match v {
        None | Some(Value::Null) => Ok(vec!["auto".into()]),
        Some(Value::String(s)) => Ok(vec![parse_device_name("device", s)?]),
        Some(Value::Sequence(items)) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => parse_device_name(&format!("device[{i}]"), s),
                other => Err(invalid(
                    format!("device[{i}]"),
                    format!("expected a string, got {other:?}"),
                )),
            })
            .collect(),
        Some(Value::Sequence(_)) => Err(invalid("device", "the list is empty")),
        Some(other) => Err(invalid(
            "device",
            format!("expected auto, cpu, cuda, cuda:N or a list of them, got {other:?}"),
        )),
    }
}

impl RawConfig {
    /// Validate every key (grid included), fill every default and expand the grid into cells.
    pub fn resolve(&self) -> Result<Resolved, ConfigError> {
        let mut base = self.resolve_base()?;
        let axes = self.grid_axes()?;
        let mut cells = vec![Cell {
            swept: vec![],
            student: base.student.clone(),
            kd: base.kd,
        }];
        if !axes.is_empty() {
            let mut plain = self.clone();
            plain.grid = None;
            let plain_value = serde_yaml::to_value(&plain).expect("raw config serialises");
            // Each value alone first, so an error names its axis and index.
            for (written, axis) in &axes {
                for (i, v) in axis.values.iter().enumerate() {
                    let key = format!("grid.{written}[{i}]");
                    apply_overrides(&plain_value, &[(axis.key.as_str(), v)])
                        .map_err(|m| invalid(&key, m))?
                        .resolve_base()
                        .map_err(|e| match e {
                            ConfigError::Invalid { key: k, message } if k == axis.key => {
                                invalid(&key, message)
                            }
                            other => invalid(&key, other.to_string()),
                        })?;
                }
            }
            cells.clear();
            let mut idx = vec![0usize; axes.len()];
            loop {
                let chosen: Vec<(&str, &serde_yaml::Value)> = axes
                    .iter()
                    .zip(&idx)
                    .map(|((_, a), &i)| (a.key.as_str(), &a.values[i]))
                    .collect();
                let swept = axes
                    .iter()
                    .zip(&idx)
                    .map(|((w, a), &i)| (w.clone(), value_text(&a.values[i])))
                    .collect::<Vec<_>>();
                let cell = apply_overrides(&plain_value, &chosen)
                    .map_err(|m| invalid("grid", m))?
                    .resolve_base()
                    .map_err(|e| {
                        let names: Vec<String> =
                            swept.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        invalid("grid", format!("cell {}: {e}", names.join(", ")))
                    })?;
                cells.push(Cell {
                    swept,
                    student: cell.student,
                    kd: cell.kd,
                });
                // Odometer over the axes, last axis fastest.
                let mut a = axes.len();
                loop {
                    if a == 0 {
                        break;
                    }
                    a -= 1;
                    idx[a] += 1;
                    if idx[a] < axes[a].1.values.len() {
                        break;
                    }
                    idx[a] = 0;
                }
                if idx.iter().all(|&i| i == 0) {
                    break;
                }
            }
        }
        base.grid = axes.into_iter().map(|(_, a)| a).collect();
        base.cells = cells;
        Ok(base)
    }

    /// The grid's axes: `(key as written, axis with the dotted key)`.
    fn grid_axes(&self) -> Result<Vec<(String, GridAxis)>, ConfigError> {
        let Some(grid) = &self.grid else {
            return Ok(vec![]);
        };
        let mut axes: Vec<(String, GridAxis)> = Vec::new();
        for (k, v) in grid {
            let written = match k {
                serde_yaml::Value::String(s) => s.clone(),
                other => {
                    return Err(invalid(
                        "grid",
                        format!("keys must be strings, got {other:?}"),
                    ))
                }
            };
            let key = grid_key(&written).ok_or_else(|| {
                invalid(
                    format!("grid.{written}"),
                    "not a grid key (use temperature, alpha, beta, soft_loss, hidden, or a dotted \
                     key under student. or kd., e.g. student.train.lr)",
                )
            })?;
            if axes.iter().any(|(_, a)| a.key == key) {
                return Err(invalid(
                    format!("grid.{written}"),
                    format!("sweeps {key} a second time"),
                ));
            }
            let values = match v {
                serde_yaml::Value::Sequence(items) if !items.is_empty() => items.clone(),
                serde_yaml::Value::Sequence(_) => {
                    return Err(invalid(format!("grid.{written}"), "the list is empty"))
                }
                _ => {
                    return Err(invalid(
                        format!("grid.{written}"),
                        "must be a list of values",
                    ))
                }
            };
            axes.push((written, GridAxis { key, values }));
        }
        Ok(axes)
    }

    /// Apply `--set KEY=VALUE` overrides (VALUE is YAML) to this config.
    pub fn with_sets(&self, sets: &[String]) -> Result<RawConfig, ConfigError> {
        let mut value = serde_yaml::to_value(self).expect("raw config serialises");
        for set in sets {
            let (key, text) = set.split_once('=').ok_or_else(|| {
                invalid(
                    format!("--set {set}"),
                    "expected KEY=VALUE, e.g. kd.temperature=8",
                )
            })?;
            let v: serde_yaml::Value = serde_yaml::from_str(text)
                .map_err(|e| invalid(format!("--set {key}"), format!("bad YAML value: {e}")))?;
            let key = grid_key(key).unwrap_or_else(|| key.to_string());
            value = serde_yaml::to_value(
                apply_overrides(&value, &[(key.as_str(), &v)])
                    .map_err(|m| invalid(format!("--set {key}"), m))?,
            )
            .expect("raw config serialises");
        }
        serde_yaml::from_value(value).map_err(|e| invalid("--set", e.to_string()))
    }

    fn resolve_base(&self) -> Result<Resolved, ConfigError> {
        let name = self.name.trim();
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(invalid(
                "name",
                format!(
                    "`{}` must be a non-empty file name (it names results/<name>/)",
                    self.name
                ),
            ));
        }
        let ds = &self.dataset;
        let ds_name = ds.name.as_deref().unwrap_or("fashion-mnist");
        let dataset = DatasetCfg {
            name: DatasetName::parse(ds_name).ok_or_else(|| {
                invalid(
                    "dataset.name",
                    format!("unknown dataset `{ds_name}` (known: fashion-mnist, mnist, idx)"),
                )
            })?,
            dir: ds.dir.clone(),
            val_size: ds.val_size.unwrap_or(DEFAULT_VAL_SIZE),
            train_limit: ds.train_limit,
            data_seed: ds.data_seed.unwrap_or(0),
            transfer_fraction: ds.transfer_fraction.unwrap_or(1.0),
        };
        let f = dataset.transfer_fraction;
        if !(f > 0.0 && f <= 1.0) {
            return Err(invalid(
                "dataset.transfer_fraction",
                format!("must be in (0, 1] (the share of the training images the students see), got {f}"),
            ));
        }
        if dataset.name == DatasetName::Idx && dataset.dir.is_none() {
            return Err(invalid("dataset.dir", "required when dataset.name is idx"));
        }
        if dataset.train_limit == Some(0) {
            return Err(invalid(
                "dataset.train_limit",
                "must be > 0 (or null for all images)",
            ));
        }
        let seeds = self.seeds.clone().unwrap_or_else(|| vec![0]);
        if seeds.is_empty() {
            return Err(invalid("seeds", "the list is empty"));
        }
        if let Some(i) = (1..seeds.len()).find(|&i| seeds[..i].contains(&seeds[i])) {
            return Err(invalid(
                format!("seeds[{i}]"),
                format!("{} appears twice", seeds[i]),
            ));
        }
        if self.threads == Some(0) {
            return Err(invalid("threads", "must be > 0 (or null for one per core)"));
        }
        if self.workers == Some(0) {
            return Err(invalid(
                "workers",
                "must be > 0 (or null for one worker per listed device)",
            ));
        }
        let device = resolve_device(self.device.as_ref())?;
        let model = |raw: &Option<RawModel>, role: Role| match raw {
            Some(m) => m.resolve(&format!("{}.model", role.key()), role),
            None => Ok(ModelSpec::Mlp(role.default_mlp())),
        };
        let train = |raw: &Option<RawTrain>, role: Role| {
            raw.clone()
                .unwrap_or_default()
                .resolve(&format!("{}.train", role.key()), role)
        };
        Ok(Resolved {
            name: name.to_string(),
            dataset,
            workers: self.workers.unwrap_or(device.len()),
            device,
            threads: self.threads,
            seeds,
            teacher: TeacherCfg {
                seed: self.teacher.seed.unwrap_or(0),
                checkpoint: self.teacher.checkpoint.clone(),
                model: model(&self.teacher.model, Role::Teacher)?,
                train: train(&self.teacher.train, Role::Teacher)?,
            },
            student: StudentCfg {
                model: model(&self.student.model, Role::Student)?,
                train: train(&self.student.train, Role::Student)?,
            },
            kd: self.kd.resolve()?,
            baseline: self.baseline.unwrap_or(true),
            grid: vec![],
            cells: vec![],
        })
    }
}

/// What one trial trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TrialKind {
    Teacher,
    Baseline,
    Kd,
}

impl TrialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TrialKind::Teacher => "teacher",
            TrialKind::Baseline => "baseline",
            TrialKind::Kd => "kd",
        }
    }
}

/// One student trial of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct StudentTrial {
    pub kind: TrialKind,
    pub seed: u64,
    pub student: StudentCfg,
    pub weights: KdWeights,
    /// The grid values of the cell (empty for a baseline: it serves every cell of its student).
    pub swept: Vec<(String, String)>,
}

impl Resolved {
    /// The student trials, in run order: per seed, per cell, the cell's baseline (once per
    /// distinct student config and seed, if asked for) then the KD trial.
    pub fn student_trials(&self) -> Vec<StudentTrial> {
        let mut out: Vec<StudentTrial> = Vec::new();
        for &seed in &self.seeds {
            for cell in &self.cells {
                let has_baseline = out.iter().any(|t| {
                    t.kind == TrialKind::Baseline && t.seed == seed && t.student == cell.student
                });
                if self.baseline && !has_baseline {
                    out.push(StudentTrial {
                        kind: TrialKind::Baseline,
                        seed,
                        student: cell.student.clone(),
                        weights: KdWeights::hard_only(),
                        swept: vec![],
                    });
                }
                out.push(StudentTrial {
                    kind: TrialKind::Kd,
                    seed,
                    student: cell.student.clone(),
                    weights: cell.kd,
                    swept: cell.swept.clone(),
                });
            }
        }
        out
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a resolved config always serialises")
    }
}
