//! The ShuffleNetV2 of RepDistiller and mdistiller (`models/ShuffleNetv2.py`, after Ma et al.
//! 2018, for 32x32 inputs): `conv1x1 to 24 -> BN -> ReLU`, three stages, each a down-sampling
//! block (two stride-2 branches, `3x3 depthwise -> BN -> 1x1 -> BN -> ReLU` and `1x1 -> BN ->
//! ReLU -> 3x3 depthwise -> BN -> 1x1 -> BN -> ReLU`, concatenated and shuffled in 2 groups) then
//! `blocks` basic blocks (half the channels pass, the other half goes through `1x1 -> BN ->
//! ReLU -> 3x3 depthwise -> BN -> 1x1 -> BN -> ReLU`; concatenated and shuffled), then `1x1 conv
//! -> BN -> ReLU`, `avg_pool2d(4)` and one linear layer. `size` picks the reference's configs:
//! 0.2, 0.3, 0.5, 1 (`ShuffleV2`, the default), 1.5, 2; or give `widths` (the three stages' and
//! the last conv's) and `blocks`. Initialisation: PyTorch's defaults (the reference sets none).
//! Variables are named as the reference's `state_dict` (`layer1.0.conv5.weight`).

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

/// The reference's `configs`: net size, the widths (three stages, then the last conv), blocks.
const SIZES: [(&str, [usize; 4], [usize; 3]); 6] = [
    ("0.2", [40, 80, 160, 512], [3, 3, 3]),
    ("0.3", [40, 80, 160, 512], [3, 7, 3]),
    ("0.5", [48, 96, 192, 1024], [3, 7, 3]),
    ("1", [116, 232, 464, 1024], [3, 7, 3]),
    ("1.5", [176, 352, 704, 1024], [3, 7, 3]),
    ("2", [224, 488, 976, 2048], [3, 7, 3]),
];

/// A ShuffleNetV2: the widths of its three stages and of its last conv, and the basic blocks
/// of each stage (after its down-sampling block).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShuffleV2Spec {
    pub widths: Vec<usize>,
    pub blocks: Vec<usize>,

    /// Conv weights in channels_last memory format (the `cnn` family's key: see
    /// [`crate::CnnSpec::channels_last`]); left out of the serialised form when off.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub channels_last: bool,
}

/// A stage: (in, out, basic blocks, side after its down-sampling).
type Stage = (usize, usize, usize, usize);

impl ShuffleV2Spec {
    fn stages(&self, side: usize) -> Vec<Stage> {
        let (mut c, mut s) = (STEM, side);
        let mut out = Vec::new();
        for (&w, &n) in self.widths[..3].iter().zip(&self.blocks) {
            s = strided(s, 2);
            out.push((c, w, n, s));
            c = w;
        }
        out
    }
}

/// The config keys of `arch: shufflev2`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShuffleV2Keys {
    size: Option<f64>,
    widths: Option<Vec<usize>>,
    blocks: Option<Vec<usize>>,

    channels_last: Option<bool>,
}

impl Configure for ShuffleV2Spec {
    type Keys = ShuffleV2Keys;

    /// `size` names one of the reference's configs (1, `ShuffleV2`, unless told); `widths`
    /// and `blocks` give another.
    fn from_keys(k: ShuffleV2Keys, _role: Role) -> Result<ShuffleV2Spec, ModelError> {
        let named = |size: f64| {
            SIZES
                .iter()
                .find(|(n, ..)| n.parse::<f64>() == Ok(size))
                .ok_or_else(|| {
                    spec_err(
                        "size",
                        format!("must be 0.2, 0.3, 0.5, 1, 1.5 or 2 (the reference's configs), got {size}"),
                    )
                })
        };
        let channels_last = k.channels_last.unwrap_or(false);
        match (k.size, k.widths, k.blocks) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(spec_err(
                "size",
                "give size, or widths and blocks, not both",
            )),
            (size, None, None) => {
                let (_, w, b) = named(size.unwrap_or(1.0))?;
                Ok(ShuffleV2Spec {
                    widths: w.to_vec(),
                    blocks: b.to_vec(),
                    channels_last,
                })
            }
            (None, Some(widths), Some(blocks)) => Ok(ShuffleV2Spec {
                widths,
                blocks,
                channels_last,
            }),
            (None, w, _) => Err(spec_err(
                if w.is_some() { "blocks" } else { "widths" },
                "give widths and blocks together (or size)",
            )),
        }
    }
}

impl Family for ShuffleV2Spec {
    fn channels_last(&self) -> bool {
        self.channels_last
    }

    /// PyTorch's defaults throughout.
    fn init(&self) -> Init {
        Init::Torch
    }

    /// `ShuffleV2` (size 1) or `ShuffleV2_0.5` for the reference's configs, else
    /// `shufflev2-{widths}-b{blocks}`.
    fn shape_label(&self) -> String {
        match SIZES
            .iter()
            .find(|(_, w, b)| self.widths == w[..] && self.blocks == b[..])
        {
            Some(("1", ..)) => "ShuffleV2".into(),
            Some((size, ..)) => format!("ShuffleV2_{size}"),
            None => format!(
                "shufflev2-{}-b{}",
                crate::join(&self.widths, "-", ""),
                crate::join(&self.blocks, "-", "")
            ),
        }
    }

    fn check(&self) -> Result<(), ModelError> {
        if self.blocks.len() != 3 {
            return Err(spec_err(
                "blocks",
                format!("must be 3 block counts, one per stage ([3, 7, 3]), got {:?}", self.blocks),
            ));
        }
        if self.widths.len() != 4 || self.widths.contains(&0) {
            return Err(spec_err(
                "widths",
                format!(
                    "must be 4 widths > 0, the three stages' and the last conv's \
                     ([116, 232, 464, 1024]), got {:?}",
                    self.widths
                ),
            ));
        }
        if let Some(i) = self.widths[..3].iter().position(|w| w % 2 == 1) {
            return Err(spec_err(
                format!("widths[{i}]"),
                format!(
                    "must be even (each block splits its channels in two halves), got {}",
                    self.widths[i]
                ),
            ));
        }
        Ok(())
    }

    /// The reference pools the last 4x4 map with `avg_pool2d(4)` into one value per channel.
    fn fits(&self, input: InputShape) -> Result<(), ModelError> {
        fits_pool4("shufflev2", input)
    }

    fn param_count(&self, input: InputShape, classes: usize) -> usize {
        let stem = input.channels * STEM + 2 * STEM;
        let stages: usize = self
            .stages(32)
            .iter()
            .map(|&(cin, out, n, _)| {
                let mid = out / 2;
                let down = cin * 9 + 2 * cin + cin * mid + 2 * mid + cin * mid + 2 * mid
                    + mid * 9
                    + 2 * mid
                    + mid * mid
                    + 2 * mid;
                let half = out / 2;
                let basic = 2 * (half * half + 2 * half) + half * 9 + 2 * half;
                down + n * basic
            })
            .sum();
        let (c, last) = (self.widths[2], self.widths[3]);
        stem + stages + c * last + 2 * last + last * classes + classes
    }

    fn flops_per_sample(&self, input: InputShape, classes: usize) -> usize {
        let side = input.height.max(input.width);
        let stem = conv_flops((input.channels, STEM), 1, 1, side);
        let mut s_in = side;
        let mut stages = 0;
        for (cin, out, n, s) in self.stages(side) {
            let (mid, half) = (out / 2, out / 2);
            stages += conv_flops((cin, cin), 3, cin, s)
                + conv_flops((cin, mid), 1, 1, s)
                + conv_flops((cin, mid), 1, 1, s_in)
                + conv_flops((mid, mid), 3, mid, s)
                + conv_flops((mid, mid), 1, 1, s);
            stages += n * (2 * conv_flops((half, half), 1, 1, s) + conv_flops((half, half), 3, half, s));
            s_in = s;
        }
        let (c, last) = (self.widths[2], self.widths[3]);
        stem + stages + conv_flops((c, last), 1, 1, s_in) + 2 * last * classes
    }

    fn packs(&self) -> bool {
        false
    }

    fn packed_widths(&self, _input: InputShape, _classes: usize) -> usize {
        0
    }

    /// As [`ShuffleV2Net`]'s forward pass, by the names [`ShuffleV2Spec::build`] gives.
    fn graph(&self, g: &mut crate::Graph, input: InputShape, _classes: usize) -> Result<(), ModelError> {
        let conv_bn = |g: &mut crate::Graph, q: &str, i: usize, k: i64, stride: i64, groups: usize| {
            let at = |what: &str| match q {
                "" => format!("{what}{i}"),
                q => format!("{q}.{what}{i}"),
            };
            g.conv_bn(&at("conv"), &at("bn"), k, stride, k / 2, groups as i64)
        };
        conv_bn(g, "", 1, 1, 1, 1);
        g.relu();
        for (l, (cin, out, n, s)) in self.stages(input.height.max(input.width)).into_iter().enumerate() {
            let (layer, mid, s) = (format!("layer{}", l + 1), out / 2, s as i64);
            let (d, x) = (format!("{layer}.0"), g.last.clone());
            conv_bn(g, &d, 1, 3, 2, cin);
            conv_bn(g, &d, 2, 1, 1, 1);
            let left = g.relu();
            g.last = x;
            conv_bn(g, &d, 3, 1, 1, 1);
            g.relu();
            conv_bn(g, &d, 4, 3, 2, mid);
            conv_bn(g, &d, 5, 1, 1, 1);
            let right = g.relu();
            g.concat(&left, &right);
            g.shuffle(2, out as i64, s);
            for b in 1..=n {
                let (q, x) = (format!("{layer}.{b}"), g.last.clone());
                let (half, all) = ((out / 2) as i64, out as i64);
                let x1 = g.channels(&x, 0, half);
                g.channels(&x, half, all);
                conv_bn(g, &q, 1, 1, 1, 1);
                g.relu();
                conv_bn(g, &q, 2, 3, 1, out / 2);
                conv_bn(g, &q, 3, 1, 1, 1);
                let o = g.relu();
                g.concat(&x1, &o);
                g.shuffle(2, all, s);
            }
        }
        conv_bn(g, "", 2, 1, 1, 1);
        g.relu();
        g.avg_pool(4, 4, 0);
        g.flatten();
        g.linear("linear");
        Ok(())
    }

    fn build(&self, p: &nn::Path, input: InputShape, classes: usize) -> Net {
        let conv =
            |p: nn::Path, io, k, stride, groups| grouped(p, io, k, stride, groups, ConvInit::Torch);
        let pair = |q: &nn::Path, i: usize, io: (usize, usize), k, stride, groups| {
            ConvBn::new(
                conv(q / format!("conv{i}"), io, k, stride, groups),
                batch_norm(q / format!("bn{i}"), io.1),
            )
        };
        let stem = pair(p, 1, (input.channels, STEM), 1, 1, 1);
        let mut stages = Vec::new();
        for (l, (cin, out, n, _)) in self.stages(input.height.max(input.width)).into_iter().enumerate() {
            let layer = p / format!("layer{}", l + 1);
            let d = &layer / 0;
            let mid = out / 2;
            let down = Down {
                left: [pair(&d, 1, (cin, cin), 3, 2, cin), pair(&d, 2, (cin, mid), 1, 1, 1)],
                right: [
                    pair(&d, 3, (cin, mid), 1, 1, 1),
                    pair(&d, 4, (mid, mid), 3, 2, mid),
                    pair(&d, 5, (mid, mid), 1, 1, 1),
                ],
            };
            let half = out / 2;
            let basics = (1..=n)
                .map(|b| {
                    let q = &layer / b;
                    [
                        pair(&q, 1, (half, half), 1, 1, 1),
                        pair(&q, 2, (half, half), 3, 1, half),
                        pair(&q, 3, (half, half), 1, 1, 1),
                    ]
                })
                .collect();
            stages.push((down, basics));
        }
        let head = pair(p, 2, (self.widths[2], self.widths[3]), 1, 1, 1);
        let c = self.widths[3];
        let fc = nn::linear(p / "linear", c as i64, classes as i64, Init::Torch.linear());
        Init::torch_reset(&fc.ws, fc.bs.as_ref(), c);
        Net::new(ShuffleV2Net {
            stem,
            stages,
            head,
            fc: vec![fc],
            input,
        })
    }
}

/// The down-sampling block: its left branch (`conv1`, `conv2`) and right one (`conv3..5`).
#[derive(Debug)]
struct Down {
    left: [ConvBn; 2],
    right: [ConvBn; 3],
}

impl Down {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let [l1, l2] = &self.left;
        let out1 = relu_(l2.forward_t(&l1.forward_t(x, train), train));
        let [r1, r2, r3] = &self.right;
        let out2 = relu_(r1.forward_t(x, train));
        let out2 = relu_(r3.forward_t(&r2.forward_t(&out2, train), train));
        shuffle(&Tensor::cat(&[out1, out2], 1), 2)
    }
}

/// A basic block (`conv1..3` on the second half of the channels).
fn basic(convs: &[ConvBn; 3], x: &Tensor, train: bool) -> Tensor {
    let c = x.size()[1];
    let half = c / 2;
    let (x1, x2) = (x.narrow(1, 0, half), x.narrow(1, half, c - half));
    let [c1, c2, c3] = convs;
    let out = relu_(c1.forward_t(&x2, train));
    let out = relu_(c3.forward_t(&c2.forward_t(&out, train), train));
    shuffle(&Tensor::cat(&[x1, out], 1), 2)
}

/// A built ShuffleNetV2.
#[derive(Debug)]
pub struct ShuffleV2Net {
    stem: ConvBn,
    stages: Vec<(Down, Vec<[ConvBn; 3]>)>,
    head: ConvBn,
    fc: Vec<nn::Linear>,
    input: InputShape,
}

impl Layers for ShuffleV2Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let i = self.input;
        let xs = xs.view([-1, i.channels as i64, i.height as i64, i.width as i64]);
        let mut x = relu_(self.stem.forward_t(&xs, train));
        for (down, basics) in &self.stages {
            x = down.forward_t(&x, train);
            for b in basics {
                x = basic(b, &x, train);
            }
        }
        let x = relu_(self.head.forward_t(&x, train));
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
