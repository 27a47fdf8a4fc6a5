//! Planned trials without a result (shards not run, still running or stopped): how many, which
//! shards ran in OUT and how to run the others, said on the terminal and in `report.md`.

use std::fmt::Write as _;
use std::path::Path;

/// The shards of one sweep that have run in `out`, as their lock files (`OUT/.shard-I-of-N.lock`,
/// left by each shard) say: `(N, the indices I that ran)`, when every one names the same `N`.
pub fn shards_seen(out: &Path) -> Option<(usize, Vec<usize>)> {
    let mut seen: Vec<(usize, usize)> = std::fs::read_dir(out)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (i, n) = name
                .strip_prefix(".shard-")?
                .strip_suffix(".lock")?
                .split_once("-of-")?;
            Some((i.parse().ok()?, n.parse().ok()?))
        })
        .collect();
    seen.sort_unstable();
    let count = seen.first()?.1;
    if seen.iter().any(|&(i, n)| n != count || i >= n) {
        return None;
    }
    Some((count, seen.into_iter().map(|(i, _)| i).collect()))
}

/// One paragraph: `missing` of the `planned` trials of OUT's plan have no result, and which
/// shards have not run there (with the command that runs one) where the lock files say.
pub fn missing_text(out: &Path, missing: usize, planned: usize) -> String {
    let covered = match planned.saturating_sub(missing) {
        0 => "none has one yet, so the report has no rows".to_string(),
        n => format!("the report covers the other {n}"),
    };
    let mut s = format!(
        "{missing} planned trial(s) have no result yet, of the {planned} in {}: {covered}",
        out.join("plan.json").display(),
    );
    match shards_seen(out) {
        Some((count, ran)) if ran.len() < count => {
            let fmt = |v: Vec<usize>| {
                v.iter()
                    .map(|i| format!("{i}/{count}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let not_run = (0..count).filter(|i| !ran.contains(i)).collect();
            let _ = write!(
                s,
                ". Shard(s) {} ran in this folder; shard(s) {} did not: run each with `kd sweep \
                 CONFIG --out {} --shard I/{count}` (the config and --set values of the others), \
                 then `kd report` again",
                fmt(ran),
                fmt(not_run),
                out.display()
            );
        }
        _ => s.push_str(
            " (shards not run, still running, or stopped): run the missing shards or the same \
             `kd sweep` command again (or `kd slurm ... --submit`), then `kd report` again",
        ),
    }
    s
}

/// The ids of `plan` that have no row in `rows`.
pub(crate) fn unreported(
    plan: Option<&crate::store::PlanFile>,
    rows: &[crate::TrialRecord],
) -> Vec<String> {
    let Some(plan) = plan else {
        return vec![];
    };
    plan.ids
        .iter()
        .filter(|id| !rows.iter().any(|r| &r.trial_id == *id))
        .cloned()
        .collect()
}

/// Put a "Trials without results" section saying `text` in the report `report`, right after
/// its title: before the policy, whose account of the data covers only the trials that have a
/// result.
pub(crate) fn insert_section(report: &mut String, text: &str) {
    let at = report.find("\n\n").map_or(report.len(), |i| i + 2);
    report.insert_str(at, &format!("## Trials without results\n\n{text}.\n\n"));
}
