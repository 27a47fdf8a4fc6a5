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
use tch::{nn, Device, Tensor};

use crate::data::{cache_root, file_digest, Tensors};
use crate::env::{now_rfc3339, select_device};
use crate::error::{io_err, model_err, torch_err, RunError};
use crate::plan::{Plan, TeacherPlan};
use crate::run::checkpoint;
use crate::track::Outputs;
use crate::train::{self, Outcome};
use std::time::Duration;

use super::cache_file::{check, record_digest, save_atomic, unverified, write_verified, Check};

/// The teacher's training record, kept beside its cached weights so a reused teacher still
/// reports how it was trained.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TeacherLog {
    epochs: Vec<EpochRecord>,
    best_epoch: Option<u32>,
    wall_s: f64,
    /// Where its training continued from a checkpoint, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resumed: Option<String>,
    /// The CPU model that finished its training (none in logs written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cpu: Option<String>,
}

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

/// The teacher's logits, on the CPU.
#[derive(Debug)]
pub struct Logits {
    /// On every training image, `[n_train, classes]`: the students' soft targets.
    pub train: Tensor,
    /// On every test image, `[n_test, classes]`: what fidelity is measured against.
    pub test: Tensor,
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
}

impl TeacherFiles {
    /// The logits, when the file matches its digest and holds those of these weights for
    /// `train_rows` and `test_rows` images; else why not.
    pub fn read_logits(&self, train_rows: i64, test_rows: i64) -> Result<Logits, String> {
        read_logits(&self.logits, &self.logits_name, train_rows, test_rows)
    }

    /// The teacher's network on `device`, for online soft targets.
    pub fn load_net(
        &self,
        input: kd_model_zoo::InputShape,
        classes: usize,
        device: Device,
    ) -> Result<(nn::VarStore, Net), RunError> {
        let mut vs = nn::VarStore::new(device);
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

fn teachers_dir() -> PathBuf {
    cache_root().join("teachers")
}

/// Hold the teacher's lock in the cache (`<hash>.lock`, `flock`), waiting while another sweep
/// or shard holds it: that one trains (or loads) and caches the teacher, and this one then
/// reuses it. The kernel releases the lock when its holder ends, however it ends.
pub fn lock_cache(plan: &Plan, progress: &mut Outputs) -> Result<std::fs::File, RunError> {
    let dir = teachers_dir();
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let path = dir.join(format!("{}.lock", plan.teacher.hash()));
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

/// Read the logits in `file` if it matches its digest and they were produced by the weights
/// named `name` (training logits under `name`, test logits under `name.test`) for these numbers
/// of rows; else say why not. A file of an older kd-sweep (no digest, or training logits only)
/// does not read, and is rewritten.
pub fn read_logits(
    file: &Path,
    name: &str,
    train_rows: i64,
    test_rows: i64,
) -> Result<Logits, String> {
    if !file.exists() {
        return Err("not computed yet".into());
    }
    if let Some(why) = unverified(file) {
        return Err(why);
    }
    let named = Tensor::load_multi(file)
        .map_err(|e| format!("unreadable ({})", kd_model_zoo::torch_message(&e)))?;
    let find = |want: &str, rows: i64| {
        named
            .iter()
            .find(|(n, t)| n == want && t.size().len() == 2 && t.size()[0] == rows)
            .map(|(_, t)| t.shallow_clone())
            .ok_or_else(|| format!("holds no logits `{want}` of {rows} images"))
    };
    Ok(Logits {
        train: find(name, train_rows)?,
        test: find(&format!("{name}.test"), test_rows)?,
    })
}

/// The teacher's logits on the training and test splits: from the cache when they were made by
/// these very weights (`name`) and match their digest, else computed now (saying why when a
/// file was there) and cached.
fn logits(
    net: &Net,
    data: &Tensors,
    file: &Path,
    name: &str,
    progress: &mut Outputs,
) -> Result<Logits, RunError> {
    match read_logits(file, name, data.train.len(), data.test.len()) {
        Ok(l) => return Ok(l),
        Err(why) if file.exists() => progress.note(&format!(
            "teacher: cached logits {} not used: {why}; computing them again",
            file.display()
        )),
        Err(_) => {}
    }
    let l = Logits {
        train: train::predict(net, &data.train.x, 1000).to_device(Device::Cpu),
        test: train::predict(net, &data.test.x, 1000).to_device(Device::Cpu),
    };
    let test_name = format!("{name}.test");
    save_atomic(file, |tmp| {
        Tensor::save_multi(&[(name, &l.train), (test_name.as_str(), &l.test)], tmp)
    })?;
    Ok(l)
}

/// Load the cached weights `file` into `vs` when they match their digest; else say why (a
/// file of an older kd-sweep without one is loaded, and its digest recorded now).
fn cached_weights(vs: &mut nn::VarStore, file: &Path, progress: &mut Outputs) -> Option<()> {
    if !file.is_file() {
        return None;
    }
    let retrain = |progress: &mut Outputs, why: String| {
        progress.note(&format!(
            "teacher: cached weights {} not used: {why}; training the teacher again",
            file.display()
        ));
        None
    };
    let checked = check(file);
    if let Check::Bad(why) = checked {
        return retrain(progress, why);
    }
    if let Err(e) = vs.load(file) {
        return retrain(
            progress,
            format!("it does not load ({})", kd_model_zoo::torch_message(&e)),
        );
    }
    if checked == Check::Legacy {
        // Written before cache files carried digests: it loaded into this very model, so it is
        // taken, and its digest recorded for every later load.
        if record_digest(file, file).is_ok() {
            progress.note(&format!(
                "teacher: {} had no digest (an older kd-sweep's cache); recorded it now",
                file.display()
            ));
        }
    }
    Some(())
}

/// The cached training log `file`, when it reads and matches its digest (else none, saying why
/// when it is there: the teacher is reported without its epochs).
fn read_log(file: &Path, progress: &mut Outputs) -> Option<TeacherLog> {
    if !file.exists() {
        return None;
    }
    let checked = check(file);
    let read = match &checked {
        Check::Bad(why) => Err(why.clone()),
        _ => std::fs::read(file)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<TeacherLog>(&b).map_err(|e| e.to_string())),
    };
    match read {
        Ok(log) => {
            if checked == Check::Legacy {
                let _ = record_digest(file, file);
            }
            Some(log)
        }
        Err(why) => {
            progress.note(&format!(
                "teacher: its training log {} not used ({why}); the teacher is reported without \
                 its epochs",
                file.display()
            ));
            None
        }
    }
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
    plan: &Plan,
    net: &Net,
    vs: &nn::VarStore,
    data: &Tensors,
    every: Option<Duration>,
    progress: &mut Outputs,
) -> Result<Outcome, RunError> {
    let t = &plan.teacher;
    let dir = teachers_dir();
    progress.start_trial(0, "teacher", t.cfg.train.epochs as u64);
    let ckpt = dir.join(format!("{}.ckpt", t.hash()));
    let outcome = super::teacher_train::train_teacher(plan, net, vs, data, &ckpt, every, progress)?;
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
    let t = &plan.teacher;
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
    let cached = dir.join(format!("{}.ot", t.hash()));
    let log_file = dir.join(format!("{}.json", t.hash()));
    let logits_file = dir.join(format!("{}.logits.pt", t.hash()));
    let (outcome, weights_file) = if let Some(s) = &t.torchscript {
        progress.note(&format!(
            "teacher: loaded TorchScript {} ({} parameters), run in eval mode",
            s.file.display(),
            s.params
        ));
        (None, s.file.clone())
    } else if let Some(ckpt) = &t.cfg.checkpoint {
        kd_model_zoo::load_weights(&mut vs, ckpt).map_err(|reason| RunError::CheckpointLoad {
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
        (None, ckpt.clone())
    } else if let Some(()) = cached_weights(&mut vs, &cached, progress) {
        progress.note(&format!("teacher: reused cached {}", cached.display()));
        (None, cached.clone())
    } else {
        let outcome = train_and_cache(plan, &net, &vs, data, every, progress)?;
        (Some(outcome), cached.clone())
    };
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
    let record = plan.teacher_record(&outcome, &t.slot);
    progress.finish_trial(0, &record, &outcome.epochs);
    if let Some(w) = chance_warning(t, &record, plan.data.classes) {
        progress.note(&w);
    }
    Ok(Teacher {
        record,
        epochs: outcome.epochs,
        logits,
        files: TeacherFiles {
            logits: logits_file,
            logits_name,
            weights: weights_file,
            model: t.cfg.model.clone(),
            torchscript: t.torchscript.is_some(),
        },
        trained,
    })
}

#[cfg(test)]
mod tests {
    use super::TeacherLog;

    /// A reused teacher reports the numbers it was trained with to the last bit: serde_json
    /// parses floats exactly (its `float_roundtrip` feature; without it 0.9122811846733093
    /// came back as ...092, so a cached teacher's record differed from a fresh one by 1 ulp).
    #[test]
    fn the_cached_log_keeps_every_float() {
        let losses = [
            0.912_281_184_673_309_3,
            0.1 + 0.2,
            1.0 / 3.0,
            2.225e-308,
            5e-324,
        ];
        let epochs = losses
            .iter()
            .enumerate()
            .map(|(i, &l)| kd_report::EpochRecord {
                trial_id: "teacher-x".into(),
                epoch: i as u32 + 1,
                train_loss: l,
                soft_loss: None,
                hard_loss: l / 7.0,
                train_acc: 0.5,
                val_acc: Some(l.sqrt()),
                test_acc: None,
                lr: 1e-3,
                seconds: 0.1,
            })
            .collect();
        let log = TeacherLog {
            epochs,
            best_epoch: Some(1),
            wall_s: 1.5,
            resumed: None,
            cpu: None,
        };
        let back: TeacherLog = serde_json::from_slice(&serde_json::to_vec(&log).unwrap()).unwrap();
        for (a, b) in log.epochs.iter().zip(&back.epochs) {
            assert_eq!(a.train_loss.to_bits(), b.train_loss.to_bits(), "{a:?}");
            assert_eq!(a.hard_loss.to_bits(), b.hard_loss.to_bits(), "{a:?}");
            assert_eq!(a.val_acc.map(f64::to_bits), b.val_acc.map(f64::to_bits));
        }
    }
}
