//! The teacher's cache files that are not its weights' training: its logits (read, or computed
//! and written), its cached weights loaded when they match their digest, and its training log
//! (see [`super::teacher`] for the layout of the cache).

use std::path::Path;

use kd_model_zoo::Net;
use kd_report::EpochRecord;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use crate::data::Tensors;
use crate::error::RunError;
use crate::track::Outputs;
use crate::train;

use super::cache_file::{check, record_digest, save_atomic, unverified, Check};

/// The teacher's training record, kept beside its cached weights so a reused teacher still
/// reports how it was trained.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct TeacherLog {
    pub(super) epochs: Vec<EpochRecord>,
    pub(super) best_epoch: Option<u32>,
    pub(super) wall_s: f64,
    /// Where its training continued from a checkpoint, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) resumed: Option<String>,
    /// The CPU model that finished its training (none in logs written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) cpu: Option<String>,
}

/// The teacher's logits, on the CPU.
#[derive(Debug)]
pub struct Logits {
    /// On every training image, `[n_train, classes]`: the students' soft targets.
    pub train: Tensor,
    /// On every test image, `[n_test, classes]`: what fidelity is measured against.
    pub test: Tensor,
    /// Training targets that depend on the temperature, as pseudo-logits per T (an ensemble
    /// averaged in probability, see `super::ensemble`); empty when `train` serves every T.
    pub tempered: Vec<(f64, Tensor)>,
}

/// Read the logits in `file` if it matches its digest and they were produced by the weights
/// named `name` (training logits under `name`, test logits under `name.test`) for these numbers
/// of rows; else say why not. A file of an older kd-sweep (no digest, or training logits only)
/// does not read, and is rewritten.
pub fn read_logits(
    file: &Path,
    name: &str,
    temperatures: &[f64],
    (train_rows, test_rows): (i64, i64),
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
    let tempered = temperatures
        .iter()
        .map(|&t| Ok((t, find(&tempered_name(name, t), train_rows)?)))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Logits {
        train: find(name, train_rows)?,
        test: find(&format!("{name}.test"), test_rows)?,
        tempered,
    })
}

/// The name of the training targets at `t` beside the logits `name` in a logits file.
pub fn tempered_name(name: &str, t: f64) -> String {
    format!("{name}@T={t}")
}

/// The teacher's logits on the training and test splits: from the cache when they were made by
/// these very weights (`name`) and match their digest, else computed now (saying why when a
/// file was there) and cached.
pub(super) fn logits(
    net: &Net,
    data: &Tensors,
    file: &Path,
    name: &str,
    progress: &mut Outputs,
) -> Result<Logits, RunError> {
    match read_logits(file, name, &[], (data.train.len(), data.test.len())) {
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
        tempered: vec![],
    };
    let test_name = format!("{name}.test");
    save_atomic(file, |tmp| {
        Tensor::save_multi(&[(name, &l.train), (test_name.as_str(), &l.test)], tmp)
    })?;
    Ok(l)
}

/// Load the cached weights `file` into `vs` when they match their digest; else say why (a
/// file of an older kd-sweep without one is loaded, and its digest recorded now).
pub(super) fn cached_weights(
    vs: &mut nn::VarStore,
    file: &Path,
    progress: &mut Outputs,
) -> Option<()> {
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
pub(super) fn read_log(file: &Path, progress: &mut Outputs) -> Option<TeacherLog> {
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
