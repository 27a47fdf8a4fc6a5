//! The report as a pure function of records: frames round-trip, the analysis keeps unlike cells
//! apart, tables and figures read it, and old or damaged files fail with a message.

use std::path::Path;

use kd_report::analysis::Analysis;
use kd_report::figures::{figures, Figure};
use kd_report::record::{epochs_frame, trial_records, trials_frame};
use kd_report::{
    read_frames, read_parquet, regenerate, render_report, write_frames, write_parquet, EpochRecord,
    Kind, Status, TrialRecord, Value,
};

fn rec(id: &str, kind: Kind, seed: u64, acc: f64) -> TrialRecord {
    let kd = kind == Kind::Kd;
    TrialRecord {
        trial_id: id.into(),
        kind,
        seed,
        status: Status::Ok,
        arch: "mlp".into(),
        hidden: "800-800".into(),
        model: r#"{"arch":"mlp","hidden":[800,800]}"#.into(),
        init: "torch".into(),
        params: 1_276_810,
        epochs: 15,
        batch_size: 128,
        optimizer: "adam".into(),
        lr: 0.001,
        momentum: 0.9,
        weight_decay: 0.0,
        schedule: "cosine".into(),
        temperature: kd.then_some(4.0),
        alpha: kd.then_some(0.9),
        beta: kd.then_some(0.1),
        soft_loss: kd.then(|| "ce".to_string()),
        t2_scaling: kd.then_some(true),
        loss: None,
        soft_reduction: None,
        teacher_mode: None,
        teacher_id: kd.then(|| "teacher-t".to_string()),
        baseline_id: kd.then(|| format!("b{seed}")),
        dataset: "fashion-mnist".into(),
        data_fingerprint: "0123456789abcdef".into(),
        transfer_fraction: if kind == Kind::Teacher { 1.0 } else { 0.1 },
        transfer_classes: None,
        jitter: None,
        augment: None,
        max_norm: None,
        precision: None,
        cudnn_benchmark: None,
        train_images: if kind == Kind::Teacher { 55_000 } else { 5_500 },
        val_images: 5_000,
        test_images: 10_000,
        device: "cpu".into(),
        hardware: "avx512".into(),
        threads: 2,
        cpu: None,
        model_file: None,
        exec: kd_report::Exec::Single,
        libtorch: "2.13.0".into(),
        train_acc: Some(0.99),
        val_acc: Some(acc - 0.001),
        test_acc: Some(acc),
        test_error: Some(1.0 - acc),
        test_errors: Some(((1.0 - acc) * 10_000.0).round() as u64),
        best_epoch: Some(14),
        best_test_acc: None,
        teacher_agreement: None,
        teacher_kl: None,
        shifted_classes: None,
        bias_shift: None,
        shifted_test_errors: None,
        wall_s: 12.5,
        finished_at: "2026-11-27T00:00:00Z".into(),
        message: None,
        resumed: None,
        swept: vec![],
    }
}

fn sample() -> Vec<TrialRecord> {
    vec![
        rec("b0", Kind::Baseline, 0, 0.90),
        rec("k0", Kind::Kd, 0, 0.905),
        rec("b1", Kind::Baseline, 1, 0.89),
        rec("k1", Kind::Kd, 1, 0.897),
    ]
}

fn report(rows: &[TrialRecord]) -> String {
    render_report("t", rows, &[], &[], Path::new("."))
}

#[test]
fn the_frame_has_one_column_per_field_and_round_trips() {
    let mut rows = sample();
    rows.insert(0, rec("t", Kind::Teacher, 0, 0.92));
    // A swept learning rate keeps its type: a float column.
    rows[2].swept = vec![("student.train.lr".into(), Value::Float(0.001))];
    rows[4].swept = vec![("student.train.lr".into(), Value::Float(0.001))];
    let df = trials_frame(&rows);
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut want: Vec<String> = TrialRecord::COLUMNS.iter().map(|s| s.to_string()).collect();
    want.push("student.train.lr".into());
    assert_eq!(names, want);
    assert_eq!(
        df.column("student.train.lr").unwrap().dtype(),
        &polars::prelude::DataType::Float64
    );
    assert_eq!(
        df.column("kind").unwrap().str().unwrap().get(1),
        Some("baseline")
    );

    let dir = tempfile::tempdir().unwrap();
    write_frames(dir.path(), &rows, &[]).unwrap();
    let (back, epochs) = read_frames(dir.path()).unwrap();
    assert_eq!(back, rows);
    assert!(epochs.is_empty());
    let csv = std::fs::read_to_string(dir.path().join("trials.csv")).unwrap();
    assert!(
        csv.starts_with("trial_id,kind,seed,status,arch,hidden,model"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 6);
    let e = read_parquet(&dir.path().join("epochs.parquet")).unwrap();
    let names: Vec<String> = e.get_column_names().iter().map(|s| s.to_string()).collect();
    assert_eq!(names, EpochRecord::COLUMNS);
}

#[test]
fn an_older_or_damaged_file_names_the_column_and_how_to_regenerate() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("trials.parquet");
    let df = trials_frame(&sample()).drop("hardware").unwrap();
    write_parquet(&df, &file).unwrap();
    let err = trial_records(&read_parquet(&file).unwrap(), &file)
        .unwrap_err()
        .to_string();
    assert!(err.contains("column `hardware` is missing"), "{err}");
    assert!(err.contains("kd sweep CONFIG --out DIR"), "{err}");
    // A kind the schema does not know.
    let mut rows = sample();
    rows[0].kind = Kind::Kd;
    let df = trials_frame(&rows);
    let df = df
        .clone()
        .with_column(polars::prelude::Column::new(
            "kind".into(),
            ["student", "kd", "baseline", "kd"],
        ))
        .unwrap()
        .clone();
    let err = trial_records(&df, &file).unwrap_err().to_string();
    assert!(
        err.contains("column `kind` has an unknown value `student`"),
        "{err}"
    );
    // `exec` came later: a file without it reads as trained alone; a bad value still fails.
    let mut rows = sample();
    rows[1].exec = kd_report::Exec::Packed;
    let without = trials_frame(&rows).drop("exec").unwrap();
    let read = trial_records(&without, &file).unwrap();
    assert!(read.iter().all(|r| r.exec == kd_report::Exec::Single));
    assert_eq!(
        trial_records(&trials_frame(&rows), &file).unwrap()[1].exec,
        kd_report::Exec::Packed
    );
    let bad = trials_frame(&rows)
        .with_column(polars::prelude::Column::new(
            "exec".into(),
            ["single", "vmap", "single", "single"],
        ))
        .unwrap()
        .clone();
    let err = trial_records(&bad, &file).unwrap_err().to_string();
    assert!(
        err.contains("column `exec` has an unknown value `vmap`"),
        "{err}"
    );
}

#[test]
fn the_report_pairs_kd_with_the_baseline_of_its_seed() {
    let md = report(&sample());
    // KD 90.5 and 89.7 (mean 90.10, std 0.566); baselines 90.0 and 89.0 (89.50, 0.707);
    // gains 0.5 and 0.7: mean +0.60, std 0.1414, 95% CI 0.6 +- 12.706 * 0.1414 / sqrt(2).
    let want = "| mlp 800-800, T=4, alpha=0.9, beta=0.1, ce | 2 | 90.10 ± 0.57 | 89.50 ± 0.71 \
                | +0.60 ± 0.14 | [-0.67, +1.87] |";
    assert!(md.contains(want), "{md}");
    assert!(md.contains("Every trial ran on cpu (avx512 kernels, 2 threads), libtorch 2.13.0."));
    let mut with_teacher = sample();
    with_teacher.insert(0, rec("t", Kind::Teacher, 0, 0.92));
    let md = report(&with_teacher);
    assert!(
        md.contains(
            "Data: fashion-mnist, validation split 5000 images, test set 10000 images; the \
             students trained on 5500 images (transfer_fraction 0.1), a share of the teacher's \
             55000, with the teacher's logits on them as soft targets; data fingerprint \
             `0123456789abcdef`."
        ),
        "{md}"
    );
    assert!(md.contains("PyTorch's defaults"), "{md}");
}

#[test]
fn one_seed_shows_no_spread_and_says_so_and_diverged_trials_are_listed() {
    let mut rows = sample();
    rows[1].status = Status::Diverged;
    rows[1].test_acc = None;
    rows[1].message = Some("the loss became NaN or infinite in epoch 3".into());
    let md = report(&rows);
    assert!(
        md.contains("- `k0` (kd, seed 0): diverged: the loss became NaN or infinite in epoch 3"),
        "{md}"
    );
    assert!(
        md.contains("| 1 | 89.70 | 89.00 | +0.70 | one seed: no spread, no interval |"),
        "{md}"
    );
    assert!(!md.contains("± 0.00"), "{md}");
}

#[test]
fn regenerate_reads_parquet_only() {
    let dir = tempfile::tempdir().unwrap();
    write_frames(dir.path(), &sample(), &[]).unwrap();
    let p = regenerate(dir.path(), "demo").unwrap().report;
    let md = std::fs::read_to_string(p).unwrap();
    assert!(md.starts_with("# kd-sweep report: demo"));
    assert!(md.contains("+0.60 ± 0.14 | [-0.67, +1.87]"), "{md}");
}

/// KD rows of `kind` x temperatures x 2 seeds, each paired with a baseline of its seed.
fn grid(
    tag: &str,
    temps: &[f64],
    edit: impl Fn(&mut TrialRecord),
    gain: f64,
) -> (Vec<TrialRecord>, Vec<EpochRecord>) {
    let mut rows = Vec::new();
    let mut epochs = Vec::new();
    for seed in 0..2u64 {
        let bid = format!("b-{tag}-{seed}");
        let mut b = rec(&bid, Kind::Baseline, seed, 0.85 + 0.002 * seed as f64);
        edit(&mut b);
        b.temperature = None;
        b.alpha = None;
        b.beta = None;
        b.soft_loss = None;
        b.t2_scaling = None;
        rows.push(b);
        for &t in temps {
            let id = format!("k-{tag}-{seed}-{t}");
            let mut k = rec(&id, Kind::Kd, seed, 0.85 + gain + 0.001 * t);
            k.temperature = Some(t);
            k.baseline_id = Some(bid.clone());
            edit(&mut k);
            for epoch in 1..=3 {
                epochs.push(EpochRecord {
                    trial_id: id.clone(),
                    epoch,
                    train_loss: 1.0 / epoch as f64,
                    soft_loss: Some(0.5),
                    hard_loss: 0.3,
                    train_acc: 0.9,
                    val_acc: Some(0.88),
                    test_acc: Some(0.8 + 0.03 * epoch as f64),
                    lr: 0.01,
                    seconds: 1.0,
                });
            }
            rows.push(k);
        }
    }
    (rows, epochs)
}

/// A line's name and its `(x, mean, std)` points.
type Line = (String, Vec<(f64, f64, f64)>);

fn series_of(figs: &[Figure], stem_wanted: &str) -> Vec<Line> {
    figs.iter()
        .find_map(|f| match f {
            Figure::Line { stem, plot } if stem == stem_wanted => Some(
                plot.series
                    .iter()
                    .map(|s| (s.name.clone(), s.points.clone()))
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {stem_wanted}"))
}

#[test]
fn a_soft_loss_grid_keeps_its_cells_apart_in_the_figures() {
    // Same student, same T, same alpha: only soft_loss differs (ce gains 1 point, kl 3).
    let (mut rows, mut epochs) = grid("ce", &[2.0, 4.0], |_| {}, 0.01);
    let (kl, kl_epochs) = grid(
        "kl",
        &[2.0, 4.0],
        |r| {
            if r.kind == Kind::Kd {
                r.soft_loss = Some("kl".into());
            }
        },
        0.03,
    );
    rows.extend(kl);
    epochs.extend(kl_epochs);
    let a = Analysis::new(&rows);
    assert_eq!(a.cells.len(), 4, "2 soft losses x 2 temperatures");
    let figs = figures(&a, &epochs);
    let lines = series_of(&figs, "error_vs_temperature");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0].0, "KD mlp 800-800, soft_loss=ce");
    assert_eq!(lines[1].0, "KD mlp 800-800, soft_loss=kl");
    // Each point is the mean of its own cell's seeds only: error 100 * (1 - 0.85 - gain - 0.002)
    // at T = 2, 13.8 for ce and 11.8 for kl (pooled, both would read 12.8).
    let (t, err, _) = lines[0].1[0];
    assert_eq!(t, 2.0);
    assert!((err - 13.8).abs() < 1e-9, "{err}");
    let (_, err_kl, _) = lines[1].1[0];
    assert!((err - err_kl - 2.0).abs() < 1e-9, "{err} vs {err_kl}");
    let md = report(&rows);
    assert!(
        md.contains("| mlp 800-800, T=2, alpha=0.9, beta=0.1, kl | 2 |"),
        "{md}"
    );
}

#[test]
fn each_family_gets_the_band_of_its_own_baselines() {
    // A learning-rate sweep: each lr has its own baselines (85% vs 80%).
    let (mut rows, epochs) = grid("a", &[2.0, 4.0], |_| {}, 0.01);
    let (slow, _) = grid(
        "b",
        &[2.0, 4.0],
        |r| {
            r.lr = 0.0001;
            r.swept = vec![("student.train.lr".into(), Value::Float(0.0001))];
            if r.kind == Kind::Baseline {
                r.test_acc = r.test_acc.map(|a| a - 0.05);
            }
        },
        0.01,
    );
    rows.extend(slow);
    let a = Analysis::new(&rows);
    let figs = figures(&a, &epochs);
    let Some(Figure::Line { plot, .. }) = figs.first() else {
        panic!()
    };
    assert_eq!(plot.series.len(), 2);
    assert_eq!(plot.bands.len(), 2, "{:?}", plot.bands);
    let mids: Vec<f64> = plot.bands.iter().map(|b| b.mid).collect();
    assert!(
        (mids[0] - 14.9).abs() < 1e-9 && (mids[1] - 19.9).abs() < 1e-9,
        "{mids:?}"
    );
    assert_eq!(
        plot.bands[0].name,
        "baseline mlp 800-800, lr=0.001 (mean ± std)"
    );
    assert_eq!(plot.series[1].name, "KD mlp 800-800, lr=0.0001");
}

#[test]
fn an_alpha_sweep_shares_one_band_and_draws_a_heat_map_per_student() {
    let mut rows = Vec::new();
    let mut epochs = Vec::new();
    for (hidden, tag) in [("800-800", "big"), ("30-30", "small")] {
        for alpha in [0.5, 0.9] {
            let (r, e) = grid(
                &format!("{tag}{alpha}"),
                &[1.0, 4.0],
                |r| {
                    r.hidden = hidden.into();
                    r.model = format!("{{\"hidden\":\"{hidden}\"}}");
                    r.baseline_id = r
                        .baseline_id
                        .as_ref()
                        .map(|_| format!("b-{tag}-{}", r.seed));
                    if r.kind == Kind::Kd {
                        r.alpha = Some(alpha);
                        r.beta = Some(((1.0 - alpha) * 1e12_f64).round() / 1e12);
                    }
                },
                0.01,
            );
            // One baseline per student and seed: keep the first alpha's.
            rows.extend(
                r.into_iter().filter(|r| {
                    r.kind == Kind::Kd || (alpha == 0.5 && r.trial_id.starts_with("b-"))
                }),
            );
            epochs.extend(e);
        }
    }
    for r in rows.iter_mut().filter(|r| r.kind == Kind::Baseline) {
        let (tag, seed) = if r.hidden == "800-800" {
            ("big", r.seed)
        } else {
            ("small", r.seed)
        };
        r.trial_id = format!("b-{tag}-{seed}");
    }
    let a = Analysis::new(&rows);
    let figs = figures(&a, &epochs);
    let heat: Vec<&Figure> = figs
        .iter()
        .filter(|f| matches!(f, Figure::Heat { .. }))
        .collect();
    assert_eq!(heat.len(), 2, "a heat map per student");
    assert!(
        heat[0].title().ends_with("mlp 800-800"),
        "{}",
        heat[0].title()
    );
    let Some(Figure::Line { plot, .. }) = figs.first() else {
        panic!()
    };
    assert_eq!(plot.series.len(), 4, "a line per student and alpha");
    assert_eq!(
        plot.bands.len(),
        2,
        "one band per student: the alphas share baselines"
    );
    assert_eq!(plot.bands[1].name, "baseline mlp 30-30 (mean ± std)");
}

#[test]
fn without_a_validation_split_no_cell_is_chosen_on_it() {
    let mut rows = sample();
    for r in &mut rows {
        r.val_images = 0;
        r.val_acc = None;
        r.best_epoch = None;
    }
    let a = Analysis::new(&rows);
    assert!(!a.has_validation);
    assert!(a.best_cells().is_empty());
    let md = report(&rows);
    assert!(md.contains("There is no validation split"), "{md}");
    assert!(!md.contains("chosen on validation accuracy"), "{md}");
    assert!(!md.contains("## Best cell"), "{md}");
    assert!(
        md.contains("no validation split, test set 10000 images"),
        "{md}"
    );
    let stems: Vec<String> = figures(&a, &[])
        .iter()
        .map(|f| match f {
            Figure::Line { stem, .. } | Figure::Heat { stem, .. } => stem.clone(),
        })
        .collect();
    assert_eq!(stems, ["error_vs_temperature", "gap_vs_temperature"]);
}

#[test]
fn figures_are_drawn_as_png_and_svg_from_the_frames() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    let mut epochs = Vec::new();
    for alpha in [0.5, 0.9] {
        let (r, e) = grid(
            &format!("{alpha}"),
            &[1.0, 4.0, 16.0],
            |r| {
                r.alpha = r.alpha.map(|_| alpha);
                r.beta = r.beta.map(|_| 1.0 - alpha);
                r.baseline_id = r.baseline_id.as_ref().map(|_| format!("b-0.5-{}", r.seed));
            },
            0.01,
        );
        rows.extend(r.into_iter().filter(|r| r.kind == Kind::Kd || alpha == 0.5));
        epochs.extend(e);
    }
    write_frames(dir.path(), &rows, &epochs).unwrap();
    let e = read_parquet(&dir.path().join("epochs.parquet")).unwrap();
    assert_eq!(e.height(), epochs_frame(&epochs).height());
    let md = std::fs::read_to_string(regenerate(dir.path(), "sweep").unwrap().report).unwrap();
    for stem in [
        "error_vs_temperature",
        "gain_alpha_temperature",
        "error_vs_params",
        "gap_vs_temperature",
        "learning_curves",
    ] {
        let png = dir.path().join("figures").join(format!("{stem}.png"));
        let svg = dir.path().join("figures").join(format!("{stem}.svg"));
        assert!(
            std::fs::metadata(&png).unwrap().len() > 5_000,
            "{stem}.png is too small to hold a plot"
        );
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg"), "{stem}.svg");
        assert!(md.contains(&format!("](figures/{stem}.png)")), "{md}");
    }
    let svg = std::fs::read_to_string(dir.path().join("figures/error_vs_temperature.svg")).unwrap();
    assert!(svg.contains("temperature T (log scale)"), "x axis labelled");
    assert!(svg.contains("test error (%)"), "y axis labelled");
    assert!(
        svg.contains("baseline mlp 800-800"),
        "baseline in the legend"
    );
    // 2 alphas x 3 temperatures = 6 cells, each with 2 seeds; and the best cell.
    assert_eq!(md.matches("| 2 | ").count(), 6 + 1, "{md}");
    assert!(md.contains("## Best cell per student size"));
}

#[test]
fn no_kd_rows_means_no_figures() {
    let rows = vec![rec("b0", Kind::Baseline, 0, 0.9)];
    assert!(figures(&Analysis::new(&rows), &[]).is_empty());
}

/// `train.test_every: best`: validation after every epoch, test only at the best validation
/// epoch and the last. The report says so (how many test passes per student), and the learning
/// curves plot validation error per epoch, with test error where it was measured.
#[test]
fn sparse_test_epochs_are_said_and_the_curves_follow_validation() {
    let rows = sample();
    let mut epochs = Vec::new();
    for r in &rows {
        // k0 and b0: best at 2 (the earliest of ties); k1 and b1: best at 4, the last.
        let tested: &[u32] = if r.seed == 0 { &[2, 4] } else { &[4] };
        for epoch in 1..=4u32 {
            let val = if r.seed == 0 {
                [0.80, 0.85, 0.84, 0.85]
            } else {
                [0.80, 0.81, 0.82, 0.83]
            };
            epochs.push(EpochRecord {
                trial_id: r.trial_id.clone(),
                epoch,
                train_loss: 1.0,
                soft_loss: None,
                hard_loss: 1.0,
                train_acc: 0.9,
                val_acc: Some(val[epoch as usize - 1]),
                test_acc: tested.contains(&epoch).then_some(0.8),
                lr: 0.01,
                seconds: 1.0,
            });
        }
    }
    let md = render_report("t", &rows, &epochs, &[], Path::new("."));
    assert!(
        md.contains(
            "Students were evaluated on validation after every epoch, and on the test set only \
             at the best validation epoch (its weights kept and tested after training) and after \
             the last"
        ),
        "{md}"
    );
    assert!(
        md.contains("1 to 2 (mean 1.5) test evaluations per student of up to 4 evaluated epochs"),
        "{md}"
    );
    let a = Analysis::new(&rows);
    let curves = series_of(&figures(&a, &epochs), "learning_curves");
    let names: Vec<&str> = curves.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names[0].ends_with(", validation") && names[2].ends_with(", test where measured"));
    // Validation at every epoch; test at the union of the seeds' tested epochs.
    let xs = |i: usize| curves[i].1.iter().map(|p| p.0).collect::<Vec<_>>();
    assert_eq!(xs(0), [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(xs(2), [2.0, 4.0]);
    // Epoch 2's validation error: the mean of 15% and 19%.
    assert!((curves[0].1[1].1 - 17.0).abs() < 1e-9);
}

/// Issue 37, item 5: the footprints' section says how much faster and smaller each student is
/// than its teacher beside its accuracies, and `kd report` draws it from `deployment.json`.
#[test]
fn what_the_student_buys_is_in_the_report_and_regenerated() {
    use kd_report::deployment::{self, Footprint};
    let mut teacher = rec("teacher-t", Kind::Teacher, 0, 0.92);
    teacher.arch = "cnn".into();
    teacher.hidden = "c32-c64-f256".into();
    let mut rows = sample();
    rows.push(teacher);
    let fp = |role: &str, arch: &str, hidden: &str, b1: f64, b256: f64| Footprint {
        role: role.into(),
        arch: arch.into(),
        hidden: hidden.into(),
        precision: "fp32".into(),
        params: 1000,
        bytes: 4000,
        batch1_ms: b1,
        batch256_ms: b256,
        runs: [5, 5],
        device: "cpu".into(),
        threads: 2,
        hardware: "AMD EPYC".into(),
    };
    let fps = vec![
        fp("teacher", "cnn", "c32-c64-f256", 2.0, 64.0),
        fp("student", "mlp", "800-800", 0.5, 8.0),
    ];
    let text = deployment::section(&rows, &fps);
    assert!(
        text.contains(
            "| cnn c32-c64-f256 | teacher | 1000 | 0.00 | 2.000 | 64.00 | 4000 | - | 92.00 |"
        ),
        "{text}"
    );
    // 4x and 8x faster; the KD cell's mean test accuracy and its baselines'.
    assert!(
        text.contains("| mlp 800-800 | student | 1000 | 0.00 | 0.500 | 8.00 | 32000 | 4.0 / 8.0 | 90.10 / 89.50 |"),
        "{text}"
    );
    let fig = deployment::figure(&rows, &fps).unwrap();
    assert_eq!(fig.title(), "Test accuracy vs inference latency at batch 1");

    let dir = tempfile::tempdir().unwrap();
    kd_report::write_frames(dir.path(), &rows, &[]).unwrap();
    deployment::write(dir.path(), &fps).unwrap();
    let done = kd_report::regenerate(dir.path(), "t").unwrap();
    let md = std::fs::read_to_string(done.report).unwrap();
    assert!(md.contains("## What the student buys"), "{md}");
    assert!(md.contains("accuracy_vs_latency.png"), "{md}");
    assert!(md.find("## What the student buys") < md.find("## Trials\n"));
}

/// An ensemble teacher's members and the ensemble get their own table: three members at 97.0,
/// 97.2 and 97.4 % (mean 97.20 ± 0.20), the ensemble 97.8 %: +0.60 over the mean, +0.40 over the
/// best. A lone teacher gets none.
#[test]
fn an_ensembles_members_and_the_ensemble_are_tabled() {
    let mut rows = vec![rec("k0", Kind::Kd, 0, 0.975)];
    let mut ens = rec("ens", Kind::Teacher, 0, 0.978);
    ens.arch = "ensemble".into();
    ens.hidden = "3 x mlp 800-800".into();
    ens.model = r#"{"ensemble":["m5","m6","m7"],"rule":"arithmetic","weights":null}"#.into();
    rows.push(ens);
    for (i, acc) in [0.970, 0.972, 0.974].into_iter().enumerate() {
        let mut m = rec(&format!("m{}", 5 + i), Kind::Teacher, 5 + i as u64, acc);
        m.teacher_id = Some("ens".into());
        rows.push(m);
    }
    let text = kd_report::markdown::teachers_section(&rows);
    assert!(
        text.contains("`ens`: 3 members, arithmetic rule."),
        "{text}"
    );
    assert!(
        text.contains("| `m6` | mlp 800-800 | 6 | ok | 97.10 | 97.20 | 280 |"),
        "{text}"
    );
    assert!(
        text.contains("| **ensemble** | 3 x mlp 800-800 | - | ok | 97.70 | 97.80 | 220 |"),
        "{text}"
    );
    assert!(
        text.contains("Members: 97.20 ± 0.20 test % (mean ± sd over 3 members), best 97.40. The ensemble: 97.80, +0.60 points over the mean member, +0.40 over the best."),
        "{text}"
    );
    let lone = vec![rec("t", Kind::Teacher, 0, 0.9), rec("k0", Kind::Kd, 0, 0.8)];
    assert_eq!(kd_report::markdown::teachers_section(&lone), "");
}
