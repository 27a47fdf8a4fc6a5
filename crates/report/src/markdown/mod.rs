//! The Markdown of `report.md` and of the CLI's closing tables, read off the [`Analysis`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::analysis::{Analysis, Comparison};
use crate::record::{EpochRecord, Kind, Status, TrialRecord};

mod fidelity;
mod halving;
mod policy;
mod teachers;

pub use halving::halving_section;
pub use policy::execution_of;
use policy::policy;

pub use fidelity::fidelity_section;
pub use teachers::teachers_section;

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}", 100.0 * v))
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v}"))
}

/// `mean ± sd`, or the mean alone when there is one value (no spread to show).
fn mean_sd((m, sd): (f64, Option<f64>), signed: bool) -> String {
    let m = if signed {
        format!("{m:+.2}")
    } else {
        format!("{m:.2}")
    };
    match sd {
        Some(sd) => format!("{m} ± {sd:.2}"),
        None => m,
    }
}

/// The per-trial table, as Markdown (also what the CLI prints).
pub fn trials_table(rows: &[TrialRecord]) -> String {
    let mut s = String::from(
        "| trial | kind | seed | model | params | T | alpha | beta | soft | status | train % | val % | test % | test errors | wall s |\n\
         |---|---|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
            r.trial_id,
            r.kind,
            r.seed,
            r.arch,
            r.hidden,
            r.params,
            num(r.temperature),
            num(r.alpha),
            num(r.beta),
            r.soft_loss.as_deref().unwrap_or("-"),
            r.status,
            pct(r.train_acc),
            pct(r.val_acc),
            pct(r.test_acc),
            r.test_errors.map_or("-".into(), |e| e.to_string()),
            r.wall_s
        );
    }
    s
}

/// A row of the comparison table; `collapsed`: its count of collapsed seeds, when the table
/// has that column.
fn comparison_row(label: &str, c: &Comparison, collapsed: Option<usize>) -> String {
    let ci = match c.ci {
        Some(h) => format!("[{:+.2}, {:+.2}]", c.gain.0 - h, c.gain.0 + h),
        None => "one seed: no spread, no interval".into(),
    };
    let collapsed = collapsed.map_or(String::new(), |n| format!(" {n} |"));
    format!(
        "| {label} | {} | {} | {} | {} | {ci} |{collapsed}",
        c.n,
        mean_sd(c.kd, false),
        mean_sd(c.baseline, false),
        mean_sd(c.gain, true)
    )
}

/// KD against its paired hard-target baseline, one row per cell: means and sample standard
/// deviations over seeds, and a 95% t-interval of the gain. When some seed collapsed
/// ([`crate::analysis::collapsed`]), a `collapsed` column counts them per cell and a note
/// says what it means; the numbers keep every seed.
pub fn comparison_table(a: &Analysis) -> String {
    let compared: Vec<_> = a
        .cells
        .iter()
        .filter_map(|c| c.comparison().map(|cmp| (c, cmp)))
        .collect();
    if compared.is_empty() {
        return "No KD trial has a finished baseline of the same seed to compare with.\n".into();
    }
    let any_collapsed = compared.iter().any(|(c, _)| c.collapsed_pairs() > 0);
    let mut s = String::from(
        "| cell | seeds | KD test % | baseline test % | gain (points) | 95% interval of the gain |",
    );
    s.push_str(if any_collapsed {
        " collapsed |\n|---|---:|---:|---:|---:|---|---:|\n"
    } else {
        "\n|---|---:|---:|---:|---:|---|\n"
    });
    for (cell, cmp) in &compared {
        let collapsed = any_collapsed.then(|| cell.collapsed_pairs());
        let _ = writeln!(s, "{}", comparison_row(&cell.label, cmp, collapsed));
    }
    if any_collapsed {
        let n: usize = compared.iter().map(|(c, _)| c.collapsed_pairs()).sum();
        let _ = writeln!(
            s,
            "\n`collapsed`: how many of the cell's `seeds` collapsed ({n} in all). {} They \
             count in every mean, gain and interval of this table and in the claims; the \
             figures draw them apart from their cell's mean and spread.",
            crate::analysis::COLLAPSED
        );
    }
    let alone = a.cells.len() - compared.len();
    if alone > 0 {
        let _ = writeln!(
            s,
            "\n{alone} KD cell(s) have no finished baseline to compare with (`baseline: false`, \
             or the baseline did not finish)."
        );
    }
    s
}

/// [`comparison_table`] of `rows` (what the CLI prints after a sweep).
pub fn kd_vs_baseline(rows: &[TrialRecord]) -> String {
    comparison_table(&Analysis::new(rows))
}

/// The best KD cell of each student, chosen on mean validation accuracy, with its test numbers
/// and those of its paired baselines.
pub fn best_cells_table(a: &Analysis) -> String {
    let best = a.best_cells();
    if best.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| student | best cell (by validation) | seeds | val % | KD test % | baseline test % |\n\
         |---|---|---:|---:|---:|---:|\n",
    );
    let pct_of = |v: Vec<f64>| {
        let v: Vec<f64> = v.iter().map(|x| 100.0 * x).collect();
        mean_sd(crate::stats::mean_std(&v), false)
    };
    for cell in best {
        let val = pct_of(cell.kd.iter().filter_map(|r| r.val_acc).collect());
        let test = pct_of(cell.kd.iter().filter_map(|r| r.test_acc).collect());
        let base: Vec<f64> = cell.baselines().iter().filter_map(|b| b.test_acc).collect();
        let base = if base.is_empty() {
            "-".into()
        } else {
            pct_of(base)
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {val} | {test} | {base} |",
            cell.student,
            cell.label,
            cell.kd.len()
        );
    }
    s
}

/// The whole `report.md`: a pure function of the rows and the figures drawn from them.
pub fn render_report(
    name: &str,
    rows: &[TrialRecord],
    epochs: &[EpochRecord],
    figures: &[(String, PathBuf)],
    out: &Path,
) -> String {
    let a = Analysis::new(rows);
    let mut s = format!("# kd-sweep report: {name}\n\n");
    s.push_str(&policy(&a, epochs));
    s.push_str("## Distillation against the hard-target-only baseline\n\n");
    s.push_str(&comparison_table(&a));
    let best = best_cells_table(&a);
    if !best.is_empty() {
        s.push_str("\n## Best cell per student size\n\n");
        s.push_str(&best);
    }
    if !figures.is_empty() {
        s.push_str("\n## Figures\n\n");
        for (title, path) in figures {
            let rel = path.strip_prefix(out).unwrap_or(path);
            let svg = rel.with_extension("svg");
            let _ = writeln!(
                s,
                "### {title}\n\n![{title}]({}) ([SVG]({}))\n",
                rel.display(),
                svg.display()
            );
        }
    }
    s.push_str("\n## Trials\n\n");
    s.push_str(&trials_table(rows));
    let bad: Vec<_> = rows.iter().filter(|r| r.status != Status::Ok).collect();
    if !bad.is_empty() {
        s.push_str("\n## Trials that did not finish\n\n");
        for r in bad {
            let why = r
                .message
                .as_deref()
                .map_or(String::new(), |m| format!(": {m}"));
            let _ = writeln!(
                s,
                "- `{}` ({}, seed {}): {}{why}",
                r.trial_id, r.kind, r.seed, r.status
            );
        }
    }
    s
}

/// `## Trials kept aside`: trials OUT holds that its plan no longer lists (an earlier config's),
/// which this report leaves out; nothing when there are none.
pub fn unplanned_section(rows: &[TrialRecord]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "## Trials kept aside\n\n{} trial(s) in this folder are not in this config's plan (an \
         earlier grid or config planned them). They are not in this report or its frames; their \
         rows are kept in `unplanned/` (trials.parquet, epochs.parquet, confusion.parquet) and \
         come back if the plan lists them again.\n\n{}\n",
        rows.len(),
        trials_table(rows)
    )
}
