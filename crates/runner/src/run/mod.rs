//! A sweep executed: [`sweep`] ties the plan, the teacher, the workers and the outputs
//! together; [`pool`]: worker processes fed planned trials; [`resume`]: the OUT locks (whole or
//! one shard) and earlier results; [`teacher`]: the teacher, its cache and its logits;
//! [`trial`]: one student trial (or pack) on the shared data; [`checkpoint`]: checkpoint files,
//! so a trial continues where it stopped; [`stop`]: SIGUSR1 and SIGTERM, which checkpoint the
//! trials in flight and end a sweep; [`fresh`]: `--fresh` without losing what it replaces;
//! `keep`: what a sweep keeps of earlier runs; `halving`: successive halving
//! (`search: halving`), rung by rung through the checkpoints; [`models`]: the students' weights
//! kept (`save:`) and read back.

mod cache_file;
pub(crate) mod checkpoint;
mod ensemble;
pub(crate) mod footprint;
pub(crate) mod fresh;
mod halving;
mod keep;
mod labels;
pub mod models;
mod out_store;
mod plan_file;
pub(crate) mod pool;
pub(crate) mod resume;
pub(crate) mod stop;
pub mod sweep;
pub(crate) mod teacher;
mod teacher_cache;
mod teacher_train;
pub(crate) mod trial;
mod units;
