//! The plan: every trial of a sweep decided once, with its final id, kind, seed, student, KD
//! weights, paired baseline, teacher, execution class and data. `kd sweep`, `--dry-run`, resume
//! and the workers all read this one plan; nothing recomputes a trial's facts elsewhere.
//!
//! A trial id is a content hash of everything that changes its numbers: the resolved model
//! (initialisation included) and training keys, the KD weights (KD trials), the data's content
//! fingerprint, split and transfer rows, the teacher's id (KD trials), and the execution class
//! (device kind, CPU ISA class and threads or GPU model, libtorch version). A baseline and the KD
//! trials it is paired with always share their execution class: the plan assigns each group
//! (one student config and seed) to one class.

use kd_loss::KdWeights;
use kd_report::{Exec, Kind, Value};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Pack, Resolved, StudentCfg, TeacherCfg};
use crate::data::{file_digest, Data, DataPlan};
use crate::env::{self, DeviceKind, ExecClass, Slot};
use crate::error::{model_err, RunError};

mod describe;
pub mod ensemble;
pub(crate) mod records;
mod shard;
mod trials;
mod unique;

pub use shard::Shard;

/// Short content hash (SHA-256 of the canonical JSON, 12 hex digits).
pub fn content_hash(v: &impl Serialize) -> String {
    let json = serde_json::to_vec(v).expect("hash inputs serialise");
    hex::encode(&Sha256::digest(&json)[..6])
}

/// The teacher of the sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeacherPlan {
    pub id: String,
    pub cfg: TeacherCfg,
    /// Where it trains (or where a loaded one computes its logits): the sweep process.
    pub slot: Slot,
    /// SHA-256 of `teacher.checkpoint`, which stands in its id for the training keys.
    pub checkpoint_digest: Option<String>,
    /// A `teacher.torchscript` teacher, as loaded once at plan time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torchscript: Option<ScriptedTeacher>,
    /// An ensemble's rule and weights (none: a lone teacher); `cfg` is then its first member's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<ensemble::Combination>,
    /// An ensemble's members, each planned as a lone teacher (empty for a lone teacher).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<TeacherPlan>,
}

/// A TorchScript teacher: its file, the file's SHA-256 (in the teacher id, standing for the
/// model and training keys) and its parameter count, read when the plan is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptedTeacher {
    pub file: std::path::PathBuf,
    pub digest: String,
    pub params: u64,
}

impl ScriptedTeacher {
    /// Load `file` on the CPU and check it gives `classes` logits for `input` images.
    fn read(
        file: &std::path::Path,
        input: kd_model_zoo::InputShape,
        classes: usize,
    ) -> Result<ScriptedTeacher, RunError> {
        let digest = file_digest(file).map_err(|e| match e {
            RunError::Io { file, source } => RunError::CheckpointRead { file, source },
            other => other,
        })?;
        let module = kd_model_zoo::Scripted::load(file, tch::Device::Cpu, input, classes).map_err(
            |reason| RunError::TorchScript {
                file: file.to_path_buf(),
                reason,
            },
        )?;
        Ok(ScriptedTeacher {
            file: file.to_path_buf(),
            digest,
            params: module.params() as u64,
        })
    }
}

impl TeacherPlan {
    /// The id's hash part, which names the teacher's files in the cache.
    pub fn hash(&self) -> &str {
        self.id.trim_start_matches("teacher-")
    }
}

/// One student trial, as a worker receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedTrial {
    /// Its position in [`Plan::trials`].
    pub index: usize,
    pub id: String,
    pub kind: Kind,
    pub seed: u64,
    pub student: StudentCfg,
    /// What it trains on: the cell's KD weights, or hard targets only for a baseline.
    pub weights: KdWeights,
    pub teacher_id: Option<String>,
    pub baseline_id: Option<String>,
    /// The grid values of its cell whose key is not a record column, typed.
    pub swept: Vec<(String, Value)>,
    /// Index into [`Plan::classes`]: only a slot of this class may run it.
    pub class: usize,
    /// Trained alone or in a pack (MLP students unless `pack: off`); part of the id.
    pub exec: Exec,
}

/// Every trial of a sweep and where each may run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub data: DataPlan,
    pub teacher: TeacherPlan,
    /// Student trials in run order: per seed, per cell, the cell's baseline (once per student
    /// config and seed) then the KD trial.
    pub trials: Vec<PlannedTrial>,
    /// The places student trials run: one slot trains in the sweep process, more are workers.
    pub slots: Vec<Slot>,
    /// The distinct execution classes of the slots.
    pub classes: Vec<ExecClass>,
    /// `pack` as configured.
    pub pack: Pack,
    /// `workers` as configured: [`Plan::slots`] holds no more than one per student trial.
    pub workers: usize,
    /// A line per trial that several grid cells planned (cells that differ only in keys their
    /// objective does not use): it is planned and trained once, under the first cell.
    pub merged: Vec<String>,
}

/// A YAML grid value as a typed record value (a list of widths reads `800-800`).
fn typed(v: &serde_yaml::Value) -> Value {
    match v {
        serde_yaml::Value::Bool(b) => Value::Bool(*b),
        serde_yaml::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        other => Value::Str(crate::config::value_text(other)),
    }
}

/// The student slots: `workers` of them, worker i on `device[i % len]`, each with `threads`
/// threads (`null`: the cores shared among the workers).
fn student_slots(cfg: &Resolved) -> Result<Vec<Slot>, RunError> {
    let threads = cfg
        .threads
        .unwrap_or((env::cores() / cfg.workers.max(1)).max(1));
    (0..cfg.workers.max(1))
        .map(|i| env::slot(&cfg.device[i % cfg.device.len()], threads))
        .collect()
}

/// `train.cudnn_benchmark` with `device: auto` (accepted by the config): the role's slots must
/// have resolved to CUDA here, else the key is refused as the config would refuse `device: cpu`.
fn check_cudnn_resolved(cfg: &Resolved, teacher: &Slot, students: &[Slot]) -> Result<(), RunError> {
    let cuda = |s: &Slot| s.class.kind == env::DeviceKind::Cuda;
    let student = cfg.cells.iter().any(|c| c.student.train.cudnn_benchmark);
    let members = cfg.ensemble.as_ref().map_or(&[][..], |e| &e.members[..]);
    let teacher_asks =
        cfg.teacher.train.cudnn_benchmark || members.iter().any(|m| m.train.cudnn_benchmark);
    for (asks, ok, key) in [
        (teacher_asks, cuda(teacher), "teacher.train.cudnn_benchmark"),
        (
            student,
            students.iter().any(cuda),
            "student.train.cudnn_benchmark",
        ),
    ] {
        if asks && !ok {
            return Err(RunError::Device {
                key: key.into(),
                message: format!(
                    "needs a CUDA device, and `device: {}` resolved to the CPU here (cuDNN does \
                     not run on the CPU); remove the key or run where `kd doctor` shows CUDA",
                    cfg.device.join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// The classes of `slots`, in first-seen order, and the class of each slot.
fn classes_of(slots: &[Slot]) -> (Vec<ExecClass>, Vec<usize>) {
    let mut classes: Vec<ExecClass> = Vec::new();
    let of_slot = slots
        .iter()
        .map(|s| match classes.iter().position(|c| *c == s.class) {
            Some(i) => i,
            None => {
                classes.push(s.class.clone());
                classes.len() - 1
            }
        })
        .collect();
    (classes, of_slot)
}

/// The class of each group (a student config and seed: a baseline and its KD cells), round
/// robin over the slots so that each class gets groups in proportion to its slots.
pub fn assign_groups(groups: usize, slot_classes: &[usize]) -> Vec<usize> {
    (0..groups)
        .map(|g| slot_classes[g % slot_classes.len().max(1)])
        .collect()
}

impl Plan {
    /// Plan the sweep of `cfg` over `data` on this machine.
    pub fn build(cfg: &Resolved, data: &Data) -> Result<Plan, RunError> {
        let d = &data.plan;
        let members = cfg.ensemble.as_ref().map_or(&[][..], |e| &e.members[..]);
        // `ensemble: K` members share the block's model; listed members have their own.
        let shared = members.iter().all(|m| m.model == cfg.teacher.model);
        for (i, t) in members.iter().enumerate().filter(|_| !shared) {
            let key = format!("teacher.members[{i}].model");
            t.model.validate(d.input).map_err(model_err(&key))?;
        }
        cfg.teacher
            .model
            .validate(d.input)
            .map_err(model_err("teacher.model"))?;
        for cell in &cfg.cells {
            cell.student
                .model
                .validate(d.input)
                .map_err(model_err("student.model"))?;
        }
        let teacher = match &cfg.ensemble {
            Some(e) => ensemble::ensemble_plan(cfg, e, d)?,
            None => trials::teacher_plan_of(cfg, &cfg.teacher, d)?,
        };
        let teacher_id = teacher.id.clone();
        let slots = student_slots(cfg)?;
        check_cudnn_resolved(cfg, &teacher.slot, &slots)?;
        let (classes, slot_class) = classes_of(&slots);

        let (mut trials, groups, group_of) = trials::planned(cfg, &teacher_id);
        trials::read_scripted_students(&mut trials, d)?;
        let group_class = assign_groups(groups, &slot_class);
        for (t, &g) in trials.iter_mut().zip(&group_of) {
            t.class = group_class[g];
            t.exec = exec_of(cfg.pack, t, &classes[t.class], d);
            t.id = trial_id(t, d, &classes[t.class]);
        }
        trials::pair_baselines(&mut trials, &group_of);
        let merged = unique::one_trial_per_id(&mut trials);
        // A slot beyond one per student trial never starts (`pool::run` starts one per pending
        // trial of its class at most); its threads stay those `workers` asked for (trial ids
        // keep them), and the groups' classes are unchanged (there are no more groups than
        // trials).
        let mut slots = slots;
        slots.truncate(trials.len().max(1));
        Ok(Plan {
            name: cfg.name.clone(),
            data: d.clone(),
            teacher,
            trials,
            slots,
            classes,
            pack: cfg.pack,
            workers: cfg.workers,
            merged,
        })
    }

    /// The units of work among `pending` trials, in plan order: a packed trial goes with the
    /// pending trials of its pack key (class, student model and training, soft-loss form), at
    /// most the pack size together and split evenly enough that every slot of the class gets
    /// a unit; a single trial is a unit of its own. A student's numbers do not depend on its
    /// pack mates, so resume may pack the remaining trials differently.
    pub fn units(&self, pending: &[usize]) -> Vec<Vec<usize>> {
        let mut units: Vec<Vec<usize>> = Vec::new();
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for &i in pending {
            let t = &self.trials[i];
            if t.exec == Exec::Single {
                units.push(vec![i]);
                continue;
            }
            // Baselines pack with the KD trials of their student, in the KD trials' form.
            let key = serde_json::to_string(&(
                t.class,
                &t.student,
                self.soft_form_of(t),
                self.targets_temperature(t),
            ))
            .expect("a student config serialises");
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, members)) => members.push(i),
                None => groups.push((key, vec![i])),
            }
        }
        for (_, members) in groups {
            let first = &self.trials[members[0]];
            let slots = self
                .slots
                .iter()
                .filter(|s| s.class == self.classes[first.class])
                .count()
                .max(1);
            let cap = self
                .pack_size(first)
                .min(members.len().div_ceil(slots))
                .max(1);
            let packs = members.len().div_ceil(cap);
            // `packs` units of nearly equal size, in plan order.
            let mut start = 0;
            for p in 0..packs {
                let size = members.len() / packs + usize::from(p < members.len() % packs);
                units.push(members[start..start + size].to_vec());
                start += size;
            }
        }
        units.sort_by_key(|u| u[0]);
        units
    }

    /// The trials of `shard`: the units of the whole plan (as [`Plan::units`] cuts them with
    /// nothing finished, so the share never depends on what is done), the k-th to shard
    /// k mod N. A pack never splits across shards, and every trial is in exactly one.
    pub fn shard_trials(&self, shard: Shard) -> Vec<usize> {
        let all: Vec<usize> = (0..self.trials.len()).collect();
        let mut mine: Vec<usize> = self
            .units(&all)
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % shard.count == shard.index)
            .flat_map(|(_, u)| u)
            .collect();
        mine.sort_unstable();
        mine
    }

    /// The soft-loss form of the KD trials of `t`'s student (what its pack computes).
    fn soft_form_of(&self, t: &PlannedTrial) -> &'static str {
        if t.kind == Kind::Kd {
            return t.weights.soft_loss.as_str();
        }
        self.trials
            .iter()
            .find(|o| o.kind == Kind::Kd && o.student == t.student && o.class == t.class)
            .map_or("ce", |o| o.weights.soft_loss.as_str())
    }

    /// The temperature whose targets `t` reads when they differ per temperature (a KD trial
    /// of an ensemble averaged in probability): its pack holds only trials of that T.
    pub fn targets_temperature(&self, t: &PlannedTrial) -> Option<f64> {
        let per_t = self
            .teacher
            .ensemble
            .as_ref()
            .is_some_and(|c| c.rule == crate::config::ensemble::Rule::Arithmetic);
        (per_t && t.kind == Kind::Kd).then_some(t.weights.temperature)
    }

    /// The most students of `t`'s shape one pack holds on its class.
    pub fn pack_size(&self, t: &PlannedTrial) -> usize {
        match self.pack {
            Pack::Max(n) => n,
            Pack::Off => 1,
            Pack::Auto => crate::train::auto_pack_size(
                &t.student.model,
                self.data.input,
                self.data.classes,
                t.student.train.batch_size,
                self.classes[t.class].kind == DeviceKind::Cuda,
            ),
        }
    }

    /// Trials run in the sweep process (one slot) or in worker processes.
    pub fn in_process(&self) -> bool {
        self.slots.len() == 1
    }
}

/// Forward FLOPs per sample up to which `pack: auto` packs students on a CPU. Measured on 2
/// AVX-512 cores with experiments/student_size.yaml (15 students per width, 30 epochs, packed
/// vs one at a time): 30-30 (0.05 MFLOP) 26.0 s -> 10.5 s; 300-300 (0.66 MFLOP) 79.6 s -> 79.8 s;
/// and `kd bench`'s 800-800 (2.55 MFLOP) 0.87x: from a few hundred units on, one student's
/// products keep the cores busy alone and the batched kernels gain nothing.
pub const CPU_PACK_MAX_FLOPS: usize = 250_000;

/// Whether a student of `student` trains packed under `pack` on `class`: never a CNN or with
/// `pack: off`; always with `pack: N`; with `pack: auto` on a GPU always, on a CPU when the
/// student is small enough for packing to pay ([`CPU_PACK_MAX_FLOPS`]).
fn exec_of(pack: Pack, t: &PlannedTrial, class: &ExecClass, d: &DataPlan) -> Exec {
    let student = &t.student;
    // Augmented students read an online teacher per batch, the max-norm constraint acts on
    // `nn::Linear` rows, label smoothing has no packed hard term, and some objectives (DKD, DIST, standardised logits) have no packed
    // form: only the single trainer does these.
    let alone = student.train.augments()
        || student.train.max_norm.is_some()
        || student.train.label_smoothing > 0.0
        || (t.kind == Kind::Kd && !t.weights.packs());
    match (pack, &student.model) {
        _ if alone || pack == Pack::Off || !student.model.packs() => Exec::Single,
        (Pack::Max(_), _) => Exec::Packed,
        (_, m) => {
            let small = m.flops_per_sample(d.input, d.classes) <= CPU_PACK_MAX_FLOPS;
            if class.kind == DeviceKind::Cuda || small {
                Exec::Packed
            } else {
                Exec::Single
            }
        }
    }
}

/// The id of student trial `t` (its `class` already assigned). A packed trial hashes its
/// execution mode too; a single one hashes what it always did, so its id is unchanged.
fn trial_id(t: &PlannedTrial, data: &DataPlan, class: &ExecClass) -> String {
    let hash = match t.kind {
        Kind::Kd => content_hash(&(
            "kd-v2",
            t.seed,
            &t.student,
            &t.weights,
            data.student_view(),
            &t.teacher_id,
            class,
        )),
        // A baseline leaves out the teacher and the KD weights: one baseline serves every cell
        // of its student and seed, and changing a KD key re-runs only the KD trials.
        _ => content_hash(&(
            "baseline-v2",
            t.seed,
            &t.student,
            data.student_view(),
            class,
        )),
    };
    let hash = match t.exec {
        Exec::Single => hash,
        Exec::Packed => content_hash(&(hash, "packed-v1")),
    };
    format!("{}-{hash}", t.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_is_stable_and_sensitive() {
        let a = content_hash(&("x", 1, [0.5f64]));
        assert_eq!(a, content_hash(&("x", 1, [0.5f64])));
        assert_eq!(a.len(), 12);
        assert_ne!(a, content_hash(&("x", 2, [0.5f64])));
    }

    #[test]
    fn groups_go_round_robin_over_slots_so_pairs_stay_together() {
        // Slots: cuda, cuda, cpu (classes 0, 0, 1): groups 0,1 -> cuda, 2 -> cpu, 3,4 -> cuda, ...
        assert_eq!(assign_groups(6, &[0, 0, 1]), [0, 0, 1, 0, 0, 1]);
        assert_eq!(assign_groups(3, &[0]), [0, 0, 0]);
    }

    #[test]
    fn grid_values_keep_their_type() {
        let v: serde_yaml::Value =
            serde_yaml::from_str("[0.001, 3, true, adam, [800, 800]]").unwrap();
        let serde_yaml::Value::Sequence(items) = v else {
            panic!()
        };
        let t: Vec<Value> = items.iter().map(typed).collect();
        assert_eq!(
            t,
            [
                Value::Float(0.001),
                Value::Int(3),
                Value::Bool(true),
                Value::Str("adam".into()),
                Value::Str("800-800".into())
            ]
        );
    }
}
