//! The forward pass over a batch of left-padded prompts: rotary tables, the layers
//! with their padding masks, attention (fused on the CPU for decoding), the logits.

use candle_core::{D, DType, Device, Module, Tensor};

use super::cache::{KvCache, LayerKv};
use super::layers::{Layer, Positions};
use super::{Llama, LlamaConfig};
use crate::kernels::attention;
use crate::{Kernels, ModelError};

pub(super) fn rope_tables(
    config: &LlamaConfig,
    device: &Device,
) -> Result<(Tensor, Tensor), candle_core::Error> {
    let head_dim = config.head_dim();
    let inv_freq: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1f32 / config.rope_theta.powf(i as f32 / head_dim as f32))
        .collect();
    let inv_freq = Tensor::from_vec(inv_freq, (1, head_dim / 2), device)?;
    let positions = Tensor::arange(0u32, config.max_positions as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((config.max_positions, 1))?;
    let angles = positions.matmul(&inv_freq)?;
    Ok((angles.cos()?, angles.sin()?))
}

impl Llama {
    /// A cache for a batch of `rows` prompts.
    pub fn new_cache(&self, rows: usize) -> KvCache {
        KvCache {
            layers: (0..self.layers.len()).map(|_| None).collect(),
            key_mask: vec![Vec::new(); rows],
        }
    }

    /// Runs `tokens` (one row per prompt, `padding[r]` leading pad positions in row r,
    /// all rows the same length) after what `cache` holds; returns the logits of every
    /// row's last position, `(rows, vocab)`.
    pub fn forward(
        &self,
        tokens: &[Vec<u32>],
        padding: &[usize],
        cache: &mut KvCache,
    ) -> Result<Tensor, ModelError> {
        let hidden = self.forward_hidden(tokens, padding, Some(cache), true, false)?;
        Ok(self
            .lm_head
            .forward(&hidden)?
            .squeeze(1)?
            .to_dtype(DType::F32)?)
    }

    /// As [`Llama::forward`], returning the logits of every position, `(rows, len, vocab)`:
    /// what scoring a completion needs.
    pub fn forward_all(
        &self,
        tokens: &[Vec<u32>],
        padding: &[usize],
        cache: &mut KvCache,
    ) -> Result<Tensor, ModelError> {
        let hidden = self.forward_hidden(tokens, padding, Some(cache), false, false)?;
        Ok(self.lm_head.forward(&hidden)?.to_dtype(DType::F32)?)
    }

    /// The final hidden states of every position, `(rows, len, hidden)`, computed
    /// without a cache and with differentiable operations only (candle's fused rms
    /// norm, rotary and softmax kernels have no backward pass): what training needs.
    /// Rows are left-padded as for [`Llama::forward`].
    pub fn hidden_for_training(
        &self,
        tokens: &[Vec<u32>],
        padding: &[usize],
    ) -> Result<Tensor, ModelError> {
        self.forward_hidden(tokens, padding, None, false, true)
    }

    /// The same hidden states as [`Llama::hidden_for_training`], computed with the
    /// inference kernels (fused norm, rotary and attention; packed matmuls where the
    /// model has them): what measuring a loss needs, at prefill speed. No gradient
    /// flows back through them.
    pub fn hidden_for_scoring(
        &self,
        tokens: &[Vec<u32>],
        padding: &[usize],
    ) -> Result<Tensor, ModelError> {
        self.forward_hidden(tokens, padding, None, false, false)
    }

    /// Projects hidden states to vocabulary logits.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.lm_head.forward(hidden)?)
    }

    fn forward_hidden(
        &self,
        tokens: &[Vec<u32>],
        padding: &[usize],
        mut cache: Option<&mut KvCache>,
        last_only: bool,
        differentiable: bool,
    ) -> Result<Tensor, ModelError> {
        let rows = tokens.len();
        let len = tokens.first().map_or(0, Vec::len);
        let cache_rows = cache.as_ref().map_or(rows, |c| c.rows());
        if rows != cache_rows || rows != padding.len() || tokens.iter().any(|t| t.len() != len) {
            return Err(ModelError::Invalid(
                "a batch needs rows of equal length, one padding count and one cache row each"
                    .into(),
            ));
        }
        let start = cache.as_ref().map_or(0, |c| c.len());
        if start + len > self.config.max_positions {
            return Err(ModelError::Invalid(format!(
                "{} positions exceed the model's context of {}",
                start + len,
                self.config.max_positions
            )));
        }
        let new_keys =
            |pad: usize| (0..len).map(move |i| if i < pad { f32::NEG_INFINITY } else { 0.0 });
        let uncached: Vec<Vec<f32>>;
        let key_mask: &[Vec<f32>] = match cache.as_deref_mut() {
            Some(cache) => {
                for (mask, &pad) in cache.key_mask.iter_mut().zip(padding) {
                    mask.extend(new_keys(pad));
                }
                &cache.key_mask
            }
            None => {
                uncached = padding.iter().map(|&pad| new_keys(pad).collect()).collect();
                &uncached
            }
        };
        let total = start + len;
        // A sliding window (starcoder2) hides keys `window` or more positions back.
        let window = self.config.sliding_window.unwrap_or(usize::MAX);
        // Row r, query i (absolute position start+i) sees key j when j <= start+i, j
        // is within the window and j is not padding; a padding query sees only itself,
        // so its softmax stays finite.
        let mut mask = Vec::with_capacity(rows * len * total);
        for (r, keys) in key_mask.iter().enumerate() {
            for i in 0..len {
                let query_is_pad = i < padding[r];
                for (j, &key) in keys.iter().enumerate() {
                    let visible = if query_is_pad {
                        j == start + i
                    } else {
                        j <= start + i && start + i - j < window && key == 0.0
                    };
                    mask.push(if visible { 0.0 } else { f32::NEG_INFINITY });
                }
            }
        }
        // Softmax runs in f32 whatever the weights' dtype, so the mask is f32 too.
        let mask = Tensor::from_vec(mask, (rows, 1, len, total), &self.device)?;
        let flat: Vec<u32> = tokens.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, (rows, len), &self.device)?;
        let mut x = self
            .embeddings
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((rows, len, self.config.hidden_size))?;
        let cos = self.cos.narrow(0, start, len)?;
        let sin = self.sin.narrow(0, start, len)?;
        // A decoding step (one new position per row, none of them padding) takes the
        // fused attention, which walks each row's real keys.
        let decoding = len == 1 && !differentiable && padding.iter().all(|&p| p == 0);
        let visible: Option<Vec<Vec<bool>>> = decoding.then(|| {
            key_mask
                .iter()
                .map(|keys| {
                    let query = keys.len() - 1;
                    keys.iter()
                        .enumerate()
                        .map(|(j, &k)| k == 0.0 && query - j < window)
                        .collect()
                })
                .collect()
        });
        let positions = Positions {
            mask: &mask,
            visible: visible.as_deref(),
            cos: &cos,
            sin: &sin,
            differentiable,
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = self.layer_forward(layer, &x, &positions, slot)?;
        }
        if last_only {
            x = x.narrow(1, len - 1, 1)?.contiguous()?;
        }
        Ok(self
            .norm
            .forward(&x, self.config.rms_norm_eps as f32, differentiable)?)
    }

    fn layer_forward(
        &self,
        layer: &Layer,
        x: &Tensor,
        positions: &Positions,
        cache: Option<&mut Option<LayerKv>>,
    ) -> candle_core::Result<Tensor> {
        let Positions {
            mask,
            visible,
            cos,
            sin,
            differentiable: training,
        } = *positions;
        let c = &self.config;
        let (rows, len, _) = x.dims3()?;
        let head_dim = c.head_dim();
        let eps = c.rms_norm_eps as f32;
        let normed = layer.attn_norm.forward(x, eps, training)?;
        // `(rows, len, n · head_dim)` → `(rows, n, len, head_dim)`, each head normed
        // first when the family norms them (qwen3).
        let heads = |t: Tensor, n: usize, norm: Option<&super::layers::Norm>| {
            let t = t.reshape((rows, len, n, head_dim))?;
            let t = match norm {
                Some(norm) => norm.forward(&t.contiguous()?, eps, training)?,
                None => t,
            };
            t.transpose(1, 2)?.contiguous()
        };
        let q = heads(
            layer.wq.forward(&normed)?,
            c.num_heads,
            layer.q_norm.as_ref(),
        )?;
        let k = heads(
            layer.wk.forward(&normed)?,
            c.num_kv_heads,
            layer.k_norm.as_ref(),
        )?;
        let v = heads(layer.wv.forward(&normed)?, c.num_kv_heads, None)?;
        let rope = |t: &Tensor| match (c.rope_interleaved, training) {
            (true, false) => candle_nn::rotary_emb::rope_i(t, cos, sin),
            (false, false) => candle_nn::rotary_emb::rope(t, cos, sin),
            (interleaved, true) => crate::fused::rope(t, cos, sin, interleaved),
        };
        let q = rope(&q)?;
        let k = rope(&k)?;
        let (k, v) = match cache {
            None => (k, v),
            Some(Some(layer)) => layer.append(&k, &v)?,
            Some(slot @ None) => {
                let layer = LayerKv::new(&k, &v)?;
                let views = (
                    layer.k.narrow(2, 0, layer.len)?,
                    layer.v.narrow(2, 0, layer.len)?,
                );
                *slot = Some(layer);
                views
            }
        };
        let scale = 1.0 / (head_dim as f64).sqrt();
        let fused = self.kernels == Kernels::Native;
        // A prompt's attention: the fused CPU kernel where it applies, tensor
        // operations elsewhere.
        let prompt = |q: &Tensor, k: &Tensor, v: &Tensor| {
            if fused && attention::fits_prompt(q) {
                attention::prompt(q, k, v, mask, scale as f32)
            } else {
                self.attention(q, k, v, mask)
            }
        };
        let attended = match visible {
            Some(visible) if fused && attention::fits(&q) => {
                attention::decode_step(&q, &k, &v, visible, scale as f32)?
            }
            _ if training => {
                // The value without a graph, by the inference path; one node's
                // hand-written backward pass (`fused_attention`) gives the gradients.
                let value = prompt(&q.detach(), &k.detach(), &v.detach())?;
                crate::fused_attention::attention(&q, &k, &v, mask, scale, value)?
            }
            _ => prompt(&q, &k, &v)?,
        };
        let x = (x + layer.wo.forward(&attended)?)?;
        let normed = layer.ffn_norm.forward(&x, eps, training)?;
        let inner = match &layer.gate {
            Some(gate) => {
                (c.activation.forward(&gate.forward(&normed)?)? * layer.up.forward(&normed)?)?
            }
            None => c.activation.forward(&layer.up.forward(&normed)?)?,
        };
        x + layer.down.forward(&inner)?
    }

    /// Attention as tensor operations, for prompts (and a training step's forward
    /// value on a GPU): `q` `(rows, heads, len, head_dim)` over `k`, `v` `(rows,
    /// kv_heads, total, head_dim)` under `mask` `(rows, 1, len, total)`; returns `(rows,
    /// len, hidden)`.
    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (rows, _, len, head_dim) = q.dims4()?;
        let scale = 1.0 / (head_dim as f64).sqrt();
        // The query heads that share a key/value head sit side by side in `q`, so one
        // matmul per key/value head serves all of them: the cache is read in place,
        // never copied out once per query head. In half precision the scores are
        // summed in f32: f16 overflows past 65,504.
        let (kv_heads, groups) = (c.num_kv_heads, c.num_heads / c.num_kv_heads);
        let grouped = q.reshape((rows, kv_heads, groups * len, head_dim))?;
        let weights = crate::fused_attention::weights(&grouped, k, mask, scale, groups)?;
        let attended = weights
            .to_dtype(q.dtype())?
            .matmul(v)?
            .reshape((rows, c.num_heads, len, head_dim))?
            .transpose(1, 2)?
            .reshape((rows, len, c.num_heads * head_dim))?;
        Ok(attended)
    }
}

/// Index of the largest logit in each row.
pub fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>, ModelError> {
    Ok(logits
        .argmax(D::Minus1)?
        .to_dtype(DType::U32)?
        .to_vec1::<u32>()?)
}
