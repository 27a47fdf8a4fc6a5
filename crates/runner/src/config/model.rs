//! `teacher.model` and `student.model`: the architecture keys, their defaults and checks.

use kd_model_zoo::{CnnSpec, Init, MlpSpec, ModelSpec};

use super::resolve::Role;
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

/// `spec` after its family's own checks ([`ModelSpec::check`], written once in the zoo), an
/// error naming the key under `key`.
fn checked(key: &str, spec: ModelSpec) -> Result<ModelSpec, ConfigError> {
    match spec.check() {
        Ok(()) => Ok(spec),
        Err(kd_model_zoo::ModelError::Spec { key: k, message }) => {
            Err(invalid(format!("{key}.{k}"), message))
        }
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
                checked(
                    key,
                    ModelSpec::Mlp(MlpSpec {
                        hidden: self.hidden.clone().unwrap_or(d.hidden),
                        dropout: self.dropout.unwrap_or(d.dropout),
                        input_dropout: self.input_dropout.unwrap_or(d.input_dropout),
                        init,
                    }),
                )
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
                checked(
                    key,
                    ModelSpec::Cnn(CnnSpec {
                        channels: self.channels.clone().unwrap_or(d.channels),
                        kernel: self.kernel.unwrap_or(d.kernel),
                        fc: self.fc.clone().unwrap_or(d.fc),
                        dropout: self.dropout.unwrap_or(d.dropout),
                        init,
                    }),
                )
            }
            other => Err(invalid(
                format!("{key}.arch"),
                format!("unknown architecture `{other}` (known: mlp, cnn)"),
            )),
        }
    }
}
