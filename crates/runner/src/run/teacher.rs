//! The teacher and its cache: loaded from `teacher.checkpoint`, reused from the cache, or trained
//! (then cached), and its logits on the training split, computed once per teacher.
//!
//! Cache files, under `$KD_CACHE_DIR/teachers/`, named by the teacher id's hash:
//! `<hash>.ot` (weights), `<hash>.json` (its training record) and `<hash>.logits.pt`, whose one
//! tensor is named after the teacher id and the SHA-256 of the weights it came from, so logits
//! are only ever used with the teacher that produced them. Each of them has a `<file>.sha256`
//! beside it, the SHA-256 of its content written with it and checked on every load: weights
//! that do not match are trained again, logits computed again, a log left out, each with a
//! message naming the file. Every file is written through a temporary file of this process's
//! own and a rename, so sweeps sharing the cache never clobber each other.

use std::path::{Path, PathBuf};

use kd_model_zoo::Net;
use kd_report::{EpochRecord, Status, TrialRecord};
use serde::{Deserialize, Serialize};
use tch::{nn, Device};

use crate::data::{cache_root, file_digest, Tensors};
use crate::env::{now_rfc3339, select_device};
use crate::error::{io_err, model_err, torch_err, RunError};
use crate::plan::{Plan, TeacherPlan};
use crate::run::checkpoint;
use crate::track::Outputs;
use crate::train::{self, Outcome};
use std::time::Duration;

use super::cache_file::{save_atomic, write_verified};
use super::teacher_cache::{cached_weights, logits, read_log, TeacherLog};
pub use super::teacher_cache::{read_logits, Logits};

/// What the students need of the teacher, once it is trained or loaded.
#[derive(Debug)]
pub struct Teacher {
    pub record: TrialRecord,
    pub epochs: Vec<EpochRecord>,
    pub logits: Logits,
    /// Where the logits and weights are (workers read them there).
    pub files: TeacherFiles,
    /// Trained by this call (not loaded from the cache or a checkpoint).
    pub trained: bool,
}

/// Where a worker finds the teacher: its cached logits (under a name that ties them to the
/// weights that made them) and, for an online teacher, its weights and model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeacherFiles {
    pub logits: PathBuf,
    /// The name of the training logits in that file, `<teacher id>-<weights digest>`; the test
    /// logits are `<name>.test`.
    pub logits_name: String,
    pub weights: PathBuf,
    pub model: kd_model_zoo::ModelSpec,
    /// `weights` is a TorchScript module (`teacher.torchscript`), not weights for `model`.
    #[serde(default)]
    pub torchscript: bool,
    /// The temperatures whose training targets the file holds apart (an ensemble averaged in
    /// probability: `<name>@T=<t>`); empty when one tensor serves every T.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tempered: Vec<f64>,
    /// An ensemble's members and their weights (empty for a lone teacher): run online under
    /// the geometric rule, their logits averaged ([`Averaged`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<TeacherFiles>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_weights: Vec<f64>,
}

impl TeacherFiles {
    /// The logits, when the file matches its digest and holds those of these weights for
    /// `train_rows` and `test_rows` images; else why not.
    pub fn read_logits(&self, train_rows: i64, test_rows: i64) -> Result<Logits, String> {
        read_logits(
            &self.logits,
            &self.logits_name,
            &self.tempered,
            (train_rows, test_rows),
        )
    }

    /// The teacher's network on `device`, for online soft targets.
    pub fn load_net(
        &self,
        input: kd_model_zoo::InputShape,
        classes: usize,
        device: Device,
    ) -> Result<(nn::VarStore, Net), RunError> {
        let mut vs = nn::VarStore::new(device);
        if !self.members.is_empty() {
            let members = self
                .members
                .iter()
                .map(|m| m.load_net(input, classes, device))
                .collect::<Result<Vec<_>, _>>()?;
            let weights = self.member_weights.clone();
            return Ok((vs, Net::new(Averaged { members, weights })));
        }
        if self.torchscript {
            let net = scripted(&self.weights, device, input, classes)?;
            return Ok((vs, net));
        }
        let net = self
            .model
            .build(&vs, input, classes)
            .map_err(model_err("teacher.model"))?;
        vs.load(&self.weights).map_err(torch_err(&self.weights))?;
        Ok((vs, net))
    }
}

/// An ensemble run online under the geometric rule: its members' logits (each in eval mode)
/// averaged with their weights, one teacher's logits to every objective.
#[derive(Debug)]
struct Averaged {
    members: Vec<(nn::VarStore, Net)>,
    weights: Vec<f64>,
}

impl kd_model_zoo::Layers for Averaged {
    fn forward_t(&self, xs: &tch::Tensor, _train: bool) -> tch::Tensor {
        use tch::nn::ModuleT;
        let mut out: Option<tch::Tensor> = None;
        for ((_, net), w) in self.members.iter().zip(&self.weights) {
            let v = net.forward_t(xs, false) * *w;
            out = Some(match out {
                Some(o) => o + v,
                None => v,
            });
        }
        out.expect("an ensemble has members")
    }

    fn linears(&self) -> &[nn::Linear] {
        &[]
    }
}

/// The TorchScript teacher in `file`, loaded on `device` in eval mode.
fn scripted(
    file: &Path,
    device: Device,
    input: kd_model_zoo::InputShape,
    classes: usize,
) -> Result<Net, RunError> {
    kd_model_zoo::Scripted::load(file, device, input, classes)
        .map(kd_model_zoo::Scripted::into_net)
        .map_err(|reason| RunError::TorchScript {
            file: file.to_path_buf(),
            reason,
        })
}

pub(super) fn teachers_dir() -> PathBuf {
    cache_root().join("teachers")
}

/// Hold the teacher's lock in the cache (`<hash>.lock`, `flock`), waiting while another sweep
/// or shard holds it: that one trains (or loads) and caches the teacher, and this one then
/// reuses it. The kernel releases the lock when its holder ends, however it ends.
pub fn lock_cache(plan: &Plan, progress: &mut Outputs) -> Result<std::fs::File, RunError> {
    lock_member(&plan.teacher, progress)
}

/// [`lock_cache`] for lone teacher `t` (an ensemble's member: one lock each).
pub fn lock_member(t: &TeacherPlan, progress: &mut Outputs) -> Result<std::fs::File, RunError> {
    let dir = teachers_dir();
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let path = dir.join(format!("{}.lock", t.hash()));
    let f = kd_report::store::open_lock(&path).map_err(io_err(&path))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            progress.note(&format!(
                "teacher: another sweep holds {}; waiting for it to train or cache the teacher",
                path.display()
            ));
            f.lock().map_err(io_err(&path))?;
            Ok(f)
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(&path)(e)),
    }
}

/// Whether the teacher of `plan` has its weights and logits in the cache.
pub fn is_cached(plan: &Plan) -> bool {
    let dir = teachers_dir();
    let h = plan.teacher.hash();
    dir.join(format!("{h}.ot")).exists() && dir.join(format!("{h}.logits.pt")).exists()
}

/// Why a teacher's outputs are NaN or infinite: one trained here diverged (its learning rate);
/// one loaded from `teacher.torchscript` or `teacher.checkpoint` came so from its file, which
/// is bad input (it has no `teacher.train` here to change).
fn not_finite(t: &crate::plan::TeacherPlan, e: train::NonFinite) -> RunError {
    let (file, key) = match (&t.torchscript, &t.cfg.checkpoint) {
        (Some(s), _) => (s.file.clone(), "teacher.torchscript"),
        (None, Some(ckpt)) => (ckpt.clone(), "teacher.checkpoint"),
        (None, None) => return RunError::TeacherDiverged(e.0),
    };
    RunError::TeacherNotFinite {
        file,
        key,
        message: e.0,
    }
}

/// A warning for a teacher at or below chance accuracy on the test set (an untrained export,
/// a checkpoint of another task, inputs it does not expect): its soft targets carry nothing to
/// distil, though every student trains on them. Students get theirs in `out_store.rs`.
fn chance_warning(t: &crate::plan::TeacherPlan, r: &TrialRecord, classes: usize) -> Option<String> {
    let chance = 1.0 / classes.max(1) as f64;
    let acc = r.test_acc?;
    if r.status != Status::Ok || acc > chance {
        return None;
    }
    let check = match (&t.torchscript, &t.cfg.checkpoint) {
        (Some(s), _) => format!(
            "check teacher.torchscript ({}): is it trained, on this dataset, and does it take \
             standardised [batch, C, H, W] images?",
            s.file.display()
        ),
        (None, Some(c)) => format!(
            "check teacher.checkpoint ({}): does it hold trained weights of this teacher.model \
             for this dataset?",
            c.display()
        ),
        (None, None) => "check teacher.train (epochs, optimizer, lr)".into(),
    };
    Some(format!(
        "warning: the teacher {} is at {:.2}% test accuracy, at or below chance ({:.2}%, \
         {classes} classes): its soft targets carry nothing to distil; {check}",
        r.trial_id,
        100.0 * acc,
        100.0 * chance
    ))
}

/// A loaded teacher evaluated here; its training accuracy comes from its logits on the training
/// split, which the students need anyway: one pass over it, not two. Its epochs, best epoch and
/// wall time come from `log`, the record of the run that trained it, where there is one.
fn eval_only(
    t: &TeacherPlan,
    net: &Net,
    data: &Tensors,
    logits: &Logits,
    log: Option<TeacherLog>,
) -> Result<Outcome, RunError> {
    let fail = |e: train::NonFinite| not_finite(t, e);
    let test = train::evaluate(net, &data.test).map_err(fail)?;
    let val = train::evaluate(net, &data.val).map_err(fail)?;
    Ok(Outcome {
        status: Status::Ok,
        train_acc: Some(train::accuracy(&logits.train, &data.train.y).0),
        val_acc: val.map(|v| v.0),
        test_acc: test.map(|v| v.0),
        test_errors: test.map(|v| v.1),
        best_epoch: log.as_ref().and_then(|r| r.best_epoch),
        wall_s: log.as_ref().map_or(0.0, |r| r.wall_s),
        resumed: log.as_ref().and_then(|r| r.resumed.clone()),
        cpu: log.as_ref().and_then(|r| r.cpu.clone()),
        epochs: log.map_or_else(Vec::new, |r| r.epochs),
        message: None,
        finished_at: now_rfc3339(),
        measures: Default::default(),
        model_file: None,
    })
}

/// Train the teacher (continuing from its checkpoint) and cache its weights and training log
/// by its id's hash; the checkpoint then goes. A teacher that diverged is an error.
fn train_and_cache(
    t: &TeacherPlan,
    net: &Net,
    vs: &nn::VarStore,
    data: &Tensors,
    every: Option<Duration>,
    progress: &mut Outputs,
) -> Result<Outcome, RunError> {
    let dir = teachers_dir();
    progress.start_trial(0, "teacher", t.cfg.train.epochs as u64);
    let ckpt = dir.join(format!("{}.ckpt", t.hash()));
    let outcome = super::teacher_train::train_teacher(t, net, vs, data, &ckpt, every, progress)?;
    if outcome.status != Status::Ok {
        return Err(RunError::TeacherDiverged(
            outcome.message.unwrap_or_else(|| "not finite".into()),
        ));
    }
    save_atomic(&dir.join(format!("{}.ot", t.hash())), |tmp| vs.save(tmp))?;
    let log = TeacherLog {
        epochs: outcome.epochs.clone(),
        best_epoch: outcome.best_epoch,
        wall_s: outcome.wall_s,
        resumed: outcome.resumed.clone(),
        cpu: outcome.cpu.clone(),
    };
    let log_file = dir.join(format!("{}.json", t.hash()));
    write_verified(&log_file, &serde_json::to_vec(&log).expect("serialises"))?;
    // The cache entry is written: the checkpoint has served.
    checkpoint::remove(&ckpt);
    Ok(outcome)
}

/// Get the teacher of `plan`: from `teacher.torchscript` or `teacher.checkpoint`, from the
/// cache, or by training it (continuing from its checkpoint, and writing one every `every`).
pub fn obtain(
    plan: &Plan,
    data: &Tensors,
    every: Option<Duration>,
    progress: &mut Outputs,
) -> Result<Teacher, RunError> {
    obtain_one(plan, &plan.teacher, data, every, progress).map(|(t, _)| t)
}

/// Where teacher `t`'s weights come from, loaded into `vs` (or trained there): its TorchScript
/// file, its checkpoint, the cache, or training (then cached); the outcome of a training here.
fn weights_of(
    t: &TeacherPlan,
    (net, vs): (&Net, &mut nn::VarStore),
    (data, input): (&Tensors, kd_model_zoo::InputShape),
    every: Option<Duration>,
    progress: &mut Outputs,
) -> Result<(Option<Outcome>, PathBuf), RunError> {
    let cached = teachers_dir().join(format!("{}.ot", t.hash()));
    if let Some(s) = &t.torchscript {
        progress.note(&format!(
            "teacher: loaded TorchScript {} ({} parameters), run in eval mode",
            s.file.display(),
            s.params
        ));
        Ok((None, s.file.clone()))
    } else if let Some(ckpt) = &t.cfg.checkpoint {
        kd_model_zoo::load_weights(vs, ckpt).map_err(|reason| RunError::CheckpointLoad {
            file: ckpt.clone(),
            expected: format!(
                "teacher.model = {} {} on {}x{} inputs",
                t.cfg.model.arch(),
                t.cfg.model.shape_label(),
                input.height,
                input.width
            ),
            reason,
        })?;
        progress.note(&format!("teacher: loaded {}", ckpt.display()));
        Ok((None, ckpt.clone()))
    } else if let Some(()) = cached_weights(vs, &cached, progress) {
        progress.note(&format!("teacher: reused cached {}", cached.display()));
        Ok((None, cached))
    } else {
        let outcome = train_and_cache(t, net, vs, data, every, progress)?;
        Ok((Some(outcome), cached))
    }
}

/// [`obtain`] for lone teacher `t` of `plan` (its teacher, or a member of its ensemble), with
/// its network in eval mode.
pub fn obtain_one(
    plan: &Plan,
    t: &TeacherPlan,
    data: &Tensors,
    every: Option<Duration>,
    progress: &mut Outputs,
) -> Result<(Teacher, Net), RunError> {
    let (input, classes) = (plan.data.input, plan.data.classes);
    let device = select_device(&t.slot.device)?;
    let mut vs = nn::VarStore::new(device);
    // Before the seed: it seeds libtorch itself (once per process).
    crate::train::snapshot::probe_draws();
    tch::manual_seed(t.cfg.seed as i64);
    let net = match &t.torchscript {
        Some(s) => scripted(&s.file, device, input, classes)?,
        None => t
            .cfg
            .model
            .build(&vs, input, classes)
            .map_err(model_err("teacher.model"))?,
    };
    let dir = teachers_dir();
    let log_file = dir.join(format!("{}.json", t.hash()));
    let logits_file = dir.join(format!("{}.logits.pt", t.hash()));
    let (outcome, weights_file) = weights_of(t, (&net, &mut vs), (data, input), every, progress)?;
    let digest = file_digest(&weights_file)?;
    let logits_name = format!("{}-{}", t.id, &digest[..16]);
    let logits = logits(&net, data, &logits_file, &logits_name, progress)?;
    let trained = outcome.is_some();
    let outcome = match outcome {
        // A teacher trained in bfloat16 ends as its float32 masters: those are cached and give
        // the students' logits, so its accuracies are theirs (as when it is reused), while its
        // epochs stay the bfloat16 model's as trained.
        Some(o) if t.cfg.train.precision != crate::config::Precision::Fp32 => {
            let f32 = eval_only(t, &net, data, &logits, None)?;
            Outcome {
                train_acc: f32.train_acc,
                val_acc: f32.val_acc,
                test_acc: f32.test_acc,
                test_errors: f32.test_errors,
                ..o
            }
        }
        Some(o) => o,
        None => {
            let trained_here = t.cfg.checkpoint.is_none() && t.torchscript.is_none();
            let log = trained_here
                .then(|| read_log(&log_file, progress))
                .flatten();
            eval_only(t, &net, data, &logits, log)?
        }
    };
    let record = plan.teacher_record_of(t, &outcome, &t.slot);
    progress.finish_trial(0, &record, &outcome.epochs);
    if let Some(w) = chance_warning(t, &record, plan.data.classes) {
        progress.note(&w);
    }
    let teacher = Teacher {
        record,
        epochs: outcome.epochs,
        logits,
        files: TeacherFiles {
            logits: logits_file,
            logits_name,
            weights: weights_file,
            model: t.cfg.model.clone(),
            torchscript: t.torchscript.is_some(),
            tempered: vec![],
            members: vec![],
            member_weights: vec![],
        },
        trained,
    };
    Ok((teacher, net))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kd_model_zoo::{Init, InputShape, MlpSpec, ModelSpec};
    use tch::{Kind, Tensor};

    /// An ensemble's online teacher (geometric rule) gives its members' logits averaged with
    /// their weights, each member loaded from its cached weights in eval mode (dropout off).
    #[test]
    fn an_online_ensemble_averages_its_members_logits() {
        let _l = crate::torch_lock();
        let dir = tempfile::tempdir().unwrap();
        let input = InputShape {
            channels: 1,
            height: 4,
            width: 4,
        };
        let x = Tensor::randn([7, 1, 4, 4], (Kind::Float, Device::Cpu));
        let mut want = Tensor::zeros([7, 3], (Kind::Float, Device::Cpu));
        let weights = [0.25, 0.75];
        let mut members = vec![];
        for (i, w) in weights.iter().enumerate() {
            let model = ModelSpec::Mlp(MlpSpec {
                hidden: vec![8],
                dropout: 0.5,
                input_dropout: 0.0,
                init: Init::Torch,
            });
            let vs = nn::VarStore::new(Device::Cpu);
            let net = model.build(&vs, input, 3).unwrap();
            let file = dir.path().join(format!("{i}.ot"));
            vs.save(&file).unwrap();
            want += train::predict(&net, &x, 1000) * *w;
            members.push(TeacherFiles {
                logits: PathBuf::new(),
                logits_name: String::new(),
                weights: file,
                model,
                torchscript: false,
                tempered: vec![],
                members: vec![],
                member_weights: vec![],
            });
        }
        let ensemble = TeacherFiles {
            weights: PathBuf::new(),
            member_weights: weights.to_vec(),
            ..members[0].clone()
        };
        let ensemble = TeacherFiles {
            members,
            ..ensemble
        };
        let (_vs, net) = ensemble.load_net(input, 3, Device::Cpu).unwrap();
        let got = tch::nn::ModuleT::forward_t(&net, &x, true);
        let d = (&got - &want).abs().max().double_value(&[]);
        assert!(d < 1e-6, "differs by {d}");
    }
}
