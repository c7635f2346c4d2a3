//! The integer kernel, for CPUs with AVX-512 VNNI: the input rows are quantized to
//! 8 bits per block of 32 (an f32 scale each, as llama.cpp's Q8_1), and each weight
//! block meets each input block in one `vpdpbusd` (32 multiply-adds of u8 × i8 into
//! eight i32 sums), scaled once per block pair. Nothing is dequantized, so a weight is
//! read as 4.5 (Q4_1) or 8.5 (Q8_0) bits, and every input row shares the read.
//!
//! `vpdpbusd` wants one unsigned operand. Q4_1's nibbles are unsigned already; their
//! offset `m` adds `m · Σx` per block, which [`Q8Rows`] keeps ready. For Q8_0 the sign
//! of each weight moves onto the input (`|w| · (x · sign w)`), as llama.cpp does.

use half::f16;

use super::{BLOCK, Format};
use crate::kernels::buffers::SharedOut;

/// Whether this CPU runs the integer kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        has!("avx2")
            && has!("fma")
            && has!("f16c")
            && has!("avx512f")
            && has!("avx512vl")
            && has!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Input rows quantized per block of 32: `x ≈ scale · value`.
pub struct Q8Rows {
    inputs: usize,
    /// `rows × inputs`.
    values: Vec<i8>,
    /// `rows × blocks`.
    scales: Vec<f32>,
    /// `rows × blocks`: `scale · Σ values`, the factor of Q4_1's per-block offset.
    sums: Vec<f32>,
}

impl Q8Rows {
    /// Quantizes `xs`, row-major with `inputs` (a multiple of 32) per row.
    pub fn quantize(xs: &[f32], inputs: usize) -> Q8Rows {
        let blocks = xs.len() / BLOCK;
        let mut rows = Q8Rows {
            inputs,
            values: vec![0; xs.len()],
            scales: vec![0.0; blocks],
            sums: vec![0.0; blocks],
        };
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: the CPU has the features the function is compiled for.
            unsafe { quantize_avx2(xs, &mut rows) };
            return rows;
        }
        quantize_portable(xs, &mut rows);
        rows
    }

    /// The values the kernel multiplies, as f32 (`scale · value`).
    #[cfg(test)]
    pub fn dequantize(&self) -> Vec<f32> {
        let scales = self.scales.iter().flat_map(|s| [*s; BLOCK]);
        self.values
            .iter()
            .zip(scales)
            .map(|(v, s)| *v as f32 * s)
            .collect()
    }

    fn rows(&self) -> usize {
        self.values.len() / self.inputs
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_avx2(xs: &[f32], rows: &mut Q8Rows) {
    quantize_portable(xs, rows)
}

/// As candle's `BlockQ8_1::from_float` (and llama.cpp's `quantize_row_q8_1`): the scale
/// is rounded to f16, the values to the nearest integer (ties away from zero), the
/// scaled sum to f16; so the products equal candle's but for the order of the sums.
#[inline(always)]
fn quantize_portable(xs: &[f32], rows: &mut Q8Rows) {
    let blocks = xs
        .chunks_exact(BLOCK)
        .zip(rows.values.chunks_exact_mut(BLOCK));
    for ((x, q), (scale, sum)) in blocks.zip(rows.scales.iter_mut().zip(rows.sums.iter_mut())) {
        let largest = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = largest / 127.0;
        let inverse = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut total = 0i32;
        for (q, x) in q.iter_mut().zip(x) {
            let v = (x * inverse).round() as i8;
            *q = v;
            total += v as i32;
        }
        let d = f16::from_f32(d);
        *scale = d.to_f32();
        *sum = (f16::from_f32(total as f32) * d).to_f32();
    }
}

/// `out` (`rows × outputs`, row-major) = `x · Wᵀ`, for the weights' raw GGUF blocks
/// (`outputs` rows of `x.inputs / 32` blocks). Outputs are shared out over candle's
/// CPU threads, which spin between calls: a decoded token makes ~200 short calls.
///
/// Only call it when [`available`] says so.
pub fn multiply(format: Format, bytes: &[u8], outputs: usize, x: &Q8Rows, out: &mut [f32]) {
    let rows = x.rows();
    assert!(available());
    assert_eq!(out.len(), rows * outputs);
    assert_eq!(
        bytes.len(),
        outputs * x.inputs / BLOCK * format.block_bytes()
    );
    let out = SharedOut::new(out);
    candle_core::utils::barrier_pool().execute_chunked(outputs, |range| {
        // SAFETY: the features were checked above; the sizes were checked above, and
        // each output index belongs to exactly one range, so writes never overlap.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            x86::outputs(format, bytes, range, outputs, x, &out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("{range:?}")
    });
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{BLOCK, Format, Q8Rows};
    use crate::kernels::buffers::SharedOut;

    /// Input rows held in registers at a time: eight accumulators per weight row.
    const TILE: usize = 8;

    /// Computes outputs `range` for every row of `x`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    pub unsafe fn outputs(
        format: Format,
        bytes: &[u8],
        range: Range<usize>,
        outputs: usize,
        x: &Q8Rows,
        out: &SharedOut,
    ) {
        let per_row = x.inputs / BLOCK * format.block_bytes();
        let rows = x.rows();
        for o in range {
            let weights = unsafe { bytes.as_ptr().add(o * per_row) };
            let mut first = 0;
            while first < rows {
                let count = (rows - first).min(TILE);
                let out = out.at(first * outputs + o);
                // SAFETY: `first + count <= rows` and `o < outputs`.
                unsafe {
                    match (format, count) {
                        (Format::Q8_0, 8) => row::<8, false>(weights, x, first, out, outputs),
                        (Format::Q8_0, 7) => row::<7, false>(weights, x, first, out, outputs),
                        (Format::Q8_0, 6) => row::<6, false>(weights, x, first, out, outputs),
                        (Format::Q8_0, 5) => row::<5, false>(weights, x, first, out, outputs),
                        (Format::Q8_0, 4) => row::<4, false>(weights, x, first, out, outputs),
                        (Format::Q8_0, 3) => row::<3, false>(weights, x, first, out, outputs),
                        (Format::Q8_0, 2) => row::<2, false>(weights, x, first, out, outputs),
                        (Format::Q8_0, _) => row::<1, false>(weights, x, first, out, outputs),
                        (Format::Q4_1, 8) => row::<8, true>(weights, x, first, out, outputs),
                        (Format::Q4_1, 7) => row::<7, true>(weights, x, first, out, outputs),
                        (Format::Q4_1, 6) => row::<6, true>(weights, x, first, out, outputs),
                        (Format::Q4_1, 5) => row::<5, true>(weights, x, first, out, outputs),
                        (Format::Q4_1, 4) => row::<4, true>(weights, x, first, out, outputs),
                        (Format::Q4_1, 3) => row::<3, true>(weights, x, first, out, outputs),
                        (Format::Q4_1, 2) => row::<2, true>(weights, x, first, out, outputs),
                        (Format::Q4_1, _) => row::<1, true>(weights, x, first, out, outputs),
                    }
                }
                first += count;
            }
        }
    }

    /// The f16 at `at`, unaligned, as f32 in every lane.
    ///
    /// Broadcast before converting: the compiler turns a scalar load into `vpinsrw`,
    /// which merges into whatever register it picks, and so chained every block of a
    /// row to the previous block's scale arithmetic (about 13 cycles a block).
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    fn half_splat(at: *const u8) -> __m256 {
        // SAFETY: the callers point at a block's scale or offset.
        let bits = unsafe { at.cast::<i16>().read_unaligned() };
        _mm256_cvtph_ps(_mm_set1_epi16(bits))
    }

    /// One weight row (its blocks at `weights`) against input rows `first..first + R`;
    /// result r goes to `out[r * stride]`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    unsafe fn row<const R: usize, const Q4_1: bool>(
        weights: *const u8,
        x: &Q8Rows,
        first: usize,
        out: *mut f32,
        stride: usize,
    ) {
        let blocks = x.inputs / BLOCK;
        let block_bytes = if Q4_1 { 20 } else { 34 };
        let nibble = _mm_set1_epi8(0x0f);
        let zero = _mm256_setzero_si256();
        let mut sums = [_mm256_setzero_ps(); R];
        // Q4_1: Σ over blocks of m · scale · Σx.
        let mut offsets = [0f32; R];
        for b in 0..blocks {
            // SAFETY (all pointer reads below): the caller checked the buffer sizes.
            let block = unsafe { weights.add(b * block_bytes) };
            let d = half_splat(block);
            // The unsigned operand, and for Q8_0 the signs to move onto the inputs.
            let (unsigned, signs) = if Q4_1 {
                let packed = unsafe { _mm_loadu_si128(block.add(4).cast()) };
                let low = _mm_and_si128(packed, nibble);
                let high = _mm_and_si128(_mm_srli_epi16::<4>(packed), nibble);
                (_mm256_set_m128i(high, low), zero)
            } else {
                let w = unsafe { _mm256_loadu_si256(block.add(2).cast()) };
                (_mm256_sign_epi8(w, w), w)
            };
            let m = if Q4_1 {
                _mm256_cvtss_f32(half_splat(unsafe { block.add(2) }))
            } else {
                0.0
            };
            for r in 0..R {
                let at = (first + r) * blocks + b;
                let input = unsafe {
                    _mm256_loadu_si256(x.values.as_ptr().add(at * BLOCK).cast::<__m256i>())
                };
                let input = if Q4_1 {
                    input
                } else {
                    _mm256_sign_epi8(input, signs)
                };
                let dot = _mm256_dpbusd_epi32(zero, unsigned, input);
                let scale =
                    _mm256_mul_ps(d, _mm256_set1_ps(unsafe { *x.scales.get_unchecked(at) }));
                sums[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, sums[r]);
                if Q4_1 {
                    offsets[r] += m * unsafe { *x.sums.get_unchecked(at) };
                }
            }
        }
        for r in 0..R {
            let v = sums[r];
            let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
            let total = _mm_add_ss(quarter, _mm_movehdup_ps(quarter));
            unsafe { *out.add(r * stride) = _mm_cvtss_f32(total) + offsets[r] };
        }
    }
}
