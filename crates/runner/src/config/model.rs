//! `teacher.model` and `student.model`: the architecture keys, their defaults and checks.

use kd_model_zoo::{CnnSpec, Init, MlpSpec, ModelSpec};

use super::resolve::{check_prob, Role};
use super::{invalid, ConfigError, RawModel};

fn default_cnn() -> CnnSpec {
    CnnSpec {
        channels: vec![32, 64],
        kernel: 3,
        fc: vec![256],
        dropout: 0.5,
        init: Init::Torch,
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
    pub(super) fn resolve(&self, key: &str, role: Role) -> Result<ModelSpec, ConfigError> {
        let arch = self.arch.as_deref().unwrap_or("mlp");
        let init = match self.init.as_deref() {
            None => Init::default(),
            Some(s) => Init::parse(s).ok_or_else(|| {
                invalid(
                    format!("{key}.init"),
                    format!(
                        "unknown initialisation `{s}` (known: torch, PyTorch's defaults; \
                         kaiming, tch's Kaiming-uniform with the ReLU gain)"
                    ),
                )
            })?,
        };
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
                    "hidden, dropout, input_dropout, init",
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
                    init,
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
                    "channels, kernel, fc, dropout, init",
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
                    init,
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
