//! The weights of each student's best validation epoch, kept on the device so that its test
//! accuracy there (`best_test_acc`) is measured once, after training, instead of after every
//! epoch that might turn out best (`train.test_every: best`). A copy is exact, so the test
//! logits are those the epoch itself would have given.

use tch::{nn, Tensor};

/// Every tensor of `vs` (weights and buffers), in the order of their names: a learner's state.
pub(crate) fn tensors_of(vs: &nn::VarStore) -> Vec<Tensor> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(_, t)| t).collect()
}

/// The names of `vs`'s tensors, in [`tensors_of`]'s order.
pub(crate) fn names_of(vs: &nn::VarStore) -> Vec<String> {
    let mut names: Vec<String> = vs.variables().into_keys().collect();
    names.sort();
    names
}

/// A copy of a learner's state (every tensor its evaluation-mode logits read: weights and
/// buffers such as batch-norm statistics), per student the epoch it holds.
pub(crate) struct Kept {
    /// The learner's tensors, shallow: writing them writes the model.
    live: Vec<Tensor>,
    /// Whether the tensors hold the students along dim 0 (a pack); else one student's.
    stacked: bool,
    /// The copy, made at the first [`Kept::keep`].
    copies: Option<Vec<Tensor>>,
    /// Per student, the epoch whose weights the copy holds.
    epoch: Vec<Option<u32>>,
}

impl Kept {
    /// Nothing kept yet for `k` students whose state is `live` (see [`Kept::stacked`]).
    pub(crate) fn new(live: Vec<Tensor>, stacked: bool, k: usize) -> Kept {
        Kept {
            live,
            stacked,
            copies: None,
            epoch: vec![None; k],
        }
    }

    /// Copy student `i`'s current state, as of `epoch`.
    pub(crate) fn keep(&mut self, i: usize, epoch: u32) {
        tch::no_grad(|| match &self.copies {
            None => self.copies = Some(self.live.iter().map(|v| v.detach().copy()).collect()),
            Some(copies) => {
                for (c, v) in copies.iter().zip(&self.live) {
                    if self.stacked {
                        c.get(i as i64).copy_(&v.get(i as i64));
                    } else {
                        c.shallow_clone().copy_(v);
                    }
                }
            }
        });
        self.epoch[i] = Some(epoch);
    }

    /// Student `i`'s copy is no longer wanted (its best epoch was measured as it happened).
    pub(crate) fn forget(&mut self, i: usize) {
        self.epoch[i] = None;
    }

    /// Per student, the epoch whose state is kept and not yet measured.
    pub(crate) fn epochs(&self) -> &[Option<u32>] {
        &self.epoch
    }

    /// The copy of every student's state (in the learner's [`Learner::state`] order), if one
    /// was made; student `i`'s holds epoch [`Kept::epochs`]`[i]` where that is set.
    ///
    /// [`Learner::state`]: super::learner::Learner::state
    pub(crate) fn copies(&self) -> Option<&[Tensor]> {
        self.copies.as_deref()
    }

    /// Put each kept student's copy in place of its live state for good (`train.weights:
    /// best`); nothing is kept after.
    pub(crate) fn install(&mut self) {
        let Some(copies) = &self.copies else {
            return;
        };
        tch::no_grad(|| {
            for (i, e) in self.epoch.iter().enumerate() {
                if e.is_none() {
                    continue;
                }
                for (c, v) in copies.iter().zip(&self.live) {
                    if self.stacked {
                        v.get(i as i64).copy_(&c.get(i as i64));
                    } else {
                        v.detach().copy_(c);
                    }
                }
            }
        });
        self.epoch.iter_mut().for_each(|e| *e = None);
    }

    /// The copy as `kept/<i>` (none when no student's kept epoch waits for its test).
    pub(crate) fn export(&self) -> Vec<(String, Tensor)> {
        match &self.copies {
            Some(copies) if self.epoch.iter().any(Option::is_some) => copies
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("kept/{i}"), c.shallow_clone()))
                .collect(),
            _ => vec![],
        }
    }

    /// A `Kept` of the same live state holding what [`Kept::export`] gave, for `epochs`.
    pub(crate) fn imported(
        &self,
        from: &super::snapshot::Named,
        epochs: &[Option<u32>],
    ) -> Result<Kept, String> {
        if epochs.len() != self.epoch.len() {
            return Err(format!(
                "it holds {} students, not {}",
                epochs.len(),
                self.epoch.len()
            ));
        }
        let copies = if epochs.iter().any(Option::is_some) {
            let copy = |(i, v): (usize, &Tensor)| {
                let name = format!("kept/{i}");
                super::snapshot::like(&v.detach(), from, &name)?
                    .ok_or_else(|| format!("it has no tensor `{name}`"))
            };
            Some(
                self.live
                    .iter()
                    .enumerate()
                    .map(copy)
                    .collect::<Result<Vec<Tensor>, String>>()?,
            )
        } else {
            None
        };
        Ok(Kept {
            live: self.live.iter().map(Tensor::shallow_clone).collect(),
            stacked: self.stacked,
            copies,
            epoch: epochs.to_vec(),
        })
    }

    /// `f` run with the kept state in place of the live one, which is put back after (exactly).
    pub(crate) fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        let Some(copies) = &self.copies else {
            return f();
        };
        let swap = |from: &[Tensor]| {
            for (v, c) in self.live.iter().zip(from) {
                v.detach().copy_(c);
            }
        };
        tch::no_grad(|| {
            let saved: Vec<Tensor> = self.live.iter().map(|v| v.detach().copy()).collect();
            swap(copies);
            let out = f();
            swap(&saved);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pack's copy is per student: keeping student 1 later leaves student 0's copy as it was,
    /// and the live state comes back unchanged after a run with the copy in place.
    #[test]
    fn a_pack_keeps_each_students_own_epoch() {
        let w = Tensor::from_slice(&[1f32, 2.0, 3.0, 4.0]).view([2, 2]);
        let mut kept = Kept::new(vec![w.shallow_clone()], true, 2);
        kept.keep(0, 1);
        kept.keep(1, 1);
        let _ = w.shallow_clone().fill_(7.0);
        kept.keep(1, 2);
        assert_eq!(kept.epochs(), [Some(1), Some(2)]);
        let seen = kept.with(|| crate::train::host::f64s(&w.view([-1])));
        assert_eq!(seen, [1.0, 2.0, 7.0, 7.0]);
        assert_eq!(crate::train::host::f64s(&w.view([-1])), [7.0; 4]);
        kept.forget(0);
        assert_eq!(kept.epochs(), [None, Some(2)]);
    }
}
