//! `## Successive halving`: what a `search: halving` sweep pruned, at which rung, and the KD
//! student-epochs it spent against the full grid's.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::record::{EpochRecord, Kind, Status, TrialRecord};

/// The section; nothing when no trial was pruned. `rows` are every row, `epochs` their epoch
/// rows (a pruned trial's epochs are those it trained).
pub fn halving_section(rows: &[TrialRecord], epochs: &[EpochRecord]) -> String {
    let pruned: Vec<&TrialRecord> = rows.iter().filter(|r| r.status == Status::Pruned).collect();
    if pruned.is_empty() {
        return String::new();
    }
    let mut trained: HashMap<&str, u32> = HashMap::new();
    for e in epochs {
        let n = trained.entry(e.trial_id.as_str()).or_insert(0);
        *n = (*n).max(e.epoch);
    }
    let kd: Vec<&TrialRecord> = rows.iter().filter(|r| r.kind == Kind::Kd).collect();
    let full: u64 = kd.iter().map(|r| r.epochs as u64).sum();
    let spent: u64 = kd
        .iter()
        .map(|r| match r.status {
            Status::Ok => r.epochs as u64,
            // Pruned, or diverged: the epochs it trained.
            _ => trained.get(r.trial_id.as_str()).copied().unwrap_or(0) as u64,
        })
        .sum();
    let mut s = format!(
        "## Successive halving\n\nThe search (`search: halving`) pruned {} of {} KD trials: \
         each trained to a rung and stopped there, its cell behind on validation accuracy (the \
         mean over its seeds; a seed that diverged counts 0). Pruned trials have no test numbers \
         and are left out of every table, figure and claim of this report; a `search: grid` run \
         in this folder trains them to the end. The survivors are the full grid's trials, with \
         the same ids and numbers. KD student-epochs: {spent} of the full grid's {full} ({:.0}%); \
         baselines and the teacher train in full and are not counted.\n\n",
        pruned.len(),
        kd.len(),
        100.0 * spent as f64 / full.max(1) as f64
    );
    s.push_str(
        "| pruned at epoch | trial | seed | T | alpha | beta | soft | swept | val % there |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    let mut pruned = pruned;
    pruned.sort_by_key(|r| {
        (
            trained.get(r.trial_id.as_str()).copied(),
            r.trial_id.clone(),
        )
    });
    for r in pruned {
        let num = |v: Option<f64>| v.map_or("-".to_string(), |v| v.to_string());
        let swept: Vec<String> = r.swept.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            s,
            "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} |",
            trained.get(r.trial_id.as_str()).copied().unwrap_or(0),
            r.trial_id,
            r.seed,
            num(r.temperature),
            num(r.alpha),
            num(r.beta),
            r.soft_loss.as_deref().unwrap_or("-"),
            if swept.is_empty() {
                "-".into()
            } else {
                swept.join(" ")
            },
            r.val_acc
                .map_or("-".into(), |v| format!("{:.2}", v * 100.0))
        );
    }
    s.push('\n');
    s
}
