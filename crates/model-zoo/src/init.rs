//! How the weights and biases of linear and conv layers start: PyTorch's defaults or tch's.

use serde::{Deserialize, Serialize};
use tch::nn;
use tch::Tensor;

use crate::{spec_err, ModelError};

/// How the weights and biases of linear and conv layers start. Recorded in the config and in
/// every trial id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// PyTorch's defaults for `nn.Linear` and `nn.Conv2d` (what PyTorch KD code and papers
    /// start from): weights `kaiming_uniform_(a = sqrt(5))` and biases uniform, both with bound
    /// `1 / sqrt(fan_in)`.
    #[default]
    Torch,
    /// tch's defaults: weights Kaiming-uniform with the ReLU gain (bound `sqrt(6 / fan_in)`, on
    /// every layer, the output layer included), linear biases uniform with bound
    /// `1 / sqrt(fan_in)`, conv biases zero.
    Kaiming,
}

impl Init {
    pub fn as_str(self) -> &'static str {
        match self {
            Init::Torch => "torch",
            Init::Kaiming => "kaiming",
        }
    }

    /// The config's `init` key: absent is [`Init::default`].
    pub(crate) fn from_key(s: Option<&str>) -> Result<Self, ModelError> {
        match s {
            None => Ok(Init::default()),
            Some("torch") => Ok(Init::Torch),
            Some("kaiming") => Ok(Init::Kaiming),
            Some(s) => Err(spec_err(
                "init",
                format!(
                    "unknown initialisation `{s}` (known: torch, PyTorch's defaults; kaiming, \
                     tch's Kaiming-uniform with the ReLU gain)"
                ),
            )),
        }
    }

    /// PyTorch's bounds for a layer with `fan_in` inputs per output, computed in PyTorch's
    /// order of operations (`kaiming_uniform_` with `a = sqrt(5)`:
    /// `sqrt(3) * (sqrt(2 / (1 + a^2)) / sqrt(fan_in))`; bias `1 / sqrt(fan_in)`).
    pub fn torch_bounds(fan_in: usize) -> (f64, f64) {
        let a = 5f64.sqrt();
        let gain = (2.0 / (1.0 + a * a)).sqrt();
        let weight = 3f64.sqrt() * (gain / (fan_in as f64).sqrt());
        (weight, 1.0 / (fan_in as f64).sqrt())
    }

    /// The linear layer config. `torch` creates zeros and [`Init::torch_reset`] draws them
    /// afterwards in PyTorch's order (tch creates a layer's bias before its weight); `kaiming`
    /// is tch's default layer, unchanged.
    pub(crate) fn linear(self) -> nn::LinearConfig {
        match self {
            Init::Torch => nn::LinearConfig {
                ws_init: nn::Init::Const(0.0),
                bs_init: Some(nn::Init::Const(0.0)),
                bias: true,
            },
            Init::Kaiming => nn::LinearConfig::default(),
        }
    }

    pub(crate) fn conv(self, padding: i64) -> nn::ConvConfig {
        let base = nn::ConvConfig {
            padding,
            ..Default::default()
        };
        match self {
            Init::Torch => nn::ConvConfig {
                ws_init: nn::Init::Const(0.0),
                bs_init: nn::Init::Const(0.0),
                ..base
            },
            Init::Kaiming => base,
        }
    }

    /// Draw a layer's weight then its bias as PyTorch's `reset_parameters` does, so with the
    /// same seed and layer order the weights equal PyTorch's to the last bit.
    pub(crate) fn torch_reset(ws: &Tensor, bs: Option<&Tensor>, fan_in: usize) {
        let (wb, bb) = Init::torch_bounds(fan_in);
        tch::no_grad(|| {
            let _ = ws.shallow_clone().uniform_(-wb, wb);
            if let Some(b) = bs {
                let _ = b.shallow_clone().uniform_(-bb, bb);
            }
        });
    }
}
