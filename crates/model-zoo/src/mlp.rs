//! The MLP family: `input dropout -> [linear -> ReLU -> dropout]* -> linear`.

use serde::{Deserialize, Serialize};
use tch::nn;
use tch::Tensor;

use crate::{check_prob, check_widths, head, join, Family, Init, InputShape, ModelError, Net};

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

impl Family for MlpSpec {
    fn arch(&self) -> &'static str {
        "mlp"
    }

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
        Net::Mlp {
            layers,
            dropout: m.dropout,
            input_dropout: m.input_dropout,
        }
    }
}

/// The forward pass of a [`Net::Mlp`].
pub(crate) fn forward(net: &Net, xs: &Tensor, train: bool) -> Tensor {
    let Net::Mlp {
        layers,
        dropout,
        input_dropout,
    } = net
    else {
        unreachable!("mlp::forward of a {net:?}")
    };
    let xs = xs.flatten(1, -1).dropout(*input_dropout, train);
    head(xs, layers, *dropout, train)
}
