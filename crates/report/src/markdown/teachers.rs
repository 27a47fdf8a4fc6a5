//! `## Teachers` of the report: an ensemble teacher's members and the ensemble itself.

use super::*;

/// `## Teachers`: where the teacher is an ensemble (a teacher row of arch `ensemble`), one line
/// per member (the rows whose `teacher_id` names the ensemble) and one for the ensemble at T = 1
/// under its rule, then the ensemble's gain over its mean and its best member, in test points.
/// Nothing for a lone teacher (the trial table shows it).
pub fn teachers_section(rows: &[TrialRecord]) -> String {
    let mut s = String::new();
    let ensembles = rows
        .iter()
        .filter(|r| r.kind == Kind::Teacher && r.arch == "ensemble");
    for e in ensembles {
        let members: Vec<&TrialRecord> = rows
            .iter()
            .filter(|r| r.kind == Kind::Teacher && r.teacher_id.as_deref() == Some(&e.trial_id))
            .collect();
        if s.is_empty() {
            s.push_str(
                "\n## Teachers\n\nThe ensemble's members and the ensemble, on the test set at \
                 T = 1 (the ensemble under its combination rule). The students' agreement with \
                 the ensemble is in the fidelity table.\n",
            );
        }
        section_of(&mut s, e, &members);
    }
    s
}

/// One ensemble's table and its gain line.
fn section_of(s: &mut String, e: &TrialRecord, members: &[&TrialRecord]) {
    let rule = serde_json::from_str::<serde_json::Value>(&e.model)
        .ok()
        .and_then(|m| m["rule"].as_str().map(str::to_string))
        .unwrap_or_else(|| "-".into());
    let errors = |r: &TrialRecord| r.test_errors.map_or("-".into(), |e| e.to_string());
    let _ = write!(
        s,
        "\n`{}`: {} members, {rule} rule.\n\n| teacher | model | seed | status | val % | test % | \
         test errors |\n|---|---|---:|---|---:|---:|---:|\n",
        e.trial_id,
        members.len()
    );
    for m in members {
        let _ = writeln!(
            s,
            "| `{}` | {} {} | {} | {} | {} | {} | {} |",
            m.trial_id,
            m.arch,
            m.hidden,
            m.seed,
            m.status,
            pct(m.val_acc),
            pct(m.test_acc),
            errors(m)
        );
    }
    let _ = writeln!(
        s,
        "| **ensemble** | {} | - | {} | {} | {} | {} |",
        e.hidden,
        e.status,
        pct(e.val_acc),
        pct(e.test_acc),
        errors(e)
    );
    let accs: Vec<f64> = members
        .iter()
        .filter(|m| crate::analysis::ok(m))
        .filter_map(|m| m.test_acc.map(|a| 100.0 * a))
        .collect();
    if let (Some(ens), false) = (e.test_acc.map(|a| 100.0 * a), accs.is_empty()) {
        let (mean, sd) = crate::stats::mean_std(&accs);
        let best = accs.iter().cloned().fold(f64::MIN, f64::max);
        let _ = writeln!(
            s,
            "\nMembers: {} test % (mean ± sd over {} members), best {best:.2}. The ensemble: \
             {ens:.2}, {:+.2} points over the mean member, {:+.2} over the best.",
            mean_sd((mean, sd), false),
            accs.len(),
            ens - mean,
            ens - best
        );
    }
}
