//! Ensemble teachers (issue 38): each member trained once by its own id and reused by the next
//! sweep, the ensemble's row and its students, and the configs that cannot work refused with
//! the key to change.

mod common;

use std::path::Path;

use common::{kd, records, stderr, tiny, write};
use kd_report::Kind;
use kd_runner::config;

fn err(yaml: &str) -> String {
    config::parse(yaml, Path::new("test.yaml"))
        .and_then(|raw| raw.resolve())
        .map(|_| String::new())
        .unwrap_or_else(|e| e.to_string())
}

/// `tiny`'s config with its teacher block replaced by `teacher`.
fn with_teacher(teacher: &str, extra: &str) -> String {
    let base = tiny(extra);
    let lines: Vec<String> = base
        .lines()
        .map(|l| {
            if l.starts_with("teacher:") {
                format!("teacher: {teacher}")
            } else {
                l.to_string()
            }
        })
        .collect();
    lines.join("\n") + "\n"
}

const THREE: &str = "{ensemble: 3, seed: 5, model: {arch: mlp, hidden: [64], dropout: 0.0, input_dropout: 0.0}, train: {epochs: 1, optimizer: adam, lr: 0.002}}";

fn sweep_into(dir: &Path, name: &str, config: &str) -> (std::process::Output, std::path::PathBuf) {
    let cfg = write(dir, &format!("{name}.yaml"), config);
    let out = dir.join(name);
    let o = kd(
        &[
            "sweep",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &dir.join("cache"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    (o, out)
}

#[test]
fn an_ensemble_trains_each_member_once_and_another_sweep_reuses_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = sweep_into(
        dir.path(),
        "first",
        &with_teacher(THREE, "grid: {temperature: [2, 4]}\n"),
    );
    let log = stderr(&o);
    let rows = records(&out);
    let teachers: Vec<_> = rows.iter().filter(|r| r.kind == Kind::Teacher).collect();
    assert_eq!(teachers.len(), 4, "3 members and the ensemble: {log}");
    let ensemble = teachers
        .iter()
        .find(|r| r.arch == "ensemble")
        .expect("the ensemble's row");
    assert_eq!(ensemble.hidden, "3 x mlp 64");
    assert_eq!(ensemble.teacher_id, None);
    let members: Vec<_> = teachers.iter().filter(|r| r.arch == "mlp").collect();
    let mut seeds: Vec<u64> = members.iter().map(|r| r.seed).collect();
    seeds.sort();
    assert_eq!(seeds, [5, 6, 7], "members seed..seed+K-1");
    for m in &members {
        assert_eq!(m.teacher_id.as_deref(), Some(ensemble.trial_id.as_str()));
        assert!(m.epochs == 1 && m.test_acc.is_some(), "{m:?}");
    }
    assert_eq!(
        ensemble.params,
        members.iter().map(|m| m.params).sum::<u64>()
    );
    // The ensemble's accuracy is its own, not a member's copy.
    let acc = ensemble.test_acc.unwrap();
    assert!(acc > 0.5, "{acc}");
    // Every KD student distils from the ensemble.
    let kd_rows: Vec<_> = rows.iter().filter(|r| r.kind == Kind::Kd).collect();
    assert_eq!(kd_rows.len(), 2);
    for r in &kd_rows {
        assert_eq!(r.teacher_id.as_deref(), Some(ensemble.trial_id.as_str()));
        assert!(r.teacher_agreement.is_some(), "{r:?}");
    }
    // The two temperatures read different targets: their students differ.
    assert_ne!(kd_rows[0].test_acc, kd_rows[1].test_acc);
    assert_eq!(log.matches("teacher: member").count(), 3, "{log}");
    assert_eq!(log.matches("reused cached").count(), 0, "{log}");
    // The report lists the members and the ensemble.
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let teachers = &report[report.find("## Teachers").expect("a Teachers section")..];
    for m in &members {
        assert!(
            teachers.contains(&format!("| `{}` | mlp 64 |", m.trial_id)),
            "{teachers}"
        );
    }
    assert!(
        teachers.contains("| **ensemble** | 3 x mlp 64 |"),
        "{teachers}"
    );
    let cached = |dir: &Path| -> Vec<(String, std::time::SystemTime)> {
        let mut v: Vec<_> = std::fs::read_dir(dir.join("cache/teachers"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".ot"))
            .map(|e| {
                let t = e.metadata().unwrap().modified().unwrap();
                (e.file_name().to_string_lossy().into_owned(), t)
            })
            .collect();
        v.sort();
        v
    };
    let before = cached(dir.path());
    assert_eq!(before.len(), 3, "one weights file per member");

    // Another student, on two workers: every member reused, none retrained.
    let other = with_teacher(THREE, "workers: 2\ngrid: {temperature: [2, 4]}\n")
        .replace("hidden: [32]", "hidden: [16]")
        .replace("name: tiny", "name: other");
    let (o, out2) = sweep_into(dir.path(), "second", &other);
    let log = stderr(&o);
    assert_eq!(log.matches("reused cached").count(), 3, "{log}");
    assert_eq!(cached(dir.path()), before, "no member trained again");
    let rows2 = records(&out2);
    let ensemble2 = rows2.iter().find(|r| r.arch == "ensemble").unwrap();
    assert_eq!(ensemble2.trial_id, ensemble.trial_id);
    assert_eq!(ensemble2.test_acc, ensemble.test_acc);
    let students2 = rows2.iter().filter(|r| r.kind == Kind::Kd).count();
    assert_eq!(students2, 2, "{log}");
}

#[test]
fn ensemble_configs_that_cannot_work_name_the_key_to_change() {
    let member = "{model: {arch: mlp, hidden: [64]}}";
    let cases = [
        ("{ensemble: 1}".to_string(), "", "teacher.ensemble"),
        (
            format!("{{ensemble: 2, members: [{member}, {member}]}}"),
            "",
            "teacher.members",
        ),
        ("{weights: [1, 2]}".to_string(), "", "teacher.weights"),
        (format!("{{members: [{member}]}}"), "", "teacher.members"),
        (
            format!("{{members: [{member}, {member}], weights: [1]}}"),
            "",
            "teacher.weights",
        ),
        (
            format!("{{members: [{member}, {member}], weights: [1, -1]}}"),
            "",
            "teacher.weights[1]",
        ),
        (
            format!("{{members: [{member}, {member}], rule: median}}"),
            "",
            "teacher.rule",
        ),
        (
            format!("{{members: [{member}, {{ensemble: 2}}]}}"),
            "",
            "teacher.members[1]",
        ),
        (
            format!("{{members: [{member}, {member}], seed: 3}}"),
            "",
            "teacher.seed",
        ),
        (
            "{ensemble: 2, checkpoint: t.ot}".to_string(),
            "",
            "teacher.checkpoint",
        ),
        (
            "{ensemble: 2}".to_string(),
            "kd: {soft_loss: dkd}\n",
            "kd.soft_loss",
        ),
        (
            "{ensemble: 2}".to_string(),
            "kd: {standardise: true}\n",
            "kd.standardise",
        ),
        (
            format!("{{members: [{member}, {{model: {{arch: mlp, width: 3}}}}]}}"),
            "",
            "teacher.members[1].model",
        ),
    ];
    for (teacher, extra, key) in cases {
        let e = err(&with_teacher(&teacher, extra));
        assert!(e.contains(key), "teacher {teacher}: {e}");
    }
    // Two members that are one teacher (same block, same seed): refused when the sweep plans.
    let dir = tempfile::tempdir().unwrap();
    let twice = with_teacher(
        "{members: [{seed: 1, model: {arch: mlp, hidden: [64]}}, {seed: 1, model: {arch: mlp, hidden: [64]}}]}",
        "",
    );
    let cfg = write(dir.path(), "twice.yaml", &twice);
    let o = kd(
        &["sweep", cfg.to_str().unwrap(), "--dry-run"],
        &dir.path().join("cache"),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("teacher.members[1]: the same teacher"),
        "{}",
        stderr(&o)
    );
    // The geometric rule hands every objective one teacher's logits.
    assert_eq!(
        err(&with_teacher(
            "{ensemble: 2, rule: geometric}",
            "kd: {soft_loss: dkd}\n"
        )),
        ""
    );
    // An augmenting KD student needs an online teacher.
    let jitter = with_teacher("{ensemble: 2}", "")
        .replace("epochs: 1, optimizer: adam, lr: 0.002}}\n\n", "")
        .replace(
            "student: {model: {arch: mlp, hidden: [32]}, train: {epochs: 1,",
            "student: {model: {arch: mlp, hidden: [32]}, train: {jitter: 2, epochs: 1,",
        );
    assert!(
        err(&jitter).contains("student.train.jitter"),
        "{}",
        err(&jitter)
    );
}

/// Under the geometric rule an ensemble runs online for students that augment their images
/// (the arithmetic rule refuses them: its targets are cached per temperature).
#[test]
fn a_geometric_ensemble_teaches_augmenting_students_online() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = "{ensemble: 2, rule: geometric, model: {arch: mlp, hidden: [64], dropout: 0.0, input_dropout: 0.0}, train: {epochs: 1, optimizer: adam, lr: 0.002}}";
    let cfg = with_teacher(teacher, "").replace(
        "student: {model: {arch: mlp, hidden: [32]}, train: {epochs: 1,",
        "student: {model: {arch: mlp, hidden: [32]}, train: {jitter: 1, epochs: 1,",
    );
    assert!(cfg.contains("jitter: 1"), "{cfg}");
    let (o, out) = sweep_into(dir.path(), "online", &cfg);
    let rows = records(&out);
    let kd = rows.iter().find(|r| r.kind == Kind::Kd).expect("a KD row");
    assert_eq!(kd.teacher_mode.as_deref(), Some("online"), "{}", stderr(&o));
    assert!(kd.teacher_agreement.unwrap() > 0.5, "{kd:?}");
    let ensemble = rows.iter().find(|r| r.arch == "ensemble").unwrap();
    assert_eq!(kd.teacher_id.as_ref(), Some(&ensemble.trial_id));
}

/// `experiments/cifar100/ensemble_resnet8x4.yaml` as shipped resolves to two loaded teachers
/// combined by the geometric rule (its students augment, so the ensemble runs online); it plans
/// where the data and the converted teachers are (a GPU's machine).
#[test]
fn the_shipped_cifar_ensemble_config_resolves() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../experiments/cifar100/ensemble_resnet8x4.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let cfg = config::parse(&text, &file)
        .and_then(|r| r.resolve())
        .unwrap();
    let e = cfg.ensemble.expect("an ensemble");
    assert_eq!(e.members.len(), 2);
    assert_eq!(e.rule, config::ensemble::Rule::Geometric);
    assert!((e.weights[0] - 0.6).abs() < 1e-12 && (e.weights[1] - 0.4).abs() < 1e-12);
    assert!(e.members.iter().all(|m| m.checkpoint.is_some()));
    assert_eq!(cfg.student.model.shape_label(), "resnet8x4");
    assert_eq!(cfg.expect.len(), 2);
}
