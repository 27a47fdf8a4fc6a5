//! `kd bench`'s evaluation row: what `train.test_every: best` saves. The temp.yaml students of
//! seed 0 (a baseline and five KD cells) at their full epochs, trained alone as a sweep trains
//! them, with the test split measured after every epoch (`test_every: 1`, as before `best`) and
//! at the best validation epoch (its weights kept) and the last only (`best`); the two runs must
//! report the same numbers (`test_acc`, `best_test_acc`, the best epoch) for every student.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::step::median;
use super::BenchOptions;
use crate::data::Data;
use crate::error::RunError;
use crate::plan::{Plan, PlannedTrial};
use crate::run::trial::TrialContext;
use crate::train::Outcome;

/// The comparison, medians over the repeats.
#[derive(Debug, Clone, Serialize)]
pub(super) struct TestEveryResult {
    pub students: usize,
    pub epochs: usize,
    /// Seconds of the students with the test split after every epoch.
    pub every_epoch_s: f64,
    /// Seconds with `test_every: best`.
    pub best_s: f64,
    /// Mean test passes per student with `best` (of `epochs`).
    pub best_test_passes: f64,
    /// Whether every student reported the same numbers both ways.
    pub same_numbers: bool,
}

/// The seed-0 trials of `config` with `test_every`, alone (`pack: off`).
fn plan(
    opts: &BenchOptions,
    config: &Path,
    test_every: &str,
    data: &Data,
) -> Result<Plan, RunError> {
    let cfg = opts.config(
        config,
        &[
            "seeds=[0]".into(),
            "pack=off".into(),
            format!("student.train.test_every={test_every}"),
        ],
    )?;
    Plan::build(&cfg, data)
}

/// What a student reports, to compare the two modes.
fn reported(o: &Outcome) -> (Option<f64>, Option<u32>, Option<f64>) {
    (o.test_acc, o.best_epoch, o.best_test_acc())
}

/// Train the students of `config` both ways, `repeats` times, interleaved.
pub(super) fn compare(
    opts: &BenchOptions,
    config: &Path,
    data: &Data,
    ctx: &TrialContext,
    repeats: usize,
    note: &mut dyn FnMut(&str),
) -> Result<TestEveryResult, RunError> {
    let (every, best) = (
        plan(opts, config, "1", data)?,
        plan(opts, config, "best", data)?,
    );
    let run = |p: &Plan| {
        let trials: Vec<&PlannedTrial> = p.trials.iter().collect();
        let t0 = Instant::now();
        let outcomes: Vec<Outcome> = trials.iter().map(|t| ctx.run(t, |_| {})).collect();
        (t0.elapsed().as_secs_f64(), outcomes)
    };
    let (mut every_s, mut best_s) = (vec![], vec![]);
    let (mut same, mut passes) = (true, 0.0);
    for rep in 0..repeats {
        let (te, oe) = run(&every);
        let (tb, ob) = run(&best);
        note(&format!(
            "  repeat {} test_every 1: {te:.1} s, best: {tb:.1} s",
            rep + 1
        ));
        same &= oe.iter().map(reported).eq(ob.iter().map(reported));
        let tested: usize = ob
            .iter()
            .map(|o| o.epochs.iter().filter(|e| e.test_acc.is_some()).count())
            .sum();
        passes = tested as f64 / ob.len().max(1) as f64;
        every_s.push(te);
        best_s.push(tb);
    }
    Ok(TestEveryResult {
        students: best.trials.len(),
        epochs: best.trials.first().map_or(0, |t| t.student.train.epochs),
        every_epoch_s: median(&every_s),
        best_s: median(&best_s),
        best_test_passes: passes,
        same_numbers: same,
    })
}
