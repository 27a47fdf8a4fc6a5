//! Checks of the config that are not about defaults: the class lists, the claims, the name,
//! cuDNN's device, a probability.

use kd_model_zoo::Role;

use super::{invalid, ConfigError, DatasetCfg, TrainCfg};

/// `dataset.omit_classes` / `dataset.keep_classes`: one or the other, class numbers below 100
/// without repeats; the data check that each exists comes with the data.
pub(super) fn check_classes(d: &DatasetCfg) -> Result<(), ConfigError> {
    if !d.omit_classes.is_empty() && !d.keep_classes.is_empty() {
        return Err(invalid(
            "dataset.keep_classes",
            "give dataset.omit_classes or dataset.keep_classes, not both",
        ));
    }
    for (key, list) in [
        ("omit_classes", &d.omit_classes),
        ("keep_classes", &d.keep_classes),
    ] {
        for (i, &c) in list.iter().enumerate() {
            if list[..i].contains(&c) {
                return Err(invalid(
                    format!("dataset.{key}[{i}]"),
                    format!("class {c} appears twice"),
                ));
            }
        }
    }
    Ok(())
}

/// `expect:`: each entry a claim; errors name `expect[i]` and what is wrong.
pub(super) fn resolve_expect(
    raw: Option<&[serde_yaml::Value]>,
) -> Result<Vec<kd_report::Claim>, ConfigError> {
    raw.unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let claim: kd_report::Claim = serde_yaml::from_value(v.clone()).map_err(|e| {
                invalid(
                    format!("expect[{i}]"),
                    format!("{e} (claims: {})", kd_report::claims::KNOWN.join(", ")),
                )
            })?;
            claim
                .validate()
                .map_err(|m| invalid(format!("expect[{i}]"), m))?;
            Ok(claim)
        })
        .collect()
}

/// The longest `name:`, in bytes: it names `results/<name>/` and is in every message and record.
pub const MAX_NAME_BYTES: usize = 200;

/// `name:`, trimmed: a file name on one line, at most [`MAX_NAME_BYTES`] long (errors show
/// a long one cut short).
pub(super) fn check_name(raw: &str) -> Result<&str, ConfigError> {
    let name = raw.trim();
    if name.len() > MAX_NAME_BYTES {
        let mut end = 40;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        return Err(invalid(
            "name",
            format!(
                "{} bytes long, at most {MAX_NAME_BYTES} (it names results/<name>/ and every \
                 sweep's messages); it starts {:?}...: give the config a short name",
                name.len(),
                &name[..end]
            ),
        ));
    }
    if name.is_empty()
        || name.contains(['/', '\\'])
        || name.starts_with('.')
        || name.chars().any(char::is_control)
    {
        return Err(invalid(
            "name",
            format!(
                "{name:?} must be a non-empty file name on one line, without / or control \
                 characters (it names results/<name>/)"
            ),
        ));
    }
    Ok(name)
}

/// `train.cudnn_benchmark` needs a CUDA device among `device`, or `auto` (then the plan checks
/// that it resolved to one: `Plan::build`).
pub(super) fn check_cudnn(
    device: &[String],
    teacher: &TrainCfg,
    student: &TrainCfg,
) -> Result<(), ConfigError> {
    for (role, t) in [(Role::Teacher, teacher), (Role::Student, student)] {
        if t.cudnn_benchmark && !device.iter().any(|d| d.starts_with("cuda") || d == "auto") {
            return Err(invalid(
                format!("{}.train.cudnn_benchmark", role.key()),
                format!(
                    "needs a CUDA device: cuDNN does not run on the CPU (device: {}); \
                     remove the key or set device: cuda",
                    device.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// `p` where it is a probability: in [0, 1] (`closed_top`) or [0, 1), else the error for `key`.
pub(super) fn check_prob(key: &str, p: f64, closed_top: bool) -> Result<f64, ConfigError> {
    let ok = p.is_finite() && p >= 0.0 && if closed_top { p <= 1.0 } else { p < 1.0 };
    if ok {
        Ok(p)
    } else {
        let range = if closed_top { "[0, 1]" } else { "[0, 1)" };
        Err(invalid(key, format!("must be in {range}, got {p}")))
    }
}
