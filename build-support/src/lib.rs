//! Build-script helper shared by every crate whose binaries or tests link libtorch.
//!
//! It owns two link-time facts and nothing else: an rpath to libtorch's `lib/` folder, so binaries
//! and test executables run without `LD_LIBRARY_PATH`, and `-Wl,--no-as-needed` before libtorch's
//! CUDA libraries, so the linker keeps `libtorch_cuda.so` (otherwise CUDA silently reports
//! "unavailable" on GPU machines, because no symbol of it is referenced directly).
//!
//! Call [`emit_libtorch_link_args`] from a `build.rs` of a crate that depends on `torch-sys`
//! directly: cargo only exports `DEP_TCH_LIBTORCH_LIB` to direct dependents.

use std::path::Path;

/// Emit the rpath and CUDA link arguments. Does nothing (with a warning) when torch-sys did not
/// export its library folder.
pub fn emit_libtorch_link_args() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!(
            "cargo:warning=DEP_TCH_LIBTORCH_LIB is unset: add torch-sys as a direct dependency; \
             binaries will need LD_LIBRARY_PATH"
        );
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let lib_dir = Path::new(&lib);
    // Keep libtorch_cuda (and c10_cuda) in DT_NEEDED even though no symbol of theirs is used.
    let cuda_libs: Vec<&str> = ["torch_cuda", "c10_cuda"]
        .into_iter()
        .filter(|name| lib_dir.join(format!("lib{name}.so")).exists())
        .collect();
    if !cuda_libs.is_empty() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-L{lib}");
        for name in cuda_libs {
            println!("cargo:rustc-link-arg=-l{name}");
        }
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
