//! `kd bench --only halving`: time to the best cell, successive halving against the full grid,
//! on two grids: temp.yaml's (five temperatures whose cells lie within 0.3 points: a hard case
//! for any search) and the 30-30 cells of the Fashion-MNIST size x temperature grid (nine
//! temperatures a point or more apart). Each grid is swept whole (`search: grid`) and by halving
//! (`eta: 3, min_epochs: 3`) into folders of its own under `OUT/halving/`, after a sweep that
//! only caches the teacher, so both time the students alone. A row: the KD student-epochs each
//! spent, their wall times, the full grid's best cell on validation and the cell halving picks
//! (the best-validation survivor), and how far apart they are on validation and test.

use std::path::{Path, PathBuf};
use std::time::Instant;

use kd_report::{Kind, Status, TrialRecord};
use serde::Serialize;

use super::BenchOptions;
use crate::error::RunError;
use crate::run::sweep::{load_config, run_resolved, RunOptions};

/// The halving search the rows measure.
pub const SEARCH: &str = "search={method: halving, eta: 3, min_epochs: 3}";

/// One grid's row.
#[derive(Debug, Clone, Serialize)]
pub(super) struct HalvingRow {
    pub grid: String,
    pub cells: usize,
    pub seeds: usize,
    pub grid_student_epochs: u64,
    pub halving_student_epochs: u64,
    pub grid_wall_s: f64,
    pub halving_wall_s: f64,
    /// The full grid's best KD cell on validation (mean over seeds), its validation and test
    /// accuracy (percent).
    pub grid_best: String,
    pub grid_best_val: f64,
    pub grid_best_test: f64,
    /// Halving's pick: the best-validation cell among those it trained to the end.
    pub halving_pick: String,
    pub halving_pick_val: f64,
    pub halving_pick_test: f64,
}

/// The grids: (name, config, `--set` overrides).
fn grids(opts: &BenchOptions) -> Vec<(&'static str, PathBuf, Vec<String>)> {
    let fashion = opts
        .temp_config
        .parent()
        .unwrap_or(Path::new("."))
        .join("hinton2015/fashion/size_vs_temperature.yaml");
    vec![
        (
            "temp.yaml (800-800, T 1..16)",
            opts.temp_config.clone(),
            vec![],
        ),
        (
            "size_vs_temperature 30-30 (T 1..20)",
            fashion,
            vec!["grid.hidden=[[30, 30]]".into(), "expect=[]".into()],
        ),
    ]
}

/// The KD cells of `rows` (finished, not pruned) with their mean validation and test accuracy
/// over seeds, by label, in first-seen order.
fn cells(rows: &[TrialRecord]) -> Vec<(String, f64, f64)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.kind == Kind::Kd && r.status == Status::Ok)
    {
        let swept: Vec<String> = r.swept.iter().map(|(k, v)| format!(" {k}={v}")).collect();
        let label = format!(
            "T={} {}{}{}",
            r.temperature.unwrap_or(f64::NAN),
            r.hidden.as_str(),
            match (r.alpha, r.beta) {
                (Some(a), Some(b)) if (a, b) != (0.9, 0.1) => format!(" alpha={a} beta={b}"),
                _ => String::new(),
            },
            swept.concat()
        );
        let v = (r.val_acc.unwrap_or(0.0), r.test_acc.unwrap_or(0.0));
        match out.iter_mut().find(|(l, _)| *l == label) {
            Some((_, vs)) => vs.push(v),
            None => out.push((label, vec![v])),
        }
    }
    out.into_iter()
        .map(|(l, vs)| {
            let n = vs.len() as f64;
            let val = vs.iter().map(|v| v.0).sum::<f64>() / n;
            let test = vs.iter().map(|v| v.1).sum::<f64>() / n;
            (l, 100.0 * val, 100.0 * test)
        })
        .collect()
}

/// The best cell of `rows` on validation (ties: the first).
fn best(rows: &[TrialRecord]) -> (String, f64, f64) {
    cells(rows)
        .into_iter()
        .fold(None, |b: Option<(String, f64, f64)>, c| match b {
            Some(b) if b.1 >= c.1 => Some(b),
            _ => Some(c),
        })
        .unwrap_or((String::new(), f64::NAN, f64::NAN))
}

/// KD student-epochs of `out`'s rows: a pruned trial's epochs are those it trained.
fn student_epochs(out: &Path) -> Result<u64, RunError> {
    let (rows, epochs) = kd_report::read_frames(out)?;
    Ok(rows
        .iter()
        .filter(|r| r.kind == Kind::Kd)
        .map(|r| match r.status {
            Status::Pruned => epochs.iter().filter(|e| e.trial_id == r.trial_id).count() as u64,
            _ => r.epochs as u64,
        })
        .sum())
}

/// Sweep `config` with `sets` into `out` (fresh); the rows and the wall seconds.
fn sweep(
    config: &Path,
    sets: &[String],
    out: PathBuf,
) -> Result<(Vec<TrialRecord>, f64), RunError> {
    let cfg = load_config(config, sets)?;
    let opts = RunOptions {
        out: Some(out),
        fresh: true,
        shard: None,
        replan: true,
        tensorboard: false,
        checkpoint_every: None,
    };
    let t0 = Instant::now();
    let summary = run_resolved(&cfg, &opts)?;
    Ok((summary.trials, t0.elapsed().as_secs_f64()))
}

/// Measure both grids; results under `opts.out/halving/`.
pub(super) fn rows(opts: &BenchOptions) -> Result<Vec<HalvingRow>, RunError> {
    let root = opts.out.join("halving");
    let mut out = Vec::new();
    for (name, config, sets) in grids(opts) {
        let dir = root.join(name.split_whitespace().next().unwrap_or("grid"));
        // The teacher cached first (one 1-epoch student), so neither timed sweep trains it.
        let mut warm = sets.clone();
        warm.extend([
            "student.train.epochs=1".into(),
            "seeds=[0]".into(),
            "grid={}".into(),
        ]);
        sweep(&config, &warm, dir.join("warm"))?;
        let (grid_rows, grid_wall) = sweep(&config, &sets, dir.join("grid"))?;
        let mut halving_sets = sets.clone();
        halving_sets.push(SEARCH.into());
        let (halving_rows, halving_wall) = sweep(&config, &halving_sets, dir.join("halving"))?;
        let (grid_best, grid_best_val, grid_best_test) = best(&grid_rows);
        let (halving_pick, halving_pick_val, halving_pick_test) = best(&halving_rows);
        let kd = grid_rows.iter().filter(|r| r.kind == Kind::Kd).count();
        let cells_n = cells(&grid_rows).len();
        out.push(HalvingRow {
            grid: name.into(),
            cells: cells_n,
            seeds: kd / cells_n.max(1),
            grid_student_epochs: student_epochs(&dir.join("grid"))?,
            halving_student_epochs: student_epochs(&dir.join("halving"))?,
            grid_wall_s: grid_wall,
            halving_wall_s: halving_wall,
            grid_best,
            grid_best_val,
            grid_best_test,
            halving_pick,
            halving_pick_val,
            halving_pick_test,
        });
    }
    Ok(out)
}

/// The rows as a Markdown table, with what each column means.
pub(super) fn render(rows: &[HalvingRow], md: &mut String) {
    md.push_str(&format!(
        "\nSuccessive halving (`{SEARCH}`) against the full grid, each swept fresh after a sweep \
         that cached the teacher. KD student-epochs: a pruned trial counts the epochs it \
         trained; baselines train in full in both. Wall: the whole sweep, baselines included. \
         The best cell is the full grid's on validation (mean over seeds); halving's pick is the \
         best-validation cell it trained to the end. Accuracies in percent.\n\n"
    ));
    md.push_str(
        "| grid | cells x seeds | KD student-epochs, grid -> halving | wall s, grid -> halving \
         | grid's best (val / test) | halving's pick (val / test) | same cell |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {} x {} | {} -> {} ({:.0}%) | {:.0} -> {:.0} ({:.2}x) | {} ({:.2} / {:.2}) | \
             {} ({:.2} / {:.2}) | {} |\n",
            r.grid,
            r.cells,
            r.seeds,
            r.grid_student_epochs,
            r.halving_student_epochs,
            100.0 * r.halving_student_epochs as f64 / r.grid_student_epochs.max(1) as f64,
            r.grid_wall_s,
            r.halving_wall_s,
            r.grid_wall_s / r.halving_wall_s.max(1e-9),
            r.grid_best,
            r.grid_best_val,
            r.grid_best_test,
            r.halving_pick,
            r.halving_pick_val,
            r.halving_pick_test,
            if r.grid_best == r.halving_pick {
                "yes".to_string()
            } else {
                format!(
                    "no: {:.2} points lower on validation, {:+.2} on test",
                    r.grid_best_val - r.halving_pick_val,
                    r.halving_pick_test - r.grid_best_test
                )
            }
        ));
    }
}
