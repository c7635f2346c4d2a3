//! Attention on the CPU in f32, fused, for inference.
//!
//! As tensor operations, attention is a dozen ops per layer (two matmuls, scaling, the
//! mask, softmax, dtype casts, transposes), each allocating its result: for a decoding
//! step of a 135M model they cost as much as the layer's matmuls, and for a batch of
//! long prompts the scores alone are `rows × heads × len²` floats, written and read
//! several times over, with libm's scalar `expf` in the softmax.
//!
//! - [`decode_step`]: one new position per row. Each (row, head) pair reads its query,
//!   walks the row's real keys in the cache in place, and writes its output directly.
//!   Padding keys are skipped, not masked, so a row's result does not depend on how
//!   much padding its batch gave it.
//! - [`prompt`]: many new positions per row. Each (row, key/value head) packs its keys
//!   and values once for the register-tile matmul of [`crate::kernels::sgemm`], and each query
//!   head sharing them computes its scores, masked softmax (vectorised) and output.

use candle_core::{CpuStorage, DType, Device, Layout, Storage, Tensor};
use rayon::prelude::*;

use crate::kernels::buffers::contiguous_f32;
use crate::kernels::fastmath::{softmax, vectorized};
use crate::kernels::sgemm::PackedLinear;

/// `softmax(q · kᵀ · scale + mask) · v` for the new positions of a prompt.
///
/// - `q`: `(rows, heads, len, head_dim)`, f32;
/// - `keys`, `values`: `(rows, kv_heads, total, head_dim)`, f32, read in place through
///   their strides (views of the cache buffers); query head `h` reads key/value head
///   `h / (heads / kv_heads)`;
/// - `mask`: `(rows, 1, len, total)`, 0 where a query sees a key and −∞ elsewhere.
///
/// Returns `(rows, len, heads · head_dim)`, the heads side by side.
pub(crate) fn prompt(
    q: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    mask: &Tensor,
    scale: f32,
) -> candle_core::Result<Tensor> {
    let (rows, heads, len, head_dim) = q.dims4()?;
    let (cache_rows, kv_heads, total, cache_dim) = keys.dims4()?;
    if cache_rows != rows || cache_dim != head_dim || heads % kv_heads != 0 {
        candle_core::bail!(
            "prompt attention: shapes {:?} and {:?}",
            q.dims(),
            keys.dims()
        );
    }
    if values.dims() != keys.dims() || mask.dims() != [rows, 1, len, total] {
        candle_core::bail!(
            "prompt attention: values {:?}, mask {:?}",
            values.dims(),
            mask.dims()
        );
    }
    let (q, mask) = (q.contiguous()?, mask.contiguous()?);
    let (query_storage, query_layout) = q.storage_and_layout();
    let queries = contiguous_f32(&query_storage, query_layout, q.elem_count())?;
    let (mask_storage, mask_layout) = mask.storage_and_layout();
    let mask = contiguous_f32(&mask_storage, mask_layout, mask.elem_count())?;
    let (key_storage, key_layout) = keys.storage_and_layout();
    let (value_storage, value_layout) = values.storage_and_layout();
    let keys = CacheView::new(&key_storage, key_layout, total, head_dim)?;
    let values = CacheView::new(&value_storage, value_layout, total, head_dim)?;
    let groups = heads / kv_heads;
    let block = len * head_dim;
    // One task per (row, key/value head), its query heads' outputs one after another.
    let outputs: Vec<Vec<f32>> = (0..rows * kv_heads)
        .into_par_iter()
        .map(|pair| {
            let (row, kv_head) = (pair / kv_heads, pair % kv_heads);
            let packed_keys = PackedLinear::new(keys.head(row, kv_head), None, total, head_dim);
            let packed_values =
                PackedLinear::from_transposed(values.head(row, kv_head), head_dim, total);
            let mask = &mask[row * len * total..(row + 1) * len * total];
            let mut scaled = vec![0f32; block];
            let mut scores = vec![0f32; len * total];
            let mut out = vec![0f32; groups * block];
            for (group, out) in out.chunks_exact_mut(block).enumerate() {
                let head = kv_head * groups + group;
                let query = &queries[(row * heads + head) * block..][..block];
                scaled
                    .iter_mut()
                    .zip(query)
                    .for_each(|(s, q)| *s = q * scale);
                packed_keys.forward_here(&scaled, &mut scores);
                for (scores, mask) in scores.chunks_exact_mut(total).zip(mask.chunks_exact(total)) {
                    masked_softmax(scores, mask);
                }
                packed_values.forward_here(&scores, out);
            }
            out
        })
        .collect();
    let width = heads * head_dim;
    let mut attended = vec![0f32; rows * len * width];
    for (pair, out) in outputs.iter().enumerate() {
        let (row, kv_head) = (pair / kv_heads, pair % kv_heads);
        for (group, out) in out.chunks_exact(block).enumerate() {
            let column = (kv_head * groups + group) * head_dim;
            for (i, values) in out.chunks_exact(head_dim).enumerate() {
                let at = (row * len + i) * width + column;
                attended[at..at + head_dim].copy_from_slice(values);
            }
        }
    }
    Tensor::from_vec(attended, (rows, len, width), &Device::Cpu)
}

vectorized! {
    /// `softmax(scores + mask)` in place.
    fn masked_softmax(scores: &mut [f32], mask: &[f32]) {
        scores.iter_mut().zip(mask).for_each(|(s, m)| *s += m);
        softmax(scores);
    }
}

/// `softmax(q · Kᵀ · scale) · V` for one query position per row.
///
/// - `q`: `(rows, heads, 1, head_dim)`, f32.
/// - `keys`, `values`: `(rows, kv_heads, len, head_dim)`, f32, read in place through
///   their strides (views of the cache buffers); query head `h` reads key/value head
///   `h / (heads / kv_heads)`.
/// - `visible[r][j]`: whether row r's query sees cached position j.
///
/// Returns `(rows, 1, heads · head_dim)`, the heads side by side.
pub(crate) fn decode_step(
    q: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    visible: &[Vec<bool>],
    scale: f32,
) -> candle_core::Result<Tensor> {
    let (rows, heads, one, head_dim) = q.dims4()?;
    let (cache_rows, kv_heads, len, cache_dim) = keys.dims4()?;
    if one != 1 || cache_rows != rows || cache_dim != head_dim || heads % kv_heads != 0 {
        candle_core::bail!(
            "decode attention: shapes {:?} and {:?}",
            q.dims(),
            keys.dims()
        );
    }
    if values.dims() != keys.dims()
        || visible.len() != rows
        || visible.iter().any(|v| v.len() != len)
    {
        candle_core::bail!("decode attention: {len} positions, {} masks", visible.len());
    }
    let queries: Vec<f32> = q.flatten_all()?.to_vec1()?;
    let (key_storage, key_layout) = keys.storage_and_layout();
    let (value_storage, value_layout) = values.storage_and_layout();
    let keys = CacheView::new(&key_storage, key_layout, len, head_dim)?;
    let values = CacheView::new(&value_storage, value_layout, len, head_dim)?;
    let groups = heads / kv_heads;
    let mut out = vec![0f32; rows * heads * head_dim];
    let per_head = |(pair, out): (usize, &mut [f32])| {
        let (row, head) = (pair / heads, pair % heads);
        let query = &queries[pair * head_dim..(pair + 1) * head_dim];
        let (keys, values) = (
            keys.head(row, head / groups),
            values.head(row, head / groups),
        );
        kernels::attend(query, keys, values, &visible[row], scale, out);
    };
    // Below this many multiply-adds, waking threads costs more than it saves.
    if rows * heads * len * head_dim < 1 << 16 {
        out.chunks_mut(head_dim).enumerate().for_each(per_head);
    } else {
        out.par_chunks_mut(head_dim).enumerate().for_each(per_head);
    }
    Tensor::from_vec(out, (rows, 1, heads * head_dim), &Device::Cpu)
}

/// A `(rows, kv_heads, len, head_dim)` f32 view whose positions lie one after another
/// (as in a cache buffer narrowed to its filled part), borrowed from its storage.
struct CacheView<'a> {
    data: &'a [f32],
    row_stride: usize,
    head_stride: usize,
    len: usize,
    head_dim: usize,
}

impl<'a> CacheView<'a> {
    fn new(
        storage: &'a Storage,
        layout: &Layout,
        len: usize,
        head_dim: usize,
    ) -> candle_core::Result<CacheView<'a>> {
        let stride = layout.stride();
        let Storage::Cpu(CpuStorage::F32(data)) = storage else {
            candle_core::bail!("decode attention: the cache must be f32 on the CPU");
        };
        if stride[3] != 1 || stride[2] != head_dim {
            candle_core::bail!("decode attention: the cache's positions must be packed");
        }
        Ok(CacheView {
            data: &data[layout.start_offset()..],
            row_stride: stride[0],
            head_stride: stride[1],
            len,
            head_dim,
        })
    }

    /// The `len × head_dim` values of one row's key/value head.
    fn head(&self, row: usize, head: usize) -> &'a [f32] {
        let first = row * self.row_stride + head * self.head_stride;
        &self.data[first..first + self.len * self.head_dim]
    }
}

/// Whether [`decode_step`] can run this step: one new position, f32, on the CPU.
pub(crate) fn fits(q: &Tensor) -> bool {
    fits_prompt(q) && q.dim(2).is_ok_and(|len| len == 1)
}

/// Whether [`prompt`] can run: f32 on the CPU.
pub(crate) fn fits_prompt(q: &Tensor) -> bool {
    q.device().is_cpu() && q.dtype() == DType::F32
}

/// The inner loop of [`decode_step`].
mod kernels {
    use crate::kernels::fastmath::{exp, vectorized};

    vectorized! {
        /// Scores of the visible keys, their softmax, and the weighted sum of values, in
        /// one pass over the keys and one over the values.
        pub fn attend(
            query: &[f32],
            keys: &[f32],
            values: &[f32],
            visible: &[bool],
            scale: f32,
            out: &mut [f32],
        ) {
            let dim = query.len();
            let mut scores: Vec<(usize, f32)> = Vec::with_capacity(visible.len());
            let mut largest = f32::NEG_INFINITY;
            for (j, key) in keys.chunks_exact(dim).enumerate() {
                if !visible[j] {
                    continue;
                }
                let score = dot(query, key) * scale;
                largest = largest.max(score);
                scores.push((j, score));
            }
            out.fill(0.0);
            let mut total = 0f32;
            for (j, score) in scores {
                let weight = exp(score - largest);
                total += weight;
                let value = &values[j * dim..(j + 1) * dim];
                for (o, v) in out.iter_mut().zip(value) {
                    *o = weight.mul_add(*v, *o);
                }
            }
            if total > 0.0 {
                let inverse = 1.0 / total;
                out.iter_mut().for_each(|o| *o *= inverse);
            }
        }
    }

    /// 8 lanes keep the sum vectorisable (float sums are not reordered otherwise).
    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut lanes = [0f32; 8];
        let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = a8
            .remainder()
            .iter()
            .zip(b8.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (a, b) in a8.zip(b8) {
            for lane in 0..8 {
                lanes[lane] = a[lane].mul_add(b[lane], lanes[lane]);
            }
        }
        lanes.iter().sum::<f32>() + tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::normal;

    /// Against the same attention as tensor operations (what the model runs in
    /// training), with grouped heads, a padded row and spare cache capacity.
    #[test]
    fn matches_masked_softmax_attention() {
        let device = Device::Cpu;
        let (rows, heads, kv_heads, capacity, dim, len) = (2, 6, 2, 16, 20, 11);
        let q = normal(&[rows, heads, 1, dim], 1.0, 1);
        let keys = normal(&[rows, kv_heads, capacity, dim], 1.0, 2);
        let values = normal(&[rows, kv_heads, capacity, dim], 1.0, 3);
        // Row 0 has three padding positions, row 1 none.
        let visible: Vec<Vec<bool>> = (0..rows)
            .map(|r| (0..len).map(|j| r == 1 || j >= 3).collect())
            .collect();
        let scale = 0.3;
        let (k, v) = (
            keys.narrow(2, 0, len).unwrap(),
            values.narrow(2, 0, len).unwrap(),
        );
        let ours = decode_step(&q, &k, &v, &visible, scale).unwrap();

        let mask: Vec<f32> = visible
            .iter()
            .flatten()
            .map(|v| if *v { 0.0 } else { f32::NEG_INFINITY })
            .collect();
        let mask = Tensor::from_vec(mask, (rows, 1, 1, len), &device).unwrap();
        let expected = reference(&q, &k, &v, &mask, scale)
            .reshape((rows, 1, heads * dim))
            .unwrap();
        assert_close(ours, expected);
    }

    /// Against the same attention as tensor operations, with grouped heads, a cache
    /// holding earlier positions, spare capacity, and a left-padded row.
    #[test]
    fn prompt_matches_masked_softmax_attention() {
        let device = Device::Cpu;
        let (rows, heads, kv_heads, dim) = (2, 6, 2, 20);
        let (earlier, len, capacity) = (5, 9, 32);
        let total = earlier + len;
        let q = normal(&[rows, heads, len, dim], 1.0, 1);
        let keys = normal(&[rows, kv_heads, capacity, dim], 1.0, 2);
        let values = normal(&[rows, kv_heads, capacity, dim], 1.0, 3);
        // Row 0's first three positions are padding; queries see earlier positions and
        // themselves; a padding query sees only itself.
        let mut mask = Vec::new();
        for row in 0..rows {
            let pad = if row == 0 { 3 } else { 0 };
            for i in 0..len {
                for j in 0..total {
                    let visible = if i + earlier < pad {
                        j == earlier + i
                    } else {
                        j <= earlier + i && j >= pad
                    };
                    mask.push(if visible { 0.0 } else { f32::NEG_INFINITY });
                }
            }
        }
        let mask = Tensor::from_vec(mask, (rows, 1, len, total), &device).unwrap();
        let scale = 0.3;
        let (k, v) = (
            keys.narrow(2, 0, total).unwrap(),
            values.narrow(2, 0, total).unwrap(),
        );
        let ours = prompt(&q, &k, &v, &mask, scale).unwrap();

        let expected = reference(&q, &k, &v, &mask, scale)
            .transpose(1, 2)
            .unwrap()
            .reshape((rows, len, heads * dim))
            .unwrap();
        assert_close(ours, expected);
    }

    /// Masked softmax attention as tensor operations over grouped heads: `q` `(rows,
    /// heads, len, dim)` over `keys`, `values` `(rows, kv_heads, total, dim)` under
    /// `mask` (broadcast to the scores); returns `(rows, heads, len, dim)`.
    fn reference(q: &Tensor, keys: &Tensor, values: &Tensor, mask: &Tensor, scale: f32) -> Tensor {
        let (rows, heads, _, dim) = q.dims4().unwrap();
        let (_, kv_heads, total, _) = keys.dims4().unwrap();
        let expand = |t: &Tensor| {
            t.unsqueeze(2)
                .unwrap()
                .broadcast_as((rows, kv_heads, heads / kv_heads, total, dim))
                .unwrap()
                .reshape((rows, heads, total, dim))
                .unwrap()
        };
        let scores = (q.matmul(&expand(keys).t().unwrap()).unwrap() * scale as f64)
            .unwrap()
            .broadcast_add(mask)
            .unwrap();
        candle_nn::ops::softmax_last_dim(&scores)
            .unwrap()
            .matmul(&expand(values))
            .unwrap()
    }

    fn assert_close(ours: Tensor, expected: Tensor) {
        let worst: f32 = (ours - expected)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(worst < 1e-5, "largest difference {worst}");
    }
}
