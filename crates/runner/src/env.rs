//! Devices and the execution facts that change a trial's numbers: the device kind, the CPU's
//! vector ISA class (libtorch picks other kernels on AVX2 and AVX-512 machines) or the GPU model,
//! the intra-op thread count on CPU, and the libtorch version. Trial ids hash an [`ExecClass`].

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::error::RunError;

/// The libtorch version this binary was built against (read from the install at build time).
pub const LIBTORCH_VERSION: &str = env!("KD_LIBTORCH_VERSION");
/// The folder of libtorch's shared libraries (the rpath).
pub const LIBTORCH_LIB: &str = env!("KD_LIBTORCH_LIB");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

/// What a trial's numbers depend on besides its settings: trials of one class give the same
/// numbers for the same settings and seed; trials of two classes may differ in the last digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExecClass {
    pub kind: DeviceKind,
    /// CPU: the vector ISA class libtorch dispatches to (`avx512`, `avx2`, ...); CUDA: the GPU.
    pub hardware: String,
    /// libtorch intra-op threads on CPU (none on CUDA, where they do not touch the numbers).
    pub threads: Option<usize>,
    pub libtorch: String,
}

impl ExecClass {
    pub fn describe(&self) -> String {
        match (self.kind, self.threads) {
            (DeviceKind::Cpu, Some(t)) => format!("cpu {} {t} threads", self.hardware),
            _ => format!("cuda {}", self.hardware),
        }
    }
}

/// One place trials run: the sweep process itself, or a worker process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    /// `cpu`, `cuda:0`, ... (`auto` already resolved).
    pub device: String,
    /// libtorch intra-op threads it sets.
    pub threads: usize,
    pub class: ExecClass,
}

/// The vector ISA class libtorch's CPU kernels dispatch to, decided as ATen decides it:
/// `$ATEN_CPU_CAPABILITY` when set, else the best class the CPU supports (AVX-512 needs
/// avx512 f/bw/vl/dq and FMA; AVX2 needs avx2 and FMA).
pub fn cpu_isa() -> String {
    if let Ok(forced) = std::env::var("ATEN_CPU_CAPABILITY") {
        if !forced.is_empty() {
            return forced.to_lowercase();
        }
    }
    native_isa()
}

#[cfg(target_arch = "x86_64")]
fn native_isa() -> String {
    use std::arch::is_x86_feature_detected as has;
    if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512dq") && has!("fma") {
        "avx512".into()
    } else if has!("avx2") && has!("fma") {
        "avx2".into()
    } else {
        "default".into()
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn native_isa() -> String {
    format!("{} default", std::env::consts::ARCH)
}

/// The CPU's model: its name, then vendor, family and model numbers from `/proc/cpuinfo`, e.g.
/// `AMD EPYC (AuthenticAMD family 25 model 17)` (a virtual machine may shorten the name; the
/// numbers still tell a Zen 4 from a Xeon). Recorded with every trial and checkpoint and printed
/// by `kd doctor`; never part of an id (docs/sweeps.md, "Which CPU ran it").
pub fn cpu_model() -> String {
    // The tests play a machine of another CPU model (tests/checkpoints.rs).
    if let Ok(model) = std::env::var("KD_TEST_CPU_MODEL") {
        return model;
    }
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpu_model_of(&info)
}

/// [`cpu_model`] from the text of `/proc/cpuinfo` (its first processor).
pub fn cpu_model_of(cpuinfo: &str) -> String {
    let field = |key: &str| {
        cpuinfo
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let name = field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    match (field("vendor_id"), field("cpu family"), field("model")) {
        (Some(vendor), Some(family), Some(model)) => {
            format!("{name} ({vendor} family {family} model {model})")
        }
        _ => name,
    }
}

/// Whether a CPU model written down earlier (`recorded`) is this machine's: its [`cpu_model`],
/// or, for a checkpoint written before the vendor and numbers were added, its name alone.
pub fn is_this_cpu(recorded: &str) -> bool {
    let here = cpu_model();
    recorded == here || here.split(" (").next() == Some(recorded)
}

/// The names of the GPUs nvidia-smi lists, in its order (empty without a driver).
pub fn nvidia_smi_names() -> Vec<String> {
    std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// GPU `n` (as this process numbers them) and the software stack its numbers depend on: its
/// model and driver (from `nvidia-smi`), and the CUDA runtime and cuDNN libtorch runs on, e.g.
/// `NVIDIA H200 driver 575.57.08 cudart 13000 cudnn 91002` (no commas: it is a CSV field). All of
/// it goes into the execution class, so into every CUDA trial's id.
pub fn gpu_model(n: usize) -> String {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let physical = match visible.as_deref().map(|v| v.split(',').nth(n)) {
        Some(Some(id)) => id.trim().to_string(),
        _ => n.to_string(),
    };
    let smi = std::process::Command::new("nvidia-smi")
        .args([
            "-i",
            &physical,
            "--query-gpu=name,driver_version",
            "--format=csv,noheader",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty());
    let (model, driver) = match smi.as_deref().and_then(|s| s.rsplit_once(',')) {
        Some((m, d)) => (m.trim().to_string(), d.trim().to_string()),
        None => ("unknown GPU".to_string(), "unknown".to_string()),
    };
    format!(
        "{model} driver {driver} cudart {} cudnn {}",
        tch::utils::version_cudart(),
        tch::utils::version_cudnn()
    )
}

/// The environment every `kd` process starts CUDA under, set first thing in `main` (before
/// libtorch touches a GPU) and given to each worker: `NVIDIA_TF32_OVERRIDE=0`, so cuBLAS and
/// cuDNN use no TensorFloat-32 and `precision: fp32` is true float32 on CUDA as on the CPU
/// (libtorch's own default lets cuDNN convolutions use TF32, which the ids would not say), and
/// `CUDA_DEVICE_ORDER=PCI_BUS_ID`, so CUDA numbers the GPUs as `nvidia-smi` does and a device's
/// model ([`gpu_model`]) is looked up on the right one.
pub const CUDA_PROCESS_ENV: [(&str, &str); 2] = [
    ("NVIDIA_TF32_OVERRIDE", "0"),
    ("CUDA_DEVICE_ORDER", "PCI_BUS_ID"),
];

/// Run this process under [`CUDA_PROCESS_ENV`]; `main` calls it before anything else. cuBLAS
/// and cuDNN are loaded with the binary, so a variable set in place might come after they read
/// it: where a GPU driver is present (`/dev/nvidiactl`; `KD_TEST_REEXEC=1` plays one) and a
/// variable differs, the process replaces itself (exec) with the same program and arguments
/// under the variables, once (the new image finds them set). Without a driver no CUDA library
/// can have read them, and they are set in place (no thread exists yet).
pub fn set_cuda_process_env() {
    let differs = CUDA_PROCESS_ENV
        .iter()
        .any(|(k, v)| std::env::var(k).ok().as_deref() != Some(*v));
    if !differs {
        return;
    }
    let driver = std::path::Path::new("/dev/nvidiactl").exists()
        || std::env::var("KD_TEST_REEXEC").is_ok_and(|v| v == "1");
    if driver {
        if let Ok(exe) = std::env::current_exe() {
            use std::os::unix::process::CommandExt;
            let err = std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .envs(CUDA_PROCESS_ENV)
                .exec();
            // exec returns only when it failed.
            eprintln!(
                "warning: kd could not restart itself under {CUDA_PROCESS_ENV:?} ({err}); set \
                 them in place, which cuBLAS and cuDNN may have read before"
            );
        }
    }
    for (k, v) in CUDA_PROCESS_ENV {
        std::env::set_var(k, v);
    }
}

/// What a worker for the slot on `device` (`cpu`, `cuda:1`) is started with, given the parent's
/// `CUDA_VISIBLE_DEVICES`: its environment, and the device it uses inside. A CUDA worker sees
/// exactly its GPU (`CUDA_VISIBLE_DEVICES` = the parent's entry for it, or its index when the
/// parent sets none) and uses it as `cuda:0`, so it creates no context on another GPU; a CPU
/// worker sees none. Both get [`CUDA_PROCESS_ENV`].
pub fn worker_env(device: &str, parent_visible: Option<&str>) -> (Vec<(String, String)>, String) {
    let mut env: Vec<(String, String)> = CUDA_PROCESS_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (visible, inside) = match device.strip_prefix("cuda") {
        Some(rest) => {
            let n: usize = rest
                .strip_prefix(':')
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let entry = parent_visible
                .map(|v| v.split(',').map(str::trim).collect::<Vec<_>>())
                .and_then(|v| v.get(n).map(|e| e.to_string()))
                .unwrap_or_else(|| n.to_string());
            (entry, "cuda:0".to_string())
        }
        None => (String::new(), device.to_string()),
    };
    env.push(("CUDA_VISIBLE_DEVICES".into(), visible));
    (env, inside)
}

/// How many CUDA devices this process's libtorch sees (what `device: all` stands for).
pub fn visible_gpus() -> usize {
    tch::Cuda::device_count().max(0) as usize
}

/// Turn a device name into a libtorch device, checking that it exists (its form is checked by
/// [`crate::config::parse_device_name`], as in the config).
pub fn select_device(name: &str) -> Result<Device, RunError> {
    let name = crate::config::parse_device_name("device", name)?;
    let cuda = tch::Cuda::is_available();
    let count = tch::Cuda::device_count();
    let missing = |what: String| RunError::Device {
        key: "device".into(),
        message: format!(
            "{what}, but this libtorch sees {count} CUDA device(s) (CUDA available: {cuda}). \
             Use `device: cpu` or `auto`, and run `kd doctor` to see what libtorch finds"
        ),
    };
    match name.as_str() {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" if cuda => Ok(Device::Cuda(0)),
        "cuda" => Err(missing("`cuda` was asked for".into())),
        other => {
            let n: usize = other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| missing(format!("`{other}` was asked for")))?;
            if cuda && (n as i64) < count {
                Ok(Device::Cuda(n))
            } else {
                Err(missing(format!("`{other}` was asked for")))
            }
        }
    }
}

pub fn device_label(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The class of a process that trains on `device` with `threads` intra-op threads.
pub fn class_of(device: Device, threads: usize) -> ExecClass {
    match device {
        Device::Cuda(n) => ExecClass {
            kind: DeviceKind::Cuda,
            hardware: gpu_model(n),
            threads: None,
            libtorch: LIBTORCH_VERSION.into(),
        },
        _ => ExecClass {
            kind: DeviceKind::Cpu,
            hardware: cpu_isa(),
            threads: Some(threads),
            libtorch: LIBTORCH_VERSION.into(),
        },
    }
}

/// The slot for `name` (checked to exist) with `threads` threads.
pub fn slot(name: &str, threads: usize) -> Result<Slot, RunError> {
    let device = select_device(name)?;
    Ok(Slot {
        device: device_label(device),
        threads,
        class: class_of(device, threads),
    })
}

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// RFC 3339 time of now, UTC.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model as issue 36 asks for it: name, vendor, family and model numbers, from the
    /// first processor of `/proc/cpuinfo` (this session's machine, a virtual one, as written).
    #[test]
    fn the_cpu_model_names_vendor_family_and_model() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: \
                    17\nmodel name\t: AMD EPYC\nstepping\t: 1\n\nprocessor\t: 1\nvendor_id\t: \
                    AuthenticAMD\n";
        assert_eq!(
            cpu_model_of(info),
            "AMD EPYC (AuthenticAMD family 25 model 17)"
        );
        assert_eq!(cpu_model_of("model name\t: Some CPU\n"), "Some CPU");
        assert_eq!(cpu_model_of(""), std::env::consts::ARCH);
    }

    #[test]
    fn each_worker_sees_exactly_its_gpu_as_cuda_0_under_true_fp32() {
        let get = |env: &[(String, String)], k: &str| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        // The parent sees GPUs 2 and 5 (Slurm's list): its cuda:1 is physical GPU 5.
        let (env, inside) = worker_env("cuda:1", Some("2,5"));
        assert_eq!(get(&env, "CUDA_VISIBLE_DEVICES").as_deref(), Some("5"));
        assert_eq!(inside, "cuda:0");
        assert_eq!(get(&env, "NVIDIA_TF32_OVERRIDE").as_deref(), Some("0"));
        assert_eq!(
            get(&env, "CUDA_DEVICE_ORDER").as_deref(),
            Some("PCI_BUS_ID")
        );
        // UUIDs pass through; `cuda` is cuda:0.
        let (env, _) = worker_env("cuda", Some("GPU-aa, GPU-bb"));
        assert_eq!(get(&env, "CUDA_VISIBLE_DEVICES").as_deref(), Some("GPU-aa"));
        // No list in the parent: the index is the GPU.
        let (env, inside) = worker_env("cuda:3", None);
        assert_eq!(get(&env, "CUDA_VISIBLE_DEVICES").as_deref(), Some("3"));
        assert_eq!(inside, "cuda:0");
        // A CPU worker sees no GPU.
        let (env, inside) = worker_env("cpu", Some("0,1"));
        assert_eq!(get(&env, "CUDA_VISIBLE_DEVICES").as_deref(), Some(""));
        assert_eq!(inside, "cpu");
        assert_eq!(get(&env, "NVIDIA_TF32_OVERRIDE").as_deref(), Some("0"));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }

    #[test]
    fn cuda_without_cuda_is_a_device_error() {
        if tch::Cuda::is_available() {
            return;
        }
        let e = select_device("cuda").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().starts_with("device: `cuda` was asked for"),
            "{e}"
        );
        assert!(matches!(select_device("auto").unwrap(), Device::Cpu));
        assert!(select_device("cuda:3").is_err());
    }

    #[test]
    fn a_cpu_class_records_isa_threads_and_libtorch() {
        let c = class_of(Device::Cpu, 3);
        assert_eq!(c.kind, DeviceKind::Cpu);
        assert_eq!(c.threads, Some(3));
        assert_eq!(c.libtorch, LIBTORCH_VERSION);
        assert!(
            ["avx512", "avx2", "default"].contains(&c.hardware.as_str())
                || std::env::var_os("ATEN_CPU_CAPABILITY").is_some()
                || !cfg!(target_arch = "x86_64"),
            "{}",
            c.hardware
        );
        assert_ne!(c, class_of(Device::Cpu, 2), "threads change the class");
    }
}
