//! Reaching a tensor's storage from inside a custom op, on whichever device it is.
//!
//! A custom op's forward pass gets one device's storage type for its inputs; the
//! tensors it holds itself (frozen weights, a value computed beforehand) are reached
//! through their `Storage` enum. These pick out the matching variant, and copy a held
//! value out as the op's result.

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::{CpuStorage, CudaStorage, MetalStorage, Result, Shape, Storage, Tensor};

/// A contiguous copy of `value`, whose storage `unwrap` picks out as one device's.
/// Custom ops whose forward value was computed beforehand return it this way.
pub(crate) fn copy_of<S>(
    value: &Tensor,
    unwrap: impl Fn(&Storage) -> Option<&S>,
) -> Result<(S, Shape)>
where
    S: BackendStorage,
    S::Device: BackendDevice<Storage = S>,
{
    let (storage, layout) = value.storage_and_layout();
    let Some(storage) = unwrap(&storage) else {
        candle_core::bail!("a fused op's value is on another device than its inputs");
    };
    // SAFETY: every element is written by the copy below before it is read.
    let mut out = unsafe {
        storage
            .device()
            .alloc_uninit(layout.shape(), storage.dtype())?
    };
    storage.copy_strided_src(&mut out, 0, layout)?;
    Ok((out, layout.shape().clone()))
}

/// The storage of each device, for [`copy_of`] and custom ops that hold tensors.
pub(crate) fn cpu(storage: &Storage) -> Option<&CpuStorage> {
    match storage {
        Storage::Cpu(s) => Some(s),
        _ => None,
    }
}

pub(crate) fn cuda(storage: &Storage) -> Option<&CudaStorage> {
    match storage {
        Storage::Cuda(s) => Some(s),
        _ => None,
    }
}

pub(crate) fn metal(storage: &Storage) -> Option<&MetalStorage> {
    match storage {
        Storage::Metal(s) => Some(s),
        _ => None,
    }
}
