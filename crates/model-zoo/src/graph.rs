//! A family's evaluation-mode forward pass as a graph of ONNX operators ([`Family::graph`]),
//! written without any ONNX dependency: nodes by operator name, their attributes, and the
//! weights they read by the zoo's names. The runner turns it into an ONNX model
//! (`runner/src/export/`), the weights under their reference names.
//!
//! [`Family::graph`]: crate::Family::graph

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
}

/// One operator of the default ONNX domain (`ai.onnx`, opset 17).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub op: &'static str,
    pub inputs: Vec<String>,
    pub output: String,
    pub attrs: Vec<(&'static str, Attr)>,
}

/// A constant the graph adds (a shape, a standardisation's statistics): name, dims, values.
#[derive(Debug, Clone, PartialEq)]
pub enum Constant {
    Floats(String, Vec<i64>, Vec<f32>),
    Ints(String, Vec<i64>, Vec<i64>),
}

/// The nodes of a forward pass from `input` (a `[batch, C, H, W]` float32 tensor) to `output`
/// (`[batch, classes]` logits). Node inputs that are neither the graph's values nor its
/// constants name the model's tensors (the zoo's names).
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub constants: Vec<Constant>,
    /// The value the next node reads.
    pub last: String,
    counter: usize,
}

impl Graph {
    /// A graph whose first node reads `input`.
    pub fn new(input: &str) -> Graph {
        Graph {
            last: input.into(),
            ..Default::default()
        }
    }

    /// Append `op` on `inputs` (the last value is not implied), its output a fresh name; the
    /// output becomes the last value.
    pub fn node(
        &mut self,
        op: &'static str,
        inputs: &[&str],
        attrs: Vec<(&'static str, Attr)>,
    ) -> String {
        self.counter += 1;
        let output = format!("{}_{}", op.to_lowercase(), self.counter);
        self.nodes.push(Node {
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            output: output.clone(),
            attrs,
        });
        self.last = output.clone();
        output
    }

    /// `op` on the last value and the tensors `extra`.
    pub fn then(
        &mut self,
        op: &'static str,
        extra: &[&str],
        attrs: Vec<(&'static str, Attr)>,
    ) -> String {
        let last = self.last.clone();
        let inputs: Vec<&str> = std::iter::once(last.as_str())
            .chain(extra.iter().copied())
            .collect();
        self.node(op, &inputs, attrs)
    }

    /// A linear layer `prefix` (`prefix.weight` `[out, in]`, `prefix.bias`) on the last value:
    /// `Gemm(x, W, b, transB = 1)`, as `nn.Linear`.
    pub fn linear(&mut self, prefix: &str) -> String {
        let (w, b) = (format!("{prefix}.weight"), format!("{prefix}.bias"));
        self.then("Gemm", &[&w, &b], vec![("transB", Attr::Int(1))])
    }

    /// A 2-D convolution `prefix` (`prefix.weight`, and `prefix.bias` when `bias`) with square
    /// kernel `k`, `stride`, `pad` on every side and `groups`.
    pub fn conv(
        &mut self,
        prefix: &str,
        k: i64,
        stride: i64,
        pad: i64,
        groups: i64,
        bias: bool,
    ) -> String {
        let w = format!("{prefix}.weight");
        let b = format!("{prefix}.bias");
        let extra: Vec<&str> = if bias { vec![&w, &b] } else { vec![&w] };
        self.then(
            "Conv",
            &extra,
            vec![
                ("kernel_shape", Attr::Ints(vec![k, k])),
                ("strides", Attr::Ints(vec![stride, stride])),
                ("pads", Attr::Ints(vec![pad, pad, pad, pad])),
                ("group", Attr::Int(groups)),
            ],
        )
    }

    /// A convolution without bias (`conv`) then its batch normalisation (`bn`): the CIFAR
    /// families' `Conv2d(bias=False)` + `BatchNorm2d` pair. The normalised value's name.
    pub fn conv_bn(
        &mut self,
        conv: &str,
        bn: &str,
        k: i64,
        stride: i64,
        pad: i64,
        groups: i64,
    ) -> String {
        self.conv(conv, k, stride, pad, groups, false);
        self.batch_norm(bn)
    }

    /// Batch normalisation `prefix` in evaluation mode (`weight`, `bias`, `running_mean`,
    /// `running_var`; epsilon 1e-5, `nn.BatchNorm2d`'s and tch's).
    pub fn batch_norm(&mut self, prefix: &str) -> String {
        let names =
            ["weight", "bias", "running_mean", "running_var"].map(|n| format!("{prefix}.{n}"));
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.then(
            "BatchNormalization",
            &refs,
            vec![("epsilon", Attr::Float(1e-5))],
        )
    }

    /// `a + b`, elementwise.
    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", &[a, b], vec![])
    }

    /// The mean over each channel's map: `[batch, C, H, W]` to `[batch, C, 1, 1]`.
    pub fn global_avg_pool(&mut self) -> String {
        self.then("GlobalAveragePool", &[], vec![])
    }

    /// An int64 constant of `values` (a shape, slice bounds); its name.
    pub fn ints(&mut self, values: Vec<i64>) -> String {
        self.counter += 1;
        let name = format!("const_{}", self.counter);
        self.constants.push(Constant::Ints(
            name.clone(),
            vec![values.len() as i64],
            values,
        ));
        name
    }

    /// The ShuffleNets' channel shuffle of the last value, `[N, C, side, side]` in `groups`
    /// groups: `Reshape` to `[N, g, C/g, side, side]`, `Transpose` the two group axes, `Reshape`
    /// back.
    pub fn shuffle(&mut self, groups: i64, channels: i64, side: i64) -> String {
        let split = self.ints(vec![0, groups, channels / groups, side, side]);
        let back = self.ints(vec![0, channels, side, side]);
        self.then("Reshape", &[&split], vec![]);
        self.then(
            "Transpose",
            &[],
            vec![("perm", Attr::Ints(vec![0, 2, 1, 3, 4]))],
        );
        self.then("Reshape", &[&back], vec![])
    }

    /// Channels `start..end` of `x`.
    pub fn channels(&mut self, x: &str, start: i64, end: i64) -> String {
        let (s, e, axes) = (
            self.ints(vec![start]),
            self.ints(vec![end]),
            self.ints(vec![1]),
        );
        self.node("Slice", &[x, &s, &e, &axes], vec![])
    }

    /// `a` and `b` concatenated along the channels.
    pub fn concat(&mut self, a: &str, b: &str) -> String {
        self.node("Concat", &[a, b], vec![("axis", Attr::Int(1))])
    }

    /// Average pooling of the last value, window `k`, `stride`, zero padding `pad` counted in
    /// the average (PyTorch's `count_include_pad=True`), floor mode.
    pub fn avg_pool(&mut self, k: i64, stride: i64, pad: i64) -> String {
        self.then(
            "AveragePool",
            &[],
            vec![
                ("kernel_shape", Attr::Ints(vec![k, k])),
                ("strides", Attr::Ints(vec![stride, stride])),
                ("pads", Attr::Ints(vec![pad, pad, pad, pad])),
                ("count_include_pad", Attr::Int(1)),
            ],
        )
    }

    /// `Relu` on the last value.
    pub fn relu(&mut self) -> String {
        self.then("Relu", &[], vec![])
    }

    /// Max pooling with a square window `k` and stride `k`, no padding (floor mode).
    pub fn max_pool(&mut self, k: i64) -> String {
        self.then(
            "MaxPool",
            &[],
            vec![
                ("kernel_shape", Attr::Ints(vec![k, k])),
                ("strides", Attr::Ints(vec![k, k])),
            ],
        )
    }

    /// `Flatten(axis = 1)`: `[batch, ...]` to `[batch, rest]`.
    pub fn flatten(&mut self) -> String {
        self.then("Flatten", &[], vec![("axis", Attr::Int(1))])
    }
}
