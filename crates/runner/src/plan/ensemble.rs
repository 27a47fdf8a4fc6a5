//! The plan of an ensemble teacher (issue 38): each member planned as a lone teacher (the same id
//! a teacher of that block gets alone, so a member is trained once across sweeps), and the
//! ensemble's id made of its members' ids, their weights and the rule: the `teacher_id` of
//! every KD trial.

use kd_report::{Kind, TrialRecord};
use serde::{Deserialize, Serialize};

use super::{content_hash, DataPlan, Plan, TeacherPlan};
use crate::config::ensemble::{EnsembleCfg, Rule};
use crate::config::Resolved;
use crate::error::RunError;
use crate::train::Outcome;

/// How an ensemble's members combine (the resolved `teacher.weights` and `teacher.rule`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Combination {
    pub rule: Rule,
    pub weights: Vec<f64>,
}

/// The teacher plan of `e`: its members' plans and the ensemble's id.
pub(super) fn ensemble_plan(
    cfg: &Resolved,
    e: &EnsembleCfg,
    d: &DataPlan,
) -> Result<TeacherPlan, RunError> {
    let members = e
        .members
        .iter()
        .map(|m| super::trials::teacher_plan_of(cfg, m, d))
        .collect::<Result<Vec<_>, _>>()?;
    let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
    if let Some(j) = (1..ids.len()).find(|&j| ids[..j].contains(&ids[j])) {
        return Err(RunError::Config(crate::config::invalid(
            format!("teacher.members[{j}]"),
            format!(
                "the same teacher as an earlier member ({}): give it another seed, or leave it \
                 out and weigh the other one more",
                ids[j]
            ),
        )));
    }
    let id = format!(
        "teacher-{}",
        content_hash(&("ensemble-v1", &ids, e.rule, &e.weights))
    );
    let first = &members[0];
    Ok(TeacherPlan {
        id,
        cfg: first.cfg.clone(),
        slot: first.slot.clone(),
        checkpoint_digest: None,
        torchscript: None,
        ensemble: Some(Combination {
            rule: e.rule,
            weights: e.weights.clone(),
        }),
        members,
    })
}

impl TeacherPlan {
    /// `10 x mlp 800-800`, or the members' shapes joined with `+` when they differ.
    pub fn ensemble_label(&self) -> String {
        let shapes: Vec<String> = self.members.iter().map(member_shape).collect();
        match shapes.first() {
            Some(s) if shapes.iter().all(|x| x == s) => format!("{} x {s}", shapes.len()),
            _ => shapes.join(" + "),
        }
    }
}

fn member_shape(m: &TeacherPlan) -> String {
    match &m.torchscript {
        Some(s) => format!(
            "torchscript {}",
            s.file
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        ),
        None => format!("{} {}", m.cfg.model.arch(), m.cfg.model.shape_label()),
    }
}

impl Plan {
    /// The distinct temperatures of the KD trials, in plan order: one tensor of targets each
    /// under the arithmetic rule.
    pub fn temperatures(&self) -> Vec<f64> {
        let mut ts: Vec<f64> = Vec::new();
        for t in &self.trials {
            if t.kind == Kind::Kd && !ts.contains(&t.weights.temperature) {
                ts.push(t.weights.temperature);
            }
        }
        ts
    }

    /// The ensemble's row, as `outcome` (its rule's accuracies at T = 1) says: kind teacher,
    /// arch `ensemble`, hidden its members (`10 x mlp 800-800`), params their sum.
    pub fn ensemble_record(&self, outcome: &Outcome) -> TrialRecord {
        let e = &self.teacher;
        let mut r = self.teacher_record_of(e, outcome, &e.slot);
        r.teacher_id = None;
        let c = e.ensemble.as_ref().expect("an ensemble plan");
        r.arch = "ensemble".into();
        r.hidden = e.ensemble_label();
        r.model = serde_json::json!({
            "ensemble": e.members.iter().map(|m| &m.id).collect::<Vec<_>>(),
            "rule": c.rule,
            "weights": c.weights,
        })
        .to_string();
        r.params = e
            .members
            .iter()
            .map(|m| self.teacher_record_of(m, outcome, &m.slot).params)
            .sum();
        r.epochs = 0;
        r
    }
}
