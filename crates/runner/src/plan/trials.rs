//! The parts of a plan decided from the config alone: the teacher's plan and id, the trials
//! in run order with their groups (student config, seed), and each KD trial's paired baseline.

use kd_loss::KdWeights;
use kd_model_zoo::ModelSpec;
use kd_report::{Exec, Kind, TrialRecord};

use super::{content_hash, typed, PlannedTrial, ScriptedTeacher, TeacherPlan};
use crate::config::{Resolved, StudentCfg, TeacherCfg};
use crate::data::{file_digest, DataPlan};
use crate::env;
use crate::error::RunError;

/// The plan of the lone teacher `t` (a sweep's teacher, or a member of its ensemble): its slot,
/// the digest of its checkpoint or TorchScript file, its id.
pub(super) fn teacher_plan_of(
    cfg: &Resolved,
    t: &TeacherCfg,
    d: &DataPlan,
) -> Result<TeacherPlan, RunError> {
    let teacher_slot = env::slot(&cfg.device[0], cfg.threads.unwrap_or(env::cores()).max(1))?;
    let checkpoint_digest = match &t.checkpoint {
        Some(file) => Some(file_digest(file).map_err(|e| match e {
            RunError::Io { file, source } => RunError::CheckpointRead { file, source },
            other => other,
        })?),
        None => None,
    };
    let torchscript = match &t.torchscript {
        Some(file) => Some(ScriptedTeacher::read(file, d.input, d.classes)?),
        None => None,
    };
    // The module's digest stands where a checkpoint's would (one slot in the id: a config
    // has one or the other), marked so that the same bytes as a checkpoint differ.
    let weights_digest = match &torchscript {
        Some(s) => Some(format!("torchscript:{}", s.digest)),
        None => checkpoint_digest.clone(),
    };
    let teacher_id = format!(
        "teacher-{}",
        content_hash(&(
            "teacher-v2",
            &t.model,
            &t.train,
            t.seed,
            d.teacher_view(),
            &weights_digest,
            &teacher_slot.class,
        ))
    );
    Ok(TeacherPlan {
        id: teacher_id,
        cfg: t.clone(),
        slot: teacher_slot,
        checkpoint_digest,
        torchscript,
        ensemble: None,
        members: vec![],
    })
}

/// The trials of `cfg` in run order (ids, classes and execution not yet set), the number of
/// their groups (student config, seed: a group shares one baseline) and each trial's group.
pub(super) fn planned(cfg: &Resolved, teacher_id: &str) -> (Vec<PlannedTrial>, usize, Vec<usize>) {
    // The trials, in run order, and their groups (student config, seed).
    let mut trials: Vec<PlannedTrial> = Vec::new();
    let mut groups: Vec<(&StudentCfg, u64)> = Vec::new();
    let mut group_of: Vec<usize> = Vec::new();
    for &seed in &cfg.seeds {
        for cell in &cfg.cells {
            let group = match groups
                .iter()
                .position(|(s, g)| **s == cell.student && *g == seed)
            {
                Some(g) => g,
                None => {
                    groups.push((&cell.student, seed));
                    if cfg.baseline {
                        trials.push(PlannedTrial {
                            index: trials.len(),
                            id: String::new(),
                            kind: Kind::Baseline,
                            seed,
                            student: cell.student.clone(),
                            weights: KdWeights::hard_only(),
                            teacher_id: None,
                            baseline_id: None,
                            swept: vec![],
                            class: 0,
                            exec: Exec::Single,
                        });
                        group_of.push(groups.len() - 1);
                    }
                    groups.len() - 1
                }
            };
            let swept = cell
                .swept
                .iter()
                .filter(|(k, _)| !TrialRecord::COLUMNS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), typed(v)))
                .collect();
            trials.push(PlannedTrial {
                index: trials.len(),
                id: String::new(),
                kind: Kind::Kd,
                seed,
                student: cell.student.clone(),
                weights: cell.kd,
                teacher_id: Some(teacher_id.to_string()),
                baseline_id: None,
                swept,
                class: 0,
                exec: Exec::Single,
            });
            group_of.push(group);
        }
    }
    (trials, groups.len(), group_of)
}

/// Fill in each TorchScript student's digest and parameter count (they stand in its trial id),
/// each file read once and checked to give the dataset's logits.
pub(super) fn read_scripted_students(
    trials: &mut [PlannedTrial],
    d: &DataPlan,
) -> Result<(), RunError> {
    let mut read: Vec<kd_model_zoo::TorchscriptSpec> = Vec::new();
    for t in trials.iter_mut() {
        let ModelSpec::Torchscript(spec) = &mut t.student.model else {
            continue;
        };
        if let Some(r) = read.iter().find(|r| r.file == spec.file) {
            *spec = r.clone();
            continue;
        }
        *spec = spec
            .read(d.input, d.classes)
            .map_err(|reason| RunError::ScriptedStudent {
                file: spec.file.clone(),
                reason,
            })?;
        read.push(spec.clone());
    }
    Ok(())
}

/// Pair each KD trial with the baseline of its group (same student, seed and so class).
pub(super) fn pair_baselines(trials: &mut [PlannedTrial], group_of: &[usize]) {
    let baseline_of: Vec<Option<String>> = trials
        .iter()
        .zip(group_of)
        .map(|(t, g)| {
            (t.kind == Kind::Kd)
                .then(|| {
                    trials
                        .iter()
                        .zip(group_of)
                        .find(|(b, bg)| b.kind == Kind::Baseline && *bg == g)
                        .map(|(b, _)| b.id.clone())
                })
                .flatten()
        })
        .collect();
    for (t, b) in trials.iter_mut().zip(baseline_of) {
        t.baseline_id = b;
    }
}
