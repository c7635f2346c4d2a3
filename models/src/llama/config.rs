//! The shape of a decoder (its family's variations included), and the dtype its
//! weights are held in. How the weights are held ([`WeightFormat`]) and which
//! projections LoRA may adapt ([`LORA_TARGETS`]) are the job spec's, in
//! `labelfleet-core`: one definition each.

use std::path::Path;

use candle_core::DType;
pub use candle_nn::Activation;
pub use labelfleet_core::job::{LORA_TARGETS, WeightFormat};

use crate::ModelError;

/// The model families the decoder runs; each has its file in `families/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelFamily {
    /// llama, SmolLM, mistral, qwen2: RMS norm, gated SiLU feed-forward.
    #[default]
    Llama,
    /// qwen3: llama's layers plus an RMS norm over each query and key head.
    Qwen3,
    /// starcoder2 (bigcode): layer norm with bias, a GELU feed-forward with bias,
    /// biased projections, sliding-window attention.
    Starcoder2,
}

impl ModelFamily {
    /// The family's name, as `config.json`'s `model_type` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFamily::Llama => "llama",
            ModelFamily::Qwen3 => "qwen3",
            ModelFamily::Starcoder2 => "starcoder2",
        }
    }

    /// Whether `retrain` can fine-tune this family's model at `path` (llama only: the
    /// others' layers have no training path yet), as an error saying so.
    pub(crate) fn check_trainable(self, path: &Path) -> Result<(), ModelError> {
        if self == ModelFamily::Llama {
            return Ok(());
        }
        Err(ModelError::Unsupported(format!(
            "{}: a {} model; retrain fine-tunes llama-family models (llama, SmolLM, \
             mistral, qwen2); {} models label and evaluate, but do not train yet",
            path.display(),
            self.as_str(),
            self.as_str()
        )))
    }
}

/// The shape of a decoder model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// The family, which decides the layers' parts.
    pub family: ModelFamily,
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
    /// Width of one attention head (usually `hidden_size / num_heads`; qwen3 sets it).
    pub head_dim: usize,
    /// Each position attends to at most this many positions, itself included
    /// (starcoder2's sliding window); `None`: all earlier positions.
    pub sliding_window: Option<usize>,
    /// The feed-forward activation (SiLU, gated, for llama and qwen3; GELU for
    /// starcoder2).
    pub activation: Activation,
    /// The norms' epsilon (RMS norm, or layer norm for starcoder2).
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
    pub(crate) fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// The shape of a llama-family model: `hidden_size / num_heads` wide heads, no
    /// window, a gated SiLU feed-forward.
    #[allow(clippy::too_many_arguments)]
    pub fn llama(
        vocab_size: usize,
        hidden_size: usize,
        intermediate_size: usize,
        num_layers: usize,
        num_heads: usize,
        num_kv_heads: usize,
        rms_norm_eps: f64,
        rope_theta: f32,
        max_positions: usize,
    ) -> LlamaConfig {
        LlamaConfig {
            family: ModelFamily::Llama,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim: hidden_size / num_heads,
            sliding_window: None,
            activation: Activation::Silu,
            rms_norm_eps,
            rope_theta,
            max_positions,
            rope_interleaved: false,
        }
    }

    /// Bytes one prompt of `tokens` tokens needs while it is decoded in a batch by a
    /// model whose activations are `dtype`: its key/value cache in every layer and one
    /// layer's activations in that dtype, and one layer's attention scores during
    /// prefill and its logits in f32 (they are always computed in f32).
    ///
    /// The family's shapes count: key/value heads and their width (qwen3's heads are
    /// wider than `hidden / heads`, so its queries and attention output are wider than
    /// the residual stream). A sliding window does not shrink it: the cache keeps every
    /// position and prefill scores every pair, the window only masks them.
    pub fn bytes_per_row(&self, tokens: usize, dtype: DType) -> u64 {
        let (e, f) = (dtype.size_in_bytes() as u64, 4u64);
        let t = tokens as u64;
        let kv = 2 * self.num_layers as u64 * (self.num_kv_heads * self.head_dim()) as u64 * t * e;
        let scores = self.num_heads as u64 * t * t * f;
        let attention_width = self.hidden_size.max(self.num_heads * self.head_dim());
        let activations = t
            * (2 * self.hidden_size + 2 * attention_width + 2 * self.intermediate_size) as u64
            * e;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Figures worked by hand from the models' published `config.json`s, for a row of
    /// 1,024 tokens in bf16 (2 bytes; scores and logits in f32).
    #[test]
    fn a_row_of_each_family_needs_what_its_shapes_say() {
        // SmolLM2-135M: 30 layers, 3 KV heads of 64, 9 heads; hidden 576, FFN 1,536.
        let smol = LlamaConfig::llama(49_152, 576, 1_536, 30, 9, 3, 1e-5, 10_000.0, 8_192);
        let kv = 2 * 30 * (3 * 64) * 1024 * 2; // 23,592,960
        let scores = 9 * 1024 * 1024 * 4; // 37,748,736
        let activations = 1024 * (2 * 576 + 2 * 576 + 2 * 1_536) * 2; // 11,010,048
        let logits = 49_152 * 4; // 196,608
        assert_eq!(
            smol.bytes_per_row(1024, DType::BF16),
            kv + scores + activations + logits
        );
        assert_eq!(smol.bytes_per_row(1024, DType::BF16), 72_548_352);

        // StarCoder2-15B: 40 layers, 4 KV heads of 128, 48 heads; hidden 6,144, FFN
        // 24,576, vocabulary 49,152, a 4,096-token window (which masks, not shrinks).
        let starcoder = LlamaConfig {
            family: ModelFamily::Starcoder2,
            sliding_window: Some(4096),
            activation: Activation::GeluPytorchTanh,
            ..LlamaConfig::llama(49_152, 6_144, 24_576, 40, 48, 4, 1e-5, 100_000.0, 16_384)
        };
        // kv 2·40·512·1024·2 = 83,886,080; scores 48·1024²·4 = 201,326,592;
        // activations 1024·(12,288 + 12,288 + 49,152)·2 = 150,994,944; logits 196,608.
        assert_eq!(starcoder.bytes_per_row(1024, DType::BF16), 436_404_224);

        // Qwen3-8B: 36 layers, 8 KV heads of 128, 32 heads; hidden 4,096, FFN 12,288,
        // vocabulary 151,936.
        let qwen = LlamaConfig {
            family: ModelFamily::Qwen3,
            head_dim: 128,
            ..LlamaConfig::llama(151_936, 4_096, 12_288, 36, 32, 8, 1e-6, 1e6, 40_960)
        };
        // kv 2·36·1,024·1024·2 = 150,994,944; scores 32·1024²·4 = 134,217,728;
        // activations 1024·(8,192 + 8,192 + 24,576)·2 = 83,886,080; logits 607,744.
        assert_eq!(qwen.bytes_per_row(1024, DType::BF16), 369_706_496);

        // Qwen3-0.6B's heads (16 × 128) are twice its hidden width (1,024): its
        // attention activations are counted at 2,048 wide.
        let small = LlamaConfig {
            family: ModelFamily::Qwen3,
            head_dim: 128,
            ..LlamaConfig::llama(151_936, 1_024, 3_072, 28, 16, 8, 1e-6, 1e6, 40_960)
        };
        let kv = 2 * 28 * (8 * 128) * 1024 * 2;
        let scores = 16 * 1024 * 1024 * 4;
        let activations = 1024 * (2 * 1_024 + 2 * 2_048 + 2 * 3_072) * 2;
        assert_eq!(
            small.bytes_per_row(1024, DType::BF16),
            (kv + scores + activations + 151_936 * 4) as u64
        );
    }
}
