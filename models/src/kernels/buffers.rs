//! Plain f32 buffers for the CPU kernels: borrowed from a candle tensor, or shared
//! between the threads that fill disjoint parts of one.

use candle_core::{CpuStorage, Layout, Storage};

/// A contiguous tensor's f32 elements, borrowed from its CPU storage (`storage` and
/// `layout` as `Tensor::storage_and_layout` gives them, `count` its element count).
pub(crate) fn contiguous_f32<'a>(
    storage: &'a Storage,
    layout: &Layout,
    count: usize,
) -> candle_core::Result<&'a [f32]> {
    let Storage::Cpu(CpuStorage::F32(data)) = storage else {
        candle_core::bail!("expected an f32 tensor on the CPU");
    };
    let start = layout.start_offset();
    Ok(&data[start..start + count])
}

/// An output buffer written by several threads at disjoint indices; whoever shares it
/// out waits for them all before reading it.
pub(crate) struct SharedOut(*mut f32);

// SAFETY: the threads write disjoint elements, and the caller waits for them all.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub(crate) fn new(out: &mut [f32]) -> SharedOut {
        SharedOut(out.as_mut_ptr())
    }

    /// The element at `offset` (a method, so that closures capture the whole `Sync`
    /// wrapper rather than its raw pointer).
    pub(crate) fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}
