//! Why a sweep could not start or finish, with the CLI's exit code for each.

use std::path::{Path, PathBuf};

use crate::config::ConfigError;

/// Why one training run could not proceed (before or during its epochs).
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Loss(#[from] kd_loss::LossError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error("{0}")]
    Spec(String),
    /// A snapshot could not be put back (the run starts over).
    #[error("cannot continue from the checkpoint: {0}")]
    Resume(String),
    /// Asked to stop (a signal): a snapshot was taken where it stopped (the text says where,
    /// and whether it was written).
    #[error("stopped {0}")]
    Stopped(String),
    /// Paused at a rung of successive halving (`train::snapshot::Rung`), its snapshot written:
    /// each member's state there.
    #[error("paused at a rung of the search")]
    Paused(Vec<AtRung>),
}

/// A member of a run paused at a rung: its status there (`diverged` before it), its epochs up to
/// the rung, and why it stopped if it did.
#[derive(Debug, Clone)]
pub struct AtRung {
    pub status: kd_report::Status,
    pub epochs: Vec<kd_report::EpochRecord>,
    pub message: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Data(#[from] kd_data::DataError),
    #[error("{key}: {message}")]
    Model { key: String, message: String },
    #[error("{key}: {message}")]
    Device { key: String, message: String },
    #[error("checkpoint {file} {reason}")]
    Checkpoint { file: PathBuf, reason: String },
    #[error("{file}: cannot read the teacher checkpoint: {source}")]
    CheckpointRead {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: cannot load the teacher checkpoint: {reason}. It must hold the weights of {expected}: a tch VarStore (.ot) or a PyTorch state_dict as safetensors (tools/pth_to_safetensors.py converts a .pth)")]
    CheckpointLoad {
        file: PathBuf,
        /// What the config says the teacher is.
        expected: String,
        /// What is wrong, naming the tensor where one is.
        reason: String,
    },
    #[error("{file}: cannot use the TorchScript teacher: {reason}. teacher.torchscript must be a torch.jit.trace or torch.jit.script export (torch.jit.save) that takes a float32 [batch, C, H, W] batch of standardised images and gives [batch, classes] logits")]
    TorchScript { file: PathBuf, reason: String },
    #[error("{file}: cannot use the TorchScript student: {reason}. student.torchscript must be a torch.jit.script export (torch.jit.save) with its parameters, taking a float32 [batch, C, H, W] batch of standardised images and giving [batch, classes] logits")]
    ScriptedStudent { file: PathBuf, reason: String },
    /// A kept student's file (`OUT/models/`, `kd eval`) that cannot be written or read.
    #[error("{file}: {reason}")]
    ModelFile { file: PathBuf, reason: String },
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {}", kd_model_zoo::torch_message(.source))]
    Torch {
        file: PathBuf,
        #[source]
        source: tch::TchError,
    },
    #[error(transparent)]
    Report(#[from] kd_report::ReportError),
    #[error("the teacher did not train: {0}")]
    Teacher(#[from] TrainError),
    #[error("the teacher diverged ({0}); lower teacher.train.lr")]
    TeacherDiverged(String),
    /// A teacher loaded from a file (`key`) gives NaN or infinite logits: bad input.
    #[error("{file}: the teacher in this file ({key}) gives NaN or infinite outputs on the dataset ({message}); it is not trained here, so check the file: load it in PyTorch and look for NaN weights, or export it again from a model that evaluates well")]
    TeacherNotFinite {
        file: PathBuf,
        key: &'static str,
        message: String,
    },
    #[error("cannot start {exe}: {source}")]
    WorkerSpawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("worker: {0}")]
    Worker(String),
    #[error("{file}: another kd sweep or shard (pid {pid}) is writing to this folder; wait for it or use another --out")]
    Busy { file: PathBuf, pid: String },
    /// A shard planned other trials than the shards before it in the same OUT.
    #[error("{0}")]
    PlanMismatch(String),
    /// `kd slurm` could not write or submit its scripts.
    #[error("{0}")]
    Slurm(String),
    /// A stop was asked for (SIGUSR1, SIGTERM) while the teacher trained: its checkpoint is
    /// written, and the same command continues it.
    #[error("stopped on request while the teacher trained ({0}); run the same command again to continue it")]
    Stopped(String),
}

/// The exit code of a sweep that stopped on request (SIGUSR1, SIGTERM) before its trials were
/// done.
pub const EXIT_STOPPED: u8 = 3;

impl RunError {
    /// 2 for bad input or environment (config, data, device, checkpoint, a busy OUT, a file
    /// that cannot be read or written: a full disk, an unwritable OUT, OUT naming a file), 1
    /// when training did not finish (a diverged teacher, a failed worker).
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_)
            | RunError::Data(_)
            | RunError::Model { .. }
            | RunError::Device { .. }
            | RunError::CheckpointRead { .. }
            | RunError::Checkpoint { .. }
            | RunError::CheckpointLoad { .. }
            | RunError::TorchScript { .. }
            | RunError::ScriptedStudent { .. }
            | RunError::ModelFile { .. }
            | RunError::TeacherNotFinite { .. }
            | RunError::Io { .. }
            | RunError::Torch { .. }
            | RunError::Report(_)
            | RunError::WorkerSpawn { .. }
            | RunError::Slurm(_)
            | RunError::Busy { .. }
            | RunError::PlanMismatch(_) => 2,
            RunError::Teacher(_) | RunError::TeacherDiverged(_) | RunError::Worker(_) => 1,
            RunError::Stopped(_) => EXIT_STOPPED,
        }
    }
}

pub(crate) fn io_err(file: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        file: file.to_path_buf(),
        source,
    }
}

pub(crate) fn torch_err(file: &Path) -> impl FnOnce(tch::TchError) -> RunError + '_ {
    move |source| RunError::Torch {
        file: file.to_path_buf(),
        source,
    }
}

pub(crate) fn model_err(key: &str) -> impl FnOnce(kd_model_zoo::ModelError) -> RunError + '_ {
    move |e| match e {
        kd_model_zoo::ModelError::Spec { key: k, message } => RunError::Model {
            key: format!("{key}.{k}"),
            message,
        },
    }
}
