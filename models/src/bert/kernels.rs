//! The elementwise and per-sentence steps of the CPU encoder, over plain slices.
//!
//! Each is written as loops the compiler vectorises, and compiled twice (see
//! [`crate::kernels::fastmath`]): once for AVX-512, picked at run time, and once for the
//! baseline instruction set.

use rayon::prelude::*;

use crate::kernels::fastmath::{exp, lane_sum, softmax, vectorized};
use crate::kernels::sgemm::PackedLinear;

/// Rows (or elements) per parallel task for the elementwise steps.
const TASK_ELEMENTS: usize = 16 * 1024;

/// Layer norm of every `weight.len()`-wide row of `x`, in place.
pub(super) fn layer_norm(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let width = weight.len();
    let rows_per_task = (TASK_ELEMENTS / width).max(1);
    x.par_chunks_mut(rows_per_task * width).for_each(|rows| {
        for row in rows.chunks_exact_mut(width) {
            normalize(row, weight, bias, eps);
        }
    });
}

vectorized! {
    /// `(x − mean) / √(variance + eps) · weight + bias` over one row.
    fn normalize(row: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
        let n = row.len() as f32;
        let mean = lane_sum(row, |x| x) / n;
        let variance = lane_sum(row, |x| (x - mean) * (x - mean)) / n;
        let inverse = 1.0 / (variance + eps).sqrt();
        for ((x, w), b) in row.iter_mut().zip(weight).zip(bias) {
            *x = (*x - mean) * inverse * w + b;
        }
    }
}

/// The exact GELU, `x/2 · (1 + erf(x/√2))`, in place.
pub(super) fn gelu(x: &mut [f32]) {
    x.par_chunks_mut(TASK_ELEMENTS).for_each(gelu_chunk);
}

vectorized! {
    fn gelu_chunk(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

/// Self-attention of each sentence over its own tokens, with no padding anywhere.
///
/// - `qkv`: `(tokens, 3 · hidden)`, each token's query, key and value side by side;
/// - `out`: `(tokens, hidden)`, the heads' outputs side by side;
/// - `lengths`: the tokens of each sentence, which lie one after another.
pub(super) fn attention(
    qkv: &[f32],
    out: &mut [f32],
    lengths: &[usize],
    heads: usize,
    hidden: usize,
) {
    let mut sentences = Vec::with_capacity(lengths.len());
    let (mut rest, mut first) = (out, 0);
    for &len in lengths {
        let (out, tail) = rest.split_at_mut(len * hidden);
        sentences.push((&qkv[first * 3 * hidden..(first + len) * 3 * hidden], out));
        (rest, first) = (tail, first + len);
    }
    sentences
        .into_par_iter()
        .for_each(|(qkv, out)| attend_sentence(qkv, out, heads, hidden));
}

/// `softmax(q · kᵀ / √d) · v` for every head of one sentence, as two small products
/// with the register-tile kernel: scores `(len, len)` against the packed keys, then
/// the softmaxed scores against the packed values.
fn attend_sentence(qkv: &[f32], out: &mut [f32], heads: usize, hidden: usize) {
    let len = out.len() / hidden;
    let dim = hidden / heads;
    let scale = 1.0 / (dim as f32).sqrt();
    let stride = 3 * hidden;
    let (mut queries, mut keys, mut values) = (
        vec![0f32; len * dim],
        vec![0f32; len * dim],
        vec![0f32; len * dim],
    );
    let mut scores = vec![0f32; len * len];
    let mut context = vec![0f32; len * dim];
    for head in 0..heads {
        let at = head * dim;
        for t in 0..len {
            let token = &qkv[t * stride + at..];
            let row = t * dim..(t + 1) * dim;
            for (q, &v) in queries[row.clone()].iter_mut().zip(&token[..dim]) {
                *q = v * scale;
            }
            keys[row.clone()].copy_from_slice(&token[hidden..hidden + dim]);
            values[row].copy_from_slice(&token[2 * hidden..2 * hidden + dim]);
        }
        PackedLinear::new(&keys, None, len, dim).forward_here(&queries, &mut scores);
        for row in scores.chunks_exact_mut(len) {
            softmax(row);
        }
        PackedLinear::from_transposed(&values, dim, len).forward_here(&scores, &mut context);
        for (out, context) in out.chunks_exact_mut(hidden).zip(context.chunks_exact(dim)) {
            out[at..at + dim].copy_from_slice(context);
        }
    }
}

/// erf(x) by Abramowitz & Stegun 7.1.26: absolute error below 1.5e-7, plus f32 rounding.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-x * x);
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_erf_approximation_is_within_5e_7() {
        for i in -600..=600 {
            let x = i as f32 / 100.0;
            let exact = erf_reference(x as f64);
            assert!(
                (erf(x) as f64 - exact).abs() < 5e-7,
                "erf({x}) = {} vs {exact}",
                erf(x)
            );
        }
    }

    /// erf in f64: its Taylor series for |x| < 3, the continued fraction of erfc beyond.
    fn erf_reference(x: f64) -> f64 {
        if x.abs() >= 3.0 {
            let a = x.abs();
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f);
            return (1.0 - erfc).copysign(x);
        }
        let mut sum = 0.0;
        let mut term = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    /// Against softmax attention written out in f64, two sentences of different lengths.
    #[test]
    fn attention_matches_the_formula() {
        let (heads, dim, lengths) = (3, 5, [4usize, 7]);
        let hidden = heads * dim;
        let tokens: usize = lengths.iter().sum();
        let qkv: Vec<f32> = (0..tokens * 3 * hidden)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let mut out = vec![0f32; tokens * hidden];
        attention(&qkv, &mut out, &lengths, heads, hidden);
        let mut first = 0;
        for len in lengths {
            let at = |t: usize, part: usize, h: usize, e: usize| {
                qkv[(first + t) * 3 * hidden + part * hidden + h * dim + e] as f64
            };
            for h in 0..heads {
                for i in 0..len {
                    let scores: Vec<f64> = (0..len)
                        .map(|j| {
                            (0..dim)
                                .map(|e| at(i, 0, h, e) * at(j, 1, h, e))
                                .sum::<f64>()
                                / (dim as f64).sqrt()
                        })
                        .collect();
                    let total: f64 = scores.iter().map(|s| s.exp()).sum();
                    for e in 0..dim {
                        let expected: f64 = (0..len)
                            .map(|j| scores[j].exp() / total * at(j, 2, h, e))
                            .sum();
                        let ours = out[(first + i) * hidden + h * dim + e] as f64;
                        assert!((ours - expected).abs() < 1e-5, "{ours} vs {expected}");
                    }
                }
            }
            first += len;
        }
    }
}
