//! The records of a sweep, each defined once: [`TrialRecord`] (a row of `trials`) and
//! [`EpochRecord`] (a row of `epochs`), with [`Kind`] and [`Status`] as types, not strings.
//!
//! The [`record!`] macro turns one struct definition into the struct, its column list, its
//! Polars frame and the decoder back from a frame, so a column cannot be added in one place and
//! forgotten in another. The runner builds records; the report reads them; both use these types.

use std::fmt;
use std::path::Path;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::ReportError;

mod checks;
mod frames;

pub use frames::{
    confusion_frame, epoch_records, epochs_frame, read_column, swept_keys, trial_records,
    trials_frame, ADDED_LATER,
};

/// A cell value of any column, for keys and labels: a setting of a trial (`lr`, `soft_loss`,
/// a swept key) compared without formatting it first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl Eq for Value {}

impl std::hash::Hash for Value {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Value::Null => {}
            Value::Bool(b) => b.hash(state),
            Value::Int(i) => i.hash(state),
            Value::Float(f) => f.to_bits().hash(state),
            Value::Str(s) => s.hash(state),
        }
    }
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("-"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

/// What a trial trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Teacher,
    /// The student on hard targets only (alpha 0, beta 1).
    Baseline,
    /// The student distilled from the teacher.
    Kd,
}

/// How a trial ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// A loss, a weight or an output became NaN or infinite; training stopped at that epoch.
    Diverged,
    /// The trial could not run to its end (its worker died, or it raised an error).
    Failed,
    /// Stopped at a rung by successive halving (`search: halving`), its cell behind on
    /// validation; its epochs so far are kept, it has no test numbers.
    Pruned,
}

macro_rules! text_enum {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),* }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(<$t>::$v),)* _ => None }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// How a student trial was trained: alone (`nn::Linear` layers) or in a pack of students whose
/// weights are stacked along a leading axis (batched matrix products). The two give the same
/// maths in another order of floating-point operations, so the mode is part of the trial id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exec {
    #[default]
    Single,
    Packed,
}

text_enum!(Exec { Single => "single", Packed => "packed" });

text_enum!(Kind { Teacher => "teacher", Baseline => "baseline", Kd => "kd" });
text_enum!(Status { Ok => "ok", Diverged => "diverged", Failed => "failed", Pruned => "pruned" });

/// A Rust type that is one column: how a `Vec` of it becomes a Polars column and back, and
/// its [`Value`].
pub trait Field: Sized + Clone {
    fn column(name: &str, values: Vec<Self>) -> Column;
    /// Decode a column; the error says what is wrong with it (the caller names the column).
    fn read(column: &Column) -> std::result::Result<Vec<Self>, String>;
    fn value(&self) -> Value;
    /// The values of a column that a file written before it existed lacks, when there is a
    /// value that was true of every such row; `None`: the column is required.
    fn absent(_rows: usize) -> Option<Vec<Self>> {
        None
    }
    /// All-null values, for an optional column added after files were written
    /// ([`ADDED_LATER`]); `None` for a type without a null.
    fn nulls(_rows: usize) -> Option<Vec<Self>> {
        None
    }
}

fn all_present<T>(values: Vec<Option<T>>) -> std::result::Result<Vec<T>, String> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| format!("has no value in row {i}")))
        .collect()
}

macro_rules! numeric_field {
    ($t:ty, $dtype:expr, $acc:ident, $value:expr) => {
        impl Field for Option<$t> {
            fn column(name: &str, values: Vec<Self>) -> Column {
                Column::new(name.into(), values)
            }
            fn read(column: &Column) -> std::result::Result<Vec<Self>, String> {
                let cast = column.cast(&$dtype).map_err(|e| e.to_string())?;
                let ca = cast.$acc().map_err(|e| e.to_string())?;
                if ca.null_count() > column.null_count() {
                    return Err(format!("is not a {} column", stringify!($t)));
                }
                Ok((0..ca.len()).map(|i| ca.get(i)).collect())
            }
            fn value(&self) -> Value {
                self.map_or(Value::Null, $value)
            }
            fn nulls(rows: usize) -> Option<Vec<Self>> {
                Some(vec![None; rows])
            }
        }
        impl Field for $t {
            fn column(name: &str, values: Vec<Self>) -> Column {
                Column::new(name.into(), values)
            }
            fn read(column: &Column) -> std::result::Result<Vec<Self>, String> {
                all_present(<Option<$t>>::read(column)?)
            }
            fn value(&self) -> Value {
                ($value)(*self)
            }
        }
    };
}

numeric_field!(u64, DataType::UInt64, u64, |v: u64| Value::Int(v as i64));
numeric_field!(u32, DataType::UInt32, u32, |v: u32| Value::Int(v as i64));
numeric_field!(f64, DataType::Float64, f64, Value::Float);
numeric_field!(bool, DataType::Boolean, bool, Value::Bool);

impl Field for Option<String> {
    fn column(name: &str, values: Vec<Self>) -> Column {
        Column::new(name.into(), values)
    }
    fn read(column: &Column) -> std::result::Result<Vec<Self>, String> {
        let ca = column
            .str()
            .map_err(|_| format!("is {}, not text", column.dtype()))?;
        Ok((0..ca.len())
            .map(|i| ca.get(i).map(str::to_string))
            .collect())
    }
    fn value(&self) -> Value {
        self.clone().map_or(Value::Null, Value::Str)
    }
    fn nulls(rows: usize) -> Option<Vec<Self>> {
        Some(vec![None; rows])
    }
}

impl Field for String {
    fn column(name: &str, values: Vec<Self>) -> Column {
        Column::new(name.into(), values)
    }
    fn read(column: &Column) -> std::result::Result<Vec<Self>, String> {
        all_present(<Option<String>>::read(column)?)
    }
    fn value(&self) -> Value {
        Value::Str(self.clone())
    }
}

/// `Field` for a text enum; `absent = V` lets a file written before the column existed read
/// as V in every row.
macro_rules! enum_field {
    ($t:ty $(, absent = $default:expr)?) => {
        impl Field for $t {
            fn column(name: &str, values: Vec<Self>) -> Column {
                Column::new(
                    name.into(),
                    values.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
                )
            }
            fn read(column: &Column) -> std::result::Result<Vec<Self>, String> {
                String::read(column)?
                    .iter()
                    .map(|s| <$t>::parse(s).ok_or_else(|| format!("has an unknown value `{s}`")))
                    .collect()
            }
            fn value(&self) -> Value {
                Value::Str(self.as_str().to_string())
            }
            $(
                fn absent(rows: usize) -> Option<Vec<Self>> {
                    Some(vec![$default; rows])
                }
            )?
        }
    };
}

enum_field!(Kind);
enum_field!(Status);

// `exec` was added after the first typed frames: rows without it were trained alone.
enum_field!(Exec, absent = Exec::Single);

/// Declare a record: the struct, `COLUMNS` (its fields in order), `columns(rows)` (one Polars
/// column per field), `decode(df, file)` and `get(column)`. Fields after `extra` are not
/// columns; `decode` fills them with their default.
macro_rules! record {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)*
        }
        extra {
            $($(#[$xmeta:meta])* pub $xfield:ident: $xty:ty,)*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            $($(#[$xmeta])* pub $xfield: $xty,)*
        }

        impl $name {
            /// The column names, in order.
            pub const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// One column per field.
            pub fn columns(rows: &[Self]) -> Vec<Column> {
                vec![$(<$ty as Field>::column(
                    stringify!($field),
                    rows.iter().map(|r| r.$field.clone()).collect(),
                )),*]
            }

            /// Rows back from a frame (extra fields left at their default).
            pub fn decode(df: &DataFrame, file: &Path) -> crate::Result<Vec<Self>> {
                $(let mut $field = read_column::<$ty>(df, stringify!($field), file)?.into_iter();)*
                Ok((0..df.height())
                    .map(|_| Self {
                        $($field: $field.next().expect("a column has the frame's height"),)*
                        $($xfield: Default::default(),)*
                    })
                    .collect())
            }

            /// The value of column `name` in this row.
            pub fn get(&self, name: &str) -> Option<Value> {
                match name {
                    $(stringify!($field) => Some(Field::value(&self.$field)),)*
                    _ => None,
                }
            }
        }
    };
}

record! {
    /// One trial (teacher, baseline or KD student): what the plan decided, where it ran, and how
    /// it ended. A row of `trials.parquet`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct TrialRecord {
        /// `kind-<content hash>` of everything that changes the trial's numbers.
        pub trial_id: String,
        pub kind: Kind,
        pub seed: u64,
        pub status: Status,
        /// `mlp` or `cnn`.
        pub arch: String,
        /// Layer widths, e.g. `800-800` or `c32-c64-f256`.
        pub hidden: String,
        /// The whole resolved model spec as JSON (every key, `init` included).
        pub model: String,
        /// Weight initialisation: `torch` (PyTorch's defaults) or `kaiming`.
        pub init: String,
        pub params: u64,
        pub epochs: u32,
        pub batch_size: u32,
        pub optimizer: String,
        pub lr: f64,
        pub momentum: f64,
        pub weight_decay: f64,
        pub schedule: String,
        /// KD settings (none for the teacher and baselines).
        pub temperature: Option<f64>,
        /// Weight of the soft term.
        pub alpha: Option<f64>,
        /// Weight of the hard term.
        pub beta: Option<f64>,
        pub soft_loss: Option<String>,
        pub t2_scaling: Option<bool>,
        /// The objective with its weights written out, e.g. `0.9 * T^2 * CE(p_T, q_T) + 0.1 *
        /// CE(y, q_1)` (T = 4: `0.9 * 16 * ...`), so alpha and beta cannot be misread.
        pub loss: Option<String>,
        /// How the soft term is reduced: `sum over classes, mean over batch` (kd-sweep, PyTorch's
        /// `KLDivLoss(reduction="batchmean")`), never a mean over classes, which would shrink
        /// alpha by the number of classes.
        pub soft_reduction: Option<String>,
        /// Where a KD trial's soft targets came from: `cached` (the teacher's logits on the
        /// unaugmented images, computed once) or `online` (the teacher run on each augmented
        /// batch, with `jitter`).
        pub teacher_mode: Option<String>,
        /// The teacher a KD trial learned from.
        pub teacher_id: Option<String>,
        /// The baseline a KD trial is paired with (same student, seed, init, data order, device
        /// kind and threads).
        pub baseline_id: Option<String>,
        pub dataset: String,
        /// SHA-256 (first 16 hex digits) of the data files read.
        pub data_fingerprint: String,
        /// The share of the training split the trial learned from (1 for the teacher).
        pub transfer_fraction: f64,
        /// The classes in the trial's transfer set when some are left out
        /// (`dataset.omit_classes`/`keep_classes`), space-separated; null: all of them.
        pub transfer_classes: Option<String>,
        /// Random shifts of the training images, up to this many pixels (`train.jitter`).
        pub jitter: Option<u32>,
        /// `train.crop` / `train.flip` as `crop4+flip` (null: neither).
        pub augment: Option<String>,
        /// The max-norm constraint on each hidden unit's incoming weights (`train.max_norm`).
        pub max_norm: Option<f64>,
        /// `train.precision` when not float32: `bf16` (bfloat16 model, float32 master weights).
        pub precision: Option<String>,
        /// `train.cudnn_benchmark` when on (CUDA only); null: off.
        pub cudnn_benchmark: Option<bool>,
        pub train_images: u64,
        /// Size of the validation split cells are chosen on (0: none).
        pub val_images: u64,
        pub test_images: u64,
        /// The device that ran it: `cpu`, `cuda:0`, ...
        pub device: String,
        /// The CPU's vector ISA class as libtorch dispatches (`avx512`, `avx2`, ...) or the GPU.
        pub hardware: String,
        /// libtorch intra-op threads.
        pub threads: u32,
        /// The CPU model of the machine that finished it (`env::cpu_model`: name, vendor,
        /// family and model), not part of the id; null in rows written before it was recorded.
        pub cpu: Option<String>,
        /// `single` (trained alone) or `packed` (in a pack of students of its shape).
        pub exec: Exec,
        pub libtorch: String,
        /// Evaluation-mode accuracy on the images it trained on, after the last epoch.
        pub train_acc: Option<f64>,
        pub val_acc: Option<f64>,
        pub test_acc: Option<f64>,
        pub test_error: Option<f64>,
        pub test_errors: Option<u64>,
        /// 1-based epoch with the highest validation accuracy.
        pub best_epoch: Option<u32>,
        /// Test accuracy after the best validation epoch (`test_acc` is after the last).
        pub best_test_acc: Option<f64>,
        /// Top-1 agreement of the student with the teacher on the test set (T = 1).
        pub teacher_agreement: Option<f64>,
        /// KL(teacher || student) at T = 1 on the test set, in nats per image.
        pub teacher_kl: Option<f64>,
        /// The output units a bias shift raises: the classes missing from the transfer set,
        /// space-separated (null when none is missing).
        pub shifted_classes: Option<String>,
        /// The shift added to those units' logits, fitted on the validation split (never on
        /// test data): the one with the fewest validation errors, the smallest of ties.
        pub bias_shift: Option<f64>,
        /// Test errors with the shift applied.
        pub shifted_test_errors: Option<u64>,
        pub wall_s: f64,
        /// RFC 3339, UTC.
        pub finished_at: String,
        /// Why a trial did not finish.
        pub message: Option<String>,
        /// A trial continued from a checkpoint: where, and on which CPU when not the one that
        /// wrote it (null: trained in one go).
        pub resumed: Option<String>,
        /// Its kept weights (`save:`), relative to OUT; null: not kept.
        pub model_file: Option<String>,
    }
    extra {
        /// Grid values of the trial's cell whose key is not a column already (e.g.
        /// `student.train.lr`), each a column of its own with its type.
        pub swept: Vec<(String, Value)>,
    }
}

record! {
    /// One epoch of one trial. A row of `epochs.parquet`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct EpochRecord {
        pub trial_id: String,
        pub epoch: u32,
        /// The weighted total, averaged over the epoch's images.
        pub train_loss: f64,
        /// The unscaled soft term (none without a teacher).
        pub soft_loss: Option<f64>,
        pub hard_loss: f64,
        /// Running accuracy on the training batches, in training mode (dropout on).
        pub train_acc: f64,
        /// None without a validation split, or when the epoch diverged.
        pub val_acc: Option<f64>,
        pub test_acc: Option<f64>,
        pub lr: f64,
        pub seconds: f64,
    }
    extra {}
}

record! {
    /// One cell of a student's test-set confusion matrix: how many test images of class `label`
    /// it predicted as `predicted`, with its raw logits or (`shifted`) after the bias shift. A
    /// row of `confusion.parquet`; per-class errors are the off-diagonal sums.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ConfusionRecord {
        pub trial_id: String,
        pub shifted: bool,
        pub label: u32,
        pub predicted: u32,
        pub count: u64,
    }
    extra {}
}
