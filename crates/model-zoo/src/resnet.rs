//! The CIFAR ResNets of RepDistiller and mdistiller (`models/resnet.py`): `conv3x3 -> BN ->
//! ReLU`, three stages of `n = (depth - 2) / 6` basic blocks (`conv3x3 -> BN -> ReLU -> conv3x3
//! -> BN`, plus the input, or a `1x1 conv -> BN` projection of it where the stride or the width
//! changes, then ReLU) at strides 1, 2, 2, global average pooling and one linear layer.
//! `resnet8..110` have widths `[16, 16, 32, 64]`, `resnet8x4`/`resnet32x4` `[32, 64, 128, 256]`.
//! Convolutions have no bias. Initialisation as the reference's: convolutions
//! `kaiming_normal_(mode="fan_out", nonlinearity="relu")`, BN weight 1 and bias 0, the linear
//! layer PyTorch's default. Variables are named as the reference's `state_dict`
//! (`layer2.0.downsample.1.running_var`), so weights move between the two by name.

use serde::{Deserialize, Serialize};
use tch::nn;
use tch::Tensor;

use crate::cifar::{batch_norm as bn, conv};
use crate::keys::{Configure, Role};
use crate::{relu_, spec_err, Family, Init, InputShape, Layers, ModelError, Net};

/// A CIFAR ResNet: its depth (`6n + 2`) and the widths of the stem and the three stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResNetSpec {
    pub depth: usize,
    /// Channels of the stem conv, then of each of the three stages.
    pub widths: Vec<usize>,

    /// Conv weights in channels_last memory format (the `cnn` family's key: see
    /// [`crate::CnnSpec::channels_last`]); left out of the serialised form when off.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub channels_last: bool,
}

/// The reference's names for its widths.
const NARROW: [usize; 4] = [16, 16, 32, 64];
const X4: [usize; 4] = [32, 64, 128, 256];

impl ResNetSpec {
    fn blocks(&self) -> usize {
        (self.depth - 2) / 6
    }

    /// Every conv as (in, out, kernel, stride, output side), in forward order, with the
    /// resolution `side` of the input; and the last width.
    fn convs(&self, input: InputShape) -> Vec<(usize, usize, usize, usize, usize)> {
        let side = input.height.max(input.width);
        let mut out = vec![(input.channels, self.widths[0], 3, 1, side)];
        let (mut c, mut s) = (self.widths[0], side);
        for (stage, &planes) in self.widths[1..].iter().enumerate() {
            for b in 0..self.blocks() {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let so = s.div_ceil(stride);
                out.push((c, planes, 3, stride, so));
                out.push((planes, planes, 3, 1, so));
                if stride != 1 || c != planes {
                    out.push((c, planes, 1, stride, so));
                }
                (c, s) = (planes, so);
            }
        }
        out
    }
}

/// The config keys of `arch: resnet`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetKeys {
    depth: Option<usize>,
    widths: Option<Vec<usize>>,

    channels_last: Option<bool>,
}

impl Configure for ResNetSpec {
    type Keys = ResNetKeys;

    /// resnet20 for either role unless told (`depth: 8, widths: [32, 64, 128, 256]` is
    /// resnet8x4).
    fn from_keys(k: ResNetKeys, _role: Role) -> Result<ResNetSpec, ModelError> {
        Ok(ResNetSpec {
            depth: k.depth.unwrap_or(20),
            widths: k.widths.unwrap_or_else(|| NARROW.to_vec()),
            channels_last: k.channels_last.unwrap_or(false),
        })
    }
}

impl Family for ResNetSpec {
    fn channels_last(&self) -> bool {
        self.channels_last
    }

    /// The linear layer's is PyTorch's default; the convolutions' is the reference's own.
    fn init(&self) -> Init {
        Init::Torch
    }

    /// The reference's name where there is one (`resnet56`, `resnet8x4`), else the depth and
    /// widths.
    fn shape_label(&self) -> String {
        match self.widths.as_slice() {
            w if w == NARROW => format!("resnet{}", self.depth),
            w if w == X4 => format!("resnet{}x4", self.depth),
            w => format!(
                "resnet{}-{}",
                self.depth,
                w.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("-")
            ),
        }
    }

    fn check(&self) -> Result<(), ModelError> {
        if self.depth < 8 || !(self.depth - 2).is_multiple_of(6) {
            return Err(spec_err(
                "depth",
                format!(
                    "must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110), got {}",
                    self.depth
                ),
            ));
        }
        if self.widths.len() != 4 || self.widths.contains(&0) {
            return Err(spec_err(
                "widths",
                format!(
                    "must be 4 widths > 0 (the stem's, then each stage's: [16, 16, 32, 64] or \
                     [32, 64, 128, 256] for the x4 models), got {:?}",
                    self.widths
                ),
            ));
        }
        Ok(())
    }

    fn param_count(&self, input: InputShape, classes: usize) -> usize {
        let convs = self.convs(input);
        let conv: usize = convs.iter().map(|(i, o, k, ..)| i * o * k * k).sum();
        // Every conv is followed by a BN of its outputs (weight and bias).
        let bn: usize = convs.iter().map(|(_, o, ..)| 2 * o).sum();
        conv + bn + self.widths[3] * classes + classes
    }

    fn flops_per_sample(&self, input: InputShape, classes: usize) -> usize {
        let conv: usize = self
            .convs(input)
            .iter()
            .map(|(i, o, k, _, s)| 2 * i * o * k * k * s * s)
            .sum();
        conv + 2 * self.widths[3] * classes
    }

    fn packs(&self) -> bool {
        false
    }

    fn packed_widths(&self, _input: InputShape, _classes: usize) -> usize {
        0
    }

    /// As [`ResNetNet`]'s forward pass, by the names [`ResNetSpec::build`] gives.
    fn graph(&self, g: &mut crate::Graph, _input: InputShape, _classes: usize) -> Result<(), ModelError> {
        g.conv_bn("conv1", "bn1", 3, 1, 1, 1);
        g.relu();
        let mut c = self.widths[0];
        for (stage, &planes) in self.widths[1..].iter().enumerate() {
            for b in 0..self.blocks() {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let q = format!("layer{}.{b}", stage + 1);
                let x = g.last.clone();
                g.conv_bn(&format!("{q}.conv1"), &format!("{q}.bn1"), 3, stride, 1, 1);
                g.relu();
                let main = g.conv_bn(&format!("{q}.conv2"), &format!("{q}.bn2"), 3, 1, 1, 1);
                let residual = if stride != 1 || c != planes {
                    g.last = x;
                    g.conv_bn(&format!("{q}.downsample.0"), &format!("{q}.downsample.1"), 1, stride, 0, 1)
                } else {
                    x
                };
                g.add(&main, &residual);
                g.relu();
                c = planes;
            }
        }
        g.global_avg_pool();
        g.flatten();
        g.linear("fc");
        Ok(())
    }

    fn build(&self, p: &nn::Path, input: InputShape, classes: usize) -> Net {
        let conv = |p: nn::Path, cin, cout, k, stride| conv(p, cin, cout, k, stride, false);
        let w = &self.widths;
        let stem = (conv(p / "conv1", input.channels, w[0], 3, 1), bn(p / "bn1", w[0]));
        let mut blocks = Vec::new();
        let mut c = w[0];
        for (stage, &planes) in w[1..].iter().enumerate() {
            let layer = p / format!("layer{}", stage + 1);
            for b in 0..self.blocks() {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let q = &layer / b;
                let downsample = (stride != 1 || c != planes).then(|| {
                    let d = &q / "downsample";
                    (conv(&d / 0, c, planes, 1, stride), bn(&d / 1, planes))
                });
                blocks.push(Block {
                    conv1: conv(&q / "conv1", c, planes, 3, stride),
                    bn1: bn(&q / "bn1", planes),
                    conv2: conv(&q / "conv2", planes, planes, 3, 1),
                    bn2: bn(&q / "bn2", planes),
                    downsample,
                });
                c = planes;
            }
        }
        let fc = nn::linear(p / "fc", c as i64, classes as i64, Init::Torch.linear());
        Init::torch_reset(&fc.ws, fc.bs.as_ref(), c);
        Net::new(ResNetNet {
            stem,
            blocks,
            fc: vec![fc],
            input,
        })
    }
}

#[derive(Debug)]
struct Block {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        // In place where the reference is (`nn.ReLU(inplace=True)`, `out += residual`): the
        // same values, two fewer activation-sized allocations per block.
        let out = relu_(x.apply(&self.conv1).apply_t(&self.bn1, train));
        let mut out = out.apply(&self.conv2).apply_t(&self.bn2, train);
        match &self.downsample {
            Some((conv, bn)) => out += x.apply(conv).apply_t(bn, train),
            None => out += x,
        };
        relu_(out)
    }
}

/// A built CIFAR ResNet.
#[derive(Debug)]
pub struct ResNetNet {
    stem: (nn::Conv2D, nn::BatchNorm),
    blocks: Vec<Block>,
    /// The one linear layer (a slice, as [`Layers::linears`] hands out).
    fc: Vec<nn::Linear>,
    input: InputShape,
}

impl Layers for ResNetNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let i = self.input;
        let xs = xs.view([-1, i.channels as i64, i.height as i64, i.width as i64]);
        let mut x = relu_(xs.apply(&self.stem.0).apply_t(&self.stem.1, train));
        for b in &self.blocks {
            x = b.forward_t(&x, train);
        }
        // Global average pooling: the reference's AvgPool2d(8) on the 8x8 maps of a 32x32 input.
        let x = x.adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        x.apply(&self.fc[0])
    }

    fn linears(&self) -> &[nn::Linear] {
        &self.fc
    }

    fn dropout_sites(&self) -> Option<Vec<(f64, i64)>> {
        // No dropout and no other draw in a forward pass.
        Some(vec![])
    }
}
