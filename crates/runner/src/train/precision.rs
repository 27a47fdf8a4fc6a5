//! `train.precision: bf16` in training: the model's tensors are turned into bfloat16 in place
//! (their data replaced, so every module holding them computes in bfloat16), with float32
//! master copies of the trainable ones, which the optimiser updates
//! ([`super::optim::PackedOptimizer::with_masters`]). Inputs enter the model as bfloat16 and
//! its logits leave it as float32, so losses and scores are computed in float32.

use tch::{Kind, Tensor};

use crate::config::Precision;

/// The model side of a precision: what it computes in, and the masters while training.
pub(crate) struct Numerics {
    kind: Kind,
    /// bf16: the model's trainable tensors, their float32 masters, and every tensor of the
    /// model (buffers too), to be put back in float32 by [`Numerics::restore`].
    masters: Option<(Vec<Tensor>, Vec<Tensor>, Vec<Tensor>)>,
}

impl Numerics {
    /// For `precision`, over a model whose trainable tensors are `trainable` and whose tensors
    /// are `all` (buffers included): with bf16 they are turned into bfloat16 now.
    pub(crate) fn new(precision: Precision, trainable: Vec<Tensor>, all: Vec<Tensor>) -> Numerics {
        match precision {
            Precision::Fp32 => Numerics {
                kind: Kind::Float,
                masters: None,
            },
            Precision::Bf16 => tch::no_grad(|| {
                let masters: Vec<Tensor> = trainable.iter().map(|v| v.detach().copy()).collect();
                for v in &all {
                    v.shallow_clone().set_data(&v.to_kind(Kind::BFloat16));
                }
                Numerics {
                    kind: Kind::BFloat16,
                    masters: Some((trainable, masters, all)),
                }
            }),
        }
    }

    /// The number format the model computes in.
    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// The float32 masters and the model's tensors they update (bf16 only).
    pub(crate) fn masters(&self) -> Option<(Vec<Tensor>, Vec<Tensor>)> {
        self.masters.as_ref().map(|(work, masters, _)| {
            let shallow = |v: &[Tensor]| v.iter().map(Tensor::shallow_clone).collect();
            (shallow(masters), shallow(work))
        })
    }

    /// `x` as the model takes it.
    pub(crate) fn input(&self, x: &Tensor) -> Tensor {
        if x.kind() == self.kind || !x.is_floating_point() {
            x.shallow_clone()
        } else {
            x.to_kind(self.kind)
        }
    }

    /// The model's output `y` in float32.
    pub(crate) fn output(&self, y: Tensor) -> Tensor {
        if y.kind() == Kind::Float {
            y
        } else {
            y.to_kind(Kind::Float)
        }
    }

    /// After training: the model holds float32 again, its trainable tensors the masters'
    /// values and its buffers their own values cast to float32.
    pub(crate) fn restore(&self) {
        let Some((work, masters, all)) = &self.masters else {
            return;
        };
        // The trainable tensors take their masters; only the others (buffers) are cast.
        let trainable: std::collections::HashSet<usize> =
            work.iter().map(|w| w.data_ptr() as usize).collect();
        tch::no_grad(|| {
            for v in all {
                if !trainable.contains(&(v.data_ptr() as usize)) {
                    v.shallow_clone().set_data(&v.to_kind(Kind::Float));
                }
            }
            for (w, m) in work.iter().zip(masters) {
                w.shallow_clone().set_data(m);
            }
        });
    }
}
