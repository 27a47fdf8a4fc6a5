//! A polite stop: SIGUSR1 asks a sweep to finish the trials in flight and start no more (Slurm
//! sends it ahead of a task's time limit, `--signal=B:USR1@120`, through the batch script). The
//! sweep then exits 3, and running it again resumes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

fn flag() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Route SIGUSR1 to the stop flag (once per process; later calls do nothing).
pub fn install() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // Without the handler SIGUSR1 would kill the sweep; failing to install it leaves that.
        let _ = signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(flag()));
    });
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    flag().load(Ordering::SeqCst)
}

/// The exit code of a sweep that stopped on request before its trials were done.
pub const EXIT_STOPPED: u8 = 3;
