//! A kept student (`run/models.rs`) built again and evaluated as its record was: the net of its
//! spec with the file's tensors, in its number format, and a student that trained in a pack
//! evaluated as a pack of one (the pack's arithmetic: each layer's weight transposed and
//! multiplied by `addmm`), so its logits are bit for bit those its record scored.

use kd_model_zoo::{InputShape, ModelSpec, Net, PackedMlp};
use tch::{nn, Device, Tensor};

use super::eval::predict;
use super::precision::Numerics;
use crate::config::Precision;

/// A kept student, ready to evaluate.
pub struct Reloaded {
    _vs: nn::VarStore,
    net: Net,
    /// The pack of one it evaluates as (a student that trained packed).
    pack: Option<(nn::VarStore, PackedMlp)>,
    numerics: Numerics,
}

impl Reloaded {
    /// `spec`'s net for `input` and `classes` on `device`, in `precision`, holding `tensors`
    /// (by the reference names [`ModelSpec::reference_name`] gives): every tensor of the net
    /// must be there with its shape and number format, and no other.
    pub fn new(
        spec: &ModelSpec,
        (input, classes): (InputShape, usize),
        precision: Precision,
        packed: bool,
        tensors: Vec<(String, Tensor)>,
        device: Device,
    ) -> Result<Reloaded, String> {
        // Built in float32 and filled, then (as a sweep does, alone or packed) turned into the
        // precision it was evaluated in: a bf16 file's values are exact in float32.
        let vs = nn::VarStore::new(device);
        let net = spec
            .build(&vs, input, classes)
            .map_err(|e| format!("model.{e}"))?;
        let kind = match precision {
            Precision::Fp32 => tch::Kind::Float,
            Precision::Bf16 => tch::Kind::BFloat16,
        };
        let mut file: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
        tch::no_grad(|| {
            for (name, var) in vs.variables() {
                let key = spec.reference_name(&name);
                let t = file
                    .remove(&key)
                    .ok_or_else(|| format!("it has no tensor `{key}`"))?;
                // Counters such as batch norm's `num_batches_tracked` keep their integer kind.
                let want = if var.is_floating_point() {
                    kind
                } else {
                    var.kind()
                };
                if t.size() != var.size() || t.kind() != want {
                    return Err(format!(
                        "tensor `{key}` is {:?} {:?}; the model's is {want:?} {:?} (its \
                         precision)",
                        t.kind(),
                        t.size(),
                        var.size()
                    ));
                }
                var.shallow_clone().copy_(&t);
            }
            Ok(())
        })?;
        if let Some(extra) = file.keys().next() {
            return Err(format!("tensor `{extra}` is not the model's"));
        }
        let (pack, numerics) = if packed {
            let pvs = nn::VarStore::new(device);
            let p = PackedMlp::stack(&pvs.root(), &[&net]).map_err(|e| e.to_string())?;
            let all = super::kept::tensors_of(&pvs);
            let numerics = Numerics::new(precision, pvs.trainable_variables(), all);
            (Some((pvs, p)), numerics)
        } else {
            let all = super::kept::tensors_of(&vs);
            (
                None,
                Numerics::new(precision, vs.trainable_variables(), all),
            )
        };
        Ok(Reloaded {
            _vs: vs,
            net,
            pack,
            numerics,
        })
    }

    /// Evaluation-mode logits of every row of `x` (standardised images), in float32.
    pub fn logits(&self, x: &Tensor) -> Tensor {
        let x = self.numerics.input(x);
        let y = match &self.pack {
            Some((_, p)) => p.forward_shared(&x, super::packed::EVAL_CHUNK).get(0),
            None => predict(&self.net, &x, 1000),
        };
        self.numerics.output(y)
    }
}
