//! A [`Llama`] from safetensors in the Hugging Face layout, or from a var builder that
//! training holds.

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::layers::{Layer, Linear};
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

    /// Builds the model from a var builder in the Hugging Face layout; training code
    /// uses this to run a model it holds in a `VarMap`.
    pub fn from_var_builder(
        vb: VarBuilder,
        config: LlamaConfig,
        tie_embeddings: bool,
        device: &Device,
    ) -> Result<Llama, ModelError> {
        let (h, kv) = (config.hidden_size, config.num_kv_heads * config.head_dim());
        let dense =
            |vb: VarBuilder, i: usize, o: usize, bias: bool| -> candle_core::Result<Linear> {
                let weight = vb.get((o, i), "weight")?;
                let bias = if bias && vb.contains_tensor("bias") {
                    Some(vb.get(o, "bias")?)
                } else {
                    None
                };
                Ok(Linear::Dense(candle_nn::Linear::new(weight, bias)))
            };
        let m = vb.pp("model");
        let vocab = config.vocab_size;
        let embeddings = m.pp("embed_tokens").get((vocab, h), "weight")?;
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let l = m.pp(format!("layers.{i}"));
            let a = l.pp("self_attn");
            let f = l.pp("mlp");
            layers.push(Layer {
                attn_norm: l.pp("input_layernorm").get(h, "weight")?,
                wq: dense(a.pp("q_proj"), h, h, true)?,
                wk: dense(a.pp("k_proj"), h, kv, true)?,
                wv: dense(a.pp("v_proj"), h, kv, true)?,
                wo: dense(a.pp("o_proj"), h, h, false)?,
                ffn_norm: l.pp("post_attention_layernorm").get(h, "weight")?,
                gate: dense(f.pp("gate_proj"), h, config.intermediate_size, false)?,
                up: dense(f.pp("up_proj"), h, config.intermediate_size, false)?,
                down: dense(f.pp("down_proj"), config.intermediate_size, h, false)?,
            });
        }
        let norm = m.pp("norm").get(h, "weight")?;
        let lm_head = if tie_embeddings {
            Linear::Dense(candle_nn::Linear::new(embeddings.clone(), None))
        } else {
            dense(vb.pp("lm_head"), h, vocab, false)?
        };
        Llama::assemble(config, embeddings, layers, norm, lm_head, device)
    }
}
