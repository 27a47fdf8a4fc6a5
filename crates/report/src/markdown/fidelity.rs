//! `## Fidelity and per-class errors` of the report.

use super::*;

/// `## Fidelity and per-class errors`: per student setting (means over seeds), the test accuracy
/// after the last and after the best validation epoch, agreement with the teacher and
/// KL(teacher || student); where classes were missing from the transfer set, the bias shift
/// fitted on validation and the test errors on those classes before and after it.
pub fn fidelity_section(
    rows: &[TrialRecord],
    confusion: &[crate::record::ConfusionRecord],
) -> String {
    let students: Vec<&TrialRecord> = rows
        .iter()
        .filter(|r| r.kind != Kind::Teacher && crate::analysis::ok(r))
        .collect();
    if students.iter().all(|r| r.teacher_agreement.is_none()) {
        return String::new();
    }
    let groups = setting_groups(students);
    let shifted = rows.iter().any(|r| r.shifted_classes.is_some());
    let mean = |v: Vec<f64>| (!v.is_empty()).then(|| crate::stats::mean_std(&v).0);
    let f2 = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    let f3 = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
    let class_errors = |r: &TrialRecord, shifted: bool, classes: &[u32]| {
        class_errors(confusion, r, shifted, classes)
    };
    let mut s = String::from(
        "\n## Fidelity and per-class errors\n\nMeans over seeds, on the test set at T = 1. \
         `best-epoch %` is the test accuracy after the epoch with the best validation accuracy \
         (`test %` is after the last epoch); `agree %` is top-1 agreement with the teacher; `KL` \
         is KL(teacher || student) in nats per image. Per-class test errors of every student are \
         in `confusion.parquet`.\n\n",
    );
    if shifted {
        s.push_str(
            "Classes missing from the transfer set get a bias shift: a constant added to their \
             output units' logits, fitted on the validation split (the value with the fewest \
             validation errors), never on test data.\n\n| students | n | test % | best-epoch % \
             | agree % | KL | shift | test errors | after shift | errors on missing classes | \
             after shift |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
    } else {
        s.push_str(
            "| students | n | test % | best-epoch % | agree % | KL |\n|---|---:|---:|---:|---:|---:|\n",
        );
    }
    for (l, rs) in &groups {
        let m = |f: &dyn Fn(&TrialRecord) -> Option<f64>| {
            mean(rs.iter().filter_map(|r| f(r)).collect())
        };
        let test = m(&|r| r.test_acc.map(|a| 100.0 * a));
        let best = m(&|r| r.best_test_acc.map(|a| 100.0 * a));
        let agree = m(&|r| r.teacher_agreement.map(|a| 100.0 * a));
        let kl = m(&|r| r.teacher_kl);
        let _ = write!(
            s,
            "| {l} | {} | {} | {} | {} | {}",
            rs.len(),
            f2(test),
            f2(best),
            f2(agree),
            f3(kl)
        );
        if shifted {
            let absent: Vec<u32> = rs[0]
                .shifted_classes
                .as_deref()
                .unwrap_or("")
                .split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect();
            let shift = m(&|r| r.bias_shift);
            let errors = m(&|r| r.test_errors.map(|e| e as f64));
            let after = m(&|r| r.shifted_test_errors.map(|e| e as f64));
            let on = m(&|r| class_errors(r, false, &absent));
            let on_after = m(&|r| class_errors(r, true, &absent));
            let f1 = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
            let _ = write!(
                s,
                " | {} | {} | {} | {} | {}",
                f2(shift),
                f1(errors),
                f1(after),
                f1(on),
                f1(on_after)
            );
        }
        s.push_str(" |\n");
    }
    s
}

/// The students grouped by setting (kind, size, T, alpha, soft loss, swept keys), each group
/// labelled, in first-seen order.
fn setting_groups(students: Vec<&TrialRecord>) -> Vec<(String, Vec<&TrialRecord>)> {
    let label = |r: &TrialRecord| {
        let mut l = format!("{} {}", r.kind, r.hidden);
        if let Some(t) = r.temperature {
            let _ = write!(l, " T={t}");
        }
        if let Some(a) = r.alpha {
            let _ = write!(l, " alpha={a}");
        }
        if let Some(s) = r.soft_loss.as_deref().filter(|s| *s != "ce") {
            let _ = write!(l, " {s}");
        }
        for (k, v) in &r.swept {
            let _ = write!(l, " {k}={v}");
        }
        l
    };
    let mut groups: Vec<(String, Vec<&TrialRecord>)> = Vec::new();
    for r in students {
        let l = label(r);
        match groups.iter_mut().find(|(k, _)| *k == l) {
            Some((_, v)) => v.push(r),
            None => groups.push((l, vec![r])),
        }
    }
    groups
}

/// Student `r`'s test errors on `classes` (with the bias shift applied or not), from its
/// confusion counts; none when it has none.
fn class_errors(
    confusion: &[crate::record::ConfusionRecord],
    r: &TrialRecord,
    shifted: bool,
    classes: &[u32],
) -> Option<f64> {
    let mine: Vec<_> = confusion
        .iter()
        .filter(|c| c.trial_id == r.trial_id && c.shifted == shifted)
        .collect();
    (!mine.is_empty()).then(|| {
        mine.iter()
            .filter(|c| classes.contains(&c.label) && c.predicted != c.label)
            .map(|c| c.count as f64)
            .sum()
    })
}
