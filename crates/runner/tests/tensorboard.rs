//! `kd sweep --tensorboard`: the event files are read back by TensorBoard's own loader (the
//! `tensorboard` package pinned in `requirements-tensorboard.txt`, installed into .venv by
//! `just setup`), and what it reads must be what the Parquet frames hold. Without the package
//! (a user's own libtorch, no venv) the test says SKIPPED, never a pass.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;

/// Reads every run under `OUT/tensorboard` with TensorBoard's `EventAccumulator` (which checks
/// each record's CRCs) and prints, per run, its scalars and the hparams plugin's session start
/// and end, as JSON.
const READER: &str = r#"
import json, os, sys
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.hparams import plugin_data_pb2
from google.protobuf import json_format
root = sys.argv[1]
out = {}
for run in sorted(os.listdir(root)):
    d = os.path.join(root, run)
    acc = ea.EventAccumulator(d, size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    scalars = {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    hp = {}
    for tag, content in acc.PluginTagToContent("hparams").items():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        hp[tag] = json_format.MessageToDict(data)
    out[run] = {"files": sorted(os.listdir(d)), "scalars": scalars, "hparams": hp}
print(json.dumps(out))
"#;

fn venv_python() -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let ok = std::process::Command::new(&py)
        .args(["-c", "import tensorboard"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(py)
}

#[test]
fn tensorboard_reads_back_every_epoch_and_the_settings_of_each_trial() {
    let Some(py) = venv_python() else {
        let why = "tensorboard: .venv/bin/python lacks the tensorboard package (`just setup` installs it)";
        std::fs::write(
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("SKIPPED-tensorboard.txt"),
            why,
        )
        .unwrap();
        eprintln!("SKIPPED (not passed): {why}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = tiny("seeds: [0]\nbaseline: true\ngrid: {temperature: [2, 4], alpha: [0.5]}\n");
    let args = ["--tensorboard", "--set", "student.train.epochs=2"];
    let (o, out) = sweep(dir.path(), &config, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let (trials, epochs) = kd_report::read_frames(&out).unwrap();
    assert_eq!(trials.len(), 4, "teacher, baseline, 2 KD trials");

    let read = std::process::Command::new(&py)
        .args(["-c", READER, out.join("tensorboard").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let runs: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    let runs = runs.as_object().unwrap();
    let ids: Vec<&String> = runs.keys().collect();
    let mut want: Vec<&String> = trials.iter().map(|t| &t.trial_id).collect();
    want.sort();
    assert_eq!(ids, want, "one run per trial, named by its id");

    for t in &trials {
        let run = &runs[&t.trial_id];
        // The finished run only: the live file is gone.
        let files = run["files"].as_array().unwrap();
        assert_eq!(files.len(), 1, "{}: {files:?}", t.trial_id);
        assert!(files[0].as_str().unwrap().ends_with(".kd"), "{files:?}");

        let series = |tag: &str| -> Vec<(i64, f64)> {
            run["scalars"][tag]
                .as_array()
                .unwrap_or_else(|| panic!("{}: no {tag} in {}", t.trial_id, run["scalars"]))
                .iter()
                .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap()))
                .collect()
        };
        let mine: Vec<_> = epochs.iter().filter(|e| e.trial_id == t.trial_id).collect();
        assert!(!mine.is_empty());
        let close = |tag: &str, got: &[(i64, f64)], want: Vec<(i64, f64)>| {
            assert_eq!(got.len(), want.len(), "{}: {tag}", t.trial_id);
            for ((gs, gv), (ws, wv)) in got.iter().zip(&want) {
                assert_eq!(gs, ws, "{tag} step");
                // Stored as f32 by TensorBoard's scalar summaries.
                assert!(
                    (gv - wv).abs() <= 1e-6 * wv.abs().max(1.0),
                    "{tag}: {gv} vs {wv}"
                );
            }
        };
        let step = |e: &&kd_report::EpochRecord| i64::from(e.epoch);
        close(
            "loss/train",
            &series("loss/train"),
            mine.iter().map(|e| (step(e), e.train_loss)).collect(),
        );
        close(
            "loss/hard",
            &series("loss/hard"),
            mine.iter().map(|e| (step(e), e.hard_loss)).collect(),
        );
        close(
            "accuracy/train",
            &series("accuracy/train"),
            mine.iter().map(|e| (step(e), e.train_acc)).collect(),
        );
        close(
            "lr",
            &series("lr"),
            mine.iter().map(|e| (step(e), e.lr)).collect(),
        );
        if t.kind == kd_report::Kind::Kd {
            close(
                "loss/soft",
                &series("loss/soft"),
                mine.iter()
                    .map(|e| (step(e), e.soft_loss.unwrap()))
                    .collect(),
            );
            close(
                "accuracy/val",
                &series("accuracy/val"),
                mine.iter().map(|e| (step(e), e.val_acc.unwrap())).collect(),
            );
        } else {
            assert!(
                run["scalars"].get("loss/soft").is_none(),
                "no teacher, no soft term"
            );
        }
        let last = mine.iter().map(step).max().unwrap();
        close(
            "result/test_acc",
            &series("result/test_acc"),
            vec![(last, t.test_acc.unwrap())],
        );

        // The hparams plugin: the trial's settings at the start, its status at the end.
        let hp = &run["hparams"];
        let start = &hp["_hparams_/session_start_info"]["sessionStartInfo"]["hparams"];
        assert_eq!(start["kind"], t.kind.as_str(), "{hp}");
        assert_eq!(start["seed"], 0.0, "{hp}");
        assert_eq!(start["model"], format!("{} {}", t.arch, t.hidden), "{hp}");
        let settings: BTreeMap<&str, f64> = ["temperature", "alpha", "beta"]
            .iter()
            .filter_map(|k| start[*k].as_f64().map(|v| (*k, v)))
            .collect();
        if t.kind == kd_report::Kind::Kd {
            assert_eq!(settings["temperature"], t.temperature.unwrap(), "{hp}");
            assert_eq!(settings["alpha"], 0.5, "{hp}");
            assert_eq!(start["soft_loss"], "ce", "{hp}");
        } else {
            assert!(settings.is_empty(), "{hp}");
        }
        assert_eq!(
            hp["_hparams_/session_end_info"]["sessionEndInfo"]["status"], "STATUS_SUCCESS",
            "{hp}"
        );
    }

    // Resume: a second run keeps every trial and leaves the files as they are.
    let before = std::fs::read_dir(out.join("tensorboard")).unwrap().count();
    let (o, _) = sweep(dir.path(), &config, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_dir(out.join("tensorboard")).unwrap().count(),
        before
    );
}
