use std::path::Path;

fn main() {
    kd_build_support::emit_libtorch_link_args();
    // Record which libtorch this binary is linked against, for `kd doctor`.
    let version = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .ok()
        .and_then(|lib| {
            let root = Path::new(&lib).parent()?.to_path_buf();
            // A PyTorch install has torch/version.py; a standalone libtorch has build-version.
            if let Ok(py) = std::fs::read_to_string(root.join("version.py")) {
                py.lines()
                    .find_map(|l| l.strip_prefix("__version__ = "))
                    .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
            } else {
                std::fs::read_to_string(root.join("build-version"))
                    .ok()
                    .map(|v| v.trim().to_string())
            }
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=KD_LIBTORCH_VERSION={version}");
    println!(
        "cargo:rustc-env=KD_LIBTORCH_LIB={}",
        std::env::var("DEP_TCH_LIBTORCH_LIB").unwrap_or_default()
    );
}
