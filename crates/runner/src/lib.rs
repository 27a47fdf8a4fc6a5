//! runner: the `kd` binary's library. It owns every decision about IO, devices and seeds; the
//! losses, models, data and reports it uses are pure pieces from the other crates.
//!
//! Module map (no cycles; each arrow reads "is used by"):
//! - [`config`]: raw YAML -> validated [`config::Resolved`] with the grid expanded into cells.
//! - [`env`]: devices and the execution facts that change numbers (ISA, GPU, threads, libtorch).
//! - [`data`]: the dataset found, fingerprinted and split once; tensors on a device.
//! - [`plan`]: every trial decided once (id, kind, seed, pairing, class, data) -> dry run,
//!   sweep, resume and workers; [`records`]: a planned trial and its outcome -> a record.
//! - [`train`]: one training loop (with `train.jitter` and an online teacher); [`trial`]: a
//!   student trial on the shared data; [`teacher`]: the teacher, its cache and its logits;
//!   [`measure`]: what a finished student is measured on (confusion, fidelity, bias shift).
//! - [`pool`]: worker processes fed planned trials; [`resume`]: the OUT locks (whole or one
//!   shard) and earlier results; [`sweep`]: the driver that ties them together; [`stop`]: a
//!   SIGUSR1 that ends a sweep after the trials in flight; [`slurm`]: `kd slurm`'s scripts.
//! - [`packed`]: K MLP students of one shape trained as one model (the default for MLPs),
//!   with [`optim`]'s chunked update.
//! - [`track`]: where a sweep's events go, one file per output (the terminal's progress,
//!   TensorBoard event files); [`doctor`], [`error`]: `kd doctor`, the error type.
//! - [`bench`]: `kd bench`, kd-sweep against PyTorch loops on the same machine.
//!
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
pub(crate) mod measure;
pub(crate) mod optim;
pub(crate) mod packed;
pub mod plan;
pub(crate) mod pool;
pub(crate) mod records;
pub mod resume;
pub(crate) mod slurm;
pub(crate) mod stop;
pub mod sweep;
pub(crate) mod teacher;
pub(crate) mod track;
pub(crate) mod train;
pub(crate) mod trial;

/// Unit tests that seed libtorch's global generator (`tch::manual_seed`) or depend on its
/// draws hold this lock: the test harness runs tests on threads of one process, and a seed set
/// by one test between another's seeding and its draws would change the other's numbers.
#[cfg(test)]
pub(crate) fn torch_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
