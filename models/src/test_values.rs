//! Seeded test tensors and how far apart two tensors are, for the unit tests of
//! hand-written gradients.

use candle_core::{Device, Tensor};

/// Values in [-1, 1) from a seeded splitmix64, so every run tests the same numbers.
pub(crate) fn values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// A CPU tensor of `shape` filled with [`values`].
pub(crate) fn tensor(shape: &[usize], seed: u64) -> Tensor {
    let count = shape.iter().product();
    Tensor::from_vec(values(count, seed), shape, &Device::Cpu).expect("shape fits")
}

/// The largest absolute difference between two tensors of one shape.
pub(crate) fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar())
        .expect("tensors of one shape")
}
