//! Evaluation at T = 1: logits in chunks, accuracy, and the finiteness checks that tell a
//! diverged trial.

use kd_model_zoo::Net;
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use crate::data::SplitTensors;

/// NaN or infinity where a number should be: the trial diverged.
#[derive(Debug, Clone, PartialEq)]
pub struct NonFinite(pub String);

/// Logits of `net` (evaluation mode) for every row of `x`, in chunks.
pub fn predict(net: &Net, x: &Tensor, chunk: i64) -> Tensor {
    tch::no_grad(|| {
        let n = x.size()[0];
        let parts: Vec<Tensor> = (0..n)
            .step_by(chunk as usize)
            .map(|start| net.forward_t(&x.narrow(0, start, chunk.min(n - start)), false))
            .collect();
        Tensor::cat(&parts, 0)
    })
}

/// (accuracy, errors) of `net` at T = 1 on a split: none for an empty split, an error when an
/// output is NaN or infinite.
pub fn evaluate(net: &Net, split: &SplitTensors) -> Result<Option<(f64, u64)>, NonFinite> {
    if split.is_empty() {
        return Ok(None);
    }
    let s = score(&predict(net, &split.x, 1000).unsqueeze(0), &split.y)[0];
    if !s.finite {
        return Err(NonFinite("an output became NaN or infinite".into()));
    }
    Ok(Some((s.acc, s.errors)))
}

/// One student's score on a split: accuracy, errors, and whether every output was finite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Score {
    pub acc: f64,
    pub errors: u64,
    pub finite: bool,
}

/// Per student, the [`Score`] of `logits` (`[K, n, classes]`, on any device) against the labels
/// `y` (`[n]`).
pub(crate) fn score(logits: &Tensor, y: &Tensor) -> Vec<Score> {
    let k = logits.size()[0] as usize;
    let finite = logits.isfinite().flatten(1, -1).all_dim(1, false);
    let correct = logits
        .to_device(y.device())
        .argmax(-1, false)
        .eq_tensor(&y.unsqueeze(0))
        .sum_dim_intlist(-1, false, Kind::Int64);
    // One read: the correct counts, then the finite flags.
    let both = super::host::i64s(&Tensor::cat(
        &[
            correct.to_device(finite.device()),
            finite.to_kind(Kind::Int64),
        ],
        0,
    ));
    let (correct, finite): (Vec<i64>, Vec<bool>) = (
        both[..k].to_vec(),
        both[k..].iter().map(|&f| f != 0).collect(),
    );
    let n = y.size()[0];
    (0..k)
        .map(|i| Score {
            acc: correct[i] as f64 / n as f64,
            errors: (n - correct[i]) as u64,
            finite: finite[i],
        })
        .collect()
}

/// Whether every trainable weight of `vs` is finite (one read).
pub fn weights_finite(vs: &nn::VarStore) -> bool {
    tch::no_grad(|| {
        let each: Vec<Tensor> = vs
            .trainable_variables()
            .iter()
            .map(|t| t.isfinite().all())
            .collect();
        each.is_empty() || super::host::bools(&Tensor::stack(&each, 0).all()) == [true]
    })
}

/// (accuracy, errors) of `logits` (`[n, classes]`, on any device) against the labels `y`.
pub fn accuracy(logits: &Tensor, y: &Tensor) -> (f64, u64) {
    let s = score(&logits.unsqueeze(0), y)[0];
    (s.acc, s.errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_weights_are_not_finite() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let w = vs.root().var("w", &[3], nn::Init::Const(1.0));
        assert!(weights_finite(&vs));
        tch::no_grad(|| {
            let _ = w.narrow(0, 1, 1).fill_(f64::NAN);
        });
        assert!(!weights_finite(&vs));
    }
}
