//! `x · Wᵀ + b` in f32 against a weight matrix packed once, when the model loads.
//!
//! Through candle, a linear layer is a matmul into a fresh tensor (the `gemm` crate
//! repacking the weights as it goes, every call), then its bias and its residual are
//! further passes over the output, each into another fresh tensor. Here the weights
//! are packed at load time into panels of [`PANEL`] output columns, stored input by
//! input, so that the inner loop reads one panel row (two AVX-512 vectors) and meets it
//! with up to [`TILE_ROWS`] input rows held in registers; the bias and the residual are
//! added as the tile is written.
//!
//! Many rows (a prompt, a batch of sentences) are shared out by rows of `x`: each task
//! runs every panel over its rows, so the panel it is reading stays in cache across its
//! tiles. A few rows (a decoding step) are shared out by panels instead.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::kernels::buffers::{SharedOut, contiguous_f32};

/// Output columns per packed panel: two 16-lane vectors.
const PANEL: usize = 32;
/// Input rows per register tile: 12 rows × 2 vectors = 24 accumulators of the 32
/// AVX-512 registers, leaving room for the two panel vectors and the broadcast.
const TILE_ROWS: usize = 12;
/// The most rows one parallel task takes: its slice of `x` stays in the L2 cache.
const MAX_TASK_ROWS: usize = 96;

/// A linear layer's weights `(outputs, inputs)` and bias, packed for [`Self::forward`].
pub(crate) struct PackedLinear {
    inputs: usize,
    outputs: usize,
    /// Panel `p`, input `i`, lane `j` at `(p · inputs + i) · PANEL + j`: weight
    /// `(p · PANEL + j, i)`, zero past the last output.
    panels: Vec<f32>,
    /// The bias, zero-padded to whole panels.
    bias: Vec<f32>,
}

impl PackedLinear {
    /// Bytes of memory the packed weights and bias hold.
    pub(crate) fn bytes(&self) -> u64 {
        ((self.panels.len() + self.bias.len()) * std::mem::size_of::<f32>()) as u64
    }

    /// Packs `weight` (`outputs × inputs`, row-major, as PyTorch stores a linear layer)
    /// and `bias` (`outputs`; none is zeros).
    pub(crate) fn new(
        weight: &[f32],
        bias: Option<&[f32]>,
        outputs: usize,
        inputs: usize,
    ) -> PackedLinear {
        assert_eq!(weight.len(), outputs * inputs, "weight shape");
        let mut packed = PackedLinear::zeros(bias, outputs, inputs);
        for (output, row) in weight.chunks_exact(inputs).enumerate() {
            let (panel, lane) = (output / PANEL, output % PANEL);
            for (input, &w) in row.iter().enumerate() {
                packed.panels[(panel * inputs + input) * PANEL + lane] = w;
            }
        }
        packed
    }

    /// Packs the weights from their transpose, `inputs × outputs` row-major (such as
    /// attention's values, which multiply the attention weights from the right), with no
    /// bias.
    pub(crate) fn from_transposed(transposed: &[f32], outputs: usize, inputs: usize) -> Self {
        assert_eq!(transposed.len(), outputs * inputs, "weight shape");
        let mut packed = PackedLinear::zeros(None, outputs, inputs);
        for (input, row) in transposed.chunks_exact(outputs).enumerate() {
            for (panel, lanes) in row.chunks(PANEL).enumerate() {
                let at = (panel * inputs + input) * PANEL;
                packed.panels[at..at + lanes.len()].copy_from_slice(lanes);
            }
        }
        packed
    }

    fn zeros(bias: Option<&[f32]>, outputs: usize, inputs: usize) -> PackedLinear {
        let count = outputs.div_ceil(PANEL);
        let mut padded = vec![0f32; count * PANEL];
        if let Some(bias) = bias {
            assert_eq!(bias.len(), outputs, "bias shape");
            padded[..outputs].copy_from_slice(bias);
        }
        PackedLinear {
            inputs,
            outputs,
            panels: vec![0f32; count * inputs * PANEL],
            bias: padded,
        }
    }

    /// `out = x · Wᵀ + b (+ residual)`, with `x` `(rows, inputs)` and `out` and
    /// `residual` `(rows, outputs)`, all row-major.
    pub(crate) fn forward(&self, x: &[f32], out: &mut [f32], residual: Option<&[f32]>) {
        let (inputs, outputs) = (self.inputs, self.outputs);
        let rows = x.len() / inputs;
        assert_eq!(x.len(), rows * inputs, "input shape");
        assert_eq!(out.len(), rows * outputs, "output shape");
        if let Some(residual) = residual {
            assert_eq!(residual.len(), out.len(), "residual shape");
        }
        let kernel = Kernel::detect();
        let threads = rayon::current_num_threads().max(1);
        if rows < 2 * threads * TILE_ROWS {
            return self.forward_by_panels(kernel, x, out, residual);
        }
        // Enough tasks for every thread to get a few, in whole tiles.
        let per_task = rows.div_ceil(4 * threads);
        let task_rows = per_task.next_multiple_of(TILE_ROWS).min(MAX_TASK_ROWS);
        out.par_chunks_mut(task_rows * outputs)
            .enumerate()
            .for_each(|(task, out)| {
                let first = task * task_rows;
                let count = out.len() / outputs;
                let x = &x[first * inputs..(first + count) * inputs];
                let residual = residual.map(|r| &r[first * outputs..(first + count) * outputs]);
                self.rows(kernel, x, out, residual);
            });
    }

    /// [`Self::forward`] for a few rows (a decoding step), shared out by panels instead
    /// of rows: each panel's outputs for every row go to a panel-major buffer, then
    /// into place. Tasks run on candle's CPU threads, which spin between calls, because
    /// a decoded token makes a couple of hundred short ones.
    fn forward_by_panels(
        &self,
        kernel: Kernel,
        x: &[f32],
        out: &mut [f32],
        residual: Option<&[f32]>,
    ) {
        let (inputs, outputs) = (self.inputs, self.outputs);
        let rows = x.len() / inputs;
        let panels = self.panel_count();
        let mut by_panel = vec![0f32; panels * rows * PANEL];
        let shared = SharedOut::new(&mut by_panel);
        candle_core::utils::barrier_pool().execute_chunked(panels, |range| {
            for panel in range {
                // SAFETY: `by_panel` holds `panels` blocks of `rows × PANEL`, each range
                // of panels belongs to one task, and `execute_chunked` returns after them all.
                let block = unsafe {
                    std::slice::from_raw_parts_mut(shared.at(panel * rows * PANEL), rows * PANEL)
                };
                self.panel(kernel, panel, x, block, PANEL, None);
            }
        });
        for (panel, block) in by_panel.chunks_exact(rows * PANEL).enumerate() {
            let column = panel * PANEL;
            let columns = (outputs - column).min(PANEL);
            for (row, values) in block.chunks_exact(PANEL).enumerate() {
                let at = row * outputs + column;
                let out = &mut out[at..at + columns];
                out.copy_from_slice(&values[..columns]);
                if let Some(residual) = residual {
                    out.iter_mut()
                        .zip(&residual[at..at + columns])
                        .for_each(|(o, r)| *o += r);
                }
            }
        }
    }

    /// [`Self::forward`] for a CPU f32 tensor `x` of shape `(…, inputs)`, as one
    /// product over all its leading positions.
    pub(crate) fn forward_tensor(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut dims = x.dims().to_vec();
        if dims.pop() != Some(self.inputs) {
            candle_core::bail!(
                "packed linear: input shape {:?}, weights take {}",
                x.dims(),
                self.inputs
            );
        }
        let x = x.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let xs = contiguous_f32(&storage, layout, x.elem_count())?;
        let mut out = vec![0f32; xs.len() / self.inputs * self.outputs];
        self.forward(xs, &mut out, None);
        dims.push(self.outputs);
        Tensor::from_vec(out, dims, &Device::Cpu)
    }

    /// The number of `PANEL`-column panels.
    fn panel_count(&self) -> usize {
        self.bias.len() / PANEL
    }

    /// [`Self::forward`] on the calling thread alone, for products too small to share.
    pub(crate) fn forward_here(&self, x: &[f32], out: &mut [f32]) {
        assert_eq!(x.len() / self.inputs * self.outputs, out.len(), "shapes");
        self.rows(Kernel::detect(), x, out, None);
    }

    /// Every panel over a task's rows, one register tile at a time.
    fn rows(&self, kernel: Kernel, x: &[f32], out: &mut [f32], residual: Option<&[f32]>) {
        for panel in 0..self.panel_count() {
            let column = panel * PANEL;
            let residual = residual.map(|r| &r[column..]);
            self.panel(kernel, panel, x, &mut out[column..], self.outputs, residual);
        }
    }

    /// One panel against every row of `x`: row r's outputs go to `out[r · stride..]`
    /// (and `residual` is read likewise).
    fn panel(
        &self,
        kernel: Kernel,
        panel: usize,
        x: &[f32],
        out: &mut [f32],
        stride: usize,
        residual: Option<&[f32]>,
    ) {
        let inputs = self.inputs;
        let rows = x.len() / inputs;
        let column = panel * PANEL;
        let tile = Tile {
            weights: &self.panels[panel * inputs * PANEL..(panel + 1) * inputs * PANEL],
            bias: &self.bias[column..column + PANEL],
            columns: (self.outputs - column).min(PANEL),
            inputs,
            stride,
        };
        for first in (0..rows).step_by(TILE_ROWS) {
            let count = (rows - first).min(TILE_ROWS);
            let x = &x[first * inputs..(first + count) * inputs];
            let at = first * stride;
            let end = (first + count - 1) * stride + tile.columns;
            let residual = residual.map(|r| &r[at..end]);
            kernel.run(&tile, count, x, &mut out[at..end], residual);
        }
    }
}

/// One panel's share of a product: what a register tile reads besides its rows of `x`.
struct Tile<'a> {
    /// The panel, `inputs × PANEL`.
    weights: &'a [f32],
    /// Its `PANEL` biases.
    bias: &'a [f32],
    /// Of its `PANEL` columns, how many are real outputs.
    columns: usize,
    inputs: usize,
    /// The row stride of `out` and `residual`.
    stride: usize,
}

/// The register-tile kernel for this CPU.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Kernel {
    fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Kernel::Avx512;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Kernel::Avx2;
        }
        Kernel::Portable
    }

    /// Every kernel this CPU can run (the tests check each against the product).
    #[cfg(test)]
    fn available() -> Vec<Kernel> {
        let mut kernels = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                kernels.push(Kernel::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                kernels.push(Kernel::Avx512);
            }
        }
        kernels
    }

    /// `out` and `residual` start at the tile's first element and end at its last
    /// (row stride `tile.stride`); `x` holds its `rows` input rows.
    fn run(self, tile: &Tile, rows: usize, x: &[f32], out: &mut [f32], residual: Option<&[f32]>) {
        macro_rules! by_rows {
            ($kernel:ident) => {
                match rows {
                    1 => $kernel::<1>(tile, x, out, residual),
                    2 => $kernel::<2>(tile, x, out, residual),
                    3 => $kernel::<3>(tile, x, out, residual),
                    4 => $kernel::<4>(tile, x, out, residual),
                    5 => $kernel::<5>(tile, x, out, residual),
                    6 => $kernel::<6>(tile, x, out, residual),
                    7 => $kernel::<7>(tile, x, out, residual),
                    8 => $kernel::<8>(tile, x, out, residual),
                    9 => $kernel::<9>(tile, x, out, residual),
                    10 => $kernel::<10>(tile, x, out, residual),
                    11 => $kernel::<11>(tile, x, out, residual),
                    12 => $kernel::<12>(tile, x, out, residual),
                    _ => unreachable!("a tile has 1 to {TILE_ROWS} rows"),
                }
            };
        }
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `detect` chose this kernel because the CPU has AVX-512F.
            Kernel::Avx512 => unsafe { by_rows!(tile_avx512) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `detect` chose this kernel because the CPU has AVX2 and FMA.
            Kernel::Avx2 => unsafe { by_rows!(tile_avx2) },
            Kernel::Portable => by_rows!(tile_portable),
        }
    }
}

/// The tile in plain Rust: the reference the vector kernels are tested against, and the
/// kernel on CPUs without AVX2 and FMA.
fn tile_portable<const R: usize>(
    tile: &Tile,
    x: &[f32],
    out: &mut [f32],
    residual: Option<&[f32]>,
) {
    let inputs = tile.inputs;
    let mut sums = [[0f32; PANEL]; R];
    for (i, weights) in tile.weights.chunks_exact(PANEL).enumerate() {
        for (r, sums) in sums.iter_mut().enumerate() {
            let v = x[r * inputs + i];
            // Not `mul_add`: without FMA hardware that is a call into libm.
            for (s, w) in sums.iter_mut().zip(weights) {
                *s += v * w;
            }
        }
    }
    for (r, sums) in sums.iter().enumerate() {
        write_row(tile, sums, r * tile.stride, out, residual);
    }
}

/// Writes one row's panel sums at `out[at..]`, adding the bias and the residual, for
/// the tile's real columns.
fn write_row(
    tile: &Tile,
    sums: &[f32; PANEL],
    at: usize,
    out: &mut [f32],
    residual: Option<&[f32]>,
) {
    for j in 0..tile.columns {
        let extra = residual.map_or(0.0, |res| res[at + j]);
        out[at + j] = sums[j] + tile.bias[j] + extra;
    }
}

/// The tile with AVX-512: 2·R accumulators in registers, one broadcast of `x` and two
/// fused multiply-adds per row and input.
///
/// # Safety
/// The CPU must have AVX-512F; slices are as [`Kernel::run`] describes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<const R: usize>(
    tile: &Tile,
    x: &[f32],
    out: &mut [f32],
    residual: Option<&[f32]>,
) {
    use std::arch::x86_64::*;
    let inputs = tile.inputs;
    assert!(x.len() >= R * inputs && tile.weights.len() == inputs * PANEL);
    assert!(out.len() == (R - 1) * tile.stride + tile.columns);
    let (x, weights) = (x.as_ptr(), tile.weights.as_ptr());
    let mut low = [_mm512_setzero_ps(); R];
    let mut high = [_mm512_setzero_ps(); R];
    for i in 0..inputs {
        // SAFETY: i < inputs and r < R, within the lengths asserted above.
        unsafe {
            let w_low = _mm512_loadu_ps(weights.add(i * PANEL));
            let w_high = _mm512_loadu_ps(weights.add(i * PANEL + 16));
            for r in 0..R {
                let v = _mm512_set1_ps(*x.add(r * inputs + i));
                low[r] = _mm512_fmadd_ps(v, w_low, low[r]);
                high[r] = _mm512_fmadd_ps(v, w_high, high[r]);
            }
        }
    }
    let lanes = |n: usize| -> __mmask16 { ((1u32 << n.min(16)) - 1) as __mmask16 };
    let (mask_low, mask_high) = (lanes(tile.columns), lanes(tile.columns.saturating_sub(16)));
    // SAFETY: the bias has PANEL entries; the masks keep every access to `out` and
    // `residual` within the tile's real columns, which the asserted length covers.
    unsafe {
        let bias_low = _mm512_loadu_ps(tile.bias.as_ptr());
        let bias_high = _mm512_loadu_ps(tile.bias.as_ptr().add(16));
        let out = out.as_mut_ptr();
        for r in 0..R {
            let at = r * tile.stride;
            let mut value_low = _mm512_add_ps(low[r], bias_low);
            let mut value_high = _mm512_add_ps(high[r], bias_high);
            if let Some(residual) = residual {
                let residual = residual.as_ptr().add(at);
                value_low = _mm512_add_ps(value_low, _mm512_maskz_loadu_ps(mask_low, residual));
                value_high = _mm512_add_ps(
                    value_high,
                    _mm512_maskz_loadu_ps(mask_high, residual.add(16)),
                );
            }
            _mm512_mask_storeu_ps(out.add(at), mask_low, value_low);
            _mm512_mask_storeu_ps(out.add(at + 16), mask_high, value_high);
        }
    }
}

/// The tile with AVX2 and FMA (CPUs without AVX-512): its rows three at a time, each
/// with four 8-lane accumulators, so that 12 accumulators, the broadcast and the panel
/// row fit the 16 registers. Each row's sums are formed in the same order whichever
/// group it falls in, so a row's result never depends on its neighbours.
///
/// # Safety
/// The CPU must have AVX2 and FMA; slices are as [`Kernel::run`] describes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const R: usize>(
    tile: &Tile,
    x: &[f32],
    out: &mut [f32],
    residual: Option<&[f32]>,
) {
    let mut first = 0;
    while first < R {
        // SAFETY: the caller's guarantees, for rows first.. of the tile.
        unsafe {
            match R - first {
                1 => rows_avx2::<1>(tile, x, out, residual, first),
                2 => rows_avx2::<2>(tile, x, out, residual, first),
                _ => rows_avx2::<3>(tile, x, out, residual, first),
            }
        }
        first += 3;
    }
}

/// Rows `first..first + N` of an AVX2 tile.
///
/// # Safety
/// As [`tile_avx2`], with `first + N` at most the tile's rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2<const N: usize>(
    tile: &Tile,
    x: &[f32],
    out: &mut [f32],
    residual: Option<&[f32]>,
    first: usize,
) {
    use std::arch::x86_64::*;
    let inputs = tile.inputs;
    assert!(x.len() >= (first + N) * inputs && tile.weights.len() == inputs * PANEL);
    assert!(out.len() >= (first + N - 1) * tile.stride + tile.columns);
    let (xs, weights) = (x.as_ptr(), tile.weights.as_ptr());
    let mut sums = [[_mm256_setzero_ps(); 4]; N];
    for i in 0..inputs {
        // SAFETY: i < inputs and first + r < first + N, within the asserted lengths.
        unsafe {
            let w = weights.add(i * PANEL);
            let panel = [
                _mm256_loadu_ps(w),
                _mm256_loadu_ps(w.add(8)),
                _mm256_loadu_ps(w.add(16)),
                _mm256_loadu_ps(w.add(24)),
            ];
            for (r, sums) in sums.iter_mut().enumerate() {
                let v = _mm256_set1_ps(*xs.add((first + r) * inputs + i));
                for (s, w) in sums.iter_mut().zip(panel) {
                    *s = _mm256_fmadd_ps(v, w, *s);
                }
            }
        }
    }
    for (r, sums) in sums.iter().enumerate() {
        let mut row = [0f32; PANEL];
        for (c, s) in sums.iter().enumerate() {
            // SAFETY: `row` has PANEL = 4 × 8 lanes.
            unsafe { _mm256_storeu_ps(row.as_mut_ptr().add(8 * c), *s) };
        }
        write_row(tile, &row, (first + r) * tile.stride, out, residual);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(count: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        (0..count)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Sizes that leave partial tiles, tasks and panels (37 outputs: one full panel and
    /// one of 5 columns), against the product written out in f64.
    #[test]
    fn matches_the_product_written_out() {
        let (rows, inputs, outputs) = (113, 19, 37);
        let x = numbers(rows * inputs, 1);
        let weight = numbers(outputs * inputs, 2);
        let bias = numbers(outputs, 3);
        let residual = numbers(rows * outputs, 4);
        let packed = PackedLinear::new(&weight, Some(&bias), outputs, inputs);
        let expected = |r: usize, o: usize, with_residual: bool| -> f32 {
            let dot: f64 = (0..inputs)
                .map(|i| x[r * inputs + i] as f64 * weight[o * inputs + i] as f64)
                .sum();
            let extra = if with_residual {
                residual[r * outputs + o]
            } else {
                0.0
            };
            (dot + bias[o] as f64 + extra as f64) as f32
        };
        for kernel in Kernel::available() {
            for with_residual in [false, true] {
                let mut out = vec![f32::NAN; rows * outputs];
                for (task, out) in out.chunks_mut(48 * outputs).enumerate() {
                    let count = out.len() / outputs;
                    let x = &x[task * 48 * inputs..(task * 48 + count) * inputs];
                    let residual = with_residual
                        .then(|| &residual[task * 48 * outputs..(task * 48 + count) * outputs]);
                    packed.rows(kernel, x, out, residual);
                }
                for r in 0..rows {
                    for o in 0..outputs {
                        let (ours, theirs) = (out[r * outputs + o], expected(r, o, with_residual));
                        assert!(
                            (ours - theirs).abs() < 1e-5,
                            "{kernel:?}, residual {with_residual}: ({r}, {o}) {ours} vs {theirs}"
                        );
                    }
                }
            }
        }
    }

    /// Packing from the transpose gives the same matrix.
    #[test]
    fn packs_the_same_from_the_transpose() {
        let (inputs, outputs) = (7, 45);
        let weight = numbers(outputs * inputs, 8);
        let transposed: Vec<f32> = (0..inputs)
            .flat_map(|i| (0..outputs).map(move |o| (i, o)))
            .map(|(i, o)| weight[o * inputs + i])
            .collect();
        let packed = PackedLinear::new(&weight, None, outputs, inputs);
        let from_transposed = PackedLinear::from_transposed(&transposed, outputs, inputs);
        assert_eq!(packed.panels, from_transposed.panels);
        assert_eq!(packed.bias, from_transposed.bias);
    }

    /// The parallel entry point agrees with itself over any subset of rows, bit for
    /// bit, whether it shares the work out by rows (many) or by panels (few): a row's
    /// sums never depend on which task or tile it landed in.
    #[test]
    fn sharing_work_out_changes_nothing() {
        let (rows, inputs, outputs) = (250, 64, 96);
        let x = numbers(rows * inputs, 5);
        let residual = numbers(rows * outputs, 9);
        let packed = PackedLinear::new(
            &numbers(outputs * inputs, 6),
            Some(&numbers(outputs, 7)),
            outputs,
            inputs,
        );
        let mut all = vec![0f32; rows * outputs];
        packed.forward(&x, &mut all, Some(&residual));
        for (first, count) in [(0, 1), (11, 1), (12, 3), (97, 16), (200, 50)] {
            let mut some = vec![0f32; count * outputs];
            packed.forward(
                &x[first * inputs..(first + count) * inputs],
                &mut some,
                Some(&residual[first * outputs..(first + count) * outputs]),
            );
            assert_eq!(
                some,
                all[first * outputs..(first + count) * outputs],
                "rows {first}..{}",
                first + count
            );
        }
    }
}
