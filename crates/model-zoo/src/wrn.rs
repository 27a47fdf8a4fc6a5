//! The wide ResNets of RepDistiller and mdistiller (`models/wrn.py`, Zagoruyko & Komodakis):
//! a 3x3 conv to 16 channels, three stages of `n = (depth - 4) / 6` pre-activation blocks
//! (`BN -> ReLU -> conv3x3 -> BN -> ReLU -> conv3x3`, plus the input, or where the width
//! changes a 1x1 conv of the pre-activated input) of widths `16k, 32k, 64k` at strides 1, 2, 2,
//! then `BN -> ReLU`, global average pooling and one linear layer. `wrn_16_2` is `depth: 16,
//! widen: 2`. No dropout (the reference models use none). Initialisation as the reference's:
//! convolutions `normal_(0, sqrt(2 / (k * k * out)))`, BN weight 1 and bias 0, the linear layer
//! PyTorch's default weight and a zero bias. Variables are named as the reference's
//! `state_dict` (`block2.layer.0.convShortcut.weight`).

use serde::{Deserialize, Serialize};
use tch::nn;
use tch::Tensor;

use crate::cifar::{batch_norm, conv};
use crate::keys::{Configure, Role};
use crate::{relu_, spec_err, Family, Init, InputShape, Layers, ModelError, Net};

/// A wide ResNet: its depth (`6n + 4`) and widening factor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WrnSpec {
    pub depth: usize,
    pub widen: usize,

    /// Conv weights in channels_last memory format (the `cnn` family's key: see
    /// [`crate::CnnSpec::channels_last`]); left out of the serialised form when off.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub channels_last: bool,
}

impl WrnSpec {
    fn widths(&self) -> [usize; 4] {
        let k = self.widen;
        [16, 16 * k, 32 * k, 64 * k]
    }

    /// Every block as (in, out, stride, output side).
    fn blocks(&self, input: InputShape) -> Vec<(usize, usize, usize, usize)> {
        let w = self.widths();
        let n = (self.depth - 4) / 6;
        let mut s = input.height.max(input.width);
        let mut out = Vec::new();
        for stage in 0..3 {
            for b in 0..n {
                let cin = if b == 0 { w[stage] } else { w[stage + 1] };
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                s = s.div_ceil(stride);
                out.push((cin, w[stage + 1], stride, s));
            }
        }
        out
    }
}

/// The config keys of `arch: wrn`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrnKeys {
    depth: Option<usize>,
    widen: Option<usize>,

    channels_last: Option<bool>,
}

impl Configure for WrnSpec {
    type Keys = WrnKeys;

    /// wrn_16_2 for either role unless told.
    fn from_keys(k: WrnKeys, _role: Role) -> Result<WrnSpec, ModelError> {
        Ok(WrnSpec {
            depth: k.depth.unwrap_or(16),
            widen: k.widen.unwrap_or(2),
            channels_last: k.channels_last.unwrap_or(false),
        })
    }
}

impl Family for WrnSpec {
    fn channels_last(&self) -> bool {
        self.channels_last
    }

    /// The linear layer's weight is PyTorch's default; the rest is the reference's own.
    fn init(&self) -> Init {
        Init::Torch
    }

    /// The reference's name: `wrn_40_2`.
    fn shape_label(&self) -> String {
        format!("wrn_{}_{}", self.depth, self.widen)
    }

    fn check(&self) -> Result<(), ModelError> {
        if self.depth < 10 || !(self.depth - 4).is_multiple_of(6) {
            return Err(spec_err(
                "depth",
                format!(
                    "must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40), got {}",
                    self.depth
                ),
            ));
        }
        if self.widen == 0 {
            return Err(spec_err("widen", "must be > 0, got 0"));
        }
        Ok(())
    }

    fn param_count(&self, input: InputShape, classes: usize) -> usize {
        let w = self.widths();
        let stem = input.channels * w[0] * 9;
        let blocks: usize = self
            .blocks(input)
            .iter()
            .map(|&(i, o, ..)| {
                let shortcut = if i != o { i * o } else { 0 };
                2 * i + i * o * 9 + 2 * o + o * o * 9 + shortcut
            })
            .sum();
        stem + blocks + 2 * w[3] + w[3] * classes + classes
    }

    fn flops_per_sample(&self, input: InputShape, classes: usize) -> usize {
        let w = self.widths();
        let side = input.height.max(input.width);
        let stem = 2 * input.channels * w[0] * 9 * side * side;
        let blocks: usize = self
            .blocks(input)
            .iter()
            .map(|&(i, o, _, s)| {
                let shortcut = if i != o { i * o } else { 0 };
                2 * (i * o * 9 + o * o * 9 + shortcut) * s * s
            })
            .sum();
        stem + blocks + 2 * w[3] * classes
    }

    fn packs(&self) -> bool {
        false
    }

    fn packed_widths(&self, _input: InputShape, _classes: usize) -> usize {
        0
    }

    /// As [`WrnNet`]'s forward pass (pre-activation blocks), by the names
    /// [`WrnSpec::build`] gives.
    fn graph(&self, g: &mut crate::Graph, input: InputShape, _classes: usize) -> Result<(), ModelError> {
        g.conv("conv1", 3, 1, 1, 1, false);
        let n = (self.depth - 4) / 6;
        for (j, &(cin, cout, stride, _)) in self.blocks(input).iter().enumerate() {
            let q = format!("block{}.layer.{}", j / n + 1, j % n);
            let stride = stride as i64;
            let x = g.last.clone();
            g.batch_norm(&format!("{q}.bn1"));
            let pre = g.relu();
            g.conv_bn(&format!("{q}.conv1"), &format!("{q}.bn2"), 3, stride, 1, 1);
            g.relu();
            let main = g.conv(&format!("{q}.conv2"), 3, 1, 1, 1, false);
            let residual = if cin != cout {
                g.last = pre;
                g.conv(&format!("{q}.convShortcut"), 1, stride, 0, 1, false)
            } else {
                x
            };
            g.add(&main, &residual);
        }
        g.batch_norm("bn1");
        g.relu();
        g.global_avg_pool();
        g.flatten();
        g.linear("fc");
        Ok(())
    }

    fn build(&self, p: &nn::Path, input: InputShape, classes: usize) -> Net {
        let w = self.widths();
        let stem = conv(p / "conv1", input.channels, w[0], 3, 1, false);
        let n = (self.depth - 4) / 6;
        let blocks = self
            .blocks(input)
            .iter()
            .enumerate()
            .map(|(j, &(cin, cout, stride, _))| {
                let q = p / format!("block{}", j / n + 1) / "layer" / (j % n);
                Block {
                    bn1: batch_norm(&q / "bn1", cin),
                    conv1: conv(&q / "conv1", cin, cout, 3, stride, false),
                    bn2: batch_norm(&q / "bn2", cout),
                    conv2: conv(&q / "conv2", cout, cout, 3, 1, false),
                    shortcut: (cin != cout)
                        .then(|| conv(&q / "convShortcut", cin, cout, 1, stride, false)),
                }
            })
            .collect();
        let bn = batch_norm(p / "bn1", w[3]);
        let fc = nn::linear(p / "fc", w[3] as i64, classes as i64, Init::Torch.linear());
        // PyTorch's default weight; the bias stays the zero it was created as.
        Init::torch_reset(&fc.ws, None, w[3]);
        Net::new(WrnNet {
            stem,
            blocks,
            bn,
            fc: vec![fc],
            input,
        })
    }
}

#[derive(Debug)]
struct Block {
    bn1: nn::BatchNorm,
    conv1: nn::Conv2D,
    bn2: nn::BatchNorm,
    conv2: nn::Conv2D,
    /// A 1x1 conv of the pre-activated input where the width changes.
    shortcut: Option<nn::Conv2D>,
}

impl Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let pre = relu_(x.apply_t(&self.bn1, train));
        let mut out = relu_(pre.apply(&self.conv1).apply_t(&self.bn2, train)).apply(&self.conv2);
        match &self.shortcut {
            Some(c) => out += pre.apply(c),
            None => out += x,
        }
        out
    }
}

/// A built wide ResNet.
#[derive(Debug)]
pub struct WrnNet {
    stem: nn::Conv2D,
    blocks: Vec<Block>,
    bn: nn::BatchNorm,
    fc: Vec<nn::Linear>,
    input: InputShape,
}

impl Layers for WrnNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let i = self.input;
        let mut x = xs
            .view([-1, i.channels as i64, i.height as i64, i.width as i64])
            .apply(&self.stem);
        for b in &self.blocks {
            x = b.forward_t(&x, train);
        }
        let x = relu_(x.apply_t(&self.bn, train));
        // Global average pooling: the reference's avg_pool2d(8) on a 32x32 input's 8x8 maps.
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
