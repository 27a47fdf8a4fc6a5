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
