//! What the student buys, measured ([`kd_report::deployment`]): for the teacher and each
//! distinct student model of the plan (its spec and number format), a freshly built net of its
//! shape on the students' device with their threads, timed in evaluation mode at batch 1 and
//! batch 256 (the median of repeated forward passes after two warm-up passes, one for a pass
//! over 0.3 s), and its size.
//! The weights are the initial ones: a forward pass costs the same whatever their values. A
//! student that trained in a pack is timed alone, as it is kept and deployed.

use std::time::{Duration, Instant};

use kd_model_zoo::{InputShape, ModelSpec, Net};
use kd_report::deployment::Footprint;
use tch::nn::ModuleT;
use tch::{nn, Device, Kind, Tensor};

use crate::config::Precision;
use crate::env;
use crate::plan::Plan;

/// Timed runs per batch size: at least this many...
const MIN_RUNS: usize = 5;
/// ... then more until this much time has passed, at most [`MAX_RUNS`]; a net whose pass takes
/// longer than [`SLOW`] gets [`SLOW_RUNS`].
const BUDGET: Duration = Duration::from_millis(500);
const MAX_RUNS: usize = 200;
const SLOW: Duration = Duration::from_millis(300);
const SLOW_RUNS: usize = 3;

/// Median milliseconds of one evaluation-mode pass of `net` over `x`, and the runs timed.
fn median_ms(net: &Net, x: &Tensor, device: Device) -> (f64, usize) {
    let pass = || {
        let t = Instant::now();
        let y = tch::no_grad(|| net.forward_t(x, false));
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        } else {
            drop(y);
        }
        t.elapsed()
    };
    // Two warm-up passes; one for a slow net (its first pass is warm-up enough).
    let first = pass();
    let warm = if first > SLOW { first } else { pass() };
    let wanted = if warm > SLOW { SLOW_RUNS } else { MIN_RUNS };
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < wanted || (start.elapsed() < BUDGET && times.len() < MAX_RUNS) {
        times.push(pass());
    }
    times.sort();
    (times[times.len() / 2].as_secs_f64() * 1000.0, times.len())
}

/// A fresh net of `spec` in `precision` on `device`, and the bytes of its tensors.
fn fresh(
    spec: &ModelSpec,
    (input, classes): (InputShape, usize),
    precision: Precision,
    device: Device,
) -> Result<(nn::VarStore, Net, u64), String> {
    let mut vs = nn::VarStore::new(device);
    let net = spec.build(&vs, input, classes).map_err(|e| e.to_string())?;
    if precision == Precision::Bf16 {
        vs.bfloat16();
    }
    let bytes = vs
        .variables()
        .values()
        .map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
        .sum();
    Ok((vs, net, bytes))
}

/// Time `net` at batch 1 and 256 of `input` images in `kind`.
pub(crate) fn timed(
    net: &Net,
    input: InputShape,
    kind: Kind,
    device: Device,
) -> ([f64; 2], [usize; 2]) {
    let x = |n: i64| {
        let size = [
            n,
            input.channels as i64,
            input.height as i64,
            input.width as i64,
        ];
        Tensor::randn(size, (Kind::Float, device)).to_kind(kind)
    };
    let (one, r1) = median_ms(net, &x(1), device);
    let (many, r2) = median_ms(net, &x(256), device);
    ([one, many], [r1, r2])
}

/// libtorch's thread count, set for a scope and put back when it ends (a panic included).
struct Threads(i32);

impl Threads {
    fn set(n: usize) -> Threads {
        let before = Threads(tch::get_num_threads());
        tch::set_num_threads(n as i32);
        before
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        tch::set_num_threads(self.0);
    }
}

/// `f`, with a panic (libtorch out of memory, a TorchScript module's own error) turned into
/// an error: a footprint is an observation, never worth a sweep's report.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let why = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        Err(why)
    })
}

/// The footprints of `plan`'s teacher and students (one per student model as the report names
/// it: arch, shape and number format); a model that cannot be built, loaded or run is left out
/// with the reason.
pub fn measure(plan: &Plan) -> (Vec<Footprint>, Vec<String>) {
    let slot = &plan.slots[0];
    let Ok(device) = env::select_device(&slot.device) else {
        let why = format!("no footprints: device {} unusable", slot.device);
        return (vec![], vec![why]);
    };
    let _threads = Threads::set(slot.threads);
    let shape = (plan.data.input, plan.data.classes);
    let hardware = match device {
        Device::Cuda(i) => env::gpu_model(i),
        _ => env::cpu_model(),
    };
    let base = Footprint {
        role: String::new(),
        arch: String::new(),
        hidden: String::new(),
        precision: String::new(),
        params: 0,
        bytes: 0,
        batch1_ms: 0.0,
        batch256_ms: 0.0,
        runs: [0, 0],
        device: env::device_label(device),
        threads: slot.threads,
        hardware,
    };
    let mut out = Vec::new();
    let mut notes = Vec::new();
    match guarded(|| teacher(plan, shape, device)) {
        Ok(m) => out.push(m.with(&base)),
        Err(e) => notes.push(format!("the teacher's footprint was not measured: {e}")),
    }
    let mut seen: Vec<(&str, String, Precision)> = Vec::new();
    for trial in &plan.trials {
        let (spec, precision) = (&trial.student.model, trial.student.train.precision);
        let key = (spec.arch(), spec.shape_label(), precision);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        match guarded(|| student(spec, precision, shape, device)) {
            Ok(m) => out.push(m.with(&base)),
            Err(e) => notes.push(format!(
                "student {}'s footprint was not measured: {e}",
                trial.id
            )),
        }
    }
    (out, notes)
}

/// A student model's footprint, without the machine's fields.
fn student(
    spec: &ModelSpec,
    precision: Precision,
    shape: (InputShape, usize),
    device: Device,
) -> Result<Measured, String> {
    let (_vs, net, bytes) = fresh(spec, shape, precision, device)?;
    let (ms, runs) = timed(&net, shape.0, kind_of(precision), device);
    Ok(Measured {
        role: "student",
        arch: spec.arch().into(),
        hidden: spec.shape_label(),
        precision,
        params: spec.param_count(shape.0, shape.1) as u64,
        bytes,
        ms,
        runs,
    })
}

/// The teacher's footprint, named as its row names it, without the machine's fields. An
/// ensemble runs every member on each input: the members' times, sizes and parameters summed.
fn teacher(plan: &Plan, shape: (InputShape, usize), device: Device) -> Result<Measured, String> {
    let t = &plan.teacher;
    if t.members.is_empty() {
        return lone(t, shape, device);
    }
    let members = t
        .members
        .iter()
        .map(|m| lone(m, shape, device))
        .collect::<Result<Vec<_>, _>>()?;
    let sum = |f: &dyn Fn(&Measured) -> f64| members.iter().map(f).sum::<f64>();
    Ok(Measured {
        role: "teacher",
        arch: "ensemble".into(),
        hidden: t.ensemble_label(),
        precision: t.cfg.train.precision,
        params: members.iter().map(|m| m.params).sum(),
        bytes: members.iter().map(|m| m.bytes).sum(),
        ms: [sum(&|m| m.ms[0]), sum(&|m| m.ms[1])],
        runs: [0, 1].map(|i| members.iter().map(|m| m.runs[i]).min().unwrap_or(0)),
    })
}

/// A lone teacher's footprint (a TorchScript teacher: `torchscript` and its file).
fn lone(
    t: &crate::plan::TeacherPlan,
    shape: (InputShape, usize),
    device: Device,
) -> Result<Measured, String> {
    let precision = t.cfg.train.precision;
    let (_vs, net, arch, hidden, params, bytes) = match &t.torchscript {
        Some(s) => {
            let m = kd_model_zoo::Scripted::load(&s.file, device, shape.0, shape.1)?;
            let name = s.file.file_name().unwrap_or_default().to_string_lossy();
            let name = name.into_owned();
            (
                None,
                m.into_net(),
                "torchscript".to_string(),
                name,
                s.params,
                scripted_bytes(&s.file)?,
            )
        }
        None => {
            let m = &t.cfg.model;
            let (vs, net, bytes) = fresh(m, shape, precision, device)?;
            let params = m.param_count(shape.0, shape.1) as u64;
            (
                Some(vs),
                net,
                m.arch().to_string(),
                m.shape_label(),
                params,
                bytes,
            )
        }
    };
    let (ms, runs) = timed(&net, shape.0, kind_of(precision), device);
    Ok(Measured {
        role: "teacher",
        arch,
        hidden,
        precision,
        params,
        bytes,
        ms,
        runs,
    })
}

/// The bytes of a TorchScript module's parameters and buffers.
fn scripted_bytes(file: &std::path::Path) -> Result<u64, String> {
    let m = kd_jit::Module::load(file, Device::Cpu)?;
    let mut all = m.parameters()?;
    all.extend(m.buffers()?);
    Ok(all
        .iter()
        .map(|(_, t)| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
        .sum())
}

/// A model's footprint before the machine's fields are added.
struct Measured {
    role: &'static str,
    arch: String,
    hidden: String,
    precision: Precision,
    params: u64,
    bytes: u64,
    ms: [f64; 2],
    runs: [usize; 2],
}

impl Measured {
    /// The footprint, with `base`'s machine fields.
    fn with(self, base: &Footprint) -> Footprint {
        Footprint {
            role: self.role.into(),
            arch: self.arch,
            hidden: self.hidden,
            precision: crate::config::enum_name(&self.precision),
            params: self.params,
            bytes: self.bytes,
            batch1_ms: self.ms[0],
            batch256_ms: self.ms[1],
            runs: self.runs,
            ..base.clone()
        }
    }
}

fn kind_of(p: Precision) -> Kind {
    match p {
        Precision::Fp32 => Kind::Float,
        Precision::Bf16 => Kind::BFloat16,
    }
}
