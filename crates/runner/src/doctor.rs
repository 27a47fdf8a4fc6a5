//! `kd doctor`: what this machine offers kd-sweep, and the command to run for anything missing.

use std::fmt::Write as _;

use kd_data::DatasetName;

use crate::env::{cpu_isa, cpu_model, nvidia_smi_names, LIBTORCH_LIB, LIBTORCH_VERSION};

/// The version tch 0.26 is written for.
pub const EXPECTED_TORCH: &str = "2.13.0";

/// The report, and whether everything the default experiment needs is present.
pub fn report() -> (String, bool) {
    let mut s = String::new();
    let mut ok = true;
    let _ = writeln!(s, "kd-sweep {}", env!("CARGO_PKG_VERSION"));
    let version_ok = LIBTORCH_VERSION.starts_with(EXPECTED_TORCH);
    let _ = writeln!(
        s,
        "libtorch: {LIBTORCH_VERSION} ({}) at {LIBTORCH_LIB}",
        if version_ok {
            "as tch 0.26 expects".to_string()
        } else {
            format!("tch 0.26 expects {EXPECTED_TORCH}: run `just setup`")
        }
    );
    ok &= version_ok;
    let cuda = tch::Cuda::is_available();
    let count = tch::Cuda::device_count();
    let _ = writeln!(
        s,
        "CUDA: {} ({count} device(s)); cuDNN: {}",
        if cuda { "available" } else { "not available" },
        if tch::Cuda::cudnn_is_available() {
            "available"
        } else {
            "not available"
        }
    );
    let set: Vec<String> = crate::env::CUDA_PROCESS_ENV
        .iter()
        .map(|(k, _)| {
            format!(
                "{k}={}",
                std::env::var(k).unwrap_or_else(|_| "unset".into())
            )
        })
        .collect();
    let _ = writeln!(
        s,
        "  environment: {} (kd sets both in every process: fp32 is true float32 on CUDA, no \
         TF32; GPUs numbered as nvidia-smi numbers them)",
        set.join(" ")
    );
    for (i, name) in nvidia_smi_names().iter().enumerate() {
        let _ = writeln!(s, "  cuda:{i}: {name}");
    }
    if !cuda
        && std::path::Path::new(LIBTORCH_LIB)
            .join("libtorch_cuda.so")
            .exists()
    {
        let _ = writeln!(
            s,
            "  (libtorch has CUDA support; no GPU or driver is visible on this machine)"
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(
        s,
        "threads: libtorch intra-op {} (set with `threads:`), cores {cores}",
        tch::get_num_threads()
    );
    let _ = writeln!(
        s,
        "cpu: {}; libtorch's kernels: {} (CPU trial ids include it, with the threads and the \
         libtorch version)",
        cpu_model(),
        cpu_isa()
    );
    let _ = writeln!(
        s,
        "data root: {} ($KD_DATA_DIR)",
        kd_data::data_root().display()
    );
    let _ = writeln!(
        s,
        "teacher cache: {} ($KD_CACHE_DIR)",
        crate::data::cache_root().join("teachers").display()
    );
    ok &= datasets(&mut s);
    (s, ok)
}

/// Where each named dataset was found (its files) or searched for, and how to get it; whether
/// Fashion-MNIST, which the default experiment needs, is there.
fn datasets(s: &mut String) -> bool {
    let mut ok = true;
    let _ = writeln!(s, "datasets:");
    for name in DatasetName::NAMED {
        match kd_data::locate(name, None) {
            Ok(kd_data::Located { dir, format }) => {
                let files: Vec<String> = format
                    .files()
                    .iter()
                    .filter_map(|f| kd_data::find_file(&dir, f))
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect();
                let _ = writeln!(
                    s,
                    "  {}: found in {} ({}: {})",
                    name.as_str(),
                    dir.display(),
                    format.name(),
                    files.join(", ")
                );
            }
            Err(_) => {
                let searched: Vec<String> = kd_data::candidate_dirs(name)
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect();
                let _ = writeln!(
                    s,
                    "  {}: missing (searched {}). {}",
                    name.as_str(),
                    searched.join(", "),
                    name.how_to_get()
                );
                if name == DatasetName::FashionMnist {
                    ok = false;
                }
            }
        }
    }
    ok
}
