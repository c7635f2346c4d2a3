//! `x · Wᵀ` for a few rows of `x` against Q4_1 or Q8_0 weights, on the CPU.
//!
//! Decoding multiplies a handful of rows (one per prompt in the batch) by every weight
//! matrix. candle 0.11 has no SIMD kernel for Q4_1, and its quantized matmul computes
//! each row's dot products on their own, so a batch of 16 rows costs nearly 16 times
//! one. Both kernels here read each weight row once per call and let it meet every
//! input row while it is in cache, whatever the batch size:
//!
//! - [`int8`], where the CPU has AVX-512 VNNI: inputs quantized to 8 bits, integer dot
//!   products straight on the GGUF blocks (llama.cpp's method);
//! - [`dequant`] elsewhere: each weight row dequantized to f32, then f32 dot products.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

mod dequant;
mod int8;

/// Rows of `x` above which the [`dequant`] kernel loses to candle's quantized matmul
/// (long prompts); the [`int8`] kernel wins at every size.
const MAX_ROWS: usize = 32;

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

    /// Whether [`PackedWeights::forward`] beats candle's quantized matmul for `rows`
    /// input rows. With VNNI it always does (prefill of 16 prompts: Q8_0 2.8 → 1.2-1.5 s,
    /// Q4_1 18 → 1.5 s). Without, one row against Q8_0 goes to candle's AVX2 dot
    /// product, which is faster than dequantizing first, and so do long prompts;
    /// candle has no SIMD kernel for Q4_1.
    pub fn is_faster_for(&self, rows: usize) -> bool {
        int8::available() || rows <= MAX_ROWS && (rows > 1 || self.format == Format::Q4_1)
    }

    /// `x · Wᵀ` for `x` of shape `(…, inputs)`.
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
        let out = if int8::available() {
            let x = int8::Q8Rows::quantize(&xs, self.inputs);
            let mut out = vec![0f32; rows * self.outputs];
            int8::multiply(self.format, &bytes, self.outputs, &x, &mut out);
            out
        } else {
            self.multiply_dequantized(&bytes, &xs, rows)
        };
        dims.push(self.outputs);
        Tensor::from_vec(out, dims, &Device::Cpu)
    }

    /// Row-major `(rows, outputs)` product of `xs` (`rows × inputs`) and the weights,
    /// by the [`dequant`] kernel.
    fn multiply_dequantized(&self, bytes: &[u8], xs: &[f32], rows: usize) -> Vec<f32> {
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
                    dequant::dequantize(self.format, blocks, &mut weights);
                    dequant::dot_rows(&weights, xs, out);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::{normal, normal_values};

    fn worst_difference(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0f32, |m, (a, b)| m.max((a - b).abs()))
    }

    /// Random weights quantized to each format, with their dequantized f32 copy.
    fn weights(outputs: usize, inputs: usize) -> Vec<(PackedWeights, Vec<f32>)> {
        let w = normal(&[outputs, inputs], 1.0, (outputs * inputs) as u64);
        [GgmlDType::Q4_1, GgmlDType::Q8_0]
            .into_iter()
            .map(|dtype| {
                let q = QTensor::quantize(&w, dtype).unwrap();
                let dense = q.dequantize(&Device::Cpu).unwrap();
                let dense = dense.flatten_all().unwrap().to_vec1().unwrap();
                (PackedWeights::from_qtensor(Arc::new(q)).unwrap(), dense)
            })
            .collect()
    }

    /// `xs · denseᵀ`, summed in f64.
    fn reference(xs: &[f32], dense: &[f32], inputs: usize) -> Vec<f32> {
        let mut out = Vec::new();
        for x in xs.chunks(inputs) {
            for w in dense.chunks(inputs) {
                out.push(
                    x.iter()
                        .zip(w)
                        .map(|(x, w)| *x as f64 * *w as f64)
                        .sum::<f64>() as f32,
                );
            }
        }
        out
    }

    fn random(n: usize) -> Vec<f32> {
        normal_values(n, 7 + n as u64)
    }

    #[test]
    fn the_dequantizing_kernel_matches_a_dense_matmul() {
        for (packed, dense) in weights(48, 96) {
            let bytes = packed.tensor.data().unwrap();
            for rows in [1, 3, 17] {
                let xs = random(rows * 96);
                let ours = packed.multiply_dequantized(&bytes, &xs, rows);
                let worst = worst_difference(&ours, &reference(&xs, &dense, 96));
                assert!(worst < 1e-4, "{:?}, {rows} rows: {worst}", packed.format);
            }
        }
    }

    #[test]
    fn the_integer_kernel_computes_exactly_on_its_quantized_inputs() {
        if !int8::available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        // Tiles of 8 input rows, a partial tile, and more rows than decoding has.
        for (packed, dense) in weights(40, 160) {
            let bytes = packed.tensor.data().unwrap();
            for rows in [1, 2, 8, 11, 40] {
                let xs = random(rows * 160);
                let quantized = int8::Q8Rows::quantize(&xs, 160);
                let mut ours = vec![0f32; rows * 40];
                int8::multiply(packed.format, &bytes, 40, &quantized, &mut ours);
                // Q8_0: exactly the sums of the rounded inputs. (Q4_1's offset term
                // uses an f16 block sum, as candle's does; the test against candle
                // covers it.)
                if packed.format == Format::Q8_0 {
                    let exact = reference(&quantized.dequantize(), &dense, 160);
                    let worst = worst_difference(&ours, &exact);
                    assert!(worst < 1e-4, "{rows} rows: {worst}");
                }
                // What rounding the inputs costs against f32 inputs: each input moves by
                // half a step (1/254 of its block's largest magnitude), plus the f16
                // rounding of the scale and, for Q4_1, of the block sum.
                let steps = input_steps(&xs, 100.0);
                let magnitudes: Vec<f32> = dense.iter().map(|w| w.abs()).collect();
                let bounds = reference(&steps, &magnitudes, 160);
                let f32_inputs = reference(&xs, &dense, 160);
                for ((ours, theirs), bound) in ours.iter().zip(&f32_inputs).zip(&bounds) {
                    assert!((ours - theirs).abs() <= *bound, "{ours} vs {theirs}");
                }
            }
        }
    }

    /// Per input, its block's largest magnitude divided by `divisor`.
    fn input_steps(xs: &[f32], divisor: f32) -> Vec<f32> {
        xs.chunks(BLOCK)
            .flat_map(|block| {
                let largest = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                [largest / divisor; BLOCK]
            })
            .collect()
    }

    /// candle's quantized matmul rounds its inputs as ours does (Q8_0 inputs for Q8_0
    /// weights, Q8_1 for Q4_1): the two must agree but for the order of the sums.
    #[test]
    fn the_integer_kernel_matches_candles_quantized_matmul() {
        if !int8::available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        let w = normal(&[64, 576], 1.0, 64);
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let q = Arc::new(QTensor::quantize(&w, dtype).unwrap());
            let candle = candle_core::quantized::QMatMul::from_arc(q.clone()).unwrap();
            let packed = PackedWeights::from_qtensor(q).unwrap();
            for rows in [1, 40] {
                let x = normal(&[rows, 576], 1.0, rows as u64);
                let theirs = x.apply(&candle).unwrap().flatten_all().unwrap();
                let ours = packed.forward(&x).unwrap().flatten_all().unwrap();
                let worst = worst_difference(&ours.to_vec1().unwrap(), &theirs.to_vec1().unwrap());
                assert!(worst < 1e-4, "{dtype:?}, {rows} rows: {worst}");
            }
        }
    }

    #[test]
    fn quantized_inputs_stay_within_half_a_step() {
        let mut xs = random(64);
        xs[5] = -4.0;
        xs[40] = 0.0;
        let quantized = int8::Q8Rows::quantize(&xs, 64).dequantize();
        // The scale is 4/127 rounded to f16.
        assert!(
            (quantized[5] + 4.0).abs() < 4.0 / 2048.0,
            "{}",
            quantized[5]
        );
        // Half a step, plus up to 127 times the scale's rounding.
        for ((q, x), step) in quantized.iter().zip(&xs).zip(input_steps(&xs, 200.0)) {
            assert!((q - x).abs() <= step, "{x} became {q}");
        }
        // An all-zero block stays zero instead of dividing by zero.
        let zeros = int8::Q8Rows::quantize(&[0.0; 32], 32).dequantize();
        assert!(zeros.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn forward_keeps_the_leading_dimensions() {
        for (packed, _) in weights(48, 96) {
            let x = normal(&[2, 3, 96], 1.0, 96);
            let ours = packed.forward(&x).unwrap();
            assert_eq!(ours.dims(), &[2, 3, 48]);
            let flat = packed.forward(&x.reshape((6, 96)).unwrap()).unwrap();
            let ours: Vec<f32> = ours.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(ours, flat.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
    }
}
