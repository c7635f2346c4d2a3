//! Seeded test tensors and how far apart two tensors are, for the unit tests of
//! hand-written gradients.

use candle_core::{Device, Tensor};

/// Values in [-1, 1) from core's seeded SplitMix64, so every run tests the same numbers.
pub(crate) fn values(count: usize, seed: u64) -> Vec<f32> {
    let mut rng = labelfleet_core::rng::SplitMix64::new(seed);
    (0..count)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        .collect()
}

/// Standard normal values (Box-Muller over [`values`]), the same on every run: an
/// unseeded draw let a tolerance hold on most runs and fail on a few.
pub(crate) fn normal_values(count: usize, seed: u64) -> Vec<f32> {
    let uniform = values(count + count % 2, seed);
    uniform
        .chunks(2)
        .flat_map(|pair| {
            // From [-1, 1) to (0, 1] (the logarithm's argument) and [0, 1).
            let (u, v) = ((1.0 - pair[0]) / 2.0, (pair[1] + 1.0) / 2.0);
            let radius = (-2.0 * u.ln()).sqrt();
            let angle = std::f32::consts::TAU * v;
            [radius * angle.cos(), radius * angle.sin()]
        })
        .take(count)
        .collect()
}

/// A CPU tensor of `shape` filled with [`normal_values`] times `std`.
pub(crate) fn normal(shape: &[usize], std: f32, seed: u64) -> Tensor {
    let count = shape.iter().product();
    let values = normal_values(count, seed)
        .into_iter()
        .map(|v| v * std)
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).expect("shape fits")
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
