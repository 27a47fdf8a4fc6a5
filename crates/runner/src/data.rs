//! The data a sweep reads: found once, fingerprinted once (content, not path), split once, and
//! turned into tensors on the device a process trains on.

use std::path::{Path, PathBuf};

use kd_data::{Dataset, DatasetName, SplitSpec};
use kd_model_zoo::InputShape;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Tensor};

use crate::config::DatasetCfg;
use crate::error::RunError;

/// `$KD_CACHE_DIR`, or `~/.cache/kd-sweep`.
pub fn cache_root() -> PathBuf {
    kd_data::dir_from_env("KD_CACHE_DIR", "")
}

/// Where file digests are cached (by path, size and modification time).
pub fn fingerprint_cache() -> PathBuf {
    cache_root().join("fingerprints.json")
}

/// What the trials of a sweep read, decided once and handed to every worker: the folder found,
/// the content's fingerprint, the split and the students' transfer rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataPlan {
    pub name: DatasetName,
    /// The folder the files were found in (recorded, not hashed: the fingerprint is).
    pub dir: PathBuf,
    pub fingerprint: String,
    pub split: SplitSpec,
    pub train: usize,
    pub val: usize,
    pub test: usize,
    pub classes: usize,
    pub input: InputShape,
    pub transfer_fraction: f64,
    /// The training rows the students learn from (all of them when the fraction is 1).
    pub transfer_rows: usize,
    /// SHA-256 (16 hex digits) of the transfer rows' indices.
    pub transfer_digest: String,
    /// `dataset.omit_classes` and `dataset.keep_classes` as configured.
    #[serde(default)]
    pub omit_classes: Vec<usize>,
    #[serde(default)]
    pub keep_classes: Vec<usize>,
    /// Classes with no image in the transfer set: the units a bias shift raises.
    #[serde(default)]
    pub missing_classes: Vec<usize>,
}

/// What the teacher's id hashes of the data.
#[derive(Debug, Serialize)]
pub struct TeacherData<'a> {
    pub fingerprint: &'a str,
    pub split: SplitSpec,
}

/// What a student trial's id hashes of the data: the teacher's view and the transfer rows.
#[derive(Debug, Serialize)]
pub struct StudentData<'a> {
    pub fingerprint: &'a str,
    pub split: SplitSpec,
    pub transfer_digest: &'a str,
}

impl DataPlan {
    pub fn teacher_view(&self) -> TeacherData<'_> {
        TeacherData {
            fingerprint: &self.fingerprint,
            split: self.split,
        }
    }

    pub fn student_view(&self) -> StudentData<'_> {
        StudentData {
            fingerprint: &self.fingerprint,
            split: self.split,
            transfer_digest: &self.transfer_digest,
        }
    }
}

fn rows_digest(rows: &[usize]) -> String {
    let mut h = Sha256::new();
    for r in rows {
        h.update((*r as u64).to_le_bytes());
    }
    hex::encode(&h.finalize()[..8])
}

/// The dataset in memory with the plan of it.
#[derive(Debug)]
pub struct Data {
    pub dataset: Dataset,
    pub plan: DataPlan,
    /// The students' rows of the training split.
    pub transfer: Vec<usize>,
}

fn split_spec(cfg: &DatasetCfg) -> SplitSpec {
    SplitSpec {
        val_size: cfg.val_size,
        train_limit: cfg.train_limit,
        data_seed: cfg.data_seed,
        classes: cfg.classes,
    }
}

/// Find, fingerprint, read and split the configured dataset, and draw the transfer rows.
pub fn load(cfg: &DatasetCfg) -> Result<Data, RunError> {
    let at = kd_data::locate(cfg.name, cfg.dir.as_deref())?;
    let fingerprint = kd_data::fingerprint(&at.dir, at.format.files(), Some(&fingerprint_cache()))?;
    let split = split_spec(cfg);
    let dataset = Dataset::load(cfg.name, &at, &split)?;
    let dir = at.dir;
    let mut transfer =
        kd_data::transfer_rows(dataset.train.len(), cfg.transfer_fraction, cfg.data_seed);
    // The class filters apply to the students' share: the same rows, less the left-out classes.
    for (key, list) in [
        ("omit_classes", &cfg.omit_classes),
        ("keep_classes", &cfg.keep_classes),
    ] {
        if let Some(&c) = list.iter().find(|&&c| c >= dataset.classes) {
            return Err(crate::config::invalid(
                format!("dataset.{key}"),
                format!(
                    "class {c} does not exist: {} has classes 0 to {}",
                    cfg.name.as_str(),
                    dataset.classes - 1
                ),
            )
            .into());
        }
    }
    let labels = &dataset.train.labels;
    transfer.retain(|&r| {
        let c = labels[r] as usize;
        !cfg.omit_classes.contains(&c)
            && (cfg.keep_classes.is_empty() || cfg.keep_classes.contains(&c))
    });
    if transfer.is_empty() {
        // Name the key the user wrote.
        let (key, fix) = if cfg.keep_classes.is_empty() {
            ("dataset.omit_classes", "leave out fewer classes")
        } else {
            (
                "dataset.keep_classes",
                "keep classes that the transfer set has",
            )
        };
        return Err(crate::config::invalid(
            key,
            format!("leaves the students no training image; {fix}"),
        )
        .into());
    }
    let mut present = vec![false; dataset.classes];
    for &r in &transfer {
        present[labels[r] as usize] = true;
    }
    let missing_classes: Vec<usize> = (0..dataset.classes).filter(|&c| !present[c]).collect();
    let plan = DataPlan {
        name: cfg.name,
        dir,
        fingerprint,
        split,
        train: dataset.train.len(),
        val: dataset.val.len(),
        test: dataset.test.len(),
        classes: dataset.classes,
        input: InputShape {
            channels: dataset.channels,
            height: dataset.height,
            width: dataset.width,
        },
        transfer_fraction: cfg.transfer_fraction,
        transfer_rows: transfer.len(),
        transfer_digest: rows_digest(&transfer),
        omit_classes: cfg.omit_classes.clone(),
        keep_classes: cfg.keep_classes.clone(),
        missing_classes,
    };
    Ok(Data {
        dataset,
        plan,
        transfer,
    })
}

/// Read the data a sweep planned (in a worker), checking it is still what was planned.
pub fn load_planned(plan: &DataPlan) -> Result<Data, RunError> {
    let data = load(&planned_cfg(plan))?;
    if data.plan != *plan {
        return Err(RunError::Data(kd_data::DataError::Invalid {
            what: plan.dir.display().to_string(),
            message: format!(
                "the data changed while the sweep ran (fingerprint {} planned, {} found); \
                 run the sweep again",
                plan.fingerprint, data.plan.fingerprint
            ),
        }));
    }
    Ok(data)
}

/// The dataset config that reads `plan`'s data again.
pub fn planned_cfg(plan: &DataPlan) -> DatasetCfg {
    DatasetCfg {
        name: plan.name,
        dir: Some(plan.dir.clone()),
        val_size: plan.split.val_size,
        train_limit: plan.split.train_limit,
        data_seed: plan.split.data_seed,
        transfer_fraction: plan.transfer_fraction,
        omit_classes: plan.omit_classes.clone(),
        keep_classes: plan.keep_classes.clone(),
        classes: plan.split.classes,
    }
}

/// Tensors of one split on the training device.
#[derive(Debug)]
pub struct SplitTensors {
    pub x: Tensor,
    pub y: Tensor,
}

impl SplitTensors {
    pub fn len(&self) -> i64 {
        self.y.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The splits as tensors on one device, with the students' transfer set and the teacher's
/// logits on it.
#[derive(Debug)]
pub struct Tensors {
    pub train: SplitTensors,
    pub val: SplitTensors,
    pub test: SplitTensors,
}

impl Tensors {
    pub fn new(data: &Data, device: Device) -> Tensors {
        let to = |split| {
            let (x, y) = data.dataset.tensors(split, device);
            SplitTensors { x, y }
        };
        let d = &data.dataset;
        Tensors {
            train: to(&d.train),
            val: to(&d.val),
            test: to(&d.test),
        }
    }

    /// The students' training images and, when given, the teacher's logits on them.
    pub fn transfer(
        &self,
        rows: &[usize],
        logits: Option<&Tensor>,
    ) -> (SplitTensors, Option<Tensor>) {
        let device = self.train.x.device();
        let logits = logits.map(|l| l.to_device(device));
        if rows.len() as i64 == self.train.len() {
            let all = SplitTensors {
                x: self.train.x.shallow_clone(),
                y: self.train.y.shallow_clone(),
            };
            return (all, logits);
        }
        let idx = Tensor::from_slice(&rows.iter().map(|&r| r as i64).collect::<Vec<_>>())
            .to_device(device);
        (
            SplitTensors {
                x: self.train.x.index_select(0, &idx),
                y: self.train.y.index_select(0, &idx),
            },
            logits.map(|l| l.index_select(0, &idx)),
        )
    }
}

/// SHA-256 of a file (hex), for checkpoints and cached teachers.
pub fn file_digest(path: &Path) -> Result<String, RunError> {
    let bytes = std::fs::read(path).map_err(crate::error::io_err(path))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// `logits`' rows of the transfer set `rows` (all of them: as they are), on `device`.
pub fn transfer_rows(logits: &Tensor, rows: &[usize], device: Device) -> Tensor {
    let l = logits.to_device(device);
    if rows.len() as i64 == l.size()[0] {
        return l;
    }
    let idx = Tensor::from_slice(&rows.iter().map(|&r| r as i64).collect::<Vec<_>>());
    l.index_select(0, &idx.to_device(device))
}
