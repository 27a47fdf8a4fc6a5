//! The plan: every trial's id, kind, seed, pairing and class decided once. Ids change exactly
//! when something that changes the numbers changes.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kd_report::{Kind, Value};
use kd_runner::data;
use kd_runner::plan::Plan;

/// A small IDX dataset (and a private cache) shared by the tests of this file.
fn dataset() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        kd_data::idx::testing::write_idx_set(&dir.path().join("d"), 8, 8, 60, 20, true);
        std::env::set_var("KD_CACHE_DIR", dir.path().join("cache"));
        dir
    })
    .path()
}

fn data_dir() -> PathBuf {
    dataset().join("d")
}

fn yaml(extra: &str) -> String {
    format!(
        "name: p\ndataset: {{name: idx, dir: {}, val_size: 10}}\ndevice: cpu\nthreads: 1\n{extra}",
        data_dir().display()
    )
}

fn plan(yaml: &str) -> Plan {
    let cfg = kd_runner::config::parse(yaml, Path::new("p.yaml"))
        .and_then(|r| r.resolve())
        .unwrap_or_else(|e| panic!("{e}"));
    let data = data::load(&cfg.dataset).unwrap_or_else(|e| panic!("{e}"));
    Plan::build(&cfg, &data).unwrap_or_else(|e| panic!("{e}"))
}

fn ids(p: &Plan) -> Vec<String> {
    p.trials.iter().map(|t| t.id.clone()).collect()
}

const GRID: &str =
    "seeds: [0, 1]\ngrid:\n  temperature: [1, 2, 4]\n  hidden: [[800, 800], [30, 30]]\n";

#[test]
fn each_kd_trial_is_paired_with_the_baseline_of_its_student_and_seed() {
    let p = plan(&yaml("seeds: [3, 5]"));
    let kinds: Vec<(Kind, u64)> = p.trials.iter().map(|t| (t.kind, t.seed)).collect();
    assert_eq!(
        kinds,
        [
            (Kind::Baseline, 3),
            (Kind::Kd, 3),
            (Kind::Baseline, 5),
            (Kind::Kd, 5)
        ]
    );
    assert_eq!(
        (p.trials[0].weights.alpha, p.trials[0].weights.beta),
        (0.0, 1.0)
    );
    assert_eq!(
        p.trials[1].baseline_id.as_deref(),
        Some(p.trials[0].id.as_str())
    );
    assert_eq!(
        p.trials[3].baseline_id.as_deref(),
        Some(p.trials[2].id.as_str())
    );
    assert_eq!(
        p.trials[1].teacher_id.as_deref(),
        Some(p.teacher.id.as_str())
    );
    assert!(p
        .trials
        .iter()
        .all(|t| t.id.starts_with(&format!("{}-", t.kind))));
    let p = plan(&yaml("baseline: false"));
    assert_eq!(p.trials.len(), 1);
    assert_eq!(p.trials[0].baseline_id, None);
}

#[test]
fn a_grid_shares_one_baseline_per_student_and_seed_and_every_id_is_its_own() {
    let p = plan(&yaml(GRID));
    let kd = p.trials.iter().filter(|t| t.kind == Kind::Kd).count();
    assert_eq!((kd, p.trials.len() - kd), (12, 4));
    let mut unique = ids(&p);
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), p.trials.len());
    for t in p.trials.iter().filter(|t| t.kind == Kind::Kd) {
        let b = p
            .trials
            .iter()
            .find(|b| Some(&b.id) == t.baseline_id.as_ref())
            .unwrap();
        assert_eq!((b.seed, &b.student, b.class), (t.seed, &t.student, t.class));
    }
    // Changing a KD key changes the KD ids only.
    let q = plan(&yaml(&format!("kd: {{alpha: 0.5}}\n{GRID}")));
    for (a, b) in p.trials.iter().zip(&q.trials) {
        assert_eq!(
            a.id == b.id,
            a.kind == Kind::Baseline,
            "{} vs {}",
            a.id,
            b.id
        );
    }
    assert_eq!(p.teacher.id, q.teacher.id);
}

#[test]
fn swept_keys_that_are_not_columns_keep_their_type() {
    let p = plan(&yaml(
        "grid: {student.train.lr: [0.1, 0.01], soft_loss: [ce, kl]}",
    ));
    let kd: Vec<_> = p.trials.iter().filter(|t| t.kind == Kind::Kd).collect();
    assert_eq!(kd.len(), 4);
    assert_eq!(
        kd[2].swept,
        [("student.train.lr".to_string(), Value::Float(0.01))],
        "soft_loss is a column; the lr is swept as a float"
    );
    // Two students (two lrs), so two baselines.
    assert_eq!(p.trials.len() - kd.len(), 2);
}

#[test]
fn threads_init_and_the_teacher_change_the_ids() {
    let base = plan(&yaml(""));
    let threads = plan(&yaml("").replace("threads: 1", "threads: 2"));
    assert_ne!(ids(&base), ids(&threads), "threads change every student id");
    assert_ne!(base.teacher.id, threads.teacher.id, "and the teacher's");
    assert_eq!(threads.slots[0].class.threads, Some(2));
    let kaiming = plan(&yaml("student: {model: {init: kaiming}}"));
    assert_ne!(
        ids(&base)[0],
        ids(&kaiming)[0],
        "init is in the baseline's id"
    );
    let teacher = plan(&yaml("teacher: {seed: 1}"));
    assert_eq!(
        ids(&base)[0],
        ids(&teacher)[0],
        "a baseline does not see the teacher"
    );
    assert_ne!(ids(&base)[1], ids(&teacher)[1], "a KD trial does");
    let fewer = plan(&yaml("").replace("val_size: 10}", "val_size: 10, transfer_fraction: 0.5}"));
    assert_eq!(fewer.data.transfer_rows, 25);
    assert_ne!(
        ids(&base)[0],
        ids(&fewer)[0],
        "the transfer rows are in the id"
    );
    assert_eq!(
        base.teacher.id, fewer.teacher.id,
        "the teacher sees all the rows"
    );
}

#[test]
fn ids_follow_the_data_content_not_its_folder() {
    let root = tempfile::tempdir().unwrap();
    let base = plan(&yaml(""));
    // An identical copy elsewhere: same content, same ids.
    let copy = root.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in std::fs::read_dir(data_dir()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
    }
    let moved = plan(&yaml("").replace(
        &data_dir().display().to_string(),
        &copy.display().to_string(),
    ));
    assert_eq!(ids(&base), ids(&moved));
    assert_eq!(base.teacher.id, moved.teacher.id);
    // The copy rewritten in place with other images: every id changes, baselines included.
    kd_data::idx::testing::write_idx_set(&copy, 8, 8, 61, 20, true);
    let changed = plan(&yaml("").replace(
        &data_dir().display().to_string(),
        &copy.display().to_string(),
    ));
    assert_ne!(base.data.fingerprint, changed.data.fingerprint);
    assert_ne!(ids(&base)[0], ids(&changed)[0], "the baseline re-runs");
    assert_ne!(ids(&base)[1], ids(&changed)[1]);
    assert_ne!(base.teacher.id, changed.teacher.id);
}

#[test]
fn the_dry_run_lists_the_plans_ids() {
    let p = plan(&yaml(GRID));
    let text = p.describe();
    for t in &p.trials {
        assert!(
            text.contains(&format!("{} {} ", t.id, t.kind)),
            "{}\n{text}",
            t.id
        );
    }
    assert!(text.contains(&p.teacher.id));
    assert!(text.contains("16 student trials + teacher"), "{text}");
}

#[test]
fn shards_cover_every_trial_once_and_never_split_a_pack() {
    use kd_runner::plan::Shard;
    // 2 seeds x 2 students x (a baseline and 3 temperatures) = 16 trials, packs of at most 3.
    let p = plan(&yaml(&format!("pack: 3\n{GRID}")));
    let all: Vec<usize> = (0..p.trials.len()).collect();
    let units = p.units(&all);
    assert!(units.len() >= 6, "{units:?}");
    for n in 1..=units.len() + 1 {
        let shards: Vec<Vec<usize>> = (0..n)
            .map(|index| p.shard_trials(Shard { index, count: n }))
            .collect();
        let mut seen: Vec<usize> = shards.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, all, "{n} shards: every trial exactly once");
        for u in &units {
            let owners = shards.iter().filter(|s| s.contains(&u[0])).count();
            assert_eq!(owners, 1);
            let owner = shards.iter().find(|s| s.contains(&u[0])).unwrap();
            assert!(
                u.iter().all(|t| owner.contains(t)),
                "{n} shards split {u:?}"
            );
        }
        // The share is fixed by the plan, not by what is done: the same on every call.
        assert_eq!(p.shard_trials(Shard { index: 0, count: n }), shards[0]);
    }
    assert_eq!(Shard::parse("1/4"), Ok(Shard { index: 1, count: 4 }));
    for bad in ["4/4", "x/2", "1", "0/0", "-1/2"] {
        assert!(Shard::parse(bad).is_err(), "{bad}");
    }
}

/// Issue 32's follow-up: a grid over `soft_loss: [ce, dkd]` and `kd.dkd.nckd: [1, 8]` planned
/// the ce trial twice (nckd is DKD's key; a ce cell ignores it), so it trained twice and its
/// row stood twice. One id, one trial: trained once, reported under the first cell, said.
#[test]
fn cells_that_plan_the_same_trial_plan_it_once() {
    let p = plan(&yaml("grid: {soft_loss: [ce, dkd], kd.dkd.nckd: [1, 8]}\n"));
    let all = ids(&p);
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(all.len(), unique.len(), "{all:?}");
    assert_eq!(all.len(), 4, "baseline, ce once, dkd twice: {all:?}");
    let indices: Vec<usize> = p.trials.iter().map(|t| t.index).collect();
    assert_eq!(indices, [0, 1, 2, 3]);
    assert_eq!(p.merged.len(), 1, "{:?}", p.merged);
    assert!(
        p.merged[0].contains("planned by 2 cells (kd.dkd.nckd=1; kd.dkd.nckd=8)"),
        "{:?}",
        p.merged
    );
    assert!(p.describe().contains("it trains once"));
}
