//! The shape of a llama-family model, and the dtype its weights are held in. How the
//! weights are held ([`WeightFormat`]) and which projections LoRA may adapt
//! ([`LORA_TARGETS`]) are the job spec's, in `labelfleet-core`: one definition each.

use candle_core::DType;
pub use labelfleet_core::job::{LORA_TARGETS, WeightFormat};

/// The shape of a llama-family model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_layers: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads (grouped-query attention when fewer than query heads).
    pub num_kv_heads: usize,
    /// RMS norm epsilon.
    pub rms_norm_eps: f64,
    /// Rotary embedding base.
    pub rope_theta: f32,
    /// Longest sequence the rotary tables cover.
    pub max_positions: usize,
    /// Whether rotary pairs are adjacent (GGUF llama's layout) or half a head apart
    /// (the Hugging Face layout).
    pub rope_interleaved: bool,
}

impl LlamaConfig {
    pub(super) fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Bytes one prompt of `tokens` tokens needs while it is decoded in a batch by a
    /// model whose activations are `dtype`: its key/value cache in every layer and one
    /// layer's activations in that dtype, and one layer's attention scores during
    /// prefill and its logits in f32 (they are always computed in f32).
    pub fn bytes_per_row(&self, tokens: usize, dtype: DType) -> u64 {
        let (e, f) = (dtype.size_in_bytes() as u64, 4u64);
        let t = tokens as u64;
        let kv = 2 * self.num_layers as u64 * (self.num_kv_heads * self.head_dim()) as u64 * t * e;
        let scores = self.num_heads as u64 * t * t * f;
        let activations = t * (4 * self.hidden_size + 2 * self.intermediate_size) as u64 * e;
        kv + scores + activations + self.vocab_size as u64 * f
    }
}

/// The dtype of a dense model whose weights are held as `format` (a quantized one's
/// activations are f32 too).
pub fn dense_dtype(format: WeightFormat) -> DType {
    match format {
        WeightFormat::F16 => DType::F16,
        WeightFormat::Bf16 => DType::BF16,
        WeightFormat::Stored | WeightFormat::Q8_0 | WeightFormat::F32 => DType::F32,
    }
}
