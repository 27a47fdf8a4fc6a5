//! `device:` in a config: names checked for form (availability is the environment's question,
//! asked in `env`).

use super::{invalid, ConfigError};

/// `auto | cpu | cuda | cuda:N`, checked for form only (availability is checked at run time).
pub fn parse_device_name(key: &str, s: &str) -> Result<String, ConfigError> {
    let ok = matches!(s, "auto" | "cpu" | "cuda")
        || s.strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok());
    if ok {
        Ok(s.to_string())
    } else if s == "all" {
        Err(invalid(
            key,
            "`all` is not a device in a list: write `device: all` alone (every visible GPU)",
        ))
    } else {
        Err(invalid(
            key,
            format!("`{s}` is not a device (use auto, cpu, cuda or cuda:N)"),
        ))
    }
}

/// `device: all`: every GPU this process sees, `cuda:0` .. `cuda:{count-1}` (libtorch numbers
/// the devices `CUDA_VISIBLE_DEVICES` leaves, which is how Slurm gives a task its GPUs), so
/// with the default `workers` one worker per GPU.
pub fn expand_all(count: usize, visible: Option<&str>) -> Result<Vec<String>, ConfigError> {
    if count == 0 {
        return Err(invalid(
            "device",
            format!(
                "`all` takes every visible GPU, and libtorch sees none here \
                 (CUDA_VISIBLE_DEVICES={}); use `device: cpu` or `auto`, and `kd doctor` to see \
                 what libtorch finds",
                visible.unwrap_or("unset")
            ),
        ));
    }
    Ok((0..count).map(|i| format!("cuda:{i}")).collect())
}

/// `device:` as a list of device names (`all` expanded here, from `gpus`: the number of GPUs the
/// caller's libtorch sees, asked only when `all` is written).
pub(super) fn resolve_device(
    v: Option<&serde_yaml::Value>,
    gpus: &dyn Fn() -> usize,
) -> Result<Vec<String>, ConfigError> {
    use serde_yaml::Value;
    match v {
        None | Some(Value::Null) => Ok(vec!["auto".into()]),
        Some(Value::String(s)) if s == "all" => expand_all(
            gpus(),
            std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(),
        ),
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
            format!("expected auto, all, cpu, cuda, cuda:N or a list of them, got {other:?}"),
        )),
    }
}
