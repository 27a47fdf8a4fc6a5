//! model-zoo: the architectures a teacher or student can have.
//!
//! Each architecture is a serde spec struct that builds a `tch::nn::ModuleT` under an explicit
//! `nn::Path` (every variable is named, so checkpoint keys never depend on build order) and knows
//! its parameter count and FLOPs per sample. It must not train, load data, pick devices or seed RNGs:
//! the caller passes the `nn::Path` (and so the device) and sets the seed.

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// Invalid specs, found before any variable is created.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{key}: {message}")]
    Spec { key: &'static str, message: String },
}

fn spec_err(key: &'static str, message: impl Into<String>) -> ModelError {
    ModelError::Spec {
        key,
        message: message.into(),
    }
}

/// The shape of one input sample: channels x height x width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct InputShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl InputShape {
    pub fn numel(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// A multi-layer perceptron: `input dropout -> [linear -> ReLU -> dropout]* -> linear`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpSpec {
    /// Widths of the hidden layers, input side first. Empty means a linear classifier.
    pub hidden: Vec<usize>,
    /// Dropout probability after each hidden ReLU.
    pub dropout: f64,
    /// Dropout probability on the (flattened) input.
    pub input_dropout: f64,
}

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
}

/// Any architecture of the zoo. Serialised with its `arch` tag, as in the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "snake_case")]
pub enum ModelSpec {
    Mlp(MlpSpec),
    Cnn(CnnSpec),
}

fn check_prob(key: &'static str, p: f64) -> Result<(), ModelError> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(spec_err(key, format!("must be in [0, 1), got {p}")))
    }
}

fn check_widths(key: &'static str, widths: &[usize]) -> Result<(), ModelError> {
    match widths.iter().position(|&w| w == 0) {
        Some(i) => Err(spec_err(key, format!("[{i}] must be > 0, got 0"))),
        None => Ok(()),
    }
}

impl MlpSpec {
    pub fn validate(&self) -> Result<(), ModelError> {
        check_widths("hidden", &self.hidden)?;
        check_prob("dropout", self.dropout)?;
        check_prob("input_dropout", self.input_dropout)
    }

    fn layer_dims(&self, input: InputShape, classes: usize) -> Vec<(usize, usize)> {
        let mut dims = Vec::with_capacity(self.hidden.len() + 1);
        let mut prev = input.numel();
        for &w in self.hidden.iter().chain(std::iter::once(&classes)) {
            dims.push((prev, w));
            prev = w;
        }
        dims
    }

    pub fn param_count(&self, input: InputShape, classes: usize) -> usize {
        self.layer_dims(input, classes)
            .iter()
            .map(|(i, o)| i * o + o)
            .sum()
    }

    pub fn flops_per_sample(&self, input: InputShape, classes: usize) -> usize {
        self.layer_dims(input, classes)
            .iter()
            .map(|(i, o)| 2 * i * o)
            .sum()
    }
}

impl CnnSpec {
    pub fn validate(&self, input: InputShape) -> Result<(), ModelError> {
        if self.channels.is_empty() {
            return Err(spec_err("channels", "needs at least one conv block"));
        }
        check_widths("channels", &self.channels)?;
        check_widths("fc", &self.fc)?;
        check_prob("dropout", self.dropout)?;
        if self.kernel == 0 || self.kernel.is_multiple_of(2) {
            return Err(spec_err(
                "kernel",
                format!("must be odd and > 0, got {}", self.kernel),
            ));
        }
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

    pub fn param_count(&self, input: InputShape, classes: usize) -> usize {
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

    pub fn flops_per_sample(&self, input: InputShape, classes: usize) -> usize {
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

impl ModelSpec {
    /// Short architecture name: `mlp` or `cnn`.
    pub fn arch(&self) -> &'static str {
        match self {
            ModelSpec::Mlp(_) => "mlp",
            ModelSpec::Cnn(_) => "cnn",
        }
    }

    /// A compact description of the layer widths, e.g. `800-800` or `c32-c64-f256`.
    pub fn shape_label(&self) -> String {
        match self {
            ModelSpec::Mlp(m) if m.hidden.is_empty() => "linear".into(),
            ModelSpec::Mlp(m) => join(&m.hidden, "-", ""),
            ModelSpec::Cnn(c) => {
                let mut s = join(&c.channels, "-", "c");
                if !c.fc.is_empty() {
                    s.push('-');
                    s.push_str(&join(&c.fc, "-", "f"));
                }
                s
            }
        }
    }

    pub fn validate(&self, input: InputShape) -> Result<(), ModelError> {
        match self {
            ModelSpec::Mlp(m) => m.validate(),
            ModelSpec::Cnn(c) => c.validate(input),
        }
    }

    pub fn param_count(&self, input: InputShape, classes: usize) -> usize {
        match self {
            ModelSpec::Mlp(m) => m.param_count(input, classes),
            ModelSpec::Cnn(c) => c.param_count(input, classes),
        }
    }

    /// FLOPs of one forward pass for one sample, counted as 2 x multiply-adds of the conv and
    /// linear layers (activations, pooling and dropout are not counted).
    pub fn flops_per_sample(&self, input: InputShape, classes: usize) -> usize {
        match self {
            ModelSpec::Mlp(m) => m.flops_per_sample(input, classes),
            ModelSpec::Cnn(c) => c.flops_per_sample(input, classes),
        }
    }

    /// Create the variables under `p` and return the network. Inputs are `[batch, C, H, W]`
    /// (an MLP also takes `[batch, C*H*W]`); outputs are logits `[batch, classes]`.
    pub fn build(
        &self,
        p: &nn::Path,
        input: InputShape,
        classes: usize,
    ) -> Result<Net, ModelError> {
        self.validate(input)?;
        if classes == 0 {
            return Err(spec_err("classes", "must be > 0"));
        }
        Ok(match self {
            ModelSpec::Mlp(m) => {
                let layers = m
                    .layer_dims(input, classes)
                    .iter()
                    .enumerate()
                    .map(|(i, &(din, dout))| {
                        let name = if i == m.hidden.len() {
                            "out".to_string()
                        } else {
                            format!("fc{}", i + 1)
                        };
                        nn::linear(p / name, din as i64, dout as i64, Default::default())
                    })
                    .collect();
                Net::Mlp {
                    layers,
                    dropout: m.dropout,
                    input_dropout: m.input_dropout,
                }
            }
            ModelSpec::Cnn(c) => {
                let pad = (c.kernel / 2) as i64;
                let convs = c
                    .conv_dims(input)
                    .iter()
                    .enumerate()
                    .map(|(i, &(cin, cout, _, _))| {
                        let cfg = nn::ConvConfig {
                            padding: pad,
                            ..Default::default()
                        };
                        nn::conv2d(
                            p / format!("conv{}", i + 1),
                            cin as i64,
                            cout as i64,
                            c.kernel as i64,
                            cfg,
                        )
                    })
                    .collect();
                let linears = c
                    .linear_dims(input, classes)
                    .iter()
                    .enumerate()
                    .map(|(i, &(din, dout))| {
                        let name = if i == c.fc.len() {
                            "out".to_string()
                        } else {
                            format!("fc{}", i + 1)
                        };
                        nn::linear(p / name, din as i64, dout as i64, Default::default())
                    })
                    .collect();
                Net::Cnn {
                    convs,
                    linears,
                    dropout: c.dropout,
                    input,
                }
            }
        })
    }
}

fn join(v: &[usize], sep: &str, prefix: &str) -> String {
    v.iter()
        .map(|w| format!("{prefix}{w}"))
        .collect::<Vec<_>>()
        .join(sep)
}

/// A built network. `forward_t(xs, train)`: `train` switches dropout on.
#[derive(Debug)]
pub enum Net {
    Mlp {
        layers: Vec<nn::Linear>,
        dropout: f64,
        input_dropout: f64,
    },
    Cnn {
        convs: Vec<nn::Conv2D>,
        linears: Vec<nn::Linear>,
        dropout: f64,
        input: InputShape,
    },
}

fn head(xs: Tensor, linears: &[nn::Linear], dropout: f64, train: bool) -> Tensor {
    let last = linears.len() - 1;
    let mut xs = xs;
    for (i, layer) in linears.iter().enumerate() {
        xs = xs.apply(layer);
        if i < last {
            xs = xs.relu().dropout(dropout, train);
        }
    }
    xs
}

impl ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            Net::Mlp {
                layers,
                dropout,
                input_dropout,
            } => {
                let xs = xs.flatten(1, -1).dropout(*input_dropout, train);
                head(xs, layers, *dropout, train)
            }
            Net::Cnn {
                convs,
                linears,
                dropout,
                input,
            } => {
                let mut xs = xs.view([
                    -1,
                    input.channels as i64,
                    input.height as i64,
                    input.width as i64,
                ]);
                for conv in convs {
                    xs = xs.apply(conv).relu().max_pool2d_default(2);
                }
                let xs = xs.flatten(1, -1).dropout(*dropout, train);
                head(xs, linears, *dropout, train)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device, Kind};

    const MNIST: InputShape = InputShape {
        channels: 1,
        height: 28,
        width: 28,
    };

    fn mlp(hidden: &[usize]) -> ModelSpec {
        ModelSpec::Mlp(MlpSpec {
            hidden: hidden.to_vec(),
            dropout: 0.5,
            input_dropout: 0.2,
        })
    }

    fn cnn() -> ModelSpec {
        ModelSpec::Cnn(CnnSpec {
            channels: vec![32, 64],
            kernel: 3,
            fc: vec![256],
            dropout: 0.5,
        })
    }

    fn built_count(spec: &ModelSpec, input: InputShape) -> (usize, Vec<String>) {
        let vs = VarStore::new(Device::Cpu);
        spec.build(&vs.root(), input, 10).unwrap();
        let vars = vs.variables();
        let n = vars.values().map(|t| t.numel()).sum();
        let mut names: Vec<String> = vars.keys().cloned().collect();
        names.sort();
        (n, names)
    }

    #[test]
    fn mlp_param_count_matches_hinton_net() {
        // 784*1200+1200 + 1200*1200+1200 + 1200*10+10
        assert_eq!(mlp(&[1200, 1200]).param_count(MNIST, 10), 2_395_210);
        let (n, _) = built_count(&mlp(&[1200, 1200]), MNIST);
        assert_eq!(n, 2_395_210);
    }

    #[test]
    fn cnn_param_count_matches_built_variables() {
        let spec = cnn();
        let (n, names) = built_count(&spec, MNIST);
        assert_eq!(n, spec.param_count(MNIST, 10));
        // conv1 320, conv2 18496, fc1 3136*256+256, out 2570
        assert_eq!(n, 320 + 18_496 + 803_072 + 2_570);
        assert_eq!(
            names,
            [
                "conv1.bias",
                "conv1.weight",
                "conv2.bias",
                "conv2.weight",
                "fc1.bias",
                "fc1.weight",
                "out.bias",
                "out.weight"
            ]
        );
    }

    #[test]
    fn variable_names_are_explicit() {
        let (_, names) = built_count(&mlp(&[30, 20]), MNIST);
        assert_eq!(
            names,
            [
                "fc1.bias",
                "fc1.weight",
                "fc2.bias",
                "fc2.weight",
                "out.bias",
                "out.weight"
            ]
        );
    }

    #[test]
    fn flops_per_sample() {
        assert_eq!(
            mlp(&[800, 800]).flops_per_sample(MNIST, 10),
            2 * (784 * 800 + 800 * 800 + 800 * 10)
        );
        // conv1: 2*1*32*9*28*28, conv2: 2*32*64*9*14*14, fc1: 2*3136*256, out: 2*256*10
        assert_eq!(
            cnn().flops_per_sample(MNIST, 10),
            451_584 + 7_225_344 + 1_605_632 + 5_120
        );
    }

    #[test]
    fn forward_shapes_on_28_and_8_pixel_inputs() {
        for input in [
            MNIST,
            InputShape {
                channels: 1,
                height: 8,
                width: 8,
            },
        ] {
            for spec in [mlp(&[16]), cnn()] {
                let vs = VarStore::new(Device::Cpu);
                let net = spec.build(&vs.root(), input, 10).unwrap();
                let xs = Tensor::rand(
                    [5, 1, input.height as i64, input.width as i64],
                    (Kind::Float, Device::Cpu),
                );
                assert_eq!(net.forward_t(&xs, true).size(), [5, 10]);
                assert_eq!(net.forward_t(&xs, false).size(), [5, 10]);
            }
        }
    }

    #[test]
    fn dropout_only_in_training_mode() {
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let net = mlp(&[64]).build(&vs.root(), MNIST, 10).unwrap();
        let xs = Tensor::rand([4, 784], (Kind::Float, Device::Cpu));
        let a = net.forward_t(&xs, false);
        let b = net.forward_t(&xs, false);
        assert!(a.allclose(&b, 0.0, 0.0, false));
        let c = net.forward_t(&xs, true);
        assert!(!a.allclose(&c, 1e-6, 1e-6, false));
    }

    #[test]
    fn bad_specs_name_their_key() {
        let err = mlp(&[10, 0]).validate(MNIST).unwrap_err().to_string();
        assert!(err.starts_with("hidden: [1] must be > 0"), "{err}");
        let mut c = cnn();
        if let ModelSpec::Cnn(c) = &mut c {
            c.channels = vec![8, 8, 8, 8];
        }
        let tiny = InputShape {
            channels: 1,
            height: 8,
            width: 8,
        };
        let err = c.validate(tiny).unwrap_err().to_string();
        assert!(err.starts_with("channels:"), "{err}");
        let drop = ModelSpec::Mlp(MlpSpec {
            hidden: vec![],
            dropout: 1.0,
            input_dropout: 0.0,
        });
        assert!(drop
            .validate(MNIST)
            .unwrap_err()
            .to_string()
            .starts_with("dropout:"));
    }

    #[test]
    fn shape_labels() {
        assert_eq!(mlp(&[800, 800]).shape_label(), "800-800");
        assert_eq!(cnn().shape_label(), "c32-c64-f256");
    }
}
