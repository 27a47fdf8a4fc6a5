//! Records to Polars frames and back: the columns of each record type, swept keys as typed
//! columns, and the decoding of a column with the file and column named in any error.

use std::path::Path;

use polars::prelude::*;

use super::*;

/// Optional columns added after the typed frames were first written (issue 9): a file without
/// one reads it as null in every row, since those trials did not measure it.
pub const ADDED_LATER: &[&str] = &[
    "loss",
    "soft_reduction",
    "teacher_mode",
    "transfer_classes",
    "jitter",
    "augment",
    "max_norm",
    "precision",
    "cudnn_benchmark",
    "best_test_acc",
    "teacher_agreement",
    "teacher_kl",
    "shifted_classes",
    "bias_shift",
    "shifted_test_errors",
    // Issue 33: rows written before checkpoints were trained in one go.
    "resumed",
    // Issue 36: rows written before it did not record the CPU model.
    "cpu",
    // Issue 37: students kept.
    "model_file",
];

/// Decode column `name` of `df` as `T`, naming the file and the column in any error. A file
/// written before a column existed fails here, with how to regenerate it, unless the column's
/// type says what such rows were ([`Field::absent`]).
pub fn read_column<T: super::Field>(
    df: &DataFrame,
    name: &str,
    file: &Path,
) -> crate::Result<Vec<T>> {
    if df.column(name).is_err() {
        if let Some(values) = T::absent(df.height()) {
            return Ok(values);
        }
        if ADDED_LATER.contains(&name) {
            if let Some(values) = T::nulls(df.height()) {
                return Ok(values);
            }
        }
    }
    let column = df.column(name).map_err(|_| ReportError::Column {
        file: file.to_path_buf(),
        column: name.to_string(),
        problem: "is missing (the folder was written by an older kd-sweep: run its `kd sweep \
                  CONFIG --out DIR` again, which retrains what it cannot reuse)"
            .into(),
    })?;
    T::read(column).map_err(|problem| ReportError::Column {
        file: file.to_path_buf(),
        column: name.to_string(),
        problem,
    })
}

/// The `confusion` frame.
pub fn confusion_frame(rows: &[ConfusionRecord]) -> DataFrame {
    DataFrame::new(rows.len(), ConfusionRecord::columns(rows)).expect("columns have equal length")
}

/// The swept keys that need a column of their own, in first-seen order.
pub fn swept_keys(rows: &[TrialRecord]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for (k, _) in rows.iter().flat_map(|r| &r.swept) {
        if !TrialRecord::COLUMNS.contains(&k.as_str()) && !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    keys
}

/// A typed column of swept values: integers, floats, booleans, or text when they mix.
fn swept_column(key: &str, values: Vec<Option<&Value>>) -> Column {
    let present: Vec<&Value> = values.iter().flatten().copied().collect();
    let name = key.into();
    if present.iter().all(|v| matches!(v, Value::Int(_))) {
        let ints: Vec<Option<i64>> = values
            .iter()
            .map(|v| match v {
                Some(Value::Int(i)) => Some(*i),
                _ => None,
            })
            .collect();
        Column::new(name, ints)
    } else if present.iter().all(|v| v.as_f64().is_some()) {
        Column::new(
            name,
            values
                .iter()
                .map(|v| v.and_then(Value::as_f64))
                .collect::<Vec<_>>(),
        )
    } else if present.iter().all(|v| matches!(v, Value::Bool(_))) {
        let bools: Vec<Option<bool>> = values
            .iter()
            .map(|v| match v {
                Some(Value::Bool(b)) => Some(*b),
                _ => None,
            })
            .collect();
        Column::new(name, bools)
    } else {
        Column::new(
            name,
            values
                .iter()
                .map(|v| v.map(|v| v.to_string()))
                .collect::<Vec<_>>(),
        )
    }
}

/// The `trials` frame: the record's columns, then a typed column per swept key.
pub fn trials_frame(rows: &[TrialRecord]) -> DataFrame {
    let mut columns = TrialRecord::columns(rows);
    for key in swept_keys(rows) {
        let values = rows
            .iter()
            .map(|r| r.swept.iter().find(|(k, _)| *k == key).map(|(_, v)| v))
            .collect();
        columns.push(swept_column(&key, values));
    }
    DataFrame::new(rows.len(), columns).expect("columns have the frame's height")
}

pub fn epochs_frame(rows: &[EpochRecord]) -> DataFrame {
    DataFrame::new(rows.len(), EpochRecord::columns(rows)).expect("columns have equal length")
}

/// The values of a column that is not a record field (a swept key), by its type.
fn extra_values(column: &Column) -> Vec<Value> {
    let by = |dtype: &DataType| -> Option<Vec<Value>> {
        let c = column.cast(dtype).ok()?;
        let n = c.len();
        Some(match dtype {
            DataType::Int64 => {
                let ca = c.i64().ok()?;
                (0..n)
                    .map(|i| ca.get(i).map_or(Value::Null, Value::Int))
                    .collect()
            }
            DataType::Float64 => {
                let ca = c.f64().ok()?;
                (0..n)
                    .map(|i| ca.get(i).map_or(Value::Null, Value::Float))
                    .collect()
            }
            DataType::Boolean => {
                let ca = c.bool().ok()?;
                (0..n)
                    .map(|i| ca.get(i).map_or(Value::Null, Value::Bool))
                    .collect()
            }
            _ => {
                let ca = c.str().ok()?;
                (0..n)
                    .map(|i| ca.get(i).map_or(Value::Null, |s| Value::Str(s.into())))
                    .collect()
            }
        })
    };
    let dtype = match column.dtype() {
        d if d.is_integer() => DataType::Int64,
        d if d.is_float() => DataType::Float64,
        DataType::Boolean => DataType::Boolean,
        _ => DataType::String,
    };
    by(&dtype).unwrap_or_else(|| vec![Value::Null; column.len()])
}

/// Read the `trials` frame back into records (the inverse of [`trials_frame`]).
pub fn trial_records(df: &DataFrame, file: &Path) -> crate::Result<Vec<TrialRecord>> {
    let mut rows = TrialRecord::decode(df, file)?;
    for column in df.columns() {
        let name = column.name().as_str();
        if TrialRecord::COLUMNS.contains(&name) {
            continue;
        }
        for (row, v) in rows.iter_mut().zip(extra_values(column)) {
            if v != Value::Null {
                row.swept.push((name.to_string(), v));
            }
        }
    }
    Ok(rows)
}

/// Read the `epochs` frame back into records.
pub fn epoch_records(df: &DataFrame, file: &Path) -> crate::Result<Vec<EpochRecord>> {
    EpochRecord::decode(df, file)
}
