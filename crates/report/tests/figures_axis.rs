//! Figures that cannot mislead (issue 32, item 7): an error axis within 0..100%, collapsed
//! students drawn apart from their cell's mean and spread, the teacher as a reference line,
//! and tables that keep every trial and count the collapsed ones.

use std::path::PathBuf;

use kd_report::analysis::{collapsed, Analysis};
use kd_report::figures::{figures, Figure, LinePlot};
use kd_report::markdown::comparison_table;
use kd_report::{read_frames, EpochRecord, Kind, Status, TrialRecord};

fn committed(name: &str) -> (Vec<TrialRecord>, Vec<EpochRecord>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../results")
        .join(name);
    read_frames(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn line<'f>(figs: &'f [Figure], wanted: &str) -> &'f LinePlot {
    figs.iter()
        .find_map(|f| match f {
            Figure::Line { stem, plot } if stem == wanted => Some(plot),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {wanted}"))
}

/// Collapsed KD trials as `(hidden, T, seed)`, sorted.
fn collapsed_kd(rows: &[TrialRecord]) -> Vec<(String, u64, u64)> {
    let mut out: Vec<(String, u64, u64)> = rows
        .iter()
        .filter(|r| r.kind == Kind::Kd)
        .filter(|r| {
            let base = rows
                .iter()
                .find(|b| Some(&b.trial_id) == r.baseline_id.as_ref());
            collapsed(r, base)
        })
        .map(|r| (r.hidden.clone(), r.temperature.unwrap() as u64, r.seed))
        .collect();
    out.sort();
    out
}

#[test]
fn the_committed_mnist_error_axis_is_within_0_and_100_and_narrow() {
    let (rows, epochs) = committed("size_vs_temperature_mnist");
    let a = Analysis::new(&rows);
    let figs = figures(&a, &epochs);
    let plot = line(&figs, "error_vs_temperature");
    let ((_, _), (y0, y1)) = plot.ranges();
    eprintln!("error_vs_temperature: {y0} .. {y1}");
    assert!(y0 >= 0.0 && y1 <= 100.0, "{y0} .. {y1}");
    // Before: -30 .. 150 (two collapsed seeds' spread). The seeds that learned lie within 1-6%.
    assert!(y1 < 30.0, "top {y1}");
    assert!(y1 - y0 < 15.0, "{y0} .. {y1}");
    // The 11 collapsed students: each drawn apart, none in a mean.
    assert_eq!(plot.outliers.len(), 11, "{:?}", plot.outliers);
    assert!(plot.outliers.iter().all(|o| o.y > 75.0 && o.y.is_finite()));
    // 30-30 at T = 8, 12 and 20 lost every seed: a mark each at the top edge, no point.
    let mut lost: Vec<f64> = plot.lost.iter().map(|l| l.0).collect();
    lost.sort_by(f64::total_cmp);
    assert_eq!(lost, [8.0, 12.0, 20.0]);
    for s in &plot.series {
        for &(t, mean, sd) in &s.points {
            assert!(mean + sd < 6.0, "{} at T={t}: {mean} ± {sd}", s.name);
        }
    }
    // The teacher's test error is a reference line.
    let teacher = rows.iter().find(|r| r.kind == Kind::Teacher).unwrap();
    assert_eq!(plot.refs.len(), 1);
    let want = 100.0 * (1.0 - teacher.test_acc.unwrap());
    assert!((plot.refs[0].y - want).abs() < 1e-9, "{:?}", plot.refs);
    assert!(plot.refs[0].name.starts_with("teacher mlp 1200-1200"));
    // The other figures of test error and gap stay within their limits too.
    for stem in ["error_vs_params", "gap_vs_temperature", "learning_curves"] {
        let p = line(&figs, stem);
        let (lo, hi) = p.y_limits.expect(stem);
        let (_, (y0, y1)) = p.ranges();
        assert!(
            y0 >= lo && y1 <= hi && y1 - y0 < 30.0,
            "{stem}: {y0} .. {y1}"
        );
    }
}

#[test]
fn the_committed_mnist_sweep_has_exactly_the_expected_collapsed_students() {
    let (rows, _) = committed("size_vs_temperature_mnist");
    let s = |t: u64, seed: u64| ("30-30".to_string(), t, seed);
    let mut want = vec![
        s(4, 0),
        s(8, 0),
        s(8, 1),
        s(8, 2),
        s(12, 0),
        s(12, 1),
        s(12, 2),
        s(20, 0),
        s(20, 1),
        s(20, 2),
        ("300-300".to_string(), 20, 2),
    ];
    want.sort();
    assert_eq!(collapsed_kd(&rows), want);
    // Chance alone (at or below 10%, the runner's warning) would catch 1 of them.
    let at_chance = rows
        .iter()
        .filter(|r| r.kind == Kind::Kd && r.test_acc.is_some_and(|a| a <= 0.1))
        .count();
    assert_eq!(at_chance, 1);
    // No baseline or teacher collapsed.
    assert!(rows
        .iter()
        .filter(|r| r.kind != Kind::Kd)
        .all(|r| !collapsed(r, None)));
}

#[test]
fn the_table_keeps_every_seed_and_counts_the_collapsed_ones() {
    let (rows, _) = committed("size_vs_temperature_mnist");
    let a = Analysis::new(&rows);
    let md = comparison_table(&a);
    assert!(
        md.starts_with(
            "| cell | seeds | KD test % | baseline test % | gain (points) | 95% interval of the \
             gain | collapsed |"
        ),
        "{md}"
    );
    assert!(md.contains("(11 in all)"), "{md}");
    assert!(
        md.contains("below max(2 x chance, half its paired baseline"),
        "{md}"
    );
    // The 30-30 cell at T = 20: all three seeds collapsed, and its mean keeps them (10.10%).
    let row = md
        .lines()
        .find(|l| l.starts_with("| mlp 30-30, T=20,"))
        .unwrap_or_else(|| panic!("{md}"));
    assert!(row.contains("| 3 | 10.10 ± 0.00 |"), "{row}");
    assert!(row.ends_with("| 3 |"), "{row}");
    let total: usize = a.cells.iter().map(|c| c.collapsed_pairs()).sum();
    assert_eq!(total, 11);
    // A sweep where nothing collapsed keeps its table as it was: no column, no note.
    let (rows, _) = committed("size_vs_temperature_fashion");
    let md = comparison_table(&Analysis::new(&rows));
    assert!(!md.contains("collapsed"), "{md}");
    assert!(md.starts_with(
        "| cell | seeds | KD test % | baseline test % | gain (points) | 95% interval of the \
         gain |\n|---|---:|---:|---:|---:|---|\n"
    ));
}

/// A KD row of the committed MNIST sweep (its seed-0 baseline and the teacher beside it),
/// changed by `f`.
fn sample() -> (TrialRecord, TrialRecord, TrialRecord) {
    let (rows, _) = committed("size_vs_temperature_mnist");
    let pick = |k: Kind| rows.iter().find(|r| r.kind == k && r.seed == 0).unwrap();
    let kd = pick(Kind::Kd).clone();
    let base = rows
        .iter()
        .find(|b| Some(&b.trial_id) == kd.baseline_id.as_ref())
        .unwrap()
        .clone();
    (pick(Kind::Teacher).clone(), base, kd)
}

#[test]
fn collapsed_is_below_twice_chance_or_half_the_paired_baseline() {
    let (_, mut base, kd) = sample();
    let with = |acc: Option<f64>, f: &dyn Fn(&mut TrialRecord)| {
        let mut r = kd.clone();
        r.test_acc = acc;
        f(&mut r);
        r
    };
    let same = |_: &mut TrialRecord| {};
    base.test_acc = Some(0.97);
    // Half the baseline: 48.5%.
    assert!(!collapsed(&with(Some(0.95), &same), Some(&base)));
    assert!(!collapsed(&with(Some(0.49), &same), Some(&base)));
    assert!(collapsed(&with(Some(0.48), &same), Some(&base)));
    // Twice chance (10 classes): 20%, with no baseline or a weak one.
    assert!(collapsed(&with(Some(0.19), &same), None));
    assert!(!collapsed(&with(Some(0.21), &same), None));
    base.test_acc = Some(0.30);
    assert!(collapsed(&with(Some(0.19), &same), Some(&base)));
    assert!(!collapsed(&with(Some(0.21), &same), Some(&base)));
    // A baseline that did not finish does not judge.
    base.status = Status::Diverged;
    base.test_acc = Some(0.97);
    assert!(!collapsed(&with(Some(0.40), &same), Some(&base)));
    // No test accuracy, NaN, or a trial that diverged: collapsed.
    assert!(collapsed(&with(None, &same), None));
    assert!(collapsed(&with(Some(f64::NAN), &same), None));
    assert!(collapsed(
        &with(Some(0.95), &|r| r.status = Status::Diverged),
        None
    ));
    // A student that learned 2 of 10 classes tops out near 20%: no chance floor for it.
    let two = |r: &mut TrialRecord| r.transfer_classes = Some("0 1".into());
    assert!(!collapsed(&with(Some(0.19), &two), None));
    // 100 classes: the floor is 2%; an idx dataset of unknown classes has none.
    let cifar = |r: &mut TrialRecord| r.dataset = "cifar100".into();
    assert!(!collapsed(&with(Some(0.03), &cifar), None));
    assert!(collapsed(&with(Some(0.01), &cifar), None));
    let idx = |r: &mut TrialRecord| r.dataset = "idx".into();
    assert!(!collapsed(&with(Some(0.05), &idx), None));
}

#[test]
fn a_diverged_seed_and_a_lost_cell_are_marked_at_the_edge_not_averaged() {
    let (teacher, base, kd) = sample();
    let mut rows = vec![teacher, base.clone()];
    for (t, acc, status) in [
        (1.0, Some(0.96), Status::Ok),
        (2.0, Some(0.97), Status::Ok),
        // Seed 1 of T = 2: diverged, no test accuracy.
        (2.0, None, Status::Diverged),
        // T = 4: its only seed collapsed.
        (4.0, Some(0.10), Status::Ok),
    ] {
        let mut r = kd.clone();
        r.temperature = Some(t);
        r.test_acc = acc;
        r.status = status;
        r.trial_id = format!("kd-{t}-{}", acc.is_none());
        if acc.is_none() {
            r.seed = 1;
        }
        rows.push(r);
    }
    let a = Analysis::new(&rows);
    assert_eq!(a.cells.len(), 3);
    assert_eq!(a.cells[1].unfinished.len(), 1);
    let figs = figures(&a, &[]);
    let plot = line(&figs, "error_vs_temperature");
    assert_eq!(plot.series.len(), 1);
    let pts: Vec<(f64, f64)> = plot.series[0].points.iter().map(|p| (p.0, p.1)).collect();
    assert_eq!(pts.len(), 2, "{pts:?}");
    assert!(
        (pts[1].1 - 3.0).abs() < 1e-9,
        "T = 2 is its finished seed: {pts:?}"
    );
    assert_eq!(plot.lost, [(4.0, 0)]);
    let ys: Vec<f64> = plot.outliers.iter().map(|o| o.y).collect();
    assert_eq!(ys.len(), 2, "{ys:?}");
    assert!(ys[0].is_nan() && (ys[1] - 90.0).abs() < 1e-9, "{ys:?}");
    let (_, (y0, y1)) = plot.ranges();
    assert!(y0 >= 0.0 && y1 < 10.0, "{y0} .. {y1}");
    assert!(plot.title.contains("did not collapse"), "{}", plot.title);
    // Drawn: the PNG exists (outliers and the lost cell at the top edge).
    let dir = tempfile::tempdir().unwrap();
    let png = kd_report::figures::save_line_plot(dir.path(), "e", plot)
        .unwrap()
        .unwrap();
    assert!(std::fs::metadata(png).unwrap().len() > 1000);
}
