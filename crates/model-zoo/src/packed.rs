//! K MLPs of one spec as one model: each layer's weights stacked along a leading K axis
//! (`[K, in, out]`, biases `[K, 1, out]`), evaluated with batched matrix products
//! (`baddbmm`), so K students train in the kernel calls one student would make. The `[K, in,
//! out]` layout makes the weight gradients of `baddbmm` contiguous as they come (an `[out, in]`
//! layout would need a transposed copy of every gradient on every step).
//!
//! Each student keeps its own numbers: the stacked tensors are copies of K separately built
//! MLP [`Net`]s (so each starts from the weights it would have alone), student k's outputs
//! depend only on slice k of every tensor, and its gradient only on its own loss. Dropout masks
//! come from the caller, one per student, so who draws them (and with which seed) stays with
//! the caller.

use tch::{nn, Tensor};

use crate::mlp::MlpNet;
use crate::{ModelError, Net};

/// K MLPs with stacked weights.
#[derive(Debug)]
pub struct PackedMlp {
    /// Per layer, input side first: `[K, in, out]` (`nn.Linear`'s weight transposed).
    pub weights: Vec<Tensor>,
    /// Per layer: `[K, 1, out]`.
    pub biases: Vec<Tensor>,
    pub dropout: f64,
    pub input_dropout: f64,
}

impl PackedMlp {
    /// Stack the layers of `nets` (MLPs of one spec, built on one device) into new variables
    /// under `p` (`fc1.weight`, `fc1.bias`, ...: `[K, ...]` each).
    pub fn stack(p: &nn::Path, nets: &[&Net]) -> Result<PackedMlp, ModelError> {
        let mut per_net: Vec<(&[nn::Linear], f64, f64)> = Vec::with_capacity(nets.len());
        for net in nets {
            let Some(m) = net.layers::<MlpNet>() else {
                return Err(crate::spec_err(
                    "arch",
                    "only MLP students pack (a CNN trains alone)",
                ));
            };
            per_net.push((&m.layers, m.dropout, m.input_dropout));
        }
        let Some(&(first, dropout, input_dropout)) = per_net.first() else {
            return Err(crate::spec_err("pack", "needs at least one student"));
        };
        let same = per_net.iter().all(|(l, d, i)| {
            l.len() == first.len()
                && *d == dropout
                && *i == input_dropout
                && l.iter()
                    .zip(first)
                    .all(|(a, b)| a.ws.size() == b.ws.size() && a.bs.is_some())
        });
        if !same {
            return Err(crate::spec_err(
                "pack",
                "students of one pack must share their layer widths and dropout",
            ));
        }
        let mut weights = Vec::with_capacity(first.len());
        let mut biases = Vec::with_capacity(first.len());
        tch::no_grad(|| {
            for i in 0..first.len() {
                let name = if i + 1 == first.len() {
                    "out".to_string()
                } else {
                    format!("fc{}", i + 1)
                };
                let w: Vec<Tensor> = per_net.iter().map(|(l, ..)| l[i].ws.tr()).collect();
                let b: Vec<Tensor> = per_net
                    .iter()
                    .map(|(l, ..)| l[i].bs.as_ref().expect("checked").unsqueeze(0))
                    .collect();
                weights.push((p / name.as_str()).var_copy("weight", &Tensor::stack(&w, 0)));
                biases.push((p / name.as_str()).var_copy("bias", &Tensor::stack(&b, 0)));
            }
        });
        Ok(PackedMlp {
            weights,
            biases,
            dropout,
            input_dropout,
        })
    }

    /// Number of students K.
    pub fn len(&self) -> i64 {
        self.weights[0].size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dropout sites in forward order as (probability, width): the input, then each hidden
    /// layer's output. A training step passes one mask per site whose probability is > 0.
    pub fn dropout_sites(&self) -> Vec<(f64, i64)> {
        let mut sites = vec![(self.input_dropout, self.weights[0].size()[1])];
        for w in &self.weights[..self.weights.len() - 1] {
            sites.push((self.dropout, w.size()[2]));
        }
        sites
    }

    /// Training-mode logits `[K, B, classes]` of `xs: [K, B, in]` (student k sees `xs[k]`).
    /// `masks[i]` multiplies site i of [`PackedMlp::dropout_sites`] (`[K, B, width]`, already
    /// scaled by `1 / (1 - p)`); `None` leaves the site alone (evaluation, or p = 0).
    pub fn forward(&self, xs: &Tensor, masks: &[Option<Tensor>]) -> Tensor {
        let site = |i: usize, x: Tensor| match masks.get(i) {
            Some(Some(m)) => x * m,
            _ => x,
        };
        let last = self.weights.len() - 1;
        let mut x = site(0, xs.shallow_clone());
        for (i, (w, b)) in self.weights.iter().zip(&self.biases).enumerate() {
            x = b.baddbmm(&x, w, 1, 1);
            if i < last {
                x = site(i + 1, x.relu());
            }
        }
        x
    }

    /// Evaluation-mode logits `[K, N, classes]` of every student on the same `xs: [N, ...]`,
    /// without autograd, `chunk` rows at a time, one student after another (measured here:
    /// faster than a batched product over inputs expanded K times, which copies them, for
    /// 800-unit layers, and as fast for 30-unit ones).
    pub fn forward_shared(&self, xs: &Tensor, chunk: i64) -> Tensor {
        tch::no_grad(|| {
            let n = xs.size()[0];
            let xs = xs.reshape([n, -1]);
            let last = self.weights.len() - 1;
            let students: Vec<Tensor> = (0..self.len())
                .map(|k| {
                    let parts: Vec<Tensor> = (0..n)
                        .step_by(chunk.max(1) as usize)
                        .map(|start| {
                            let mut h = xs.narrow(0, start, chunk.min(n - start));
                            for (i, (w, b)) in self.weights.iter().zip(&self.biases).enumerate() {
                                h = b.get(k).addmm(&h, &w.get(k));
                                if i < last {
                                    h = h.relu();
                                }
                            }
                            h
                        })
                        .collect();
                    Tensor::cat(&parts, 0)
                })
                .collect();
            Tensor::stack(&students, 0)
        })
    }
}
