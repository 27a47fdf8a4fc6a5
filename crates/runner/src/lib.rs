//! runner: the `kd` binary's library. It owns every decision about IO, devices and seeds; the
//! losses, models, data and reports it uses are pure pieces from the other crates.
//!
//! Module map, one folder per concern (no cycles, checked by `tests/layout.rs`):
//! - [`config`]: raw YAML -> validated [`config::Resolved`] with the grid expanded into cells
//!   (no libtorch calls); [`env`]: devices and the execution facts that change numbers (ISA,
//!   GPU, threads, libtorch).
//! - [`data`]: the dataset found, fingerprinted and split once; tensors on a device.
//! - [`plan`]: every trial decided once (id, kind, seed, pairing, class, data, unit) -> dry
//!   run, sweep, resume and workers; `plan::records`: a planned trial and its outcome -> a
//!   record.
//! - [`train`]: the one epoch driver behind a `Learner` (one student alone, or K MLP students
//!   packed as one model), optimisers, evaluation, augmentation and the finished student's
//!   measures.
//! - [`run`]: a sweep executed: the sweep itself, worker processes, OUT locks and resume, the
//!   teacher and its cache, one student trial, SIGUSR1 stops.
//! - [`track`]: where a sweep's events go, one file per output (the terminal's progress,
//!   TensorBoard event files).
//! - [`bench`]: `kd bench`, kd-sweep against PyTorch loops on the same machine; [`slurm`]:
//!   `kd slurm`'s scripts; [`doctor`]: `kd doctor`.
//! - [`cli`]: the command line as clap parses it; [`commands`]: what each command does, and
//!   its exit code.
//!
//! Errors are typed ([`error::RunError`] and [`error::TrainError`], [`config::ConfigError`]);
//! [`commands::Failure::exit_code`] chooses exit codes in one place and `main.rs` prints them.

pub(crate) mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub(crate) mod doctor;
pub(crate) mod env;
pub mod error;
pub mod export;
pub mod model_eval;
pub mod plan;
pub mod run;
pub(crate) mod slurm;
pub(crate) mod track;
pub(crate) mod train;

pub use env::set_cuda_process_env;

/// Unit tests that seed libtorch's global generator (`tch::manual_seed`) or depend on its
/// draws hold this lock: the test harness runs tests on threads of one process, and a seed set
/// by one test between another's seeding and its draws would change the other's numbers.
#[cfg(test)]
pub(crate) fn torch_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
