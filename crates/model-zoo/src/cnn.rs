//! The CNN family: `[conv kxk (same padding) -> ReLU -> maxpool 2]* -> flatten -> dropout ->
//! [linear -> ReLU -> dropout]* -> linear`.

use serde::{Deserialize, Serialize};
use tch::nn;
use tch::Tensor;

use crate::keys::{Configure, Role};
use crate::{
    check_prob, check_widths, head, join, relu_, spec_err, Family, Init, InputShape, Layers, ModelError,
    Net,
};

/// A small VGG-style CNN: `[conv kxk (same padding) -> ReLU -> maxpool 2]* -> flatten -> dropout
/// -> [linear -> ReLU -> dropout]* -> linear`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CnnSpec {
    /// Output channels of each conv block.
    pub channels: Vec<usize>,
    /// Square kernel size of every conv (odd, so "same" padding exists).
    pub kernel: usize,
    /// Widths of the fully connected hidden layers of the head.
    pub fc: Vec<usize>,
    /// Dropout probability before and inside the head.
    pub dropout: f64,
    pub init: Init,
    /// Conv weights in channels_last memory format, so libtorch runs the convolutions (and
    /// keeps their outputs) channels_last: the same maths, in another order of float
    /// operations (the last bits differ), so it is part of the spec and of every id. Left out of
    /// the serialised form when off (ids made before it stay).
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub channels_last: bool,
}

impl CnnSpec {
    fn final_hw(&self, input: InputShape) -> (usize, usize) {
        self.channels
            .iter()
            .fold((input.height, input.width), |(h, w), _| (h / 2, w / 2))
    }

    /// (in channels, out channels, output height, output width) of each conv.
    fn conv_dims(&self, input: InputShape) -> Vec<(usize, usize, usize, usize)> {
        let (mut c, mut h, mut w) = (input.channels, input.height, input.width);
        let mut dims = Vec::new();
        for &out in &self.channels {
            dims.push((c, out, h, w));
            c = out;
            h /= 2;
            w /= 2;
        }
        dims
    }

    fn linear_dims(&self, input: InputShape, classes: usize) -> Vec<(usize, usize)> {
        let (h, w) = self.final_hw(input);
        let mut prev = self.channels.last().copied().unwrap_or(input.channels) * h * w;
        let mut dims = Vec::new();
        for &o in self.fc.iter().chain(std::iter::once(&classes)) {
            dims.push((prev, o));
            prev = o;
        }
        dims
    }

    fn params(&self, input: InputShape, classes: usize) -> usize {
        let k2 = self.kernel * self.kernel;
        let conv: usize = self
            .conv_dims(input)
            .iter()
            .map(|(i, o, _, _)| i * o * k2 + o)
            .sum();
        let lin: usize = self
            .linear_dims(input, classes)
            .iter()
            .map(|(i, o)| i * o + o)
            .sum();
        conv + lin
    }

    fn flops(&self, input: InputShape, classes: usize) -> usize {
        let k2 = self.kernel * self.kernel;
        let conv: usize = self
            .conv_dims(input)
            .iter()
            .map(|(i, o, h, w)| 2 * i * o * k2 * h * w)
            .sum();
        let lin: usize = self
            .linear_dims(input, classes)
            .iter()
            .map(|(i, o)| 2 * i * o)
            .sum();
        conv + lin
    }
}

/// The config keys of `arch: cnn`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnKeys {
    channels: Option<Vec<usize>>,
    kernel: Option<usize>,
    fc: Option<Vec<usize>>,
    dropout: Option<f64>,
    init: Option<String>,
    channels_last: Option<bool>,
}

impl Configure for CnnSpec {
    type Keys = CnnKeys;

    /// The same for either role: conv 32 and 64 (3x3), one hidden layer of 256, dropout 0.5.
    fn from_keys(k: CnnKeys, _role: Role) -> Result<CnnSpec, ModelError> {
        Ok(CnnSpec {
            channels: k.channels.unwrap_or_else(|| vec![32, 64]),
            kernel: k.kernel.unwrap_or(3),
            fc: k.fc.unwrap_or_else(|| vec![256]),
            dropout: k.dropout.unwrap_or(0.5),
            init: Init::from_key(k.init.as_deref())?,
            channels_last: k.channels_last.unwrap_or(false),
        })
    }
}

impl Family for CnnSpec {
    fn channels_last(&self) -> bool {
        self.channels_last
    }

    fn init(&self) -> Init {
        self.init
    }

    fn shape_label(&self) -> String {
        let mut s = join(&self.channels, "-", "c");
        if !self.fc.is_empty() {
            s.push('-');
            s.push_str(&join(&self.fc, "-", "f"));
        }
        s
    }

    fn check(&self) -> Result<(), ModelError> {
        check_widths("channels", &self.channels, false)?;
        check_widths("fc", &self.fc, true)?;
        check_prob("dropout", self.dropout)?;
        if self.kernel == 0 || self.kernel.is_multiple_of(2) {
            return Err(spec_err(
                "kernel",
                format!("must be odd and > 0, got {}", self.kernel),
            ));
        }
        Ok(())
    }

    fn fits(&self, input: InputShape) -> Result<(), ModelError> {
        let (h, w) = self.final_hw(input);
        if h == 0 || w == 0 {
            return Err(spec_err(
                "channels",
                format!(
                    "{} pooling blocks shrink a {}x{} image to nothing; use fewer blocks",
                    self.channels.len(),
                    input.height,
                    input.width
                ),
            ));
        }
        Ok(())
    }

    fn param_count(&self, input: InputShape, classes: usize) -> usize {
        self.params(input, classes)
    }

    fn flops_per_sample(&self, input: InputShape, classes: usize) -> usize {
        self.flops(input, classes)
    }

    fn packs(&self) -> bool {
        false
    }

    fn packed_widths(&self, _input: InputShape, _classes: usize) -> usize {
        0
    }

    fn graph(&self, g: &mut crate::Graph, _input: InputShape, _classes: usize) -> Result<(), ModelError> {
        let (k, pad) = (self.kernel as i64, (self.kernel / 2) as i64);
        for i in 0..self.channels.len() {
            g.conv(&format!("conv{}", i + 1), k, 1, pad, 1, true);
            g.relu();
            g.max_pool(2);
        }
        g.flatten();
        for i in 0..self.fc.len() {
            g.linear(&format!("fc{}", i + 1));
            g.relu();
        }
        g.linear("out");
        Ok(())
    }

    fn build(&self, p: &nn::Path, input: InputShape, classes: usize) -> Net {
        let c = self;
        let pad = (c.kernel / 2) as i64;
        let convs: Vec<nn::Conv2D> = c
            .conv_dims(input)
            .iter()
            .enumerate()
            .map(|(i, &(cin, cout, _, _))| {
                let cfg = c.init.conv(pad);
                nn::conv2d(
                    p / format!("conv{}", i + 1),
                    cin as i64,
                    cout as i64,
                    c.kernel as i64,
                    cfg,
                )
            })
            .collect();
        let linears: Vec<nn::Linear> = c
            .linear_dims(input, classes)
            .iter()
            .enumerate()
            .map(|(i, &(din, dout))| {
                let name = if i == c.fc.len() {
                    "out".to_string()
                } else {
                    format!("fc{}", i + 1)
                };
                nn::linear(p / name, din as i64, dout as i64, c.init.linear())
            })
            .collect();
        if c.init == Init::Torch {
            let k2 = c.kernel * c.kernel;
            for (l, (cin, ..)) in convs.iter().zip(c.conv_dims(input)) {
                Init::torch_reset(&l.ws, l.bs.as_ref(), cin * k2);
            }
            for (l, (din, _)) in linears.iter().zip(c.linear_dims(input, classes)) {
                Init::torch_reset(&l.ws, l.bs.as_ref(), din);
            }
        }
        Net::new(CnnNet {
            convs,
            linears,
            dropout: c.dropout,
            input,
        })
    }
}

/// A built CNN.
#[derive(Debug)]
pub struct CnnNet {
    convs: Vec<nn::Conv2D>,
    linears: Vec<nn::Linear>,
    dropout: f64,
    input: InputShape,
}

impl Layers for CnnNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let input = self.input;
        let mut xs = xs.view([
            -1,
            input.channels as i64,
            input.height as i64,
            input.width as i64,
        ]);
        for conv in &self.convs {
            xs = relu_(xs.apply(conv)).max_pool2d_default(2);
        }
        let xs = xs.flatten(1, -1).dropout(self.dropout, train);
        head(xs, &self.linears, self.dropout, train)
    }

    fn linears(&self) -> &[nn::Linear] {
        &self.linears
    }

    fn dropout_sites(&self) -> Option<Vec<(f64, i64)>> {
        Some(crate::head_sites(&self.linears, self.dropout, self.dropout))
    }
}
