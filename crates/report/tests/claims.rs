//! `expect:` claims: each kind passes where its statement holds and fails where it does not,
//! on hand-built records whose means and spreads are known.

use kd_report::claims::{check, claims_section, Claim};
use kd_report::{ConfusionRecord, Exec, Kind, Status, TrialRecord, Verdict};

fn rec(id: &str, kind: Kind, seed: u64, hidden: &str, acc: f64) -> TrialRecord {
    TrialRecord {
        trial_id: id.into(),
        kind,
        seed,
        status: Status::Ok,
        arch: "mlp".into(),
        hidden: hidden.into(),
        model: format!("{{\"hidden\":\"{hidden}\"}}"),
        init: "torch".into(),
        params: 1000,
        epochs: 10,
        batch_size: 128,
        optimizer: "adam".into(),
        lr: 0.001,
        momentum: 0.9,
        weight_decay: 0.0,
        schedule: "cosine".into(),
        temperature: None,
        alpha: None,
        beta: None,
        soft_loss: None,
        t2_scaling: None,
        loss: None,
        soft_reduction: None,
        teacher_mode: None,
        teacher_id: None,
        baseline_id: None,
        dataset: "fashion-mnist".into(),
        data_fingerprint: "f".into(),
        transfer_fraction: 0.1,
        transfer_classes: None,
        jitter: None,
        augment: None,
        max_norm: None,
        precision: None,
        cudnn_benchmark: None,
        train_images: 5500,
        val_images: 5000,
        test_images: 10_000,
        device: "cpu".into(),
        hardware: "avx512".into(),
        threads: 2,
        cpu: None,
        model_file: None,
        exec: Exec::Single,
        libtorch: "2.13.0".into(),
        train_acc: Some(0.99),
        val_acc: Some(acc - 0.001),
        test_acc: Some(acc),
        test_error: Some(1.0 - acc),
        test_errors: Some(((1.0 - acc) * 10_000.0).round() as u64),
        best_epoch: Some(10),
        best_test_acc: Some(acc),
        teacher_agreement: None,
        teacher_kl: None,
        shifted_classes: None,
        bias_shift: None,
        shifted_test_errors: None,
        wall_s: 1.0,
        finished_at: "2026-11-29T00:00:00Z".into(),
        message: None,
        resumed: None,
        swept: vec![],
    }
}

const TEMPS: [f64; 5] = [1.0, 2.0, 4.0, 8.0, 16.0];

/// Two student sizes x five temperatures x three seeds, with their baselines.
/// 30-30: clearly best at T = 4, gains of about 3 points at every seed.
/// 300-300: flat from T = 8 on (87.5 vs 87.6), gains at its best cell of +0.2 +- 0.7 points.
fn rows(soft_loss: &str, tag: &str) -> Vec<TrialRecord> {
    let mut out = Vec::new();
    for seed in 0..3u64 {
        for (hidden, base, curve, kd_noise, base_noise) in [
            (
                "30-30",
                0.80,
                [0.80, 0.81, 0.83, 0.81, 0.80],
                [0.0, 0.001, 0.002],
                [0.0, 0.001, 0.0],
            ),
            (
                "300-300",
                0.874,
                [0.85, 0.86, 0.87, 0.875, 0.876],
                [0.0, 0.004, -0.004],
                [0.0, -0.003, 0.003],
            ),
        ] {
            let bid = format!("b-{tag}-{hidden}-{seed}");
            out.push(rec(
                &bid,
                Kind::Baseline,
                seed,
                hidden,
                base + base_noise[seed as usize],
            ));
            for (t, acc) in TEMPS.iter().zip(curve) {
                let mut k = rec(
                    &format!("k-{tag}-{hidden}-{seed}-{t}"),
                    Kind::Kd,
                    seed,
                    hidden,
                    acc + kd_noise[seed as usize],
                );
                k.temperature = Some(*t);
                k.alpha = Some(0.9);
                k.beta = Some(0.1);
                k.soft_loss = Some(soft_loss.into());
                k.t2_scaling = Some(true);
                k.baseline_id = Some(bid.clone());
                out.push(k);
            }
        }
    }
    out
}

fn claim(yaml: &str) -> Claim {
    let c: Claim = serde_yaml::from_str(yaml).unwrap();
    c.validate().unwrap();
    c
}

fn one(yaml: &str, rows: &[TrialRecord], confusion: &[ConfusionRecord]) -> Vec<Verdict> {
    check(&[claim(yaml)], rows, confusion)
}

#[test]
fn best_temperature_passes_inside_its_range_and_fails_outside() {
    let r = rows("ce", "a");
    let v = one(
        "{claim: best_temperature_in, student: 30-30, range: [2.5, 4]}",
        &r,
        &[],
    );
    assert_eq!(v.len(), 1);
    assert!(v[0].pass, "{v:?}");
    assert!(
        v[0].measured.contains("best on validation T = 4"),
        "{}",
        v[0].measured
    );
    let v = one(
        "{claim: best_temperature_in, student: 30-30, range: [8, 20]}",
        &r,
        &[],
    );
    assert!(!v[0].pass);
    assert_eq!(v[0].margin, "4 outside");
    let v = one(
        "{claim: best_temperature_in, student: 300-300, range: [2.5, 4]}",
        &r,
        &[],
    );
    assert!(!v[0].pass, "300-300 is best at T = 16");
}

#[test]
fn flat_above_measures_the_spread_of_the_high_temperatures() {
    let r = rows("ce", "a");
    let v = one(
        "{claim: flat_above, student: 300-300, temperature: 8, tolerance: 0.3}",
        &r,
        &[],
    );
    assert!(v[0].pass, "{v:?}");
    assert!(
        v[0].measured.starts_with("spread 0.10 points"),
        "{}",
        v[0].measured
    );
    let v = one(
        "{claim: flat_above, student: 30-30, temperature: 2, tolerance: 0.3}",
        &r,
        &[],
    );
    assert!(!v[0].pass);
    assert!(
        v[0].measured.starts_with("spread 3.00 points"),
        "{}",
        v[0].measured
    );
}

#[test]
fn kd_beats_baseline_needs_the_interval_above_zero_per_student() {
    let r = rows("ce", "a");
    let v = one("{claim: kd_beats_baseline, paper: 74 vs 146}", &r, &[]);
    assert_eq!(v.len(), 2, "one verdict per student size");
    let small = v.iter().find(|x| x.statement.contains("30-30)")).unwrap();
    let big = v.iter().find(|x| x.statement.contains("300-300")).unwrap();
    // 30-30 at T = 4: gains 3.0, 3.0, 3.2 points.
    assert!(small.pass, "{small:?}");
    assert!(
        small.measured.starts_with("gain +3.07 points"),
        "{}",
        small.measured
    );
    // 300-300 at T = 16: gains +0.2, +0.9, -0.5: mean +0.2, interval +-1.74.
    assert!(!big.pass, "{big:?}");
    assert_eq!(big.paper.as_deref(), Some("74 vs 146"));
    let v = one(
        "{claim: gain_at_least, student: 30-30, points: 10}",
        &r,
        &[],
    );
    assert!(!v[0].pass);
    let v = one(
        "{claim: gain_at_least, student: 30-30, temperature: 1, points: 0}",
        &r,
        &[],
    );
    assert!(v[0].pass, "T = 1 gains +0.03 on average: {v:?}");
}

#[test]
fn metric_claims_read_columns_and_per_class_errors() {
    let mut r = rows("ce", "a");
    // Class 3 of seed 0's T = 4 30-30 student: 900 right, 100 wrong; after the shift 980/20.
    let id = "k-a-30-30-0-4".to_string();
    let mut confusion = Vec::new();
    for (shifted, right, wrong) in [(false, 900, 100), (true, 980, 20)] {
        confusion.push(ConfusionRecord {
            trial_id: id.clone(),
            shifted,
            label: 3,
            predicted: 3,
            count: right,
        });
        confusion.push(ConfusionRecord {
            trial_id: id.clone(),
            shifted,
            label: 3,
            predicted: 0,
            count: wrong,
        });
    }
    r.iter_mut()
        .find(|x| x.trial_id == id)
        .unwrap()
        .shifted_test_errors = Some(1500);
    let sel = "select: {kind: kd, student: 30-30, temperature: 4, seed: 0}";
    let v = one(
        &format!("{{claim: errors_at_most, {sel}, metric: 'class_errors:3', errors: 100}}"),
        &r,
        &confusion,
    );
    assert!(v[0].pass, "{v:?}");
    let v = one(
        &format!("{{claim: errors_at_most, {sel}, metric: 'class_errors:3', errors: 99}}"),
        &r,
        &confusion,
    );
    assert!(!v[0].pass);
    let v = one(&format!("{{claim: reference, {sel}, metric: 'shifted_class_errors:3', value: 14, tolerance: 5}}"), &r, &confusion);
    assert!(!v[0].pass, "20 is 6 from 14: {v:?}");
    let v = one(
        &format!("{{claim: errors_at_most, {sel}, metric: shifted_test_errors, errors: 1500}}"),
        &r,
        &confusion,
    );
    assert!(v[0].pass);
    // Accuracies in percent: the 30-30 baselines average 80.03%.
    let v = one("{claim: reference, select: {kind: baseline, student: [30, 30]}, metric: test_acc, value: 80, tolerance: 0.05}", &r, &[]);
    assert!(v[0].pass, "{v:?}");
    assert!(
        v[0].measured.starts_with("80.03% (mean of 3"),
        "{}",
        v[0].measured
    );
    // Nothing selected: not measured, which fails.
    let v = one(
        "{claim: errors_at_most, select: {kind: kd, temperature: 99}, errors: 1e9}",
        &r,
        &[],
    );
    assert!(
        !v[0].pass && v[0].measured.starts_with("not measured"),
        "{v:?}"
    );
    let section = claims_section(&v);
    assert!(
        section.contains("| **FAIL** |") && section.contains("0 of 1 claims passed"),
        "{section}"
    );
}

#[test]
fn converges_compares_two_families_across_temperature() {
    let mut r = rows("ce", "ce");
    // mse_logits: the same student from T = 8 on, 2 points worse at T = 1.
    let mut mse = rows("mse_logits", "mse");
    for k in mse.iter_mut().filter(|k| k.kind == Kind::Kd) {
        let t = k.temperature.unwrap();
        let acc = k.test_acc.unwrap() + if t < 8.0 { -0.02 } else { 0.0 };
        k.test_acc = Some(acc);
        k.val_acc = Some(acc - 0.001);
    }
    mse.retain(|k| k.kind == Kind::Kd);
    r.extend(mse);
    let pass = one("{claim: converges, student: 30-30, a: {soft_loss: ce}, b: {soft_loss: mse_logits}, tolerance: 0.1}", &r, &[]);
    assert!(pass[0].pass, "{pass:?}");
    // Each verdict is one table row of six cells, whatever its text holds.
    let mut odd = pass.clone();
    odd[0].measured = "a | b".into();
    let section = claims_section(&odd);
    let row = section.lines().find(|l| l.starts_with("| 1 |")).unwrap();
    assert_eq!(row.replace("\\|", "").matches('|').count(), 7, "{row}");
    let fail = one("{claim: converges, student: 30-30, a: {soft_loss: ce}, b: {soft_loss: mse_logits, temperature: 1}, tolerance: 0.1}", &r, &[]);
    assert!(!fail[0].pass, "{fail:?}");
    // `agrees` wants every common T within the tolerance: the 2 points at T <= 4 fail it, and
    // it passes once the tolerance covers them.
    let v = one("{claim: agrees, student: 30-30, a: {soft_loss: ce}, b: {soft_loss: mse_logits}, tolerance: 0.1}", &r, &[]);
    assert!(!v[0].pass, "{v:?}");
    assert!(
        v[0].margin.starts_with("-1.90 points at T = "),
        "{}",
        v[0].margin
    );
    let v = one("{claim: agrees, student: 30-30, a: {soft_loss: ce}, b: {soft_loss: mse_logits}, tolerance: 2.01}", &r, &[]);
    assert!(v[0].pass, "{v:?}");
}

/// A per-size claim judges every student size, also after one that cannot be judged: 30-30
/// without its baselines is "not measured", and 300-300 still gets its verdict.
#[test]
fn a_size_that_cannot_be_judged_does_not_hide_the_next() {
    let r: Vec<TrialRecord> = rows("ce", "s")
        .into_iter()
        .filter(|r| !(r.hidden == "30-30" && r.kind == Kind::Baseline))
        .collect();
    let v = one("{claim: kd_beats_baseline}", &r, &[]);
    assert_eq!(v.len(), 2, "{v:#?}");
    assert!(
        v[0].measured
            .starts_with("not measured: no finished paired baseline"),
        "{v:#?}"
    );
    assert!(v[1].measured.starts_with("gain"), "{v:#?}");
}

/// The claims of a config keep their stored form: a claim serialises as its kind's keys under
/// `claim:`, as claims.parquet holds them, and reads back equal.
#[test]
fn a_claim_keeps_its_stored_form() {
    let c = claim("{claim: gain_at_least, student: 30-30, points: 1.5, paper: x}");
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(
        json,
        r#"{"claim":"gain_at_least","student":"30-30","temperature":null,"points":1.5,"select":{},"paper":"x"}"#
    );
    assert_eq!(serde_json::from_str::<Claim>(&json).unwrap(), c);
    let err = serde_yaml::from_str::<Claim>("{claim: gain_at_least, points: 1, pionts: 2}");
    assert!(err
        .unwrap_err()
        .to_string()
        .contains("unknown field `pionts`"));
}

/// Issue 36: after successive halving, a claim the pruned cells could change is NOT JUDGED
/// (neither PASS nor FAIL); one they cannot change (the best cell on validation is a survivor)
/// is judged on the survivors. Here the 30-30 cells at T = 1 and 16 were pruned at a rung (their
/// validation accuracy there lower than the survivors' at the end).
#[test]
fn claims_that_need_a_pruned_cell_are_not_judged() {
    let all = rows("ce", "h");
    let pruned_t = |r: &TrialRecord| {
        r.hidden == "30-30" && matches!(r.temperature, Some(t) if t == 1.0 || t == 16.0)
    };
    let mut pruned: Vec<TrialRecord> = all.iter().filter(|r| pruned_t(r)).cloned().collect();
    for r in &mut pruned {
        r.status = Status::Pruned;
        r.val_acc = Some(0.70);
        (r.test_acc, r.test_error, r.test_errors, r.best_test_acc) = (None, None, None, None);
    }
    let kept: Vec<TrialRecord> = all.into_iter().filter(|r| !pruned_t(r)).collect();
    let claims = [
        claim("{claim: best_temperature_in, student: 30-30, range: [2.5, 4]}"),
        claim("{claim: errors_at_most, select: {kind: kd, hidden: 30-30, temperature: 16}, errors: 5000}"),
        claim("{claim: errors_at_most, select: {kind: kd, hidden: 30-30}, errors: 5000}"),
        claim("{claim: errors_at_most, select: {kind: baseline}, errors: 5000}"),
    ];
    let v = kd_report::claims::check_with_pruned(&claims, &kept, &pruned, &[]);
    let labels: Vec<&str> = v.iter().map(|v| v.label()).collect();
    assert_eq!(
        labels,
        ["PASS", "NOT JUDGED", "NOT JUDGED", "PASS"],
        "{v:?}"
    );
    assert!(
        v[1].measured
            .ends_with("not judged: the 6 trial(s) the search pruned could change it"),
        "{}",
        v[1].measured
    );
    let section = claims_section(&v);
    assert!(
        section.contains("2 of 4 claims passed. 2 not judged: they need cells the search pruned."),
        "{section}"
    );
    // Without pruned trials, the same as `check`.
    assert_eq!(
        kd_report::claims::check_with_pruned(&claims, &kept, &[], &[]),
        check(&claims, &kept, &[])
    );
}

/// `retained_fraction`: per seed (KD - baseline) / (teacher - baseline) of the cell chosen on
/// validation (30-30 at T = 4: KD 83.0, 83.1, 83.2 against baselines 80.0, 80.1, 80.0), the
/// teacher being the row the KD trials name. Teacher 84%: 0.750, 0.769, 0.800, mean 0.773.
#[test]
fn retained_fraction_is_judged_only_where_the_teachers_gain_is_clear() {
    let with_teacher = |acc: f64| {
        let mut rows = rows("ce", "r");
        for r in rows.iter_mut().filter(|r| r.kind == Kind::Kd) {
            r.teacher_id = Some("ens".into());
        }
        let mut t = rec("ens", Kind::Teacher, 0, "3 x mlp 64", acc);
        t.arch = "ensemble".into();
        rows.push(t);
        rows
    };
    let rows = with_teacher(0.84);
    let pass = one(
        "{claim: retained_fraction, student: 30-30, at_least: 0.7}",
        &rows,
        &[],
    );
    assert_eq!(pass.len(), 1);
    assert_eq!(pass[0].label(), "PASS", "{:?}", pass[0]);
    assert!(
        pass[0].measured.starts_with("retained 0.77 ±"),
        "{}",
        pass[0].measured
    );
    assert_eq!(pass[0].margin, "+0.07");
    let fail = one(
        "{claim: retained_fraction, student: 30-30, at_least: 0.8}",
        &rows,
        &[],
    );
    assert_eq!(fail[0].label(), "FAIL", "{:?}", fail[0]);
    assert_eq!(fail[0].margin, "-0.03");
    // A teacher 0.02 points above the baselines' mean, whose seed sd is 0.06 points: noise.
    let noise = one(
        "{claim: retained_fraction, student: 30-30, at_least: 0.8}",
        &with_teacher(0.8005),
        &[],
    );
    assert_eq!(noise[0].label(), "NOT MEASURABLE", "{:?}", noise[0]);
    assert!(
        noise[0].measured.contains("not measurable"),
        "{}",
        noise[0].measured
    );
    let section = claims_section(&noise);
    assert!(section.contains("1 not measurable"), "{section}");
    // No teacher row: not measured, a failure that says so.
    let orphan = one(
        "{claim: retained_fraction, student: 30-30, at_least: 0.8}",
        &rows[..rows.len() - 1],
        &[],
    );
    assert_eq!(orphan[0].label(), "FAIL");
    assert!(
        orphan[0].measured.contains("no finished teacher row"),
        "{}",
        orphan[0].measured
    );
}
