//! The fallback kernel for CPUs without AVX-512 VNNI: each weight row is dequantized
//! into f32 once, then meets every input row while it is in cache. The inner loops are
//! compiled once for AVX2+FMA (picked at run time) and once portably.

use super::{BLOCK, Format};
use half::f16;

pub(super) fn dequantize(format: Format, blocks: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { dequantize_avx2(format, blocks, out) };
    }
    dequantize_portable(format, blocks, out)
}

pub(super) fn dot_rows(weights: &[f32], xs: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
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
