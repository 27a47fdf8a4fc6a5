//! model-zoo: the architectures a teacher or student can have.
//!
//! Each architecture is a serde spec struct that builds a `tch::nn::ModuleT` under an explicit
//! `nn::Path` (every variable is named, so checkpoint keys never depend on build order) and knows
//! its parameter count and FLOPs per sample. It must not train, load data, pick devices or seed RNGs:
//! the caller passes the `nn::Path` (and so the device) and sets the seed.

pub mod graph;
mod init;
mod keys;
mod packed;

mod cifar;
mod scripted;
mod weights;

pub use graph::Graph;
pub use init::Init;
pub use keys::{check_key, model_keys, Role, DEFAULT_ARCH};
pub use packed::PackedMlp;
pub use scripted::Scripted;
pub use torchscript::{file_sha256, ScriptedStudent};
pub use weights::{load_weights, torch_message};

use keys::{Reader, ReaderOf};

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// Invalid specs, found before any variable is created.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// `key` is the spec's own key, with an index where one element is wrong (`hidden[1]`).
    #[error("{key}: {message}")]
    Spec { key: String, message: String },
}

pub(crate) fn spec_err(key: impl Into<String>, message: impl Into<String>) -> ModelError {
    ModelError::Spec {
        key: key.into(),
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

/// The registry of model families, one line each: `"arch" => Variant(file::Spec)`. The line
/// declares the family's file (`file.rs`, its spec, keys, checks, maths and net), the
/// [`ModelSpec`] variant (serialised as `arch: "arch"` and its spec's fields, as in the config
/// and the trial id) and the family's entry in every dispatch of the zoo.
macro_rules! families {
    ($($arch:literal => $variant:ident($file:ident::$spec:ident),)+) => {
        $(mod $file; pub use $file::$spec;)+

        /// Any architecture of the zoo. Serialised with its `arch` tag, as in the config.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "arch")]
        pub enum ModelSpec {
            $(#[serde(rename = $arch)] $variant($spec),)+
        }

        $(impl From<$spec> for ModelSpec {
            fn from(spec: $spec) -> ModelSpec {
                ModelSpec::$variant(spec)
            }
        })+

        impl ModelSpec {
            /// Every registered `arch`, in registry order.
            pub const ARCHS: &'static [&'static str] = &[$($arch),+];

            /// Short architecture name, the config's `arch`: `mlp` or `cnn`.
            pub fn arch(&self) -> &'static str {
                match self {
                    $(ModelSpec::$variant(_) => $arch,)+
                }
            }

            /// The code of the spec's family.
            pub fn family(&self) -> &dyn Family {
                match self {
                    $(ModelSpec::$variant(spec) => spec,)+
                }
            }

            /// How the config's keys of `arch` are read.
            fn reader(arch: &str) -> Option<&'static dyn Reader> {
                match arch {
                    $($arch => Some(&ReaderOf::<$spec>::NEW),)+
                    _ => None,
                }
            }
        }
    };
}

families! {
    "mlp" => Mlp(mlp::MlpSpec),
    "cnn" => Cnn(cnn::CnnSpec),
    "resnet" => ResNet(resnet::ResNetSpec),
    "wrn" => Wrn(wrn::WrnSpec),
    "vgg" => Vgg(vgg::VggSpec),
    "mobilenetv2" => MobileNetV2(mobilenetv2::MobileNetV2Spec),
    "shufflev1" => ShuffleV1(shufflev1::ShuffleV1Spec),
    "shufflev2" => ShuffleV2(shufflev2::ShuffleV2Spec),
    "torchscript" => Torchscript(torchscript::TorchscriptSpec),
}

pub(crate) fn check_prob(key: &'static str, p: f64) -> Result<(), ModelError> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(spec_err(key, format!("must be in [0, 1), got {p}")))
    }
}

/// Every width > 0, and (unless `allow_empty`) at least one.
pub(crate) fn check_widths(
    key: &'static str,
    widths: &[usize],
    allow_empty: bool,
) -> Result<(), ModelError> {
    if widths.is_empty() && !allow_empty {
        return Err(spec_err(key, "must not be empty"));
    }
    match widths.iter().position(|&w| w == 0) {
        Some(i) => Err(spec_err(format!("{key}[{i}]"), "must be > 0, got 0")),
        None => Ok(()),
    }
}

/// One model family, in its own file (`mlp.rs`, `cnn.rs`): its spec struct implements this
/// and `keys::Configure` (its config keys and their defaults), its built network [`Layers`].
/// To add one: write `NAME.rs` with those three, then its line in `families!` above.
pub trait Family {
    fn init(&self) -> Init;
    /// A compact description of the layer widths, e.g. `800-800` or `c32-c64-f256`.
    fn shape_label(&self) -> String;
    /// The spec's own checks, which need no input shape (the config runs them as it resolves).
    fn check(&self) -> Result<(), ModelError>;
    /// What the input shape `input` rules out (nothing, unless the family says otherwise).
    fn fits(&self, _input: InputShape) -> Result<(), ModelError> {
        Ok(())
    }
    /// [`Family::check`], then [`Family::fits`].
    fn validate(&self, input: InputShape) -> Result<(), ModelError> {
        self.check()?;
        self.fits(input)
    }
    fn param_count(&self, input: InputShape, classes: usize) -> usize;
    /// FLOPs of one forward pass for one sample, counted as 2 x multiply-adds of the conv and
    /// linear layers (activations, pooling and dropout are not counted).
    fn flops_per_sample(&self, input: InputShape, classes: usize) -> usize;
    /// Whether students of this family can train packed, as one model ([`PackedMlp`]).
    fn packs(&self) -> bool;
    /// Values per sample a packed student keeps for its backward pass (input, hidden and output
    /// widths), for the pack's memory estimate; 0 for a family that does not pack.
    fn packed_widths(&self, input: InputShape, classes: usize) -> usize;
    /// Create the variables under `p` (the spec validated, `classes > 0`).
    fn build(&self, p: &nn::Path, input: InputShape, classes: usize) -> Net;
    /// [`Family::build`] for a family whose build can fail (one that reads a file).
    fn try_build(
        &self,
        p: &nn::Path,
        input: InputShape,
        classes: usize,
    ) -> Result<Net, ModelError> {
        Ok(self.build(p, input, classes))
    }
    /// Whether the conv weights are kept in channels_last memory format (the conv families'
    /// `channels_last` key; [`ModelSpec::build`] restrides them).
    fn channels_last(&self) -> bool {
        false
    }
    /// The name the family's PyTorch reference definition gives the tensor the zoo names
    /// `name` (kept students' files and exports use these): the zoo's own name unless the
    /// family says otherwise. The VarStore keeps the zoo's names (cached teachers load by them).
    fn reference_name(&self, name: &str) -> String {
        name.to_string()
    }
    /// The evaluation-mode forward pass as ONNX operators, appended to `g` (whose last value is
    /// the `[batch, C, H, W]` input) and reading the zoo's tensor names; an error for a family
    /// that cannot be exported yet.
    fn graph(&self, _g: &mut Graph, _input: InputShape, _classes: usize) -> Result<(), ModelError> {
        Err(spec_err("arch", "cannot be exported to ONNX yet"))
    }
}

impl ModelSpec {
    pub fn init(&self) -> Init {
        self.family().init()
    }

    /// A compact description of the layer widths, e.g. `800-800` or `c32-c64-f256`.
    pub fn shape_label(&self) -> String {
        self.family().shape_label()
    }

    /// [`Family::check`]: the spec's own checks, no input shape needed.
    pub fn check(&self) -> Result<(), ModelError> {
        self.family().check()
    }

    pub fn validate(&self, input: InputShape) -> Result<(), ModelError> {
        self.family().validate(input)
    }

    pub fn param_count(&self, input: InputShape, classes: usize) -> usize {
        self.family().param_count(input, classes)
    }

    /// FLOPs of one forward pass for one sample (see [`Family::flops_per_sample`]).
    pub fn flops_per_sample(&self, input: InputShape, classes: usize) -> usize {
        self.family().flops_per_sample(input, classes)
    }

    /// Whether students of this spec can train packed.
    pub fn packs(&self) -> bool {
        self.family().packs()
    }

    /// [`Family::packed_widths`].
    pub fn packed_widths(&self, input: InputShape, classes: usize) -> usize {
        self.family().packed_widths(input, classes)
    }

    /// Create the network's variables in `vs` (its own store: with `channels_last`, every 4-d
    /// variable of `vs`, i.e. every conv weight, is restrided) and return the network. Inputs
    /// are `[batch, C, H, W]` (an MLP also takes `[batch, C*H*W]`); outputs are logits
    /// `[batch, classes]`.
    pub fn build(
        &self,
        vs: &nn::VarStore,
        input: InputShape,
        classes: usize,
    ) -> Result<Net, ModelError> {
        self.validate(input)?;
        if classes == 0 {
            return Err(spec_err("classes", "must be > 0"));
        }
        let net = self.family().try_build(&vs.root(), input, classes)?;
        if self.channels_last() {
            for (_, w) in vs.variables() {
                if w.dim() == 4 {
                    channels_last_(&w);
                }
            }
        }
        Ok(net)
    }

    /// Whether the conv weights are in channels_last memory format (`channels_last: true`).
    pub fn channels_last(&self) -> bool {
        self.family().channels_last()
    }

    /// [`Family::reference_name`].
    pub fn reference_name(&self, name: &str) -> String {
        self.family().reference_name(name)
    }

    /// [`Family::graph`]: the forward pass appended to `g` from its last value (standardised
    /// `[batch, C, H, W]` images) to the logits (its last value after).
    pub fn graph(
        &self,
        g: &mut Graph,
        shape: InputShape,
        classes: usize,
    ) -> Result<(), ModelError> {
        self.validate(shape)?;
        self.family().graph(g, shape, classes)
    }
}

/// `t.relu()` in place, as the reference nets' `nn.ReLU(inplace=True)`: the same values, one
/// activation-sized allocation fewer. Only on a layer's fresh output that no backward pass
/// reads (a conv's, a batch norm's, a sum's or a concatenation's).
pub(crate) fn relu_(mut t: Tensor) -> Tensor {
    let _ = t.relu_();
    t
}

pub(crate) fn is_false(v: &bool) -> bool {
    !*v
}

/// Restride the conv weight `w` (`[out, in, k, k]`) to channels_last in place, its values kept
/// (the strides are written out: a permute round trip leaves a one-channel weight's ambiguous
/// NCHW strides, and libtorch would run that convolution NCHW).
pub fn channels_last_(w: &Tensor) {
    let [_, c, h, k] = w.size()[..] else {
        return;
    };
    tch::no_grad(|| {
        let cl = Tensor::empty_strided(w.size(), [h * k * c, 1, k * c, c], (w.kind(), w.device()));
        let mut dst = cl.shallow_clone();
        dst.copy_(w);
        let mut w = w.shallow_clone();
        w.set_data(&cl);
    });
}

pub(crate) fn join(v: &[usize], sep: &str, prefix: &str) -> String {
    v.iter()
        .map(|w| format!("{prefix}{w}"))
        .collect::<Vec<_>>()
        .join(sep)
}

/// A built network of any family. `forward_t(xs, train)`: `train` switches dropout on.
#[derive(Debug)]
pub struct Net(Box<dyn Layers>);

/// The layers of a built network, the family's own struct.
pub trait Layers: std::fmt::Debug + Send + std::any::Any {
    /// Logits `[batch, classes]` of inputs `[batch, C, H, W]`; `train` switches dropout on.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor;
    /// The fully connected layers, the output layer last.
    fn linears(&self) -> &[nn::Linear];
    /// Where a training-mode forward pass draws from libtorch's generator: each dropout site in
    /// forward order as (probability, width of a row), the input to `Tensor::dropout` being
    /// `[batch, width]`. None when the family does not say (its draws cannot be replayed).
    fn dropout_sites(&self) -> Option<Vec<(f64, i64)>> {
        None
    }
}

/// The dropout sites of [`head`] over `linears`, after a site of probability `first` on its
/// input: (p, width) in forward order.
pub(crate) fn head_sites(linears: &[nn::Linear], first: f64, p: f64) -> Vec<(f64, i64)> {
    let mut sites = vec![(first, linears[0].ws.size()[1])];
    let last = linears.len() - 1;
    sites.extend(linears[..last].iter().map(|l| (p, l.ws.size()[0])));
    sites
}

pub(crate) fn head(xs: Tensor, linears: &[nn::Linear], dropout: f64, train: bool) -> Tensor {
    let last = linears.len() - 1;
    let mut xs = xs;
    for (i, layer) in linears.iter().enumerate() {
        xs = xs.apply(layer);
        if i < last {
            xs = relu_(xs).dropout(dropout, train);
        }
    }
    xs
}

impl Net {
    pub fn new(layers: impl Layers) -> Net {
        Net(Box::new(layers))
    }

    /// The fully connected layers, the output layer last.
    pub fn linears(&self) -> &[nn::Linear] {
        self.0.linears()
    }

    /// [`Layers::dropout_sites`].
    pub fn dropout_sites(&self) -> Option<Vec<(f64, i64)>> {
        self.0.dropout_sites()
    }

    /// Draw from libtorch's generator exactly what one training-mode forward pass on a batch of
    /// `rows` rows of number format `kind` draws (the same dropout calls on tensors of the same
    /// shapes, results discarded), so that a run continued from a checkpoint sees the masks an
    /// uninterrupted run would have. False (and nothing drawn) when the family does not say
    /// where it draws.
    pub fn replay_draws(&self, rows: i64, kind: tch::Kind, device: tch::Device) -> bool {
        let Some(sites) = self.dropout_sites() else {
            return false;
        };
        tch::no_grad(|| {
            for (p, width) in sites {
                let _ = Tensor::zeros([rows, width], (kind, device)).dropout(p, true);
            }
        });
        true
    }

    /// The family's layers, if the net is of type `L`.
    pub fn layers<L: Layers>(&self) -> Option<&L> {
        let any: &dyn std::any::Any = self.0.as_ref();
        any.downcast_ref()
    }

    /// The max-norm constraint (Hinton et al. 2012; Srivastava et al. 2014): rescale each hidden
    /// unit's incoming weight vector to L2 norm at most `c`, in place, as PyTorch's
    /// `w.renorm_(2, 0, c)` does (rows under the bound are untouched). Every linear layer but
    /// the output layer; convolutions are left alone.
    pub fn max_norm_(&self, c: f64) {
        let linears = self.linears();
        let hidden = &linears[..linears.len().saturating_sub(1)];
        tch::no_grad(|| {
            for l in hidden {
                let _ = l.ws.shallow_clone().renorm_(2.0, 0, c);
            }
        });
    }
}

impl ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.0.forward_t(xs, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device, Kind};

    /// libtorch's generator is process-wide: tests that draw from it take this lock, so a test
    /// that seeds it sees its own draws only.
    fn rng() -> std::sync::MutexGuard<'static, ()> {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        LOCK.lock().unwrap_or_else(|e| e.into_inner())
    }

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
            init: Init::Torch,
        })
    }

    fn cnn() -> ModelSpec {
        ModelSpec::Cnn(CnnSpec {
            channels: vec![32, 64],
            kernel: 3,
            fc: vec![256],
            dropout: 0.5,
            init: Init::Torch,
            channels_last: false,
        })
    }

    fn built_count(spec: &ModelSpec, input: InputShape) -> (usize, Vec<String>) {
        let _rng = rng();
        let vs = VarStore::new(Device::Cpu);
        spec.build(&vs, input, 10).unwrap();
        let vars = vs.variables();
        let n = vars.values().map(|t| t.numel()).sum();
        let mut names: Vec<String> = vars.keys().cloned().collect();
        names.sort();
        (n, names)
    }

    /// A replay draws what a training-mode forward pass draws: after either, libtorch's
    /// generator gives the same next numbers (MLP with input and hidden dropout, CNN, bf16, a
    /// batch-norm family with none), and a net that draws nothing leaves it alone.
    #[test]
    fn a_replay_leaves_the_generator_where_a_forward_pass_does() {
        let _rng = rng();
        let small = InputShape {
            channels: 1,
            height: 12,
            width: 12,
        };
        let resnet = ModelSpec::ResNet(resnet::ResNetSpec {
            depth: 8,
            widths: vec![4, 4, 8, 8],
            channels_last: false,
        });
        let cifar = InputShape {
            channels: 3,
            height: 32,
            width: 32,
        };
        for (spec, input, kind) in [
            (mlp(&[30, 20]), small, Kind::Float),
            (mlp(&[30, 20]), small, Kind::BFloat16),
            (cnn(), small, Kind::Float),
            (resnet, cifar, Kind::Float),
        ] {
            let mut vs = VarStore::new(Device::Cpu);
            let net = spec.build(&vs, input, 10).unwrap();
            if kind == Kind::BFloat16 {
                vs.bfloat16();
            }
            let x = Tensor::ones(
                [
                    7,
                    input.channels as i64,
                    input.height as i64,
                    input.width as i64,
                ],
                (Kind::Float, Device::Cpu),
            );
            let next = || Tensor::rand([4], (Kind::Float, Device::Cpu));
            tch::manual_seed(5);
            let _ = tch::no_grad(|| net.forward_t(&x.to_kind(kind), true));
            let after_forward = next();
            tch::manual_seed(5);
            assert!(net.replay_draws(7, kind, Device::Cpu));
            assert!(after_forward.equal(&next()), "{spec:?}");
            tch::manual_seed(5);
            let untouched = next();
            let drew = !untouched.equal(&after_forward);
            assert_eq!(drew, !matches!(spec, ModelSpec::ResNet(_)), "{spec:?}");
        }
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

    // import torch
    // w = torch.tensor([[3., 4.], [0.3, 0.4], [0., 2.]])
    // torch.renorm(w, 2, 0, 1.5)
    // -> [[0.9000, 1.2000], [0.3000, 0.4000], [0.0000, 1.5000]]
    //    (rows 0 and 2 scaled by 1.5 / (norm + 1e-7), row 1 under the bound untouched)
    #[test]
    fn max_norm_renormalises_hidden_rows_as_torch_renorm_does() {
        let _rng = rng();
        let vs = VarStore::new(Device::Cpu);
        let spec = ModelSpec::Mlp(MlpSpec {
            hidden: vec![3, 3],
            dropout: 0.0,
            input_dropout: 0.0,
            init: Init::Torch,
        });
        let input = InputShape {
            channels: 1,
            height: 1,
            width: 2,
        };
        let net = spec.build(&vs, input, 2).unwrap();
        let rows = [3.0f32, 4.0, 0.3, 0.4, 0.0, 2.0];
        let layers = net.linears();
        tch::no_grad(|| {
            layers[0]
                .ws
                .shallow_clone()
                .copy_(&Tensor::from_slice(&rows).view([3, 2]));
            // fc2 and out: every row three 10s (norm sqrt(300) = 17.3), so a bound of 1.5 binds.
            let _ = layers[1].ws.shallow_clone().fill_(10.0);
            let _ = layers[2].ws.shallow_clone().fill_(10.0);
        });
        net.max_norm_(1.5);
        let fc1: Vec<f32> = layers[0].ws.flatten(0, -1).try_into().unwrap();
        let want = [0.9f32, 1.2, 0.3, 0.4, 0.0, 1.5];
        for (g, w) in fc1.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{fc1:?}");
        }
        let norms = |t: &Tensor| -> Vec<f32> {
            t.square()
                .sum_dim_intlist(1, false, Kind::Float)
                .sqrt()
                .try_into()
                .unwrap()
        };
        for n in norms(&layers[1].ws) {
            assert!((n - 1.5).abs() < 1e-5, "fc2 row norm {n}");
        }
        // The output layer is not a hidden unit: untouched.
        for n in norms(&layers[2].ws) {
            assert!((n - 300f32.sqrt()).abs() < 1e-4, "out row norm {n}");
        }
        assert_eq!(layers[0].bs.as_ref().unwrap().size(), [3]);
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
                let _rng = rng();
                let vs = VarStore::new(Device::Cpu);
                let net = spec.build(&vs, input, 10).unwrap();
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
        let _rng = rng();
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let net = mlp(&[64]).build(&vs, MNIST, 10).unwrap();
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
        assert!(err.starts_with("hidden[1]: must be > 0, got 0"), "{err}");
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
            init: Init::Torch,
        });
        assert!(drop
            .validate(MNIST)
            .unwrap_err()
            .to_string()
            .starts_with("dropout:"));
    }

    /// Per layer: (name, fan_in, weight bound, bias bound) as PyTorch's `reset_parameters`
    /// computes them, and the spread a uniform draw on [-b, b] has (b / sqrt(3)).
    fn check_init(spec: &ModelSpec, layers: &[(&str, usize)], kaiming: bool) {
        let _rng = rng();
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        spec.build(&vs, MNIST, 10).unwrap();
        let vars = vs.variables();
        for &(name, fan_in) in layers {
            // torch: kaiming_uniform_(w, a=sqrt(5)) -> gain sqrt(2 / (1 + 5)), bound
            // gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in); bias uniform(+-1 / sqrt(fan_in)).
            // kaiming (tch): gain sqrt(2) -> bound sqrt(6 / fan_in).
            let torch_bound = 1.0 / (fan_in as f64).sqrt();
            let w_bound = if kaiming {
                (6.0 / fan_in as f64).sqrt()
            } else {
                torch_bound
            };
            let w = &vars[&format!("{name}.weight")];
            let b = &vars[&format!("{name}.bias")];
            let max = w.abs().max().double_value(&[]);
            assert!(max <= w_bound, "{name}: |w| max {max} > bound {w_bound}");
            assert!(
                max > 0.97 * w_bound,
                "{name}: |w| max {max} far below {w_bound}"
            );
            let sd = w.std(true).double_value(&[]);
            let want = w_bound / 3f64.sqrt();
            let n = w.numel() as f64;
            // The sample std of n uniform draws is within a few times want / sqrt(n) of want.
            assert!(
                (sd - want).abs() < 5.0 * want / n.sqrt() + 1e-9,
                "{name}: std {sd}, PyTorch's formula gives {want}"
            );
            let bmax = b.abs().max().double_value(&[]);
            let conv_zero = kaiming && name.starts_with("conv");
            if conv_zero {
                assert_eq!(bmax, 0.0, "{name}: tch's conv bias starts at zero");
            } else {
                assert!(bmax <= torch_bound && bmax > 0.0, "{name}: bias max {bmax}");
            }
        }
    }

    #[test]
    fn torch_init_matches_pytorch_bounds_and_spread_per_layer() {
        check_init(
            &mlp(&[800, 800]),
            &[("fc1", 784), ("fc2", 800), ("out", 800)],
            false,
        );
        // conv fan_in = in_channels * k * k.
        check_init(
            &cnn(),
            &[("conv1", 9), ("conv2", 32 * 9), ("fc1", 3136), ("out", 256)],
            false,
        );
        let mut k = mlp(&[800, 800]);
        if let ModelSpec::Mlp(m) = &mut k {
            m.init = Init::Kaiming;
        }
        check_init(&k, &[("fc1", 784), ("fc2", 800), ("out", 800)], true);
        let mut k = cnn();
        if let ModelSpec::Cnn(c) = &mut k {
            c.init = Init::Kaiming;
        }
        check_init(&k, &[("conv1", 9), ("conv2", 288), ("out", 256)], true);
    }

    /// PyTorch 2.13, the same seed and layer order:
    /// ```python
    /// torch.manual_seed(0)
    /// fc1 = nn.Linear(784, 32); out = nn.Linear(32, 10)
    /// fc1.weight[0, :3], fc1.bias[:3], out.weight[0, :3], out.bias[:3]
    /// torch.manual_seed(0)
    /// c1 = nn.Conv2d(1, 8, 3, padding=1); c2 = nn.Conv2d(8, 16, 3, padding=1)
    /// f = nn.Linear(16 * 7 * 7, 10)
    /// c1.weight.flatten()[:3], c1.bias[:2], c2.weight.flatten()[:3], c2.bias[:2], f.weight.flatten()[:2], f.bias[:2]
    /// ```
    #[test]
    fn torch_init_draws_pytorchs_very_weights_for_the_same_seed() {
        let first = |vars: &std::collections::HashMap<String, Tensor>, name: &str, n: i64| {
            // f32 -> f64 is exact, and Python printed the f64 of each f32 weight.
            let t = vars[name].flatten(0, -1).narrow(0, 0, n);
            let v = Vec::<f32>::try_from(&t).unwrap();
            v.into_iter().map(f64::from).collect::<Vec<f64>>()
        };
        let _rng = rng();
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let mut m = mlp(&[32]);
        if let ModelSpec::Mlp(m) = &mut m {
            (m.dropout, m.input_dropout) = (0.0, 0.0);
        }
        m.build(&vs, MNIST, 10).unwrap();
        let v = vs.variables();
        let mlp_golden: [(&str, &[f64]); 4] = [
            (
                "fc1.weight",
                &[
                    -0.000_267_386_436_462_402_34,
                    0.019_158_700_481_057_167,
                    -0.029_394_470_155_239_105,
                ],
            ),
            (
                "fc1.bias",
                &[
                    0.022_934_015_840_291_977,
                    0.001_268_472_056_835_889_8,
                    0.016_349_576_413_631_44,
                ],
            ),
            (
                "out.weight",
                &[
                    0.025_897_214_189_171_79,
                    0.013_048_179_447_650_91,
                    0.096_105_515_956_878_66,
                ],
            ),
            (
                "out.bias",
                &[
                    0.099_076_531_827_449_8,
                    0.157_452_911_138_534_55,
                    0.157_824_039_459_228_52,
                ],
            ),
        ];
        for (name, want) in mlp_golden {
            assert_eq!(first(&v, name, want.len() as i64), want, "{name}");
        }
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        ModelSpec::Cnn(CnnSpec {
            channels: vec![8, 16],
            kernel: 3,
            fc: vec![],
            dropout: 0.0,
            init: Init::Torch,
            channels_last: false,
        })
        .build(&vs, MNIST, 10)
        .unwrap();
        let v = vs.variables();
        let cnn_golden: [(&str, &[f64]); 6] = [
            (
                "conv1.weight",
                &[
                    -0.002_495_606_895_536_184_3,
                    0.178_814_530_372_619_63,
                    -0.274_348_378_181_457_5,
                ],
            ),
            (
                "conv1.bias",
                &[0.131_003_305_315_971_37, 0.276_183_128_356_933_6],
            ),
            (
                "conv2.weight",
                &[
                    -0.109_831_847_250_461_58,
                    0.104_709_841_310_977_94,
                    0.089_609_257_876_873_02,
                ],
            ),
            (
                "conv2.bias",
                &[-0.046_460_296_958_684_92, -0.033_009_439_706_802_37],
            ),
            (
                "out.weight",
                &[0.029_554_948_210_716_248, -0.007_108_961_232_006_55],
            ),
            (
                "out.bias",
                &[-0.020_563_054_829_835_89, 0.023_752_469_569_444_656],
            ),
        ];
        for (name, want) in cnn_golden {
            assert_eq!(first(&v, name, want.len() as i64), want, "{name}");
        }
    }

    /// `channels_last: true` restrides the conv weights (the one-channel first conv too) and
    /// keeps their values: the same logits to float rounding, the same parameters; the key is in
    /// the serialised spec (so the ids) only when on.
    #[test]
    fn a_channels_last_cnn_computes_the_same_logits_from_restrided_weights() {
        let _rng = rng();
        let spec = |cl: bool| {
            ModelSpec::Cnn(CnnSpec {
                channels_last: cl,
                ..match cnn() {
                    ModelSpec::Cnn(c) => c,
                    _ => unreachable!(),
                }
            })
        };
        let build = |cl: bool| {
            tch::manual_seed(4);
            let vs = VarStore::new(Device::Cpu);
            let net = spec(cl).build(&vs, MNIST, 10).unwrap();
            (vs, net)
        };
        let ((a_vs, a), (b_vs, b)) = (build(false), build(true));
        let (va, vb) = (a_vs.variables(), b_vs.variables());
        for (name, t) in &vb {
            assert!(t.equal(&va[name]), "{name}: the same values");
            if t.dim() == 4 {
                let [_, c, h, w] = t.size()[..] else {
                    unreachable!()
                };
                assert_eq!(
                    t.stride(),
                    [h * w * c, 1, w * c, c],
                    "{name}: channels_last"
                );
            }
        }
        let x = Tensor::randn([6, 1, 28, 28], (Kind::Float, Device::Cpu));
        let (ya, yb) = (a.forward_t(&x, false), b.forward_t(&x, false));
        let worst = (ya - yb).abs().max().double_value(&[]);
        assert!(worst < 1e-5, "logits differ by {worst}");
        assert_eq!(
            spec(true).param_count(MNIST, 10),
            spec(false).param_count(MNIST, 10)
        );
        let json = |cl| serde_json::to_string(&spec(cl)).unwrap();
        assert!(!json(false).contains("channels_last"), "{}", json(false));
        assert!(
            json(true).contains("\"channels_last\":true"),
            "{}",
            json(true)
        );
    }

    #[test]
    fn shape_labels() {
        assert_eq!(mlp(&[800, 800]).shape_label(), "800-800");
        assert_eq!(cnn().shape_label(), "c32-c64-f256");
    }

    /// Kept students are named as `experiments/reference/models.py` names them: the MLP's
    /// layers are a `ModuleList`, the CNN's names are the zoo's.
    #[test]
    fn reference_names_are_the_pytorch_definitions() {
        let vs = VarStore::new(Device::Cpu);
        let m = mlp(&[30, 20]);
        m.build(&vs, MNIST, 10).unwrap();
        let mut names: Vec<String> = vs.variables().keys().map(|n| m.reference_name(n)).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "layers.0.bias",
                "layers.0.weight",
                "layers.1.bias",
                "layers.1.weight",
                "layers.2.bias",
                "layers.2.weight"
            ]
        );
        assert_eq!(cnn().reference_name("conv2.weight"), "conv2.weight");
        assert_eq!(cnn().reference_name("out.bias"), "out.bias");
    }
}
