//! kd-jit: a TorchScript module with its buffers, the one thing tch does not bind.
//!
//! tch's `TrainableCModule` trains a scripted module's parameters, but it cannot list the
//! module's buffers (batch-norm running statistics): a kept best-epoch copy, a checkpoint or a
//! trained file written back would miss them. [`Module`] loads, runs, lists (parameters and
//! buffers, sharing the module's storage) and saves a module through the seven C++ functions of
//! `csrc/jit.cpp`, compiled against the libtorch torch-sys links. This crate is the only place
//! in the workspace with `unsafe` code: the foreign calls below and nothing else.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;

use tch::{Device, Tensor};
use torch_sys::C_tensor;

type NamedCallback = extern "C" fn(*mut c_void, *const c_char, *mut C_tensor);

extern "C" {
    fn kd_jit_free_str(s: *mut c_char);
    fn kd_jit_load(path: *const c_char, device: c_int, err: *mut *mut c_char) -> *mut c_void;
    fn kd_jit_free(m: *mut c_void);
    fn kd_jit_set_train(m: *mut c_void, train: c_int, err: *mut *mut c_char);
    fn kd_jit_forward(m: *mut c_void, x: *const C_tensor, err: *mut *mut c_char) -> *mut C_tensor;
    fn kd_jit_named(
        m: *mut c_void,
        buffers: c_int,
        data: *mut c_void,
        f: NamedCallback,
        err: *mut *mut c_char,
    );
    fn kd_jit_save(m: *mut c_void, path: *const c_char, err: *mut *mut c_char);
}

/// Run `call` with an error slot; the C++ exception's message when it set one.
fn checked<T>(call: impl FnOnce(*mut *mut c_char) -> T) -> Result<T, String> {
    let mut err: *mut c_char = std::ptr::null_mut();
    let out = call(&mut err);
    if err.is_null() {
        return Ok(out);
    }
    // SAFETY: a non-null `err` is a NUL-terminated string malloc'ed by csrc/jit.cpp.
    let message = unsafe {
        let m = CStr::from_ptr(err).to_string_lossy().into_owned();
        kd_jit_free_str(err);
        m
    };
    Err(first_line(&message))
}

/// What a C++ exception says, in one line: for an error inside the TorchScript interpreter
/// (whose message opens with "The following operation failed in the TorchScript interpreter",
/// then the TorchScript traceback) its last line, where the cause is (`RuntimeError: Expected
/// 4D input...`); otherwise its first line (libtorch appends the source and a C++ trace).
fn first_line(message: &str) -> String {
    let mut lines = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Exception raised from"));
    let line = if message.contains("failed in the TorchScript interpreter") {
        lines.next_back()
    } else {
        lines.next()
    };
    line.unwrap_or("an error without a message").to_string()
}

fn c_path(file: &Path) -> Result<CString, String> {
    CString::new(file.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} has a NUL byte in its name", file.display()))
}

/// A loaded TorchScript module (`torch.jit.script` or `torch.jit.trace`, then `torch.jit.save`).
/// Its mode (training or evaluation) is set by [`Module::set_train`]; the module is used from
/// one thread at a time (`Send`, not `Sync`).
#[derive(Debug)]
pub struct Module {
    ptr: NonNull<c_void>,
    /// The mode last set, None before the first [`Module::set_train`].
    training: Cell<Option<bool>>,
}

// SAFETY: a torch::jit::Module may move between threads; `Module` is not `Sync`, so it is never
// used from two at once.
unsafe impl Send for Module {}

impl Drop for Module {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from kd_jit_load and is freed once.
        unsafe { kd_jit_free(self.ptr.as_ptr()) }
    }
}

impl Module {
    /// `torch.jit.load(file, map_location=device)`.
    pub fn load(file: &Path, device: Device) -> Result<Module, String> {
        let index = match device {
            Device::Cpu => -1,
            Device::Cuda(i) => i as c_int,
            other => {
                return Err(format!(
                    "TorchScript modules run on the CPU or CUDA, not {other:?}"
                ))
            }
        };
        let path = c_path(file)?;
        // SAFETY: `path` is NUL-terminated and outlives the call.
        let ptr = checked(|err| unsafe { kd_jit_load(path.as_ptr(), index, err) })?;
        let ptr = NonNull::new(ptr).ok_or("torch.jit.load gave no module")?;
        Ok(Module {
            ptr,
            training: Cell::new(None),
        })
    }

    /// `module.train(train)`, called only when the mode changes.
    pub fn set_train(&self, train: bool) -> Result<(), String> {
        if self.training.get() == Some(train) {
            return Ok(());
        }
        // SAFETY: `ptr` is a live module.
        checked(|err| unsafe { kd_jit_set_train(self.ptr.as_ptr(), train as c_int, err) })?;
        self.training.set(Some(train));
        Ok(())
    }

    /// `module(x)`: the forward method on one tensor, which must return one tensor.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, String> {
        // SAFETY: `ptr` is a live module and `x` a live tensor for the call's duration; a
        // non-null result is a new at::Tensor that the returned `Tensor` owns.
        let out = checked(|err| unsafe { kd_jit_forward(self.ptr.as_ptr(), x.as_ptr(), err) })?;
        if out.is_null() {
            return Err("forward gave no tensor".into());
        }
        Ok(unsafe { Tensor::from_ptr(out) })
    }

    /// `module.named_parameters()`: dotted names and tensors sharing the module's storage.
    pub fn parameters(&self) -> Result<Vec<(String, Tensor)>, String> {
        self.named(false)
    }

    /// `module.named_buffers()`: dotted names and tensors sharing the module's storage.
    pub fn buffers(&self) -> Result<Vec<(String, Tensor)>, String> {
        self.named(true)
    }

    fn named(&self, buffers: bool) -> Result<Vec<(String, Tensor)>, String> {
        extern "C" fn push(data: *mut c_void, name: *const c_char, t: *mut C_tensor) {
            // SAFETY: `data` is the Vec below, `name` a NUL-terminated string valid for the
            // call, `t` a new at::Tensor handed over to us.
            unsafe {
                let v = &mut *(data as *mut Vec<(String, Tensor)>);
                let name = CStr::from_ptr(name).to_string_lossy().into_owned();
                v.push((name, Tensor::from_ptr(t)));
            }
        }
        let mut v: Vec<(String, Tensor)> = Vec::new();
        let data = &mut v as *mut Vec<(String, Tensor)> as *mut c_void;
        // SAFETY: `ptr` is a live module; `push` only runs during the call.
        checked(|err| unsafe {
            kd_jit_named(self.ptr.as_ptr(), buffers as c_int, data, push, err)
        })?;
        Ok(v)
    }

    /// `torch.jit.save(module, file)`: the code and every parameter and buffer as they are now.
    pub fn save(&self, file: &Path) -> Result<(), String> {
        let path = c_path(file)?;
        // SAFETY: `ptr` is a live module and `path` NUL-terminated.
        checked(|err| unsafe { kd_jit_save(self.ptr.as_ptr(), path.as_ptr(), err) })
    }
}
