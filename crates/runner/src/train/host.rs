//! Every transfer between a tensor's device and the host during training, in one place and
//! counted: a read of values into host memory (`to_vec`, a scalar) and an upload of host values
//! to the device. On a GPU each is a synchronisation (a read waits for every kernel queued
//! before it; an upload from pageable memory waits for the copy), so a training step must make
//! none: what a step needs is uploaded once per pack or per epoch and indexed on the device.
//! The count is per thread (a trial trains on one thread), so tests that train side by side do
//! not see each other's transfers.

use std::cell::Cell;

use tch::{Device, Kind, Tensor};

thread_local! {
    static TRANSFERS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    TRANSFERS.with(|c| c.set(c.get() + 1));
}

/// Transfers made on this thread so far.
#[cfg(test)]
pub(crate) fn transfers() -> u64 {
    TRANSFERS.with(Cell::get)
}

/// The values of `t` (of any shape, a scalar too) as `f64`, in row-major order.
pub(crate) fn f64s(t: &Tensor) -> Vec<f64> {
    count();
    let t = t
        .to_kind(Kind::Double)
        .to_device(Device::Cpu)
        .flatten(0, -1);
    Vec::<f64>::try_from(&t).unwrap_or_default()
}

/// The values of `t` as `i64`, in row-major order.
pub(crate) fn i64s(t: &Tensor) -> Vec<i64> {
    count();
    let t = t.to_kind(Kind::Int64).to_device(Device::Cpu).flatten(0, -1);
    Vec::<i64>::try_from(&t).unwrap_or_default()
}

/// The values of a boolean `t`, in row-major order.
pub(crate) fn bools(t: &Tensor) -> Vec<bool> {
    count();
    Vec::<bool>::try_from(&t.to_device(Device::Cpu).flatten(0, -1)).unwrap_or_default()
}

/// The one value of a scalar `t`.
pub(crate) fn f64_of(t: &Tensor) -> f64 {
    count();
    t.double_value(&[])
}

/// `values` on `device` (one upload). On CUDA it is copied from pinned memory without
/// blocking the host (the copy is queued on the stream; libtorch's pinned-memory allocator keeps
/// the block until the copy is done), so an epoch's batch order or augmentation draws do not
/// wait for the GPU to drain; where pinning fails, the plain copy.
pub(crate) fn upload<T: tch::kind::Element>(values: &[T], device: Device) -> Tensor {
    count();
    let t = Tensor::from_slice(values);
    if device.is_cuda() {
        let queued = t
            .f_pin_memory(device)
            .and_then(|p| p.f_to_device_(device, p.kind(), true, false));
        if let Ok(u) = queued {
            return u;
        }
    }
    t.to_device(device)
}
