//! The MLP family: `input dropout -> [linear -> ReLU -> dropout]* -> linear`.

use serde::{Deserialize, Serialize};
use tch::nn;
use tch::Tensor;

use crate::keys::{Configure, Role};
use crate::{
    check_prob, check_widths, head, join, Family, Init, InputShape, Layers, ModelError, Net,
};

/// A multi-layer perceptron: `input dropout -> [linear -> ReLU -> dropout]* -> linear`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpSpec {
    /// Widths of the hidden layers, input side first. Empty means a linear classifier.
    pub hidden: Vec<usize>,
    /// Dropout probability after each hidden ReLU.
    pub dropout: f64,
    /// Dropout probability on the (flattened) input.
    pub input_dropout: f64,
    pub init: Init,
}

impl MlpSpec {
    fn layer_dims(&self, input: InputShape, classes: usize) -> Vec<(usize, usize)> {
        let mut dims = Vec::with_capacity(self.hidden.len() + 1);
        let mut prev = input.numel();
        for &w in self.hidden.iter().chain(std::iter::once(&classes)) {
            dims.push((prev, w));
            prev = w;
        }
        dims
    }
}

/// The config keys of `arch: mlp`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpKeys {
    hidden: Option<Vec<usize>>,
    dropout: Option<f64>,
    input_dropout: Option<f64>,
    init: Option<String>,
}

impl Configure for MlpSpec {
    type Keys = MlpKeys;

    /// Hinton et al.'s nets: the teacher 1200-1200 with dropout 0.5 (input 0.2), the student
    /// 800-800 without dropout.
    fn from_keys(k: MlpKeys, role: Role) -> Result<MlpSpec, ModelError> {
        let (hidden, dropout, input_dropout) = match role {
            Role::Teacher => (vec![1200, 1200], 0.5, 0.2),
            Role::Student => (vec![800, 800], 0.0, 0.0),
        };
        Ok(MlpSpec {
            hidden: k.hidden.unwrap_or(hidden),
            dropout: k.dropout.unwrap_or(dropout),
            input_dropout: k.input_dropout.unwrap_or(input_dropout),
            init: Init::from_key(k.init.as_deref())?,
        })
    }
}

impl Family for MlpSpec {
    fn init(&self) -> Init {
        self.init
    }

    fn shape_label(&self) -> String {
        if self.hidden.is_empty() {
            "linear".into()
        } else {
            join(&self.hidden, "-", "")
        }
    }

    fn check(&self) -> Result<(), ModelError> {
        check_widths("hidden", &self.hidden, true)?;
        check_prob("dropout", self.dropout)?;
        check_prob("input_dropout", self.input_dropout)
    }

    fn param_count(&self, input: InputShape, classes: usize) -> usize {
        self.layer_dims(input, classes)
            .iter()
            .map(|(i, o)| i * o + o)
            .sum()
    }

    fn flops_per_sample(&self, input: InputShape, classes: usize) -> usize {
        self.layer_dims(input, classes)
            .iter()
            .map(|(i, o)| 2 * i * o)
            .sum()
    }

    fn packs(&self) -> bool {
        true
    }

    fn packed_widths(&self, input: InputShape, classes: usize) -> usize {
        self.hidden.iter().sum::<usize>() + input.numel() + classes
    }

    fn build(&self, p: &nn::Path, input: InputShape, classes: usize) -> Net {
        let m = self;
        let layers: Vec<nn::Linear> = m
            .layer_dims(input, classes)
            .iter()
            .enumerate()
            .map(|(i, &(din, dout))| {
                let name = if i == m.hidden.len() {
                    "out".to_string()
                } else {
                    format!("fc{}", i + 1)
                };
                nn::linear(p / name, din as i64, dout as i64, m.init.linear())
            })
            .collect();
        if m.init == Init::Torch {
            for (l, (din, _)) in layers.iter().zip(m.layer_dims(input, classes)) {
                Init::torch_reset(&l.ws, l.bs.as_ref(), din);
            }
        }
        Net::new(MlpNet {
            layers,
            dropout: m.dropout,
            input_dropout: m.input_dropout,
        })
    }

    fn graph(&self, g: &mut crate::Graph, _input: InputShape, _classes: usize) -> Result<(), ModelError> {
        g.flatten();
        for i in 0..=self.hidden.len() {
            if i == self.hidden.len() {
                g.linear("out");
            } else {
                g.linear(&format!("fc{}", i + 1));
                g.relu();
            }
        }
        Ok(())
    }

    /// `experiments/reference/models.py`'s `Mlp` holds its layers in `nn.ModuleList` `layers`:
    /// `fc1` is `layers.0`, ..., `out` is `layers.<hidden layers>`.
    fn reference_name(&self, name: &str) -> String {
        let (layer, rest) = name.split_once('.').unwrap_or((name, ""));
        let index = match layer.strip_prefix("fc").map(str::parse::<usize>) {
            Some(Ok(i)) if i >= 1 => i - 1,
            _ if layer == "out" => self.hidden.len(),
            _ => return name.to_string(),
        };
        format!("layers.{index}.{rest}")
    }
}

/// A built MLP.
#[derive(Debug)]
pub struct MlpNet {
    /// Input side first, the output layer last.
    pub layers: Vec<nn::Linear>,
    pub dropout: f64,
    pub input_dropout: f64,
}

impl Layers for MlpNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let xs = xs.flatten(1, -1).dropout(self.input_dropout, train);
        head(xs, &self.layers, self.dropout, train)
    }

    fn linears(&self) -> &[nn::Linear] {
        &self.layers
    }

    fn dropout_sites(&self) -> Option<Vec<(f64, i64)>> {
        Some(crate::head_sites(&self.layers, self.input_dropout, self.dropout))
    }
}
