//! A teacher exported from PyTorch as TorchScript (`torch.jit.trace` or `torch.jit.script`,
//! then `torch.jit.save`): any architecture at all, run forward-only through tch's `CModule`, in
//! eval mode (BatchNorm on its running statistics, dropout off), on the device it is loaded on.
//!
//! The module receives what every kd-sweep net receives: a float32 `[batch, C, H, W]` batch of
//! images standardised with the training split's per-channel mean and std (for CIFAR-100 these
//! are the statistics RepDistiller's transforms use), and must return `[batch, classes]` logits.

use std::path::Path;

use tch::{nn, CModule, Device, Kind, Tensor};

use crate::{InputShape, Layers, Net};

/// A loaded TorchScript module, checked to give one row of `classes` logits per image.
#[derive(Debug)]
pub struct Scripted {
    module: CModule,
    params: usize,
}

impl Scripted {
    /// Load `file` onto `device` in eval mode and check it on batches of two and three blank
    /// images of `input`: it must give `[n, classes]` float32 logits. The error says what went
    /// wrong.
    pub fn load(
        file: &Path,
        device: Device,
        input: InputShape,
        classes: usize,
    ) -> Result<Scripted, String> {
        let mut module = CModule::load_on_device(file, device).map_err(|e| {
            format!(
                "not a TorchScript module torch.jit.load can read ({})",
                crate::torch_message(&e)
            )
        })?;
        module.set_eval();
        let params = module
            .named_parameters()
            .map_err(|e| {
                format!(
                    "its parameters cannot be listed ({})",
                    crate::torch_message(&e)
                )
            })?
            .iter()
            .map(|(_, t)| t.numel())
            .sum();
        probe(
            &|x| tch::no_grad(|| module.forward_ts(&[x])).map_err(|e| crate::torch_message(&e)),
            device,
            input,
            classes,
        )?;
        Ok(Scripted { module, params })
    }

    /// Its parameter count (buffers such as BatchNorm's running statistics not included, as
    /// `sum(p.numel() for p in model.parameters())` counts).
    pub fn params(&self) -> usize {
        self.params
    }

    pub fn into_net(self) -> Net {
        Net::new(self)
    }
}

/// Check a TorchScript module's `forward` on batches of two and three blank `input` images
/// on `device`: it must give `[n, classes]` float32 logits. The error says what went wrong.
pub(crate) fn probe(
    forward: &dyn Fn(&Tensor) -> Result<Tensor, String>,
    device: Device,
    input: InputShape,
    classes: usize,
) -> Result<(), String> {
    let shape = format!("{}x{}x{}", input.channels, input.height, input.width);
    // Two batch sizes: a trace that fixed its batch size (a `view(2, -1)`) fails the second.
    for n in [2i64, 3] {
        let size = [
            n,
            input.channels as i64,
            input.height as i64,
            input.width as i64,
        ];
        let probe = Tensor::zeros(size, (Kind::Float, device));
        let fixed = if n == 2 {
            ""
        } else {
            "; it ran on a batch of 2: was it traced with a fixed batch size?"
        };
        let out = tch::no_grad(|| forward(&probe)).map_err(|e| {
            let first = e.lines().next().unwrap_or_default().to_string();
            format!("its forward fails on a [{n}, {shape}] float32 batch ({first}){fixed}")
        })?;
        if out.size() != [n, classes as i64] {
            return Err(format!(
                "it gives a tensor of shape {:?} for a batch of {n} {shape} images; the dataset \
                 needs [{n}, {classes}] logits{fixed}",
                out.size()
            ));
        }
        if out.kind() != Kind::Float {
            return Err(format!(
                "it gives {:?} logits; kd-sweep needs float32",
                out.kind()
            ));
        }
    }
    Ok(())
}

impl Layers for Scripted {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        // Checked on a batch at load time; a failure here is libtorch's own (out of memory).
        self.module
            .forward_ts(&[xs])
            .unwrap_or_else(|e| panic!("the TorchScript teacher's forward failed: {e}"))
    }

    fn linears(&self) -> &[nn::Linear] {
        &[]
    }
}
