//! An ensemble teacher (issue 38): its members obtained one after another as lone teachers, each
//! under its own cache lock and id (trained once, then reused by every sweep that names it),
//! then combined into what the students read.
//!
//! The combination is cached rather than done per batch: under the arithmetic rule the targets
//! at T, `p^T = sum_m w_m softmax(v_m / T)`, are written as pseudo-logits `u_T = T log p^T`
//! (`softmax(u_T / T) = p^T` exactly), one `[n, classes]` tensor per distinct temperature of
//! the plan, so every student (single, packed, in a worker) reads them as it reads a lone
//! teacher's logits and the objectives that take probabilities at T (ce, kl) give the
//! ensemble's loss unchanged; the geometric rule's logits `sum_m w_m v_m` serve every T. The
//! price is that memory and the cache file (`<ensemble hash>.logits.pt`), against the members'
//! M logits per batch; `--dry-run` states both.

use tch::{Device, Kind, Tensor};

use crate::config::ensemble::Rule;
use crate::data::Tensors;
use crate::error::RunError;
use crate::plan::{Plan, TeacherPlan};
use crate::run::cache_file::save_atomic;
use crate::track::Outputs;
use crate::train;

use super::teacher::{self, Logits, Teacher, TeacherFiles};
use super::teacher_cache::tempered_name;

/// The combined "logits" of members `[M, n, classes]` at temperature `t`: `T log p^T` under
/// the arithmetic rule (in the log domain, float64 inside, so no member's underflow makes it
/// `-inf`), the weighted mean of the logits under the geometric rule (`t` unused).
pub fn combine(members: &Tensor, weights: &[f64], rule: Rule, t: f64) -> Tensor {
    let m = members.size()[0];
    let w = Tensor::from_slice(weights)
        .to_kind(Kind::Double)
        .to_device(members.device())
        .view([m, 1, 1]);
    let v = members.to_kind(Kind::Double);
    let out = match rule {
        Rule::Arithmetic => {
            let log_p = (v / t).log_softmax(-1, Kind::Double) + w.log();
            log_p.logsumexp([0i64].as_slice(), false) * t
        }
        Rule::Geometric => (v * w).sum_dim_intlist([0i64].as_slice(), false, Kind::Double),
    };
    out.to_kind(members.kind())
}

/// Obtain every member of the ensemble of `plan` (each as a lone teacher: trained, loaded or
/// reused, under its own lock), write each member's row, and combine them: the ensemble's
/// record (accuracies of its rule at T = 1), its logits and where a worker reads them.
pub fn obtain(
    plan: &Plan,
    data: &Tensors,
    every: Option<std::time::Duration>,
    progress: &mut Outputs,
    mut on_member: impl FnMut(&TeacherPlan, &Teacher) -> Result<(), RunError>,
) -> Result<Teacher, RunError> {
    let e = &plan.teacher;
    let combination = e.ensemble.as_ref().expect("an ensemble plan");
    let (mut train, mut val, mut test, mut digests) = (vec![], vec![], vec![], vec![]);
    let mut files = vec![];
    let mut trained = false;
    for (i, m) in e.members.iter().enumerate() {
        progress.note(&format!(
            "teacher: member {} of {} ({})",
            i + 1,
            e.members.len(),
            m.id
        ));
        let _lock = teacher::lock_member(m, progress)?;
        let (member, net) = teacher::obtain_one(plan, m, data, every, progress)?;
        val.push(train::predict(&net, &data.val.x, 1000).to_device(Device::Cpu));
        train.push(member.logits.train.shallow_clone());
        test.push(member.logits.test.shallow_clone());
        digests.push(member.files.logits_name.clone());
        files.push(member.files.clone());
        trained |= member.trained;
        on_member(m, &member)?;
    }
    let (rule, weights) = (combination.rule, &combination.weights);
    let stack = |l: &[Tensor]| Tensor::stack(l, 0);
    let (train, val, test) = (stack(&train), stack(&val), stack(&test));
    // At T = 1 both rules give the ensemble's prediction: accuracy, fidelity, the T-free soft
    // targets of the geometric rule.
    let logits = Logits {
        train: combine(&train, weights, rule, 1.0),
        test: combine(&test, weights, rule, 1.0),
        tempered: match rule {
            Rule::Arithmetic => plan
                .temperatures()
                .into_iter()
                .map(|t| (t, combine(&train, weights, rule, t)))
                .collect(),
            Rule::Geometric => vec![],
        },
    };
    let val = combine(&val, weights, rule, 1.0);
    let name = format!("{}-{}", e.id, &crate::plan::content_hash(&digests));
    // Named by the temperatures it holds too: sweeps of one ensemble at other temperatures
    // never rewrite a file another's workers read. Written once; a verified file is reused.
    let temps: Vec<f64> = logits.tempered.iter().map(|(t, _)| *t).collect();
    let file = teacher::teachers_dir().join(format!(
        "{}-{}.logits.pt",
        e.hash(),
        crate::plan::content_hash(&temps)
    ));
    let rows = (logits.train.size()[0], logits.test.size()[0]);
    if teacher::read_logits(&file, &name, &temps, rows).is_err() {
        write_logits(&file, &name, &logits)?;
    }
    let record = ensemble_record(plan, &logits, &val, data);
    progress.finish_trial(0, &record, &[]);
    Ok(Teacher {
        record,
        epochs: vec![],
        files: TeacherFiles {
            logits: file,
            logits_name: name,
            weights: Default::default(),
            model: e.cfg.model.clone(),
            torchscript: false,
            tempered: temps,
            members: files,
            member_weights: weights.clone(),
        },
        logits,
        trained,
    })
}

/// Write the ensemble's logits: the T = 1 training and test logits under `name` and
/// `name.test`, and the training targets at each temperature under [`tempered_name`].
fn write_logits(file: &std::path::Path, name: &str, l: &Logits) -> Result<(), RunError> {
    let mut named: Vec<(String, &Tensor)> = vec![
        (name.to_string(), &l.train),
        (format!("{name}.test"), &l.test),
    ];
    for (t, x) in &l.tempered {
        named.push((tempered_name(name, *t), x));
    }
    save_atomic(file, |tmp| {
        let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        Tensor::save_multi(&refs, tmp)
    })
}

/// The ensemble's row: kind teacher, arch `ensemble`, its members' parameters summed, its
/// rule's accuracies at T = 1, no epochs of its own.
fn ensemble_record(
    plan: &Plan,
    l: &Logits,
    val: &Tensor,
    data: &Tensors,
) -> kd_report::TrialRecord {
    let acc =
        |logits: &Tensor, y: &Tensor| (logits.size()[0] > 0).then(|| train::accuracy(logits, y));
    let test = acc(&l.test, &data.test.y.to_device(Device::Cpu));
    let outcome = train::Outcome {
        train_acc: Some(train::accuracy(&l.train, &data.train.y.to_device(Device::Cpu)).0),
        val_acc: acc(val, &data.val.y.to_device(Device::Cpu)).map(|a| a.0),
        test_acc: test.map(|a| a.0),
        test_errors: test.map(|a| a.1),
        ..train::Outcome::empty(kd_report::Status::Ok)
    };
    plan.ensemble_record(&outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kd_loss::KdWeights;

    /// `a` and `b` within `tol` relative to `b`'s largest magnitude (at least 1).
    fn close(a: &Tensor, b: &Tensor, tol: f64) {
        let d = (a - b).abs().max().double_value(&[]);
        let scale = b.abs().max().double_value(&[]).max(1.0);
        assert!(d <= tol * scale, "differ by {d} (scale {scale})");
    }

    /// The cached pseudo-logits `T log p^T` give every student exactly the ensemble's targets
    /// and loss (kd_loss's ensemble functions, checked against PyTorch in
    /// `crates/loss/tests/ensemble.rs`), at every T, with members far apart (one member's
    /// probabilities underflow where another's do not).
    #[test]
    fn the_cached_targets_are_the_ensembles() {
        tch::manual_seed(0);
        let opts = (Kind::Float, Device::Cpu);
        let members = Tensor::randn([3, 16, 10], opts) * 30.0;
        let student = Tensor::randn([16, 10], opts) * 3.0;
        let labels = Tensor::randint(10, [16], (Kind::Int64, Device::Cpu));
        let weights = [0.5, 0.3, 0.2];
        for t in [1.0, 2.0, 4.0, 20.0] {
            let u = combine(&members, &weights, Rule::Arithmetic, t);
            let p = kd_loss::ensemble_targets(&members, &weights, t).unwrap();
            close(&(&u / t).softmax(-1, Kind::Float), &p, 1e-6);
            assert!(bool::try_from(u.isfinite().all()).unwrap(), "T = {t}");
            let w = KdWeights {
                temperature: t,
                alpha: 0.9,
                beta: 0.1,
                ..KdWeights::hard_only()
            };
            let direct =
                kd_loss::ensemble_distillation_loss(&student, &members, &weights, &labels, &w, 0.0)
                    .unwrap();
            let cached = kd_loss::distillation_loss(&student, &u, &labels, &w).unwrap();
            close(&direct.total, &cached.total, 1e-5);
            close(&direct.soft, &cached.soft, 1e-5);
        }
        // The geometric rule: the members' logits averaged, one tensor for every T.
        let g = combine(&members, &weights, Rule::Geometric, 4.0);
        close(
            &g,
            &kd_loss::geometric_logits(&members, &weights).unwrap(),
            1e-4,
        );
        close(&g, &combine(&members, &weights, Rule::Geometric, 1.0), 0.0);
    }
}
