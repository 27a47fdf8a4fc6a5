//! The optimiser of a pack: libtorch's SGD (momentum, no dampening), Adam and AdamW update
//! rules with `torch::optim`'s defaults (betas 0.9 and 0.999, eps 1e-8, L2 weight decay for
//! SGD and Adam, decoupled for AdamW), applied to the stacked tensors [`CHUNK`] elements at a
//! time. The update is elementwise, so a student's slice is updated as it would be alone.
//!
//! Why chunks: an unfused update makes six or so passes over weight, gradient and moments.
//! Over whole stacked tensors (85 MB of weights for 18 students of 800-800) every pass streams
//! from memory; a chunk's operands (a few MB) stay in the core's cache across the passes.
//! Measured with PyTorch on this machine's 2 cores, one Adam step over 18 stacked 800-800
//! students: 127 ms unfused over whole tensors, 35 ms with PyTorch's fused CPU kernel (which
//! tch does not expose). On a GPU the chunks would only multiply kernel launches (about 736 per
//! step for those 18 students): there each variable is updated whole, a handful of launches
//! per variable, and the gradients are zeroed in place, never accumulated across steps.

use tch::Tensor;

use super::snapshot::{fits, int, int_tensor, like, put, Named};
use crate::config::{Optimizer, TrainCfg};

/// Elements per chunk: 256k floats (1 MB) per operand.
pub const CHUNK: i64 = 1 << 18;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// The dimensions of the dense tensor `t` from its outermost in memory to its innermost (its
/// own order for a contiguous tensor; N, H, W, C for a channels_last one): permuted so, `t`
/// is contiguous and views as one flat run of its memory.
fn memory_order(t: &Tensor) -> Vec<i64> {
    let (size, stride) = (t.size(), t.stride());
    let mut order: Vec<usize> = (0..size.len()).collect();
    // Size-1 dimensions span no memory (their strides say nothing): put first.
    order.sort_by_key(|&d| std::cmp::Reverse(if size[d] == 1 { i64::MAX } else { stride[d] }));
    order.into_iter().map(|d| d as i64).collect()
}

/// One variable with its gradient and optimiser state, all flattened views.
struct State {
    var: Tensor,
    /// `var`'s [`memory_order`], read once (its layout never changes while it trains).
    order: Vec<i64>,
    /// With master weights (`train.precision: bf16`): the model's bfloat16 copy of `var`,
    /// whose gradient the update reads (cast to float32) and which gets `var` after it.
    work: Option<Tensor>,
    /// SGD: the momentum buffer (created at the first step); Adam: the first moment.
    m: Option<Tensor>,
    /// Adam: the second moment.
    v: Option<Tensor>,
}

/// An optimiser over the variables of a pack.
pub struct PackedOptimizer {
    kind: Optimizer,
    /// Elements per chunk of an update: [`CHUNK`] on a CPU, a whole variable on a GPU.
    chunk: i64,
    momentum: f64,
    weight_decay: f64,
    lr: f64,
    step: i32,
    states: Vec<State>,
}

impl PackedOptimizer {
    pub fn new(vars: Vec<Tensor>, cfg: &TrainCfg) -> PackedOptimizer {
        let none = vars.iter().map(|_| None).collect();
        Self::build(vars, none, cfg)
    }

    /// An optimiser of the float32 `masters` of the model's lower-precision variables `work`
    /// (in order): each step reads the gradients of `work`, updates `masters` in float32 and
    /// copies them into `work`.
    pub fn with_masters(
        masters: Vec<Tensor>,
        work: Vec<Tensor>,
        cfg: &TrainCfg,
    ) -> PackedOptimizer {
        Self::build(masters, work.into_iter().map(Some).collect(), cfg)
    }

    fn build(vars: Vec<Tensor>, work: Vec<Option<Tensor>>, cfg: &TrainCfg) -> PackedOptimizer {
        let adam = cfg.optimizer != Optimizer::Sgd;
        let states: Vec<State> = vars
            .into_iter()
            .zip(work)
            .map(|(var, work)| State {
                order: memory_order(&var),
                m: adam.then(|| var.zeros_like()),
                v: adam.then(|| var.zeros_like()),
                var,
                work,
            })
            .collect();
        let chunk = match states.first().map(|s| s.var.device()) {
            Some(tch::Device::Cuda(_)) => i64::MAX,
            _ => CHUNK,
        };
        PackedOptimizer {
            chunk,
            kind: cfg.optimizer,
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
            lr: cfg.lr,
            step: 0,
            states,
        }
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// The state: the step count (`opt/step`), each variable's moments (`opt/m/<i>`,
    /// `opt/v/<i>`, where made) and, with master weights, the masters (`opt/var/<i>`).
    pub(crate) fn export(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("opt/step".to_string(), int_tensor(self.step as i64))];
        for (i, s) in self.states.iter().enumerate() {
            let masters = s.work.as_ref().map(|_| &s.var);
            for (what, t) in [("m", s.m.as_ref()), ("v", s.v.as_ref()), ("var", masters)] {
                if let Some(t) = t {
                    out.push((format!("opt/{what}/{i}"), t.shallow_clone()));
                }
            }
        }
        out
    }

    /// Whether [`PackedOptimizer::import`] of `from` would succeed (it changes nothing).
    pub(crate) fn check(&self, from: &Named) -> Result<(), String> {
        int(from, "opt/step")?;
        for (i, s) in self.states.iter().enumerate() {
            if s.work.is_some() {
                fits(&s.var, from, &format!("opt/var/{i}"))?;
            }
            for (what, t) in [("m", &s.m), ("v", &s.v)] {
                let name = format!("opt/{what}/{i}");
                match t {
                    Some(t) => fits(t, from, &name)?,
                    None if from.contains_key(&name) => fits(&s.var, from, &name)?,
                    None => {}
                }
            }
        }
        Ok(())
    }

    /// Put back the state [`PackedOptimizer::export`] gave (into the live tensors: the flat
    /// views of an update see them).
    pub(crate) fn import(&mut self, from: &Named) -> Result<(), String> {
        self.step = int(from, "opt/step")? as i32;
        for (i, s) in self.states.iter_mut().enumerate() {
            if s.work.is_some() {
                put(&s.var, from, &format!("opt/var/{i}"))?;
            }
            for (what, t) in [("m", &mut s.m), ("v", &mut s.v)] {
                let name = format!("opt/{what}/{i}");
                match t {
                    Some(t) => put(t, from, &name)?,
                    None => *t = like(&s.var, from, &name)?,
                }
            }
        }
        Ok(())
    }

    /// Zero the gradients, back-propagate `loss`, and update every variable.
    pub fn backward_step(&mut self, loss: &Tensor) {
        for s in &self.states {
            let mut g = s.work.as_ref().unwrap_or(&s.var).grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        loss.backward();
        self.step += 1;
        tch::no_grad(|| {
            for i in 0..self.states.len() {
                self.update(i);
                let s = &self.states[i];
                if let Some(w) = &s.work {
                    w.shallow_clone().copy_(&s.var);
                }
            }
        });
    }

    fn update(&mut self, i: usize) {
        let (kind, lr, wd, momentum) = (self.kind, self.lr, self.weight_decay, self.momentum);
        let (bc1, bc2) = (1.0 - BETA1.powi(self.step), 1.0 - BETA2.powi(self.step));
        let s = &mut self.states[i];
        let grad = s.work.as_ref().unwrap_or(&s.var).grad();
        if !grad.defined() {
            return;
        }
        let grad = if grad.kind() == s.var.kind() {
            grad
        } else {
            grad.to_kind(s.var.kind())
        };
        let n = s.var.numel() as i64;
        if kind == Optimizer::Sgd && momentum != 0.0 && s.m.is_none() {
            s.m = Some(s.var.zeros_like());
            // libtorch's first buffer is the (decayed) gradient itself: momentum * 0 + d.
        }
        // Flattened in the variable's memory order (a channels_last conv weight is not
        // viewable as NCHW-flat); the state was made like it, the gradient is read in that order
        // (a copy only where its own layout differs).
        let order = &s.order[..];
        let flat = |t: &Tensor| t.permute(order).view([-1]);
        let p = flat(&s.var);
        let g = grad.permute(order).reshape([-1]);
        let m = s.m.as_ref().map(flat);
        let v = s.v.as_ref().map(flat);
        let first = self.step == 1;
        let chunk = self.chunk;
        for start in (0..n).step_by(chunk.min(n).max(1) as usize) {
            let len = chunk.min(n - start);
            let at = |t: &Tensor| t.narrow(0, start, len);
            let mut pc = at(&p);
            let gc = at(&g);
            match kind {
                Optimizer::Sgd => {
                    let d = if wd != 0.0 { &gc + &pc * wd } else { gc };
                    let d = match &m {
                        Some(m) => {
                            let mut mc = at(m);
                            if !first {
                                let _ = mc.g_mul_scalar_(momentum);
                            }
                            let _ = mc.g_add_(&d);
                            mc
                        }
                        None => d,
                    };
                    let _ = pc.g_add_(&(d * -lr));
                }
                Optimizer::Adam | Optimizer::Adamw => {
                    let gc = if wd != 0.0 && kind == Optimizer::Adam {
                        &gc + &pc * wd
                    } else {
                        gc
                    };
                    if wd != 0.0 && kind == Optimizer::Adamw {
                        let _ = pc.g_mul_scalar_(1.0 - lr * wd);
                    }
                    let (Some(m), Some(v)) = (&m, &v) else {
                        unreachable!("adam has moments")
                    };
                    let (mut mc, mut vc) = (at(m), at(v));
                    let _ = mc.lerp_(&gc, 1.0 - BETA1);
                    let _ = vc.lerp_(&(&gc * &gc), 1.0 - BETA2);
                    let mut denom = vc.sqrt();
                    let _ = denom.g_mul_scalar_(1.0 / bc2.sqrt());
                    let _ = denom.g_add_scalar_(EPS);
                    let _ = pc.addcdiv_(&(&mc * (-lr / bc1)), &denom);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// Master weights (`train.precision: bf16`): a bfloat16 linear layer trained for two Adam
    /// steps through its float32 masters gives PyTorch's masters for the same recipe (golden
    /// values from PyTorch 2.13):
    ///
    /// ```python
    /// W = torch.tensor([[math.sin(i * 4 + j) for j in range(4)] for i in range(3)])
    /// b = torch.tensor([math.cos(i) for i in range(3)])
    /// x = torch.tensor([[math.sin(0.7 * (r * 4 + j) + 1.0) * 2 for j in range(4)] for r in range(5)])
    /// y = torch.tensor([0, 1, 2, 0, 1])
    /// master = [W.clone(), b.clone()]
    /// work = [p.to(torch.bfloat16).requires_grad_() for p in master]
    /// opt = torch.optim.Adam(master, lr=0.01, foreach=False)
    /// for _ in range(2):
    ///     for w in work: w.grad = None
    ///     logits = F.linear(x.bfloat16(), work[0], work[1]).float()
    ///     F.cross_entropy(logits, y).backward()
    ///     for m, w in zip(master, work): m.grad = w.grad.float()
    ///     opt.step()
    ///     with torch.no_grad():
    ///         for m, w in zip(master, work): w.copy_(m)
    /// ```
    #[test]
    fn bf16_master_weights_follow_pytorchs_recipe() {
        let w: Vec<f32> = (0..12).map(|i| (i as f64).sin() as f32).collect();
        let b: Vec<f32> = (0..3).map(|i| (i as f64).cos() as f32).collect();
        let x: Vec<f32> = (0..20)
            .map(|i| ((0.7 * i as f64 + 1.0).sin() * 2.0) as f32)
            .collect();
        let masters = [Tensor::from_slice(&w).view([3, 4]), Tensor::from_slice(&b)];
        let work: Vec<Tensor> = masters
            .iter()
            .map(|m| m.to_kind(Kind::BFloat16).set_requires_grad(true))
            .collect();
        let cfg = TrainCfg::plain(Optimizer::Adam, 0.01, 5);
        let mut opt = PackedOptimizer::with_masters(
            masters.iter().map(Tensor::shallow_clone).collect(),
            work.iter().map(Tensor::shallow_clone).collect(),
            &cfg,
        );
        let x = Tensor::from_slice(&x).view([5, 4]).to_kind(Kind::BFloat16);
        let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1]);
        for _ in 0..2 {
            let logits = x.linear(&work[0], Some(&work[1])).to_kind(Kind::Float);
            opt.backward_step(&logits.cross_entropy_for_logits(&y));
        }
        let want_w = [
            0.02000475,
            0.82147419,
            0.88929939,
            0.1211222,
            -0.77679628,
            -0.93892723,
            -0.25941944,
            0.676983,
            1.00935102,
            0.43211743,
            -0.52402276,
            -0.97999024,
        ];
        let want_b = [0.98000878, 0.56029522, -0.39615318];
        let got_w = crate::train::host::f64s(&masters[0]);
        let got_b = crate::train::host::f64s(&masters[1]);
        for (g, w) in got_w.iter().chain(&got_b).zip(want_w.iter().chain(&want_b)) {
            assert!((g - w).abs() < 1e-6, "{got_w:?} {got_b:?}");
        }
        // The model holds the masters rounded to bfloat16.
        assert_eq!(work[1].kind(), Kind::BFloat16);
        assert_eq!(
            crate::train::host::f64s(&work[1]),
            [0.98046875, 0.55859375, -0.396484375]
        );
    }

    /// A channels_last conv weight (`channels_last: true` models) is updated in place in its own
    /// memory order, to the values the same weight gets in NCHW order: SGD with momentum and
    /// weight decay, Adam, and float32 masters of a bfloat16 copy, over three steps of a loss
    /// whose gradient is elementwise (so both layouts see the same gradient values).
    #[test]
    fn a_channels_last_weight_updates_as_its_nchw_twin() {
        let nchw = Tensor::arange(4 * 3 * 3 * 3, (Kind::Float, tch::Device::Cpu))
            .view([4, 3, 3, 3])
            .sin();
        let target = nchw.cos();
        let cl = |t: &Tensor| {
            let out = Tensor::empty_strided([4, 3, 3, 3], [27, 1, 9, 3], (t.kind(), t.device()));
            out.shallow_clone().copy_(t);
            out
        };
        for (optimizer, masters) in [
            (Optimizer::Sgd, false),
            (Optimizer::Adam, false),
            (Optimizer::Adam, true),
        ] {
            let mut cfg = TrainCfg::plain(optimizer, 0.1, 5);
            cfg.momentum = 0.9;
            cfg.weight_decay = 0.01;
            let run = |var: Tensor| {
                let work = masters.then(|| {
                    let w = Tensor::empty_strided(
                        var.size(),
                        var.stride(),
                        (Kind::BFloat16, var.device()),
                    );
                    w.shallow_clone().copy_(&var);
                    w.set_requires_grad(true)
                });
                let var = if masters {
                    var
                } else {
                    var.set_requires_grad(true)
                };
                let model = work.as_ref().unwrap_or(&var).shallow_clone();
                let mut opt = match &work {
                    Some(w) => PackedOptimizer::with_masters(
                        vec![var.shallow_clone()],
                        vec![w.shallow_clone()],
                        &cfg,
                    ),
                    None => PackedOptimizer::new(vec![var.shallow_clone()], &cfg),
                };
                for _ in 0..3 {
                    let d = model.to_kind(Kind::Float) - &target;
                    opt.backward_step(&(&d * &d).sum(Kind::Float));
                }
                var
            };
            let (a, b) = (run(nchw.copy()), run(cl(&nchw)));
            assert_eq!(
                b.stride(),
                [27, 1, 9, 3],
                "{optimizer:?}: still channels_last"
            );
            assert!(!a.equal(&nchw), "{optimizer:?}: updated");
            assert!(
                a.equal(&b),
                "{optimizer:?} (masters: {masters}): the same values"
            );
        }
    }
}
