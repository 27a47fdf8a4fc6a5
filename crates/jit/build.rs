//! Compiles `csrc/jit.cpp` against the libtorch torch-sys links (its headers sit beside its
//! `lib/` folder, in a PyTorch wheel as in a libtorch archive), with the C++ ABI libtorch was
//! built with.

use std::path::Path;
use std::process::Command;

fn main() {
    kd_build_support::emit_libtorch_link_args();
    println!("cargo:rerun-if-changed=csrc/jit.cpp");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys exports its libtorch folder (DEP_TCH_LIBTORCH_LIB)");
    let root = Path::new(&lib)
        .parent()
        .expect("libtorch's lib/ has a parent");
    let include = root.join("include");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={}", cxx11_abi()))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/jit.cpp")
        .compile("kdjit");
}

/// libtorch's `_GLIBCXX_USE_CXX11_ABI`: PyTorch's answer when it is the libtorch
/// (`LIBTORCH_USE_PYTORCH`), else 1 (every libtorch archive since 2.7 uses the C++11 ABI).
fn cxx11_abi() -> &'static str {
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    println!("cargo:rerun-if-env-changed=PYTHON_SYS_EXECUTABLE");
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_none() {
        return "1";
    }
    let python = std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python".into());
    let out = Command::new(&python)
        .args([
            "-c",
            "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))",
        ])
        .output();
    match out {
        Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == "0" => "0",
        _ => "1",
    }
}
