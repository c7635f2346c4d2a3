//! `x · Wᵀ` for a few rows of `x` against Q4_1 or Q8_0 weights, on the CPU.
//!
//! Decoding multiplies a handful of rows (one per prompt in the batch) by every weight
//! matrix. candle 0.11 has no SIMD kernel for Q4_1, and its quantized matmul computes
//! each row's dot products on their own, so a batch of 16 rows costs nearly 16 times
//! one. Here each weight row is dequantized once into f32 (a block at a time is cheap:
//! 32 weights share a scale) and then meets every input row while it is in cache: the
//! weights are read once per step, whatever the batch size.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use half::f16;
use rayon::prelude::*;

/// Rows of `x` above which the caller should use a regular matmul instead (prefill).
pub const MAX_ROWS: usize = 32;

/// Weights a block of 32 shares a scale with.
const BLOCK: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `{d: f16, m: f16, qs: [u8; 16]}`: w = d·q + m, q in 0..16, low nibbles first.
    Q4_1,
    /// `{d: f16, qs: [i8; 32]}`: w = d·q.
    Q8_0,
}

impl Format {
    fn block_bytes(self) -> usize {
        match self {
            Format::Q4_1 => 20,
            Format::Q8_0 => 34,
        }
    }
}

/// A quantized weight matrix `(outputs, inputs)` in its GGUF block layout, read in
/// place from the tensor it shares with candle's quantized matmul.
pub struct PackedWeights {
    format: Format,
    outputs: usize,
    inputs: usize,
    tensor: Arc<QTensor>,
}

impl PackedWeights {
    /// The weights of `tensor`, when its format is one this kernel reads (Q4_1, Q8_0)
    /// and it lives on the CPU.
    pub fn from_qtensor(tensor: Arc<QTensor>) -> Option<PackedWeights> {
        let format = match tensor.dtype() {
            GgmlDType::Q4_1 => Format::Q4_1,
            GgmlDType::Q8_0 => Format::Q8_0,
            _ => return None,
        };
        if !tensor.device().is_cpu() {
            return None;
        }
        let (outputs, inputs) = tensor.shape().dims2().ok()?;
        if inputs % BLOCK != 0 {
            return None;
        }
        let size = tensor.data().ok()?.len();
        (size == outputs * inputs / BLOCK * format.block_bytes()).then_some(PackedWeights {
            format,
            outputs,
            inputs,
            tensor,
        })
    }

    /// Whether the weights are Q4_1.
    pub fn is_q4_1(&self) -> bool {
        self.format == Format::Q4_1
    }

    /// `x · Wᵀ` for `x` of shape `(…, inputs)` with at most [`MAX_ROWS`] rows.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut dims = x.dims().to_vec();
        let last = dims.pop().unwrap_or(0);
        if last != self.inputs {
            candle_core::bail!(
                "packed matmul: input width {last}, weights take {}",
                self.inputs
            );
        }
        let rows: usize = dims.iter().product();
        let xs: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        // A CPU tensor's blocks are borrowed, not copied.
        let bytes = self.tensor.data()?;
        let out = self.multiply(&bytes, &xs, rows);
        dims.push(self.outputs);
        Tensor::from_vec(out, dims, &Device::Cpu)
    }

    /// Row-major `(rows, outputs)` product of `xs` (`rows × inputs`) and the weights.
    fn multiply(&self, bytes: &[u8], xs: &[f32], rows: usize) -> Vec<f32> {
        let per_row = self.inputs / BLOCK * self.format.block_bytes();
        // Output-major while computing (each task owns a run of outputs), then transposed.
        let mut by_output = vec![0f32; self.outputs * rows];
        // A few tasks per thread: waking rayon's threads costs more than the arithmetic
        // of a small task at this size.
        let tasks = 4 * rayon::current_num_threads();
        let outputs_per_task = self.outputs.div_ceil(tasks).max(8);
        by_output
            .par_chunks_mut(outputs_per_task * rows)
            .enumerate()
            .for_each(|(task, chunk)| {
                let mut weights = vec![0f32; self.inputs];
                let first = task * outputs_per_task;
                for (i, out) in chunk.chunks_mut(rows).enumerate() {
                    let o = first + i;
                    let blocks = &bytes[o * per_row..(o + 1) * per_row];
                    kernels::dequantize(self.format, blocks, &mut weights);
                    kernels::dot_rows(&weights, xs, out);
                }
            });
        if rows == 1 {
            return by_output;
        }
        let mut out = vec![0f32; rows * self.outputs];
        for (o, column) in by_output.chunks(rows).enumerate() {
            for (r, v) in column.iter().enumerate() {
                out[r * self.outputs + o] = *v;
            }
        }
        out
    }
}

/// The inner loops, compiled once for AVX2+FMA (picked at run time) and once portably.
mod kernels {
    use super::{BLOCK, Format, f16};

    pub fn dequantize(format: Format, blocks: &[u8], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { dequantize_avx2(format, blocks, out) };
        }
        dequantize_portable(format, blocks, out)
    }

    pub fn dot_rows(weights: &[f32], xs: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { dot_rows_avx2(weights, xs, out) };
        }
        dot_rows_portable(weights, xs, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dequantize_avx2(format: Format, blocks: &[u8], out: &mut [f32]) {
        dequantize_portable(format, blocks, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_rows_avx2(weights: &[f32], xs: &[f32], out: &mut [f32]) {
        dot_rows_portable(weights, xs, out)
    }

    #[inline(always)]
    fn dequantize_portable(format: Format, blocks: &[u8], out: &mut [f32]) {
        let size = format.block_bytes();
        for (block, out) in blocks.chunks_exact(size).zip(out.chunks_exact_mut(BLOCK)) {
            let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
            match format {
                Format::Q4_1 => {
                    let m = f16::from_le_bytes([block[2], block[3]]).to_f32();
                    let (low, high) = out.split_at_mut(BLOCK / 2);
                    for ((q, l), h) in block[4..20].iter().zip(low).zip(high) {
                        *l = d * (q & 0x0f) as f32 + m;
                        *h = d * (q >> 4) as f32 + m;
                    }
                }
                Format::Q8_0 => {
                    for (q, w) in block[2..34].iter().zip(out.iter_mut()) {
                        *w = d * (*q as i8) as f32;
                    }
                }
            }
        }
    }

    /// `out[r] = weights · xs[r]` for every row r of `xs`; 16 lanes keep the
    /// accumulation vectorisable (float sums are not reordered otherwise).
    #[inline(always)]
    fn dot_rows_portable(weights: &[f32], xs: &[f32], out: &mut [f32]) {
        let k = weights.len();
        for (r, o) in out.iter_mut().enumerate() {
            let x = &xs[r * k..(r + 1) * k];
            let mut acc = [0f32; 16];
            for (w, x) in weights.chunks_exact(16).zip(x.chunks_exact(16)) {
                for lane in 0..16 {
                    acc[lane] = w[lane].mul_add(x[lane], acc[lane]);
                }
            }
            *o = acc.iter().sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_dense_matmul_on_the_dequantized_weights() {
        let device = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (48, 96), &device).unwrap();
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let q = QTensor::quantize(&w, dtype).unwrap();
            let dense = q.dequantize(&device).unwrap();
            let packed = PackedWeights::from_qtensor(Arc::new(q)).unwrap();
            for rows in [1, 3, 17] {
                let x = Tensor::randn(0f32, 1.0, (1, rows, 96), &device).unwrap();
                let expected = x.broadcast_matmul(&dense.t().unwrap()).unwrap();
                let ours = packed.forward(&x).unwrap();
                assert_eq!(ours.dims(), expected.dims());
                let worst: f32 = (ours - expected)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar()
                    .unwrap();
                assert!(worst < 1e-4, "{dtype:?}, {rows} rows: {worst}");
            }
        }
    }
}
