//! Fault injection (issue 17): each way a result could be lost or silently mixed, reproduced on
//! a tiny sweep and shown handled. Every case failed before the fix it tests.

mod common;

use std::path::Path;

use common::*;

fn ids(out: &Path) -> Vec<String> {
    records(out).into_iter().map(|r| r.trial_id).collect()
}

/// `rm OUT/records/*` (or damaged files) then `kd report OUT` took a folder from 8 rows to 0,
/// and the next `kd sweep` retrained everything.
#[test]
fn deleted_or_damaged_records_lose_no_row_and_nothing_retrains() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny("pack: off\ngrid: {temperature: [2, 4]}\n");
    let (o, out) = sweep(dir.path(), &config, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let before = accuracies(&out);
    assert_eq!(before.len(), 4, "teacher, baseline, two KD students");
    let files = record_files(&out);
    std::fs::remove_file(out.join("records").join(&files[0])).unwrap();
    std::fs::write(out.join("records").join(&files[1]), "record: [").unwrap();
    std::fs::write(out.join("records").join(&files[2]), "").unwrap();

    let o = kd(
        &["report", out.to_str().unwrap()],
        &dir.path().join("cache"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("3 trial(s) have no readable file"),
        "{}",
        stderr(&o)
    );
    assert_eq!(accuracies(&out), before, "every row kept, in plan order");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains(&before[1].0),
        "the report still has its rows"
    );

    // Every record gone: the frames alone hold the sweep, and a rerun trains nothing.
    std::fs::remove_dir_all(out.join("records")).unwrap();
    std::fs::create_dir(out.join("records")).unwrap();
    let o = kd(
        &["report", out.to_str().unwrap()],
        &dir.path().join("cache"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(accuracies(&out), before);
    let (o, _) = sweep(dir.path(), &config, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("3 trial(s) were finished before and kept"),
        "{}",
        stderr(&o)
    );
    assert_eq!(accuracies(&out), before);
    assert_eq!(record_files(&out).len(), 4, "the files are written again");
}

/// A rerun with a changed grid dropped the earlier trials from the frames without a note.
#[test]
fn a_changed_grid_keeps_the_trials_it_drops_aside_and_finds_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let two = tiny("pack: off\ngrid: {temperature: [2, 4]}\n");
    let (o, out) = sweep(dir.path(), &two, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let all = accuracies(&out);
    let one = tiny("pack: off\ngrid: {temperature: [2]}\n");
    let (o, _) = sweep(dir.path(), &one, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("replaces the plan"), "{err}");
    assert!(
        err.contains("1 trial(s) it planned are not in this plan"),
        "{err}"
    );
    assert_eq!(ids(&out).len(), 3);
    let aside = kd_report::read_frames(&out.join("unplanned")).unwrap().0;
    assert_eq!(aside.len(), 1);
    assert_eq!(aside[0].temperature, Some(4.0));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Trials kept aside"), "{report}");
    assert!(report.contains(&aside[0].trial_id), "{report}");
    // Its record file gone too, the row survives; the grid changed back, it is kept, not rerun.
    std::fs::remove_file(
        out.join("records")
            .join(format!("{}.yaml", aside[0].trial_id)),
    )
    .unwrap();
    let o = kd(
        &["report", out.to_str().unwrap()],
        &dir.path().join("cache"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 trial(s) are not in the plan"),
        "{}",
        stderr(&o)
    );
    let (o, _) = sweep(dir.path(), &two, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("3 trial(s) were finished before and kept"),
        "{}",
        stderr(&o)
    );
    assert_eq!(accuracies(&out), all);
    assert!(kd_report::read_frames(&out.join("unplanned"))
        .unwrap()
        .0
        .is_empty());
}

/// A shard of an edited config replaced plan.json; a sweep of another config took over OUT.
#[test]
fn one_out_holds_one_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny("pack: off\ngrid: {temperature: [2, 4]}\n");
    let (o, out) = sweep(dir.path(), &config, &["--shard", "0/2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let plan = std::fs::read_to_string(out.join("plan.json")).unwrap();
    let edited = tiny("pack: off\ngrid: {temperature: [2, 4, 8]}\n");
    let (o, _) = sweep(dir.path(), &edited, &["--shard", "1/2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("shard 1/2 is of an edited config"), "{err}");
    assert!(err.contains("--replan"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("plan.json")).unwrap(),
        plan
    );
    // Another config (another name) into the same OUT: refused, whole or shard.
    let other = config.replace("name: tiny", "name: other");
    for extra in [&[][..], &["--shard", "1/2"][..]] {
        let (o, _) = sweep(dir.path(), &other, extra);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("holds the plan of config `tiny`"), "{err}");
        assert!(err.contains("is config `other`"), "{err}");
    }
    assert_eq!(
        std::fs::read_to_string(out.join("plan.json")).unwrap(),
        plan
    );
    // Asked for, the shard replans; the earlier shard's rows are kept.
    let (o, _) = sweep(dir.path(), &edited, &["--shard", "1/2", "--replan"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_ne!(
        std::fs::read_to_string(out.join("plan.json")).unwrap(),
        plan
    );
}

/// `--set kd.temperature=8` on a config sweeping `temperature` kept T = 2, 4 silently.
#[test]
fn set_on_a_swept_key_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny("grid: {temperature: [2, 4]}\n");
    let (o, _) = sweep(dir.path(), &config, &["--set", "kd.temperature=8"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("use --set grid.temperature=[8]"),
        "{}",
        stderr(&o)
    );
}

/// A logits file with the right name and weights digest but other values (zeroed) was used.
#[test]
fn cached_logits_or_weights_that_do_not_match_their_digest_are_never_used() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny("");
    let (o, out) = sweep(dir.path(), &config, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let first = accuracies(&out);
    let hash = first[0].0.trim_start_matches("teacher-").to_string();
    let teachers = dir.path().join("cache").join("teachers");
    let logits = teachers.join(format!("{hash}.logits.pt"));
    assert!(teachers.join(format!("{hash}.logits.pt.sha256")).exists());
    let named = tch::Tensor::load_multi(&logits).unwrap();
    let zeroed: Vec<(String, tch::Tensor)> = named
        .iter()
        .map(|(n, t)| (n.clone(), t.zeros_like()))
        .collect();
    tch::Tensor::save_multi(&zeroed, &logits).unwrap();
    let (o, _) = sweep(dir.path(), &config, &["--fresh"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("cached logits"), "{err}");
    assert!(err.contains("the file was changed or damaged"), "{err}");
    assert_eq!(
        accuracies(&out),
        first,
        "the students learned from the real logits"
    );

    // Damaged weights: said, then the teacher trains again (to the same numbers).
    let weights = teachers.join(format!("{hash}.ot"));
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&weights, &bytes).unwrap();
    let (o, _) = sweep(dir.path(), &config, &["--fresh"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("cached weights"), "{err}");
    assert!(err.contains("training the teacher again"), "{err}");
    assert_eq!(accuracies(&out)[1..], first[1..]);
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A full disk exited 1, left `*.tmp` files (one more per rerun), a zero-byte and a truncated
/// PNG, and no report.md. OUT on a tmpfs of a few sizes (in a user and mount namespace of its
/// own, so no root is needed and nothing stays mounted): every run exits 0 or 2 naming the
/// file, twice, and leaves no temporary file and no partial figure or frame.
#[test]
fn a_full_disk_exits_2_and_leaves_no_partial_file() {
    let marker = Path::new(env!("CARGO_TARGET_TMPDIR")).join("SKIPPED-full-disk.txt");
    let _ = std::fs::remove_file(&marker);
    let probe = std::process::Command::new("unshare")
        .args(["-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /tmp"])
        .output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        let line = "full disk: cannot mount a tmpfs in a user namespace here (unshare -rm)";
        eprintln!("SKIPPED (not passed): {line}");
        std::fs::write(&marker, line).unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = tiny("pack: off\ngrid: {temperature: [2, 4]}\n");
    // The teacher is trained and cached first: the runs below only write OUT.
    let (o, _) = sweep(dir.path(), &config, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let cfg = dir.path().join("c.yaml");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut full = 0;
    for size in ["8k", "24k", "64k", "160k", "400k"] {
        let copy = dir.path().join(format!("copy-{size}"));
        let script = r#"mount -t tmpfs -o size="$4" tmpfs "$1" || exit 90
for run in 1 2; do
  "$2" sweep "$3" --out "$1/out" >"$5.$run.stdout" 2>"$5.$run.stderr"; echo $? >"$5.$run.rc"
done
mkdir -p "$5"; cp -a "$1/out/." "$5/" 2>/dev/null; true"#;
        let o = std::process::Command::new("unshare")
            .args(["-rm", "sh", "-c", script, "sh"])
            .arg(&mnt)
            .arg(env!("CARGO_BIN_EXE_kd"))
            .arg(&cfg)
            .arg(size)
            .arg(&copy)
            .env("KD_CACHE_DIR", dir.path().join("cache"))
            .env("CI", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{size}: {}", stderr(&o));
        for run in 1..=2 {
            let read = |ext: &str| {
                std::fs::read_to_string(format!("{}.{run}.{ext}", copy.display())).unwrap()
            };
            let (rc, err) = (read("rc"), read("stderr"));
            match rc.trim() {
                "0" => {}
                "2" => {
                    full += 1;
                    assert!(err.contains("No space left on device"), "{size}: {err}");
                    assert!(
                        err.contains(mnt.to_str().unwrap()),
                        "{size}: names the file: {err}"
                    );
                }
                other => panic!("{size} run {run}: exit {other}: {err}"),
            }
        }
        for f in files_under(&copy) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                !name.contains(".tmp"),
                "{size}: a temporary file stayed: {name}"
            );
            let bytes = std::fs::read(&f).unwrap();
            if name.ends_with(".png") {
                assert!(
                    bytes.ends_with(b"IEND\xaeB`\x82"),
                    "{size}: {name} is truncated"
                );
            }
            if name.ends_with(".svg") {
                assert!(
                    String::from_utf8_lossy(&bytes)
                        .trim_end()
                        .ends_with("</svg>"),
                    "{size}: {name} is truncated"
                );
            }
            if name.ends_with(".parquet") {
                kd_report::read_parquet(&f).unwrap_or_else(|e| panic!("{size}: {name}: {e}"));
            }
            if name.ends_with(".yaml") || name == "report.md" {
                assert!(!bytes.is_empty(), "{size}: {name} is empty");
            }
        }
    }
    assert!(full >= 2, "some size must fill the disk");
}

/// The processes whose parent is `pid` (from /proc).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        // pid (comm) state ppid ...: comm may hold spaces, so split after its closing paren.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// Whether process `pid` still runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}

/// SIGTERM mid-sweep with workers: no orphan trains on, the lock is released, resume completes.
#[test]
fn sigterm_with_workers_leaves_no_orphans_and_resumes_complete() {
    let dir = tempfile::tempdir().unwrap();
    // Students of about 15 s each: an orphan would train on for that long.
    let (args, out, cache) = slow_sweep(dir.path(), "workers: 2\npack: off\n");
    let cfg = Path::new(&args[1]);
    let text = std::fs::read_to_string(cfg)
        .unwrap()
        .replace("epochs: 2,", "epochs: 30,");
    std::fs::write(cfg, text).unwrap();
    let mut child = spawn_kd(&args, &cache);
    let start = std::time::Instant::now();
    let workers = loop {
        assert!(start.elapsed().as_secs() < 600, "the workers never started");
        let w = children(child.id());
        if !records(&out).is_empty() && w.len() == 2 {
            break w;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    // Both workers are inside a student now.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    child.wait().unwrap();
    let start = std::time::Instant::now();
    while workers.iter().any(|&w| alive(w)) {
        assert!(
            start.elapsed().as_secs_f64() < 3.0,
            "workers {workers:?} outlived their sweep"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let lock = std::fs::File::open(out.join(".lock")).unwrap();
    assert!(lock.try_lock().is_ok(), "the lock is released");
    drop(lock);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = kd(&args, &cache);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = records(&out);
    assert_eq!(rows.len(), 5, "teacher, baseline, three KD cells");
    assert!(rows.iter().all(|r| r.status == kd_report::Status::Ok));
}

/// A worker killed mid-trial (an OOM kill picks the biggest process, often a worker): its
/// trials are recorded failed, but the checkpoint it wrote stays, and the next run continues
/// from it.
#[test]
fn a_killed_worker_leaves_its_checkpoint_for_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let (mut args, out, cache) = slow_sweep(dir.path(), "workers: 2\npack: off\n");
    let cfg = Path::new(&args[1]);
    let text = std::fs::read_to_string(cfg)
        .unwrap()
        .replace("epochs: 2,", "epochs: 8,");
    std::fs::write(cfg, text).unwrap();
    args.extend(["--checkpoint-every".into(), "1ms".into()]);
    let child = spawn_kd(&args, &cache);
    let ckpts = out.join(".checkpoints");
    let count = || {
        std::fs::read_dir(&ckpts).map_or(0, |d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "ckpt"))
                .count()
        })
    };
    let start = std::time::Instant::now();
    while count() == 0 {
        assert!(
            start.elapsed().as_secs() < 300,
            "no checkpoint in 5 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Both workers are inside a student; kill them both, as the kernel would.
    for w in children(child.id()) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &w.to_string()])
            .status();
    }
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(err.contains("exited"), "{err}");
    assert!(count() >= 1, "the checkpoints stay: {err}");
    let args: Vec<&str> = args[..args.len() - 2].iter().map(String::as_str).collect();
    let o = kd(&args, &cache);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = records(&out);
    assert!(rows.iter().all(|r| r.status == kd_report::Status::Ok));
    assert!(
        rows.iter().any(|r| r
            .resumed
            .as_deref()
            .is_some_and(|n| n.starts_with("continued "))),
        "{:?}",
        rows.iter().map(|r| &r.resumed).collect::<Vec<_>>()
    );
    assert_eq!(count(), 0);
}
