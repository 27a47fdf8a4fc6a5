//! Issue 36: successive halving (`search: halving`). Its survivors are the full grid's trials,
//! bit for bit (same ids, same rows and epochs); its pruned cells keep a `pruned` row with the
//! epochs they trained; a later `search: grid` run in the same folder trains them, and the
//! folder then equals the full grid's.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use kd_report::Status;

/// Every row and epoch of OUT by trial id, timings and where it ran left out.
fn by_id(out: &Path) -> BTreeMap<String, (String, Vec<String>)> {
    let (rows, epochs) = kd_report::read_frames(out).unwrap();
    rows.into_iter()
        .map(|mut r| {
            r.wall_s = 0.0;
            r.finished_at.clear();
            r.resumed = None;
            let id = r.trial_id.clone();
            let mut e: Vec<_> = epochs
                .iter()
                .filter(|e| e.trial_id == id)
                .map(|e| {
                    let mut e = e.clone();
                    e.seconds = 0.0;
                    format!("{e:?}")
                })
                .collect();
            e.sort();
            (id, (format!("{r:?}"), e))
        })
        .collect()
}

/// Four KD cells (T) x two seeds of a 48-unit student, 8 epochs, with baselines; `search` and
/// `pack` as given.
fn config(search: &str, pack: &str) -> String {
    format!(
        "name: halving\ndataset: {{val_size: 300, train_limit: 900}}\ndevice: cpu\nthreads: 1\n\
         seeds: [0, 1]\npack: {pack}\n\
         teacher: {{model: {{arch: mlp, hidden: [64], dropout: 0.0, input_dropout: 0.0}}, \
         train: {{epochs: 2, optimizer: adam, lr: 0.002}}}}\n\
         student: {{model: {{arch: mlp, hidden: [48], dropout: 0.2, input_dropout: 0.0}}, \
         train: {{epochs: 8, batch_size: 64, lr: 0.05, schedule: cosine}}}}\n\
         kd: {{alpha: 0.9}}\ngrid: {{temperature: [1, 2, 4, 8]}}\nsearch: {search}\n"
    )
}

fn halving_against_the_full_grid(pack: &str) {
    let grid_dir = tempfile::tempdir().unwrap();
    let (o, grid_out) = sweep(grid_dir.path(), &config("{method: grid}", pack), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let full = by_id(&grid_out);

    let dir = tempfile::tempdir().unwrap();
    let halving = config("{method: halving, eta: 2, min_epochs: 2}", pack);
    let (o, out) = sweep(dir.path(), &halving, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("halving, 48 at epoch 2 (rung 1): 2 of 4 cells go on"),
        "{err}"
    );
    assert!(
        err.contains("halving, 48 at epoch 4 (rung 2): 1 of 2 cells go on"),
        "{err}"
    );

    let rows = records(&out);
    let status = |s: Status| rows.iter().filter(|r| r.status == s).count();
    // 4 cells x 2 seeds: 2 cells pruned at epoch 2, 1 at epoch 4, 1 trained to the end; the
    // 2 baselines and the teacher in full.
    assert_eq!(
        (status(Status::Pruned), status(Status::Ok)),
        (6, 5),
        "{rows:?}"
    );
    let mine = by_id(&out);
    assert_eq!(mine.len(), full.len(), "every planned trial has a row");
    let (_, epochs) = kd_report::read_frames(&out).unwrap();
    for r in &rows {
        let trained = epochs.iter().filter(|e| e.trial_id == r.trial_id).count();
        match r.status {
            // The survivors, the baselines and the teacher: the full grid's, to the bit; their
            // pauses at the rungs are the search's, not resumes.
            Status::Ok => {
                assert_eq!(mine[&r.trial_id], full[&r.trial_id], "{}", r.trial_id);
                assert_eq!(r.resumed, None, "{}", r.trial_id);
            }
            Status::Pruned => {
                assert!(trained == 2 || trained == 4, "{trained}");
                assert!(r.test_acc.is_none() && r.val_acc.is_some());
                // Its epochs so far are the full grid's epochs (whose best-validation epoch
                // was tested after training; a pruned trial is never tested).
                let untested = |e: &[String]| -> Vec<String> {
                    e.iter()
                        .map(|e| match (e.find("test_acc: "), e.find(", lr: ")) {
                            (Some(a), Some(b)) => format!("{}{}", &e[..a], &e[b..]),
                            _ => e.clone(),
                        })
                        .collect()
                };
                assert_eq!(
                    untested(&mine[&r.trial_id].1),
                    untested(&full[&r.trial_id].1[..trained])
                );
                let why = r.message.as_deref().unwrap_or_default();
                assert!(
                    why.starts_with(&format!("pruned at epoch {trained} (rung")),
                    "{why}"
                );
            }
            other => panic!("{}: {other}", r.trial_id),
        }
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("The search (`search: halving`) pruned 6 of 8 KD trials"),
        "{report}"
    );
    // KD student-epochs: 4 pruned at 2, 2 at 4, 2 survivors at 8, of the full grid's 64.
    assert!(
        report.contains("KD student-epochs: 32 of the full grid's 64 (50%)"),
        "{report}"
    );

    // A later search: grid run trains the pruned cells to the end: the full grid's folder.
    let (o, _) = sweep(dir.path(), &config("{method: grid}", pack), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("6 trial(s) that an earlier search (halving) pruned train to the end"),
        "{}",
        stderr(&o)
    );
    assert_eq!(by_id(&out), full);
}

#[test]
fn halving_alone_keeps_the_full_grids_survivors_and_a_grid_run_trains_the_pruned() {
    halving_against_the_full_grid("off");
}

#[test]
fn halving_in_packs_masks_the_pruned_and_keeps_the_survivors() {
    halving_against_the_full_grid("auto");
}

/// A halving search killed mid-way and run again keeps its cuts and ends as if never killed,
/// alone and packed (a pack's checkpoint holds its members the search pruned); and a `search:
/// grid` run after the kill ends as the full grid (the pruned members of a pack's checkpoint
/// cannot continue: the pack starts over).
#[test]
fn a_killed_halving_search_continues_to_the_same_end() {
    // Kill points: the teacher writes one checkpoint, then each unit one per epoch (a pause at a
    // rung is one); the pack's 4th and 6th fall after the first and the second cut.
    for (pack, kills) in [("off", ["5", "11"]), ("auto", ["4", "6"])] {
        let halving = config("{method: halving, eta: 2, min_epochs: 2}", pack);
        let grid = config("{method: grid}", pack);
        let whole = tempfile::tempdir().unwrap();
        let (o, whole_out) = sweep(whole.path(), &halving, &[]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let full = tempfile::tempdir().unwrap();
        let (o, full_out) = sweep(full.path(), &grid, &[]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        for k in kills {
            for then in [&halving, &grid] {
                let dir = tempfile::tempdir().unwrap();
                let (o, out) = sweep_env(
                    dir.path(),
                    &halving,
                    &["--checkpoint-every", "1ms"],
                    &[("KD_TEST_ABORT_AFTER_CHECKPOINTS", k)],
                );
                assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
                let (o, _) = sweep(dir.path(), then, &[]);
                assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
                let want = if then == &halving {
                    &whole_out
                } else {
                    &full_out
                };
                assert_eq!(
                    by_id(&out),
                    by_id(want),
                    "pack {pack}, killed after checkpoint {k}, then {then}"
                );
            }
        }
    }
}

#[test]
fn halving_refuses_what_it_cannot_do() {
    let bad = |search: &str, extra: &str| {
        let (code, err) = sweep_exit(&format!("{}{extra}", config(search, "off")));
        assert_eq!(code, 2, "{err}");
        err
    };
    let e = bad("{method: halving, eta: 2}", "");
    assert!(
        e.contains("search.min_epochs: required with search.method: halving"),
        "{e}"
    );
    let e = bad("{method: halving, eta: 1, min_epochs: 2}", "");
    assert!(e.contains("search.eta: must be at least 2"), "{e}");
    let e = bad("{method: halving, min_epochs: 8}", "");
    assert!(
        e.contains("search.min_epochs: the first rung must come before the end"),
        "{e}"
    );
    let e = bad("{method: grid, eta: 3}", "");
    assert!(
        e.contains("search.eta: only with search.method: halving"),
        "{e}"
    );
    let e = bad("{method: hyperband}", "");
    assert!(
        e.contains("search.method: unknown search `hyperband` (known: grid, halving)"),
        "{e}"
    );
    let e = bad("{method: halving, min_epochs: 2}", "workers: 2\n");
    assert!(
        e.contains("search.method: halving cannot run with it trains"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (o, _) = sweep(
        dir.path(),
        &config("{method: halving, min_epochs: 2}", "off"),
        &["--shard", "0/2"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("halving cannot run with --shard"),
        "{}",
        stderr(&o)
    );
}
