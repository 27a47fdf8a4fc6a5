//! The logit-distillation family in a sweep: one grid compares CE, DKD and DIST (and logit
//! standardisation) against the same paired baselines; each record carries its objective and
//! parameters in the loss contract.

mod common;

use common::{records, stderr, sweep, tiny};

#[test]
fn one_grid_compares_ce_dkd_and_dist_with_paired_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(
        "seeds: [0]\nbaseline: true\n\
         kd: {temperature: 4, alpha: 1, beta: 1, dkd: {nckd: 6, warmup: 2}, dist: {inter: 2, intra: 2}}\n\
         grid: {soft_loss: [ce, dkd, dist], kd.standardise: [false, true]}\n",
    );
    let (o, out) = sweep(dir.path(), &config, &["--set", "student.train.epochs=2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = records(&out);
    assert_eq!(rows.len(), 8, "teacher, baseline, 6 KD cells");
    let kd: Vec<_> = rows
        .iter()
        .filter(|r| r.kind == kd_report::Kind::Kd)
        .collect();
    let mut losses: Vec<&str> = kd.iter().map(|r| r.loss.as_deref().unwrap()).collect();
    losses.sort();
    assert_eq!(
        losses,
        [
            "1 * T^2 (= 16) * (2 * inter + 2 * intra)(y_s, y_t) at T = 4 + 1 * CE(y, q_1)",
            "1 * T^2 (= 16) * (2 * inter + 2 * intra)(y_s, y_t) at T = 4 on z-scored logits + 1 * CE(y, q_1)",
            "1 * T^2 (= 16) * CE(p_T, q_T) at T = 4 + 1 * CE(y, q_1)",
            "1 * T^2 (= 16) * CE(p_T, q_T) at T = 4 on z-scored logits + 1 * CE(y, q_1)",
            "min(epoch / 2, 1) * 1 * T^2 (= 16) * (1 * TCKD + 6 * NCKD) at T = 4 + 1 * CE(y, q_1)",
            "min(epoch / 2, 1) * 1 * T^2 (= 16) * (1 * TCKD + 6 * NCKD) at T = 4 on z-scored logits + 1 * CE(y, q_1)",
        ]
    );
    let baseline = rows
        .iter()
        .find(|r| r.kind == kd_report::Kind::Baseline)
        .unwrap();
    for r in &kd {
        assert_eq!(r.status, kd_report::Status::Ok, "{}", r.trial_id);
        assert_eq!(r.baseline_id.as_deref(), Some(baseline.trial_id.as_str()));
        let alone =
            r.soft_loss.as_deref() != Some("ce") || r.loss.as_deref().unwrap().contains("z-scored");
        assert_eq!(
            r.exec == kd_report::Exec::Single,
            alone,
            "{}: {:?}",
            r.trial_id,
            r.exec
        );
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("kd.standardise=true"), "{report}");
}

#[test]
fn label_smoothing_reaches_the_baseline_and_the_kd_hard_term_and_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny("seeds: [0]\nbaseline: true\n");
    let (o, out) = sweep(
        dir.path(),
        &config,
        &["--set", "student.train.label_smoothing=0.1"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = records(&out);
    let loss = |k| {
        rows.iter()
            .find(|r| r.kind == k)
            .unwrap()
            .loss
            .clone()
            .unwrap()
    };
    assert_eq!(
        loss(kd_report::Kind::Baseline),
        "1 * CE(y smoothed by 0.1, q_1)"
    );
    assert!(loss(kd_report::Kind::Kd).ends_with("+ 0.1 * CE(y smoothed by 0.1, q_1)"));
    let plain = tempfile::tempdir().unwrap();
    let (o, _) = sweep(plain.path(), &config, &["--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ids = String::from_utf8_lossy(&o.stdout);
    assert!(ids.contains("baseline-"), "{ids}");
    let baseline = rows
        .iter()
        .find(|r| r.kind == kd_report::Kind::Baseline)
        .unwrap();
    assert!(!ids.contains(&baseline.trial_id), "smoothing is in the id");
}
