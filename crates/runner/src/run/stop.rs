//! A polite stop: SIGUSR1 (Slurm sends it ahead of a task's time limit, `--signal=B:USR1@120`,
//! through the batch script) or SIGTERM (`kill`, `scancel`, a node's shutdown) asks a sweep to
//! stop now without losing work: every trial in flight writes a checkpoint after its current
//! step (mid-epoch if it must), no unit starts, and the sweep exits 3. Running it again
//! continues those trials from their checkpoints and resumes the rest. A SIGTERM that arrives
//! once a stop is under way (a second signal, or one after the parent's stop line reached a
//! worker) ends the process at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

fn flag() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Route SIGUSR1 and SIGTERM to the stop flag (once per process; later calls do nothing).
pub fn install() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        use signal_hook::consts::{SIGTERM, SIGUSR1};
        // Without the handlers the signals would kill the sweep; failing to install them
        // leaves that. The conditional shutdown goes first: a SIGTERM that finds the flag set
        // already (a second one) ends the process.
        let f = flag();
        let _ = signal_hook::flag::register_conditional_shutdown(SIGTERM, 1, Arc::clone(f));
        let _ = signal_hook::flag::register(SIGTERM, Arc::clone(f));
        let _ = signal_hook::flag::register(SIGUSR1, Arc::clone(f));
    });
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    flag().load(Ordering::SeqCst)
}

/// Ask for a stop, as a signal would (a worker told by its parent).
pub fn request() {
    flag().store(true, Ordering::SeqCst);
}

pub use crate::error::EXIT_STOPPED;
