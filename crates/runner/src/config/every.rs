//! `checkpoint_every` (and `kd sweep --checkpoint-every`): how often a trial in flight writes a
//! checkpoint (run/checkpoint.rs). A run option, not an experiment setting: it enters no
//! id and no config digest, and cannot be swept.

use std::time::Duration;

use super::{invalid, ConfigError};

/// The default `checkpoint_every`: a few minutes, so that a kill costs at most that much
/// training, and a 15-second student never writes one.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(300);

/// A duration as `checkpoint_every` and `--checkpoint-every` take it: a number and a unit
/// (`500ms`, `30s`, `5m`, `1h`), or `0` (none: off).
pub fn parse_every(s: &str) -> Result<Option<Duration>, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(None);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale = match unit {
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => f64::NAN,
    };
    match number.parse::<f64>() {
        Ok(x) if scale.is_finite() && x.is_finite() && x >= 0.0 => {
            match Duration::try_from_secs_f64(x * scale) {
                Ok(d) => Ok((!d.is_zero()).then_some(d)),
                Err(_) => Err(format!(
                    "`{s}` is longer than any run: give at most a few days"
                )),
            }
        }
        _ => Err(format!(
            "`{s}` is not a duration: give a number and a unit (500ms, 30s, 5m, 1h), or 0 for \
             no checkpoints"
        )),
    }
}

/// The `checkpoint_every` key as written (none: the default).
pub fn resolve(raw: Option<&serde_yaml::Value>) -> Result<Option<Duration>, ConfigError> {
    match raw {
        None => Ok(Some(DEFAULT_EVERY)),
        Some(serde_yaml::Value::String(s)) => {
            parse_every(s).map_err(|e| invalid("checkpoint_every", e))
        }
        Some(serde_yaml::Value::Number(n)) if n.as_f64() == Some(0.0) => Ok(None),
        Some(other) => Err(invalid(
            "checkpoint_every",
            format!(
                "`{}` is not a duration: give a number and a unit (500ms, 30s, 5m, 1h), or 0 \
                 for no checkpoints",
                super::grid::value_text(other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written() {
        assert_eq!(parse_every("30s"), Ok(Some(Duration::from_secs(30))));
        assert_eq!(parse_every("5m"), Ok(Some(Duration::from_secs(300))));
        assert_eq!(parse_every("1h"), Ok(Some(Duration::from_secs(3600))));
        assert_eq!(parse_every("250ms"), Ok(Some(Duration::from_millis(250))));
        assert_eq!(parse_every("0"), Ok(None));
        assert!(parse_every("100000000000000000000s")
            .unwrap_err()
            .contains("longer than"));
        for bad in ["30", "5 min", "-1s", "s", ""] {
            assert!(
                parse_every(bad).unwrap_err().contains("500ms, 30s, 5m, 1h"),
                "{bad}"
            );
        }
    }
}
