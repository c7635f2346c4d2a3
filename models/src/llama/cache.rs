//! The key/value cache of a batch being decoded.

use candle_core::{Device, Tensor};

/// One layer's keys and values: buffers with room to grow, `(rows, kv_heads, capacity,
/// head_dim)`, of which the first `len` positions are filled. Appending writes in place
/// instead of concatenating, which would copy the whole cache at every step.
pub(super) struct LayerKv {
    pub(super) k: Tensor,
    pub(super) v: Tensor,
    pub(super) len: usize,
}

/// Positions a cache buffer grows by.
const CACHE_CHUNK: usize = 256;

impl LayerKv {
    pub(super) fn new(k: &Tensor, v: &Tensor) -> candle_core::Result<LayerKv> {
        let (rows, heads, len, dim) = k.dims4()?;
        let capacity = len.div_ceil(CACHE_CHUNK) * CACHE_CHUNK;
        let buffer = || Tensor::zeros((rows, heads, capacity, dim), k.dtype(), k.device());
        let (kb, vb) = (buffer()?, buffer()?);
        kb.slice_set(k, 2, 0)?;
        vb.slice_set(v, 2, 0)?;
        Ok(LayerKv { k: kb, v: vb, len })
    }

    /// Appends `k`, `v` and returns views of everything cached.
    pub(super) fn append(
        &mut self,
        k: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let added = k.dim(2)?;
        let capacity = self.k.dim(2)?;
        if self.len + added > capacity {
            let (rows, heads, _, dim) = self.k.dims4()?;
            let grown = (self.len + added).div_ceil(CACHE_CHUNK) * CACHE_CHUNK;
            let grow = |old: &Tensor| -> candle_core::Result<Tensor> {
                let new = Tensor::zeros((rows, heads, grown, dim), old.dtype(), old.device())?;
                new.slice_set(&old.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                Ok(new)
            };
            self.k = grow(&self.k)?;
            self.v = grow(&self.v)?;
        }
        self.k.slice_set(k, 2, self.len)?;
        self.v.slice_set(v, 2, self.len)?;
        self.len += added;
        Ok((
            self.k.narrow(2, 0, self.len)?,
            self.v.narrow(2, 0, self.len)?,
        ))
    }
}

/// The key/value cache of a batch being decoded, with each row's padding mask.
pub struct KvCache {
    pub(super) layers: Vec<Option<LayerKv>>,
    /// Per row, per cached position: 0 for a real token, -inf for padding.
    pub(super) key_mask: Vec<Vec<f32>>,
}

impl KvCache {
    /// Positions cached so far (padding included).
    pub fn len(&self) -> usize {
        self.key_mask.first().map_or(0, Vec::len)
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.key_mask.len()
    }

    /// Keeps only `rows` (indices into the current batch), in that order: finished
    /// prompts leave the batch so the others decode faster.
    pub fn retain(&mut self, rows: &[usize]) -> candle_core::Result<()> {
        if rows.len() == self.rows() {
            return Ok(());
        }
        let device = match self.layers.iter().flatten().next() {
            Some(layer) => layer.k.device().clone(),
            None => Device::Cpu,
        };
        let ids = Tensor::new(rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), &device)?;
        for layer in self.layers.iter_mut().flatten() {
            layer.k = layer.k.index_select(&ids, 0)?.contiguous()?;
            layer.v = layer.v.index_select(&ids, 0)?.contiguous()?;
        }
        self.key_mask = rows.iter().map(|&r| self.key_mask[r].clone()).collect();
        Ok(())
    }
}
