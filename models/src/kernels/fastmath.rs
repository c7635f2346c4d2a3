//! Elementwise math for the CPU kernels, written so that the compiler vectorises it.
//!
//! - [`vectorized!`] defines a function whose body is compiled for AVX-512F, for AVX2
//!   with FMA and for the baseline instruction set, and picks the best at run time;
//! - [`exp`] is a branch-free polynomial rather than libm's `expf`, which is a call per
//!   element and does not vectorise;
//! - [`lanes`] and [`lane_sum`] fold in 16 independent lanes, which the compiler may
//!   keep in one vector register (it may not reorder a single running float sum);
//! - [`softmax`] puts them together over one row.

/// Defines `fn $name` from a body that is compiled three times: for AVX-512F, for
/// AVX2 with FMA, and for the baseline instruction set; the best the CPU has is picked
/// at run time (the check is a cached load).
macro_rules! vectorized {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512($($arg: $ty),*) {
                body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) {
                body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                if has!("avx512f") {
                    // SAFETY: the CPU has the feature `avx512` is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if has!("avx2") && has!("fma") {
                    // SAFETY: the CPU has the features `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

pub(crate) use vectorized;

vectorized! {
    /// `softmax(row)` in place.
    pub(crate) fn softmax(row: &mut [f32]) {
        let largest = lanes(row, f32::NEG_INFINITY, |s| s, f32::max);
        for s in row.iter_mut() {
            *s = exp(*s - largest);
        }
        let inverse = 1.0 / lane_sum(row, |s| s);
        row.iter_mut().for_each(|s| *s *= inverse);
    }
}

/// `f` over `values`, folded with `combine` in 16 independent lanes, which the compiler
/// keeps in one vector register (it may not reorder a single running float sum).
#[inline(always)]
pub(crate) fn lanes(
    values: &[f32],
    start: f32,
    f: impl Fn(f32) -> f32,
    combine: impl Fn(f32, f32) -> f32,
) -> f32 {
    let mut lanes = [start; 16];
    let chunks = values.chunks_exact(16);
    let tail = chunks
        .remainder()
        .iter()
        .fold(start, |a, &v| combine(a, f(v)));
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = combine(*lane, f(v));
        }
    }
    lanes.iter().fold(tail, |a, &l| combine(a, l))
}

#[inline(always)]
pub(crate) fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    lanes(values, 0.0, f, |a, b| a + b)
}

/// eˣ to within 2 ulp for x in [−87, 88] (below, 0, so that a masked score of −∞
/// weighs nothing; above, about 1.7e38): Cephes' `expf`, `2ⁿ · eʳ` with
/// `r = x − n·ln 2`, `|r| ≤ ln 2 / 2`, and a polynomial for `eʳ`, branch-free so that
/// it vectorises.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let underflows = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by adding and subtracting 1.5 · 2²³.
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    // ln 2 in two parts, so that n · ln 2 is subtracted without losing r's digits.
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_2e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    let value = er * f32::from_bits(((n as i32 + 127) as u32) << 23);
    if underflows { 0.0 } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_2_ulp_of_libm() {
        for i in -8700..8800 {
            let x = i as f32 / 100.0 + 0.003;
            let (ours, libm) = (exp(x), x.exp());
            assert!(
                (ours - libm).abs() <= 2.0 * f32::EPSILON * libm,
                "exp({x}) = {ours} vs {libm}"
            );
        }
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.7).sin() * 20.0).collect();
        row[5] = f32::NEG_INFINITY;
        let before = row.clone();
        softmax(&mut row);
        let total: f64 = row.iter().map(|&p| p as f64).sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
        assert_eq!(row[5], 0.0);
        let largest = before.iter().cloned().fold(f32::MIN, f32::max);
        let expected: f64 = before.iter().map(|&s| ((s - largest) as f64).exp()).sum();
        for (p, s) in row.iter().zip(&before) {
            let exact = ((s - largest) as f64).exp() / expected;
            assert!((*p as f64 - exact).abs() < 1e-6, "{p} vs {exact}");
        }
    }
}
