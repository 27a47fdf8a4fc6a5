//! The VGGs with BatchNorm of RepDistiller and mdistiller (`models/vgg.py`): five blocks of
//! `[conv3x3 (with bias) -> BN -> ReLU]*`, max-pooling after the first three (and after the
//! fourth only for 64x64 inputs, as the reference), global average pooling and one linear layer
//! from 512. `layers` is the number of convs per block: vgg8 `[1, 1, 1, 1, 1]`, vgg11
//! `[1, 1, 2, 2, 2]`, vgg13 `[2, 2, 2, 2, 2]`, vgg16 `[2, 2, 3, 3, 3]`, vgg19 `[2, 2, 4, 4, 4]`,
//! of widths 64, 128, 256, 512, 512. Initialisation as the reference's: convolutions
//! `normal_(0, sqrt(2 / (k * k * out)))` with zero bias, BN weight 1 and bias 0, the linear layer
//! `normal_(0, 0.01)` with zero bias. Variables are named as the reference's `state_dict`
//! (`block2.4.running_mean`: conv, BN and ReLU are entries 0, 1, 2 of each layer).

use serde::{Deserialize, Serialize};
use tch::nn;
use tch::Tensor;

use crate::cifar::{batch_norm, conv};
use crate::keys::{Configure, Role};
use crate::{relu_, spec_err, Family, Init, InputShape, Layers, ModelError, Net};

/// The widths of the five blocks.
const WIDTHS: [usize; 5] = [64, 128, 256, 512, 512];

/// The reference's names for its depths.
const NAMES: [(&str, [usize; 5]); 5] = [
    ("vgg8", [1, 1, 1, 1, 1]),
    ("vgg11", [1, 1, 2, 2, 2]),
    ("vgg13", [2, 2, 2, 2, 2]),
    ("vgg16", [2, 2, 3, 3, 3]),
    ("vgg19", [2, 2, 4, 4, 4]),
];

/// A VGG with BatchNorm: convs per block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VggSpec {
    pub layers: Vec<usize>,

    /// Conv weights in channels_last memory format (the `cnn` family's key: see
    /// [`crate::CnnSpec::channels_last`]); left out of the serialised form when off.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub channels_last: bool,
}

impl VggSpec {
    /// Every conv as (block, index in block, in, out, side).
    fn convs(&self, input: InputShape) -> Vec<(usize, usize, usize, usize, usize)> {
        let mut s = input.height.max(input.width);
        let (big, mut c) = (s == 64, input.channels);
        let mut out = Vec::new();
        for (b, (&n, &w)) in self.layers.iter().zip(&WIDTHS).enumerate() {
            for j in 0..n {
                out.push((b, j, c, w, s));
                c = w;
            }
            if b < 3 || (b == 3 && big) {
                s /= 2;
            }
        }
        out
    }
}

/// The config keys of `arch: vgg`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VggKeys {
    layers: Option<Vec<usize>>,
    depth: Option<usize>,

    channels_last: Option<bool>,
}

impl Configure for VggSpec {
    type Keys = VggKeys;

    /// `depth: 8 | 11 | 13 | 16 | 19` names the reference's models (vgg13 unless told);
    /// `layers` sets the convs per block instead.
    fn from_keys(k: VggKeys, _role: Role) -> Result<VggSpec, ModelError> {
        let layers = match (k.layers, k.depth) {
            (Some(_), Some(_)) => {
                return Err(spec_err("depth", "give depth or layers, not both"));
            }
            (Some(l), None) => l,
            (None, d) => {
                let d = d.unwrap_or(13);
                let name = format!("vgg{d}");
                NAMES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, l)| l.to_vec())
                    .ok_or_else(|| {
                        spec_err("depth", format!("must be 8, 11, 13, 16 or 19, got {d}"))
                    })?
            }
        };
        Ok(VggSpec {
            layers,
            channels_last: k.channels_last.unwrap_or(false),
        })
    }
}

impl Family for VggSpec {
    fn channels_last(&self) -> bool {
        self.channels_last
    }

    /// The reference's own initialisation (its linear layer is `normal_(0, 0.01)`).
    fn init(&self) -> Init {
        Init::Torch
    }

    fn shape_label(&self) -> String {
        NAMES
            .iter()
            .find(|(_, l)| *l == self.layers[..])
            .map(|(n, _)| n.to_string())
            .unwrap_or_else(|| {
                let l: Vec<String> = self.layers.iter().map(|n| n.to_string()).collect();
                format!("vgg-{}", l.join("-"))
            })
    }

    fn check(&self) -> Result<(), ModelError> {
        if self.layers.len() != 5 || self.layers.contains(&0) {
            return Err(spec_err(
                "layers",
                format!(
                    "must be 5 conv counts > 0, one per block (vgg13: [2, 2, 2, 2, 2]), got {:?}",
                    self.layers
                ),
            ));
        }
        Ok(())
    }

    fn fits(&self, input: InputShape) -> Result<(), ModelError> {
        if input.height.max(input.width) < 8 {
            return Err(spec_err(
                "layers",
                format!(
                    "three 2x2 poolings shrink a {}x{} image to nothing",
                    input.height, input.width
                ),
            ));
        }
        Ok(())
    }

    fn param_count(&self, input: InputShape, classes: usize) -> usize {
        let convs: usize = self
            .convs(input)
            .iter()
            .map(|&(_, _, i, o, _)| i * o * 9 + o + 2 * o)
            .sum();
        convs + 512 * classes + classes
    }

    fn flops_per_sample(&self, input: InputShape, classes: usize) -> usize {
        let convs: usize = self
            .convs(input)
            .iter()
            .map(|&(_, _, i, o, s)| 2 * i * o * 9 * s * s)
            .sum();
        convs + 2 * 512 * classes
    }

    fn packs(&self) -> bool {
        false
    }

    fn packed_widths(&self, _input: InputShape, _classes: usize) -> usize {
        0
    }

    /// As [`VggNet`]'s forward pass, by the names [`VggSpec::build`] gives.
    fn graph(&self, g: &mut crate::Graph, input: InputShape, _classes: usize) -> Result<(), ModelError> {
        let convs = self.convs(input);
        let blocks = convs.iter().map(|c| c.0 + 1).max().unwrap_or(0);
        let pool4 = input.height.max(input.width) == 64;
        for b in 0..blocks {
            for &(_, j, ..) in convs.iter().filter(|c| c.0 == b) {
                g.conv(&format!("block{b}.{}", 3 * j), 3, 1, 1, 1, true);
                g.batch_norm(&format!("block{b}.{}", 3 * j + 1));
                g.relu();
            }
            if b < 3 || (b == 3 && pool4) {
                g.max_pool(2);
            }
        }
        g.global_avg_pool();
        g.flatten();
        g.linear("classifier");
        Ok(())
    }

    fn build(&self, p: &nn::Path, input: InputShape, classes: usize) -> Net {
        let mut blocks: Vec<Vec<(nn::Conv2D, nn::BatchNorm)>> = Vec::new();
        for (b, j, cin, cout, _) in self.convs(input) {
            if blocks.len() == b {
                blocks.push(Vec::new());
            }
            let q = p / format!("block{b}");
            blocks[b].push((
                conv(&q / (3 * j), cin, cout, 3, 1, true),
                batch_norm(&q / (3 * j + 1), cout),
            ));
        }
        let cfg = nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.01,
            },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        let fc = nn::linear(p / "classifier", 512, classes as i64, cfg);
        Net::new(VggNet {
            blocks,
            fc: vec![fc],
            pool4: input.height.max(input.width) == 64,
            input,
        })
    }
}

/// A built VGG.
#[derive(Debug)]
pub struct VggNet {
    blocks: Vec<Vec<(nn::Conv2D, nn::BatchNorm)>>,
    fc: Vec<nn::Linear>,
    /// Whether the fourth block is pooled too (64x64 inputs, as the reference).
    pool4: bool,
    input: InputShape,
}

impl Layers for VggNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let i = self.input;
        let mut x = xs.view([-1, i.channels as i64, i.height as i64, i.width as i64]);
        for (b, block) in self.blocks.iter().enumerate() {
            for (conv, bn) in block {
                x = relu_(x.apply(conv).apply_t(bn, train));
            }
            if b < 3 || (b == 3 && self.pool4) {
                x = x.max_pool2d_default(2);
            }
        }
        x.adaptive_avg_pool2d([1, 1]).flatten(1, -1).apply(&self.fc[0])
    }

    fn linears(&self) -> &[nn::Linear] {
        &self.fc
    }

    fn dropout_sites(&self) -> Option<Vec<(f64, i64)>> {
        // No dropout and no other draw in a forward pass.
        Some(vec![])
    }
}
