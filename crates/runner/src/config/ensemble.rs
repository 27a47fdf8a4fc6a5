//! The `teacher:` block: one teacher, or an ensemble of teachers under the same key (issue 38; Hinton, Vinyals & Dean 2015,
//! section 4): `teacher: {ensemble: K, seed, model, train}` trains K members of one recipe with
//! seeds seed..seed+K-1, and `teacher: {members: [{...}, {...}]}` combines teachers of any kind
//! (trained here, `checkpoint` or `torchscript`), each member a teacher block of its own. How
//! the members combine: `rule: arithmetic` (default, the paper's: the members' softened
//! probabilities averaged) or `geometric` (their logits averaged, then softened), with
//! `weights` (default equal).

use kd_loss::{KdWeights, SoftLoss};
use serde::{Deserialize, Serialize};

use kd_model_zoo::Role;

use super::{invalid, ConfigError, RawModel, RawTeacher, TeacherCfg, TrainCfg};

/// `teacher:`: the lone teacher, or an ensemble's first member and the ensemble.
pub(super) fn resolve_teachers(
    t: &RawTeacher,
) -> Result<(TeacherCfg, Option<EnsembleCfg>), ConfigError> {
    let Some(blocks) = member_blocks(t)? else {
        return Ok((resolve_teacher("teacher", t)?, None));
    };
    let members = blocks
        .iter()
        .map(|(key, block)| resolve_teacher(key, block))
        .collect::<Result<Vec<_>, _>>()?;
    let (weights, rule) = weights_and_rule(t, members.len())?;
    let first = members[0].clone();
    Ok((
        first,
        Some(EnsembleCfg {
            members,
            weights,
            rule,
        }),
    ))
}

/// One teacher's block, its keys named under `key` (`teacher`, `teacher.members[i]`).
fn resolve_teacher(key: &str, t: &RawTeacher) -> Result<TeacherCfg, ConfigError> {
    check_torchscript_alone(key, t)?;
    Ok(TeacherCfg {
        seed: t.seed.unwrap_or(0),
        checkpoint: t.checkpoint.clone(),
        torchscript: t.torchscript.clone(),
        model: RawModel::resolve(t.model.as_ref(), &format!("{key}.model"), Role::Teacher)?,
        train: t
            .train
            .clone()
            .unwrap_or_default()
            .resolve(&format!("{key}.train"), Role::Teacher)?,
    })
}

/// A TorchScript teacher is the whole teacher: no model, train or checkpoint beside it.
fn check_torchscript_alone(key: &str, t: &RawTeacher) -> Result<(), ConfigError> {
    if t.torchscript.is_none() {
        return Ok(());
    }
    let alone = [
        ("checkpoint", t.checkpoint.is_some()),
        ("model", t.model.is_some()),
        ("train", t.train.is_some()),
    ];
    match alone.iter().find(|(_, given)| *given) {
        Some((name, _)) => Err(invalid(
            format!("{key}.{name}"),
            "not used with teacher.torchscript (the TorchScript module is the whole \
             teacher, trained elsewhere); remove one of them",
        )),
        None => Ok(()),
    }
}

/// How the members' outputs combine into the soft targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// `p^T = sum_m w_m softmax(v_m / T)`: the members' predictions averaged (the paper's).
    #[default]
    Arithmetic,
    /// `softmax(sum_m w_m v_m / T)`: the members' logits averaged, a single teacher's logits
    /// to every objective.
    Geometric,
}

impl Rule {
    pub const ALL: [Rule; 2] = [Rule::Arithmetic, Rule::Geometric];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Arithmetic => "arithmetic",
            Rule::Geometric => "geometric",
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The resolved ensemble: its members (each a lone teacher's block, every value explicit),
/// their weights (summing to 1) and the rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleCfg {
    pub members: Vec<TeacherCfg>,
    pub weights: Vec<f64>,
    pub rule: Rule,
}

impl EnsembleCfg {
    /// The soft targets depend on the temperature: one cached tensor per distinct T.
    pub fn per_temperature(&self) -> bool {
        self.rule == Rule::Arithmetic
    }
}

/// Whether `t` asks for an ensemble (any of its keys given).
fn asks(t: &RawTeacher) -> bool {
    t.ensemble.is_some() || t.members.is_some() || t.weights.is_some() || t.rule.is_some()
}

/// The keys of `t` that make a teacher (left out of a `members:` block, given per member).
fn lone_keys(t: &RawTeacher) -> [(&'static str, bool); 5] {
    [
        ("seed", t.seed.is_some()),
        ("checkpoint", t.checkpoint.is_some()),
        ("torchscript", t.torchscript.is_some()),
        ("model", t.model.is_some()),
        ("train", t.train.is_some()),
    ]
}

/// The member blocks of `t`, as lone teachers with keys named `teacher.members[i]` (or, for
/// `ensemble: K`, the one block copied K times with seeds seed..seed+K-1); none when `t` is a
/// lone teacher. Each member is then resolved as a lone teacher is.
pub(super) fn member_blocks(
    t: &RawTeacher,
) -> Result<Option<Vec<(String, RawTeacher)>>, ConfigError> {
    if !asks(t) {
        return Ok(None);
    }
    let blocks =
        match (t.ensemble, &t.members) {
            (Some(_), Some(_)) => return Err(invalid(
                "teacher.members",
                "give teacher.ensemble (K members of one recipe) or teacher.members (a list of \
                 teachers), not both",
            )),
            (None, None) => {
                let key = if t.weights.is_some() {
                    "teacher.weights"
                } else {
                    "teacher.rule"
                };
                return Err(invalid(
                    key,
                    "only for an ensemble: add teacher.ensemble: K or teacher.members: [...]",
                ));
            }
            (Some(k), None) => {
                if k < 2 {
                    return Err(invalid(
                        "teacher.ensemble",
                        format!(
                        "{k} member(s): an ensemble has at least 2 (a lone teacher is the plain \
                         teacher block)"
                    ),
                    ));
                }
                for (key, given) in [
                    ("checkpoint", t.checkpoint.is_some()),
                    ("torchscript", t.torchscript.is_some()),
                ] {
                    if given {
                        return Err(invalid(
                        format!("teacher.{key}"),
                        "not used with teacher.ensemble: K (its members train here, seeds seed, \
                         seed+1, ...); list loaded teachers under teacher.members",
                    ));
                    }
                }
                let seed = t.seed.unwrap_or(0);
                (0..k)
                    .map(|i| {
                        let block = RawTeacher {
                            seed: Some(seed + i as u64),
                            model: t.model.clone(),
                            train: t.train.clone(),
                            ..RawTeacher::default()
                        };
                        // Errors in the shared recipe name the block as written.
                        ("teacher".to_string(), block)
                    })
                    .collect::<Vec<_>>()
            }
            (None, Some(members)) => {
                if let Some((key, _)) = lone_keys(t).iter().find(|(_, given)| *given) {
                    return Err(invalid(
                        format!("teacher.{key}"),
                        "not used with teacher.members: give it in each member's block",
                    ));
                }
                if members.len() < 2 {
                    return Err(invalid(
                        "teacher.members",
                        format!(
                        "{} member(s): an ensemble has at least 2 (a lone teacher is the plain \
                         teacher block)",
                        members.len()
                    ),
                    ));
                }
                let mut blocks = Vec::with_capacity(members.len());
                for (i, m) in members.iter().enumerate() {
                    let key = format!("teacher.members[{i}]");
                    if asks(m) {
                        return Err(invalid(
                            key,
                            "a member is one teacher (seed, model, train, checkpoint or \
                         torchscript): ensembles do not nest",
                        ));
                    }
                    let mut m = m.clone();
                    m.seed = Some(m.seed.unwrap_or(i as u64));
                    blocks.push((key, m));
                }
                blocks
            }
        };
    Ok(Some(blocks))
}

/// `teacher.weights` (default equal) for `members` members: positive, finite, normalised to
/// sum to 1; and `teacher.rule`.
pub(super) fn weights_and_rule(
    t: &RawTeacher,
    members: usize,
) -> Result<(Vec<f64>, Rule), ConfigError> {
    let weights = match &t.weights {
        None => vec![1.0 / members as f64; members],
        Some(w) => {
            if w.len() != members {
                return Err(invalid(
                    "teacher.weights",
                    format!(
                        "{} weights for {members} members: give one per member",
                        w.len()
                    ),
                ));
            }
            if let Some(i) = w.iter().position(|x| !x.is_finite() || *x <= 0.0) {
                return Err(invalid(
                    format!("teacher.weights[{i}]"),
                    format!("{} is not a positive number", w[i]),
                ));
            }
            let sum: f64 = w.iter().sum();
            w.iter().map(|x| x / sum).collect()
        }
    };
    let rule = match t.rule.as_deref() {
        None => Rule::default(),
        Some(s) => Rule::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                invalid(
                    "teacher.rule",
                    format!("`{s}` is not a rule: arithmetic (the members' probabilities averaged) or geometric (their logits averaged)"),
                )
            })?,
    };
    Ok((weights, rule))
}

/// The KD objective `kd` of a cell, given the ensemble `e`: under the arithmetic rule the
/// students receive the ensemble's targets as pseudo-logits `T log p^T`, which only the
/// objectives that read probabilities at T (ce, kl) take as they are; the others read logits
/// and are refused, and so is logit standardisation.
pub(super) fn check_objective(e: &EnsembleCfg, kd: &KdWeights) -> Result<(), ConfigError> {
    if e.rule != Rule::Arithmetic {
        return Ok(());
    }
    if !matches!(kd.soft_loss, SoftLoss::Ce | SoftLoss::Kl) {
        return Err(invalid(
            "kd.soft_loss",
            format!(
                "{} reads the teacher's logits, and an ensemble averaged in probability \
                 (teacher.rule: arithmetic) has none: use soft_loss ce or kl, or teacher.rule: \
                 geometric (the mean of the members' logits)",
                kd.soft_loss.as_str()
            ),
        ));
    }
    if kd.standardise {
        return Err(invalid(
            "kd.standardise",
            "standardises the teacher's logits, and an ensemble averaged in probability \
             (teacher.rule: arithmetic) has none: leave it out, or use teacher.rule: geometric",
        ));
    }
    Ok(())
}

/// A KD student that augments its images (jitter, crop, flip) reads an online teacher per
/// batch: an ensemble runs so under the geometric rule (its members' logits averaged), while
/// the arithmetic rule's targets are cached per temperature only.
pub(super) fn check_students(e: &EnsembleCfg, train: &TrainCfg) -> Result<(), ConfigError> {
    if e.rule == Rule::Geometric {
        return Ok(());
    }
    let key = if train.jitter > 0 {
        "student.train.jitter"
    } else if train.crop > 0 {
        "student.train.crop"
    } else if train.flip {
        "student.train.flip"
    } else {
        return Ok(());
    };
    Err(invalid(
        key,
        "a student that augments its images needs its teacher run on each augmented batch, \
         and an ensemble averaged in probability (teacher.rule: arithmetic) gives cached \
         targets only: use teacher.rule: geometric (the members run online, their logits \
         averaged), or leave the augmentation out of student.train",
    ))
}
