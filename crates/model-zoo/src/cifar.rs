//! What the CIFAR zoo's families (`resnet`, `wrn`, `vgg`) share: their layers as the reference
//! code (RepDistiller / mdistiller) creates and initialises them.

use tch::nn;

/// A `k x k` convolution with "same" padding, weights `kaiming_normal_(mode="fan_out",
/// nonlinearity="relu")` (= RepDistiller's `normal_(0, sqrt(2 / (k * k * out)))`), its bias (if
/// any) zero.
pub(crate) fn conv(
    p: nn::Path,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    bias: bool,
) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride: stride as i64,
        padding: (k / 2) as i64,
        bias,
        ws_init: nn::Init::Kaiming {
            dist: nn::init::NormalOrUniform::Normal,
            fan: nn::init::FanInOut::FanOut,
            non_linearity: nn::init::NonLinearity::ReLU,
        },
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    };
    nn::conv2d(p, cin as i64, cout as i64, k as i64, cfg)
}

/// `nn.BatchNorm2d(c)`: weight 1, bias 0, momentum 0.1, eps 1e-5 (tch's default weight is
/// uniform, not PyTorch's 1).
pub(crate) fn batch_norm(p: nn::Path, c: usize) -> nn::BatchNorm {
    let cfg = nn::BatchNormConfig {
        ws_init: nn::Init::Const(1.0),
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    };
    nn::batch_norm2d(p, c as i64, cfg)
}

/// How a bias-free (possibly grouped) convolution of the zoo starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ConvInit {
    /// The reference's explicit `normal_(0, sqrt(2 / (k * k * out)))` (MobileNetV2).
    FanOut,
    /// `nn.Conv2d`'s own default, where the reference sets none (the ShuffleNets):
    /// `kaiming_uniform_(a = sqrt(5))`, i.e. uniform with bound `1 / sqrt(fan_in)`,
    /// `fan_in = in / groups * k * k`.
    Torch,
}

/// A bias-free `k x k` convolution of `groups` groups with "same" padding.
pub(crate) fn grouped(
    p: nn::Path,
    (cin, cout): (usize, usize),
    k: usize,
    stride: usize,
    groups: usize,
    init: ConvInit,
) -> nn::Conv2D {
    let ws_init = match init {
        ConvInit::FanOut => nn::Init::Randn {
            mean: 0.0,
            stdev: (2.0 / (k * k * cout) as f64).sqrt(),
        },
        ConvInit::Torch => {
            let (bound, _) = crate::Init::torch_bounds(cin / groups * k * k);
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            }
        }
    };
    let cfg = nn::ConvConfig {
        stride: stride as i64,
        padding: (k / 2) as i64,
        groups: groups as i64,
        bias: false,
        ws_init,
        ..Default::default()
    };
    nn::conv2d(p, cin as i64, cout as i64, k as i64, cfg)
}

/// A convolution followed by its BatchNorm (`conv -> BN`), the pair most blocks are made of.
#[derive(Debug)]
pub(crate) struct ConvBn {
    pub conv: nn::Conv2D,
    pub bn: nn::BatchNorm,
}

impl ConvBn {
    pub fn new(conv: nn::Conv2D, bn: nn::BatchNorm) -> ConvBn {
        ConvBn { conv, bn }
    }

    pub fn forward_t(&self, x: &tch::Tensor, train: bool) -> tch::Tensor {
        x.apply(&self.conv).apply_t(&self.bn, train)
    }
}

/// The ShuffleNets' channel shuffle: `[N, C, H, W] -> [N, g, C/g, H, W] -> [N, C/g, g, H, W]
/// -> [N, C, H, W]`.
pub(crate) fn shuffle(x: &tch::Tensor, groups: usize) -> tch::Tensor {
    let [n, c, h, w] = x.size()[..] else {
        unreachable!("a conv map is 4-d")
    };
    let g = groups as i64;
    x.view([n, g, c / g, h, w])
        .permute([0, 2, 1, 3, 4])
        .reshape([n, c, h, w])
}

/// FLOPs of a `k x k` convolution of `groups` groups at output side `side` (2 x multiply-adds).
pub(crate) fn conv_flops(
    (cin, cout): (usize, usize),
    k: usize,
    groups: usize,
    side: usize,
) -> usize {
    2 * cin / groups * cout * k * k * side * side
}

/// The output side of a `k x k` "same"-padded convolution (or pooling) of stride `stride`.
pub(crate) fn strided(side: usize, stride: usize) -> usize {
    side.div_ceil(stride)
}

/// `F.avg_pool2d(x, k)`: the mean of each `k x k` window, stride `k`. (tch's own
/// `avg_pool2d_default` passes a divisor override of 1, which sums the window instead.)
pub(crate) fn avg_pool(x: &tch::Tensor, k: i64) -> tch::Tensor {
    x.avg_pool2d([k, k], [k, k], [0, 0], false, true, None)
}

/// What the ShuffleNets' head needs: three stride-2 stages leave a map of side 4 to 7, which
/// the reference's `avg_pool2d(4)` pools to 1x1 (a square input of side 25 to 56, CIFAR's 32).
pub(crate) fn fits_pool4(arch: &str, input: crate::InputShape) -> Result<(), crate::ModelError> {
    let f = (0..3).fold(input.height.max(input.width), |s, _| strided(s, 2));
    if !(4..8).contains(&f) || input.height != input.width {
        return Err(crate::spec_err(
            "arch",
            format!(
                "{arch} pools its last map with avg_pool2d(4) into a 1x1 map, which needs \
                 square images of side 25 to 56 (CIFAR's 32); got {}x{}",
                input.height, input.width
            ),
        ));
    }
    Ok(())
}
