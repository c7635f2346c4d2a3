//! A [`Llama`] from safetensors in the Hugging Face layout, or from a var builder that
//! training holds; the family in the config decides the weights' names and the
//! layers' arrangement (see `families/`).

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::{Llama, LlamaConfig};
use crate::ModelError;

impl Llama {
    /// Loads safetensors in the Hugging Face layout (`model.layers.N.self_attn.q_proj`,
    /// …) with the shape in `config`, in `dtype`; q/k/v biases are picked up when
    /// present (qwen2).
    pub fn from_safetensors(
        files: &[std::path::PathBuf],
        config: LlamaConfig,
        tie_embeddings: bool,
        dtype: DType,
        device: &Device,
    ) -> Result<Llama, ModelError> {
        // SAFETY: the files are memory-mapped read-only and not modified while loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(files, dtype, device)? };
        Llama::from_var_builder(vb, config, tie_embeddings, device)
    }

    /// Builds the model from a var builder in the Hugging Face layout, as its family
    /// lays it out; training code uses this to run a model it holds in a `VarMap`.
    pub fn from_var_builder(
        vb: VarBuilder,
        config: LlamaConfig,
        tie_embeddings: bool,
        device: &Device,
    ) -> Result<Llama, ModelError> {
        crate::families::of(config.family).build(vb, config, tie_embeddings, device)
    }
}
