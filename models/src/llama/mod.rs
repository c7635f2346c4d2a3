//! A llama-family decoder (llama, SmolLM, qwen2) that runs a *batch* of prompts of
//! different lengths at once.
//!
//! candle-transformers' llama models keep one position counter for the whole batch and
//! no padding mask, so prompts of different lengths cannot share a forward pass. Here
//! prompts are left-padded to a common length and a per-row key mask hides the padding.
//! Every row then uses the same absolute positions: rotary embeddings depend only on the
//! distance between query and key, so a padded row computes what it would alone.
//!
//! Weights come from a GGUF file (quantized matmuls, optionally re-quantized at load) or
//! from safetensors in the Hugging Face layout (dense matmuls). For inference on the
//! CPU, quantized layers use the integer kernel of `qmatmul`, dense f32 layers are packed
//! for `sgemm` (see `Llama::use_kernels`), and attention is fused (`attention`); for
//! training, on GPUs and with [`Kernels::Generic`] everything stays candle tensor
//! operations.
//!
//! One idea per file: [`LlamaConfig`] and [`WeightFormat`] (`config`), the layers'
//! parts (`layers`), the key/value cache (`cache`), loading from GGUF (`gguf`) or
//! safetensors (`safetensors`), changing projections (`projections`: LoRA, packing)
//! and the forward pass (`forward`).

mod cache;
mod config;
mod forward;
mod gguf;
mod layers;
mod projections;
mod safetensors;

use candle_core::{DType, Device, Tensor};

pub use self::cache::KvCache;
pub use self::config::{
    Activation, LORA_TARGETS, LlamaConfig, ModelFamily, WeightFormat, dense_dtype,
};
pub use self::forward::argmax_rows;
use self::forward::rope_tables;
pub use self::gguf::HfWeights;
pub(crate) use self::layers::{Layer, Linear, Norm, tensor_bytes};
use crate::{Kernels, ModelError};

/// A llama-family causal LM that decodes batches of left-padded prompts.
pub struct Llama {
    config: LlamaConfig,
    embeddings: Tensor,
    layers: Vec<Layer>,
    norm: Norm,
    lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
    device: Device,
    /// Whether the fused attention kernels run (see [`Llama::use_kernels`]).
    kernels: Kernels,
}

impl Llama {
    /// The model from its parts, with the rotary tables its config asks for.
    pub(crate) fn assemble(
        config: LlamaConfig,
        embeddings: Tensor,
        layers: Vec<Layer>,
        norm: Norm,
        lm_head: Linear,
        device: &Device,
    ) -> Result<Llama, ModelError> {
        // Everything the layers add or multiply follows the weights' dtype.
        let dtype = embeddings.dtype();
        let (cos, sin) = rope_tables(&config, device)?;
        let (cos, sin) = (cos.to_dtype(dtype)?, sin.to_dtype(dtype)?);
        Ok(Llama {
            config,
            embeddings,
            layers,
            norm,
            lm_head,
            cos,
            sin,
            device: device.clone(),
            kernels: Kernels::Native,
        })
    }

    /// The dtype of the model's activations (its weights' when dense, f32 when
    /// quantized).
    pub fn dtype(&self) -> DType {
        self.embeddings.dtype()
    }

    /// Bytes of memory the weights take, as held (quantized, packed or dense); an
    /// output projection tied to the embeddings is counted once. What a model cache
    /// weighs a loaded model by.
    pub fn weight_bytes(&self) -> u64 {
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.up, &l.down]
                    .into_iter()
                    .chain(l.gate.as_ref())
                    .map(|w| w.bytes())
                    .sum::<u64>()
                    + [
                        Some(&l.attn_norm),
                        Some(&l.ffn_norm),
                        l.q_norm.as_ref(),
                        l.k_norm.as_ref(),
                    ]
                    .into_iter()
                    .flatten()
                    .map(Norm::bytes)
                    .sum::<u64>()
            })
            .sum();
        let tied =
            matches!(&self.lm_head, Linear::Dense(l) if l.weight().id() == self.embeddings.id());
        let head = if tied { 0 } else { self.lm_head.bytes() };
        tensor_bytes(&self.embeddings) + layers + self.norm.bytes() + head
    }

    /// The model's shape.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }
}
