//! The MobileNetV2 of RepDistiller and mdistiller (`models/mobilenetv2.py`, from "Knowledge
//! Distillation via Route Constrained Optimization"): `conv3x3 (stride 2) -> BN -> ReLU`, seven
//! stages of inverted residuals `(t, c, n, s)` = `(1, 16, 1, 1)`, `(T, 24, 2, 1)`,
//! `(T, 32, 3, 2)`, `(T, 64, 4, 2)`, `(T, 96, 3, 1)`, `(T, 160, 3, 2)`, `(T, 320, 1, 1)` (each
//! block `1x1 expand -> BN -> ReLU -> 3x3 depthwise -> BN -> ReLU -> 1x1 project -> BN`, plus the
//! input where the stride is 1 and the width kept; unlike the original paper the `t = 1` block
//! keeps its expansion conv), `1x1 conv to 1280 -> BN -> ReLU`, global average pooling and one
//! linear layer. Widths are `int(c * width)` (1280 stays unless `width > 1`). The reference's
//! `MobileNetV2` of the CRD tables is `mobile_half`: `expand: 6, width: 0.5` (the default here).
//! Initialisation as the reference's: convolutions `normal_(0, sqrt(2 / (k * k * out)))`, BN
//! weight 1 and bias 0, the linear layer `normal_(0, 0.01)` with zero bias. Variables are named
//! as the reference's `state_dict` (`blocks.2.1.conv.4.running_var`).

use serde::{Deserialize, Serialize};
use tch::nn;
use tch::Tensor;

use crate::cifar::{batch_norm, conv_flops, grouped, strided, ConvBn, ConvInit};
use crate::keys::{Configure, Role};
use crate::{relu_, spec_err, Family, Init, InputShape, Layers, ModelError, Net};

/// The stages `(expand or 1, width, blocks, stride)`; `None` expands by the spec's `expand`.
const STAGES: [(Option<usize>, usize, usize, usize); 7] = [
    (Some(1), 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
];

/// A MobileNetV2: the expansion ratio `T` of its inverted residuals and its width multiplier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MobileNetV2Spec {
    pub expand: usize,
    pub width: f64,

    /// Conv weights in channels_last memory format (the `cnn` family's key: see
    /// [`crate::CnnSpec::channels_last`]); left out of the serialised form when off.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub channels_last: bool,
}

/// One inverted residual: (in, expanded, out, stride, output side).
type Block = (usize, usize, usize, usize, usize);

impl MobileNetV2Spec {
    /// `int(c * width_mult)`, as the reference computes every width.
    fn scaled(&self, c: usize) -> usize {
        (c as f64 * self.width) as usize
    }

    fn stem(&self) -> usize {
        self.scaled(32)
    }

    fn last(&self) -> usize {
        if self.width > 1.0 {
            self.scaled(1280)
        } else {
            1280
        }
    }

    /// The blocks of each stage, and the side after the stem.
    fn stages(&self, input: InputShape) -> (Vec<Vec<Block>>, usize) {
        let stem_side = strided(input.height.max(input.width), 2);
        let (mut c, mut s) = (self.stem(), stem_side);
        let mut stages = Vec::new();
        for (t, width, n, stride) in STAGES {
            let t = t.unwrap_or(self.expand);
            let out = self.scaled(width);
            let mut blocks = Vec::new();
            for b in 0..n {
                let stride = if b == 0 { stride } else { 1 };
                s = strided(s, stride);
                blocks.push((c, c * t, out, stride, s));
                c = out;
            }
            stages.push(blocks);
        }
        (stages, stem_side)
    }
}

/// The config keys of `arch: mobilenetv2`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MobileNetV2Keys {
    expand: Option<usize>,
    width: Option<f64>,

    channels_last: Option<bool>,
}

impl Configure for MobileNetV2Spec {
    type Keys = MobileNetV2Keys;

    /// The reference's `MobileNetV2` (`mobile_half`: expansion 6, width 0.5) unless told.
    fn from_keys(k: MobileNetV2Keys, _role: Role) -> Result<MobileNetV2Spec, ModelError> {
        Ok(MobileNetV2Spec {
            expand: k.expand.unwrap_or(6),
            width: k.width.unwrap_or(0.5),
            channels_last: k.channels_last.unwrap_or(false),
        })
    }
}

impl Family for MobileNetV2Spec {
    fn channels_last(&self) -> bool {
        self.channels_last
    }

    /// The reference's own initialisation throughout.
    fn init(&self) -> Init {
        Init::Torch
    }

    /// `MobileNetV2` for the reference's model (expansion 6, width 0.5), else
    /// `mobilenetv2_T{expand}_w{width}` (the reference's `mobilenetv2_T_w`).
    fn shape_label(&self) -> String {
        if self.expand == 6 && self.width == 0.5 {
            "MobileNetV2".into()
        } else {
            format!("mobilenetv2_T{}_w{}", self.expand, self.width)
        }
    }

    fn check(&self) -> Result<(), ModelError> {
        if self.expand == 0 {
            return Err(spec_err("expand", "must be >= 1 (the reference's T, 6)"));
        }
        if !(self.width.is_finite() && self.width > 0.0 && self.scaled(16) > 0) {
            return Err(spec_err(
                "width",
                format!(
                    "must leave every stage a channel: int(16 * width) >= 1, i.e. width >= \
                     0.0625 (the reference's 0.5), got {}",
                    self.width
                ),
            ));
        }
        Ok(())
    }

    /// The reference asserts a square input whose side is a multiple of 32.
    fn fits(&self, input: InputShape) -> Result<(), ModelError> {
        if input.height != input.width || !input.height.is_multiple_of(32) {
            return Err(spec_err(
                "arch",
                format!(
                    "mobilenetv2 takes square images whose side is a multiple of 32 (the \
                     reference asserts input_size % 32 == 0), got {}x{}",
                    input.height, input.width
                ),
            ));
        }
        Ok(())
    }

    fn param_count(&self, input: InputShape, classes: usize) -> usize {
        let (stages, _) = self.stages(input);
        let stem = input.channels * self.stem() * 9 + 2 * self.stem();
        let blocks: usize = stages
            .iter()
            .flatten()
            .map(|&(i, e, o, ..)| i * e + 2 * e + e * 9 + 2 * e + e * o + 2 * o)
            .sum();
        let c = self.scaled(320);
        let head = c * self.last() + 2 * self.last();
        stem + blocks + head + self.last() * classes + classes
    }

    fn flops_per_sample(&self, input: InputShape, classes: usize) -> usize {
        let (stages, stem_side) = self.stages(input);
        let stem = conv_flops((input.channels, self.stem()), 3, 1, stem_side);
        let mut side_in = stem_side;
        let mut blocks = 0;
        for &(i, e, o, _, s) in stages.iter().flatten() {
            blocks += conv_flops((i, e), 1, 1, side_in)
                + conv_flops((e, e), 3, e, s)
                + conv_flops((e, o), 1, 1, s);
            side_in = s;
        }
        let head = conv_flops((self.scaled(320), self.last()), 1, 1, side_in);
        stem + blocks + head + 2 * self.last() * classes
    }

    fn packs(&self) -> bool {
        false
    }

    fn packed_widths(&self, _input: InputShape, _classes: usize) -> usize {
        0
    }

    /// As [`MobileNetV2Net`]'s forward pass, by the names [`MobileNetV2Spec::build`] gives.
    fn graph(&self, g: &mut crate::Graph, input: InputShape, _classes: usize) -> Result<(), ModelError> {
        g.conv_bn("conv1.0", "conv1.1", 3, 2, 1, 1);
        g.relu();
        let (stages, _) = self.stages(input);
        for (i, stage) in stages.iter().enumerate() {
            for (j, &(cin, e, cout, stride, _)) in stage.iter().enumerate() {
                let q = format!("blocks.{i}.{j}.conv");
                let x = g.last.clone();
                g.conv_bn(&format!("{q}.0"), &format!("{q}.1"), 1, 1, 0, 1);
                g.relu();
                g.conv_bn(&format!("{q}.3"), &format!("{q}.4"), 3, stride as i64, 1, e as i64);
                g.relu();
                let out = g.conv_bn(&format!("{q}.6"), &format!("{q}.7"), 1, 1, 0, 1);
                if stride == 1 && cin == cout {
                    g.add(&out, &x);
                }
            }
        }
        g.conv_bn("conv2.0", "conv2.1", 1, 1, 0, 1);
        g.relu();
        g.global_avg_pool();
        g.flatten();
        g.linear("classifier.0");
        Ok(())
    }

    fn build(&self, p: &nn::Path, input: InputShape, classes: usize) -> Net {
        let conv = |p: nn::Path, io, k, stride, groups| {
            grouped(p, io, k, stride, groups, ConvInit::FanOut)
        };
        let s = p / "conv1";
        let stem = ConvBn::new(
            conv(&s / 0, (input.channels, self.stem()), 3, 2, 1),
            batch_norm(&s / 1, self.stem()),
        );
        let (stages, _) = self.stages(input);
        let mut blocks = Vec::new();
        for (i, stage) in stages.iter().enumerate() {
            for (j, &(cin, e, cout, stride, _)) in stage.iter().enumerate() {
                let q = p / "blocks" / i / j / "conv";
                blocks.push(InvertedResidual {
                    expand: ConvBn::new(conv(&q / 0, (cin, e), 1, 1, 1), batch_norm(&q / 1, e)),
                    depthwise: ConvBn::new(
                        conv(&q / 3, (e, e), 3, stride, e),
                        batch_norm(&q / 4, e),
                    ),
                    project: ConvBn::new(
                        conv(&q / 6, (e, cout), 1, 1, 1),
                        batch_norm(&q / 7, cout),
                    ),
                    residual: stride == 1 && cin == cout,
                });
            }
        }
        let h = p / "conv2";
        let c = self.scaled(320);
        let head = ConvBn::new(
            conv(&h / 0, (c, self.last()), 1, 1, 1),
            batch_norm(&h / 1, self.last()),
        );
        let cfg = nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.01,
            },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        let fc = nn::linear(p / "classifier" / 0, self.last() as i64, classes as i64, cfg);
        Net::new(MobileNetV2Net {
            stem,
            blocks,
            head,
            fc: vec![fc],
            input,
        })
    }
}

#[derive(Debug)]
struct InvertedResidual {
    expand: ConvBn,
    depthwise: ConvBn,
    project: ConvBn,
    /// Stride 1 and the width kept: the input is added.
    residual: bool,
}

impl InvertedResidual {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let out = relu_(self.expand.forward_t(x, train));
        let out = relu_(self.depthwise.forward_t(&out, train));
        let mut out = self.project.forward_t(&out, train);
        if self.residual {
            out += x;
        }
        out
    }
}

/// A built MobileNetV2.
#[derive(Debug)]
pub struct MobileNetV2Net {
    stem: ConvBn,
    blocks: Vec<InvertedResidual>,
    head: ConvBn,
    fc: Vec<nn::Linear>,
    input: InputShape,
}

impl Layers for MobileNetV2Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let i = self.input;
        let xs = xs.view([-1, i.channels as i64, i.height as i64, i.width as i64]);
        let mut x = relu_(self.stem.forward_t(&xs, train));
        for b in &self.blocks {
            x = b.forward_t(&x, train);
        }
        let x = relu_(self.head.forward_t(&x, train));
        // The reference's AvgPool2d(input_size // 16, ceil_mode=True) on the final
        // (input_size / 16)-sided map: global average pooling.
        x.adaptive_avg_pool2d([1, 1])
            .flatten(1, -1)
            .apply(&self.fc[0])
    }

    fn linears(&self) -> &[nn::Linear] {
        &self.fc
    }

    fn dropout_sites(&self) -> Option<Vec<(f64, i64)>> {
        // No dropout and no other draw in a forward pass.
        Some(vec![])
    }
}
