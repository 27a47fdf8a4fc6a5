//! `kd bench`'s checkpoint row: what checkpoints cost a long trial. The MNIST headline's
//! teacher (784-1200-1200, dropout 0.5 and 0.2 on the input, SGD with momentum, batch 100) on
//! 10,000 random 28x28 images for 3 epochs, a checkpoint after each of the first two: the
//! seconds of an epoch, of writing a checkpoint (the archive built in memory, hashed, written
//! and renamed: [`crate::run::checkpoint::save`]), its size, and of replaying an epoch's dropout
//! draws when a run continues (see [`crate::train::snapshot`]). The overhead at the default
//! interval is one write per [`DEFAULT_EVERY`] of training (or per epoch, when an epoch is
//! longer), as a share of that time.

use std::time::Instant;

use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};

use super::step::{median, model};
use crate::config::{Optimizer, TrainCfg};
use crate::data::SplitTensors;
use crate::error::RunError;
use crate::run::checkpoint::{self, DEFAULT_EVERY};
use crate::train::snapshot::{self, Durability, Snapshot};
use crate::train::TrainData;

const ROWS: i64 = 10_000;
const BATCH: usize = 100;
const TEACHER: &str = "{arch: mlp, hidden: [1200, 1200], dropout: 0.5, input_dropout: 0.2}";
const INPUT: kd_model_zoo::InputShape = kd_model_zoo::InputShape {
    channels: 1,
    height: 28,
    width: 28,
};

/// The row, medians where there are several measurements.
#[derive(Debug, Clone, Serialize)]
pub(super) struct CheckpointRow {
    pub model: String,
    pub rows_per_epoch: i64,
    pub epoch_s: f64,
    pub write_s: f64,
    pub bytes: u64,
    /// Seconds to replay one epoch's dropout draws.
    pub replay_s: f64,
    /// `write_s` as a share of the training between two checkpoints at the default interval.
    pub overhead_default: f64,
    /// `write_s / epoch_s`: a checkpoint after every epoch.
    pub overhead_every_epoch: f64,
}

/// Measure the row on `device`; checkpoints go to a temporary folder under `out`.
pub(super) fn row(device: Device, out: &std::path::Path) -> Result<CheckpointRow, RunError> {
    snapshot::probe_draws();
    tch::manual_seed(0);
    let split = |n: i64| SplitTensors {
        x: Tensor::randn([n, 1, 28, 28], (Kind::Float, device)),
        y: Tensor::randint(10, [n], (Kind::Int64, device)),
    };
    let (train, val) = (split(ROWS), split(1000));
    let empty = split(0);
    let data = TrainData {
        train: &train,
        val: &val,
        test: &empty,
        soft_targets: None,
        online_teacher: None,
        reference: None,
    };
    let cfg = TrainCfg {
        epochs: 3,
        momentum: 0.9,
        ..TrainCfg::plain(Optimizer::Sgd, 0.01, BATCH)
    };
    let spec = model(TEACHER, kd_model_zoo::Role::Teacher, false);
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let net = spec
        .build(&vs, INPUT, 10)
        .expect("the bench teacher builds");
    let dir = out.join(".checkpoint-bench");
    let file = checkpoint::unit_file(&dir, &["bench"]);
    let mut writes = vec![];
    let mut failed = None;
    let durable = Durability {
        resume: None,
        every: Some(std::time::Duration::ZERO),
        stop: Box::new(|| false),
        save: Box::new(|snap: &Snapshot| {
            let t0 = Instant::now();
            match checkpoint::save(&file, &["bench"], snap) {
                Ok(()) => {
                    writes.push(t0.elapsed().as_secs_f64());
                    true
                }
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        }),
        rung: Default::default(),
        models: Default::default(),
    };
    let outcome = crate::train::train(
        &net,
        &vs,
        &cfg,
        &kd_loss::KdWeights::hard_only(),
        0,
        &data,
        "bench",
        durable,
        |_| {},
    )?;
    let bytes = std::fs::metadata(&file).map_or(0, |m| m.len());
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(e) = failed {
        return Err(e);
    }
    let epoch_s = median(&outcome.epochs.iter().map(|e| e.seconds).collect::<Vec<_>>());
    let write_s = median(&writes);
    let steps = (ROWS as usize).div_ceil(BATCH);
    // As a continued trial replays: in bulk where this CPU's libtorch allows, else each mask.
    let t0 = Instant::now();
    let bulk = device == Device::Cpu && snapshot::bulk_replay();
    if bulk {
        let per_row: i64 = net
            .dropout_sites()
            .unwrap_or_default()
            .iter()
            .map(|s| s.1)
            .sum();
        snapshot::draw_numbers(steps as i64 * BATCH as i64 * per_row);
    } else {
        for _ in 0..steps {
            net.replay_draws(BATCH as i64, Kind::Float, device);
        }
    }
    let replay_s = t0.elapsed().as_secs_f64();
    let between = DEFAULT_EVERY.as_secs_f64().max(epoch_s);
    Ok(CheckpointRow {
        model: format!("mlp 1200-1200, dropout 0.5 / 0.2, SGD momentum, batch {BATCH}"),
        rows_per_epoch: ROWS,
        epoch_s,
        write_s,
        bytes,
        replay_s,
        overhead_default: write_s / between,
        overhead_every_epoch: write_s / epoch_s,
    })
}

/// The row's table.
pub(super) fn render(r: &CheckpointRow, s: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "\nCheckpoints of a long trial ({}, {} rows per epoch; docs/checkpoints.md):\n\n\
         | epoch s | checkpoint write s | size MB | overhead at the default {} s | overhead at \
         every epoch | replay of an epoch's dropout s |\n|---:|---:|---:|---:|---:|---:|\n\
         | {:.2} | {:.3} | {:.1} | {:.3}% | {:.2}% | {:.2} |",
        r.model,
        r.rows_per_epoch,
        DEFAULT_EVERY.as_secs(),
        r.epoch_s,
        r.write_s,
        r.bytes as f64 / 1e6,
        100.0 * r.overhead_default,
        100.0 * r.overhead_every_epoch,
        r.replay_s
    );
}
