//! The ShuffleNet (V1) of RepDistiller and mdistiller (`models/ShuffleNetv1.py`, after Zhang et
//! al. 2018, for 32x32 inputs): `conv1x1 to 24 -> BN -> ReLU`, three stages of bottlenecks
//! (`1x1 group conv to out/4 -> BN -> ReLU -> channel shuffle -> 3x3 depthwise -> BN -> ReLU ->
//! 1x1 group conv -> BN`, added to the input then ReLU; each stage's first block has stride 2,
//! an `AvgPool2d(3, 2, 1)` shortcut concatenated instead of added, and so produces
//! `width - in` channels of its own), `avg_pool2d(4)` and one linear layer. The first 1x1 conv
//! after the 24-channel stem is not grouped (the reference's `g = 1 if in_planes == 24`).
//! `ShuffleV1` is `widths: [240, 480, 960], blocks: [4, 8, 4], groups: 3` (the default).
//! Initialisation: PyTorch's defaults (the reference sets none): convolutions uniform with
//! bound `1 / sqrt(fan_in)`, BN weight 1 and bias 0, the linear layer PyTorch's default.
//! Variables are named as the reference's `state_dict` (`layer2.0.bn3.running_mean`).

use serde::{Deserialize, Serialize};
use tch::nn;
use tch::Tensor;

use crate::cifar::{
    avg_pool, batch_norm, conv_flops, fits_pool4, grouped, shuffle, strided, ConvBn, ConvInit,
};
use crate::keys::{Configure, Role};
use crate::{relu_, spec_err, Family, Init, InputShape, Layers, ModelError, Net};

/// The stem's width: the reference's fixed 24.
const STEM: usize = 24;

/// A ShuffleNet V1: the widths and block counts of its three stages and its groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShuffleV1Spec {
    pub widths: Vec<usize>,
    pub blocks: Vec<usize>,
    pub groups: usize,

    /// Conv weights in channels_last memory format (the `cnn` family's key: see
    /// [`crate::CnnSpec::channels_last`]); left out of the serialised form when off.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub channels_last: bool,
}

/// One bottleneck: (in, mid, out of its own branch, groups of its first conv, stride, side).
type Bottleneck = (usize, usize, usize, usize, usize, usize);

impl ShuffleV1Spec {
    /// Every bottleneck of the three stages, in forward order, after the stem at `side`.
    fn bottlenecks(&self, side: usize) -> Vec<Vec<Bottleneck>> {
        let (mut c, mut s) = (STEM, side);
        let mut stages = Vec::new();
        for (&width, &n) in self.widths.iter().zip(&self.blocks) {
            let mut stage = Vec::new();
            for b in 0..n {
                let stride = if b == 0 { 2 } else { 1 };
                let out = if b == 0 { width - c } else { width };
                let g = if c == STEM { 1 } else { self.groups };
                s = strided(s, stride);
                stage.push((c, out / 4, out, g, stride, s));
                c = width;
            }
            stages.push(stage);
        }
        stages
    }
}

/// The config keys of `arch: shufflev1`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShuffleV1Keys {
    widths: Option<Vec<usize>>,
    blocks: Option<Vec<usize>>,
    groups: Option<usize>,

    channels_last: Option<bool>,
}

impl Configure for ShuffleV1Spec {
    type Keys = ShuffleV1Keys;

    /// The reference's `ShuffleV1` unless told.
    fn from_keys(k: ShuffleV1Keys, _role: Role) -> Result<ShuffleV1Spec, ModelError> {
        Ok(ShuffleV1Spec {
            widths: k.widths.unwrap_or_else(|| vec![240, 480, 960]),
            blocks: k.blocks.unwrap_or_else(|| vec![4, 8, 4]),
            groups: k.groups.unwrap_or(3),
            channels_last: k.channels_last.unwrap_or(false),
        })
    }
}

impl Family for ShuffleV1Spec {
    fn channels_last(&self) -> bool {
        self.channels_last
    }

    /// PyTorch's defaults throughout (uniform convolutions, the default linear layer).
    fn init(&self) -> Init {
        Init::Torch
    }

    /// `ShuffleV1` for the reference's model, else `shufflev1-g{groups}-{widths}-b{blocks}`.
    fn shape_label(&self) -> String {
        if self.widths == [240, 480, 960] && self.blocks == [4, 8, 4] && self.groups == 3 {
            return "ShuffleV1".into();
        }
        format!(
            "shufflev1-g{}-{}-b{}",
            self.groups,
            crate::join(&self.widths, "-", ""),
            crate::join(&self.blocks, "-", "")
        )
    }

    fn check(&self) -> Result<(), ModelError> {
        if self.blocks.len() != 3 || self.blocks.contains(&0) {
            return Err(spec_err(
                "blocks",
                format!(
                    "must be 3 block counts > 0, one per stage ([4, 8, 4]), got {:?}",
                    self.blocks
                ),
            ));
        }
        if self.groups == 0 {
            return Err(spec_err("groups", "must be >= 1 (the reference's 3)"));
        }
        if self.widths.len() != 3 {
            return Err(spec_err(
                "widths",
                format!("must be 3 widths, one per stage ([240, 480, 960]), got {:?}", self.widths),
            ));
        }
        let mut c = STEM;
        for (i, &w) in self.widths.iter().enumerate() {
            if w <= c {
                return Err(spec_err(
                    format!("widths[{i}]"),
                    format!("must exceed the stage's input width {c} (the stride-2 block concatenates its input), got {w}"),
                ));
            }
            c = w;
        }
        for stage in self.bottlenecks(32) {
            for (cin, mid, out, g, ..) in stage {
                let g3 = self.groups;
                if mid == 0 || !cin.is_multiple_of(g) || !mid.is_multiple_of(g3) || !mid.is_multiple_of(g) || !out.is_multiple_of(g3) {
                    return Err(spec_err(
                        "widths",
                        format!(
                            "a block from {cin} to {out} channels (bottleneck {mid}) does not \
                             split into {g3} groups; with groups {g3} every width, its quarter \
                             and (for the first block of a stage) the width less the stage's \
                             input must be multiples of {g3} ([240, 480, 960] for 3), got {:?}",
                            self.widths
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The reference pools the last 4x4 map with `avg_pool2d(4)` into one value per channel.
    fn fits(&self, input: InputShape) -> Result<(), ModelError> {
        fits_pool4("shufflev1", input)
    }

    fn param_count(&self, input: InputShape, classes: usize) -> usize {
        let stem = input.channels * STEM + 2 * STEM;
        let blocks: usize = self
            .bottlenecks(32)
            .iter()
            .flatten()
            .map(|&(cin, mid, out, g, ..)| {
                cin / g * mid + 2 * mid + mid * 9 + 2 * mid + mid / self.groups * out + 2 * out
            })
            .sum();
        stem + blocks + self.widths[2] * classes + classes
    }

    fn flops_per_sample(&self, input: InputShape, classes: usize) -> usize {
        let side = input.height.max(input.width);
        let stem = conv_flops((input.channels, STEM), 1, 1, side);
        let mut s_in = side;
        let mut blocks = 0;
        for &(cin, mid, out, g, _, s) in self.bottlenecks(side).iter().flatten() {
            blocks += conv_flops((cin, mid), 1, g, s_in)
                + conv_flops((mid, mid), 3, mid, s)
                + conv_flops((mid, out), 1, self.groups, s);
            s_in = s;
        }
        stem + blocks + 2 * self.widths[2] * classes
    }

    fn packs(&self) -> bool {
        false
    }

    fn packed_widths(&self, _input: InputShape, _classes: usize) -> usize {
        0
    }

    /// As [`ShuffleV1Net`]'s forward pass, by the names [`ShuffleV1Spec::build`] gives.
    fn graph(&self, g: &mut crate::Graph, input: InputShape, _classes: usize) -> Result<(), ModelError> {
        g.conv_bn("conv1", "bn1", 1, 1, 0, 1);
        g.relu();
        let side = input.height.max(input.width);
        let mut s_in = side as i64;
        for (l, stage) in self.bottlenecks(side).iter().enumerate() {
            for (b, &(_, mid, _, gr, stride, s)) in stage.iter().enumerate() {
                let q = format!("layer{}.{b}", l + 1);
                let x = g.last.clone();
                g.conv_bn(&format!("{q}.conv1"), &format!("{q}.bn1"), 1, 1, 0, gr as i64);
                g.relu();
                g.shuffle(gr as i64, mid as i64, s_in);
                g.conv_bn(&format!("{q}.conv2"), &format!("{q}.bn2"), 3, stride as i64, 1, mid as i64);
                g.relu();
                let out = g.conv_bn(&format!("{q}.conv3"), &format!("{q}.bn3"), 1, 1, 0, self.groups as i64);
                if stride == 2 {
                    g.last = x;
                    let res = g.avg_pool(3, 2, 1);
                    g.concat(&out, &res);
                } else {
                    g.add(&out, &x);
                }
                g.relu();
                s_in = s as i64;
            }
        }
        g.avg_pool(4, 4, 0);
        g.flatten();
        g.linear("linear");
        Ok(())
    }

    fn build(&self, p: &nn::Path, input: InputShape, classes: usize) -> Net {
        let conv =
            |p: nn::Path, io, k, stride, groups| grouped(p, io, k, stride, groups, ConvInit::Torch);
        let stem = ConvBn::new(
            conv(p / "conv1", (input.channels, STEM), 1, 1, 1),
            batch_norm(p / "bn1", STEM),
        );
        let mut blocks = Vec::new();
        let side = input.height.max(input.width);
        for (l, stage) in self.bottlenecks(side).iter().enumerate() {
            for (b, &(cin, mid, out, g, stride, _)) in stage.iter().enumerate() {
                let q = p / format!("layer{}", l + 1) / b;
                blocks.push(Block {
                    conv1: ConvBn::new(conv(&q / "conv1", (cin, mid), 1, 1, g), batch_norm(&q / "bn1", mid)),
                    conv2: ConvBn::new(
                        conv(&q / "conv2", (mid, mid), 3, stride, mid),
                        batch_norm(&q / "bn2", mid),
                    ),
                    conv3: ConvBn::new(
                        conv(&q / "conv3", (mid, out), 1, 1, self.groups),
                        batch_norm(&q / "bn3", out),
                    ),
                    shuffle: g,
                    down: stride == 2,
                });
            }
        }
        let c = self.widths[2];
        let fc = nn::linear(p / "linear", c as i64, classes as i64, Init::Torch.linear());
        Init::torch_reset(&fc.ws, fc.bs.as_ref(), c);
        Net::new(ShuffleV1Net {
            stem,
            blocks,
            fc: vec![fc],
            input,
        })
    }
}

#[derive(Debug)]
struct Block {
    conv1: ConvBn,
    conv2: ConvBn,
    conv3: ConvBn,
    /// The groups of the shuffle after the first conv (its own groups).
    shuffle: usize,
    /// Stride 2: the pooled input is concatenated, not added.
    down: bool,
}

impl Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let out = relu_(self.conv1.forward_t(x, train));
        let out = shuffle(&out, self.shuffle);
        let out = relu_(self.conv2.forward_t(&out, train));
        let mut out = self.conv3.forward_t(&out, train);
        if self.down {
            let res = x.avg_pool2d([3, 3], [2, 2], [1, 1], false, true, None);
            relu_(Tensor::cat(&[out, res], 1))
        } else {
            out += x;
            relu_(out)
        }
    }
}

/// A built ShuffleNet V1.
#[derive(Debug)]
pub struct ShuffleV1Net {
    stem: ConvBn,
    blocks: Vec<Block>,
    fc: Vec<nn::Linear>,
    input: InputShape,
}

impl Layers for ShuffleV1Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let i = self.input;
        let xs = xs.view([-1, i.channels as i64, i.height as i64, i.width as i64]);
        let mut x = relu_(self.stem.forward_t(&xs, train));
        for b in &self.blocks {
            x = b.forward_t(&x, train);
        }
        avg_pool(&x, 4).flatten(1, -1).apply(&self.fc[0])
    }

    fn linears(&self) -> &[nn::Linear] {
        &self.fc
    }

    fn dropout_sites(&self) -> Option<Vec<(f64, i64)>> {
        // No dropout and no other draw in a forward pass.
        Some(vec![])
    }
}
