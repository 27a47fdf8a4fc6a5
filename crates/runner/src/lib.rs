//! runner: the `kd` binary's library: config (raw YAML -> resolved plan), device choice,
//! scheduling of teacher and student trials, training loops, progress and result files.
//!
//! It owns every decision about IO, devices and seeds; the losses, models, data and reports it
//! uses are pure pieces from the other crates. Errors are typed here (`RunError`, `ConfigError`);
//! only `main.rs` uses `anyhow` and chooses exit codes.

pub mod config;
pub mod doctor;
pub mod pool;
pub mod progress;
pub mod run;
pub mod train;
