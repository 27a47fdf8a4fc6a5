//! Shared helpers for the workspace integration tests in `tests/`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use kd_runner::config::{self, Resolved};

/// libtorch's seed and thread count are process-wide: tests that train take this lock.
pub fn torch_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A teacher cache private to this test process (set once; the variable is process-wide).
pub fn private_cache() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"));
    std::env::set_var("KD_CACHE_DIR", dir.path());
    std::env::set_var("CI", "1");
    dir.path()
}

pub fn resolve(yaml: &str) -> Resolved {
    config::parse(yaml, Path::new("inline.yaml"))
        .and_then(|raw| raw.resolve())
        .unwrap_or_else(|e| panic!("{e}"))
}

pub fn read_frame(path: &Path) -> polars::prelude::DataFrame {
    kd_report::read_parquet(path).unwrap_or_else(|e| panic!("{e}"))
}

pub fn out_dir(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}
