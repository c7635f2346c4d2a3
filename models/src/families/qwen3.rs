//! The qwen3 family: llama's layers (RMS norms, gated SiLU feed-forward, grouped-query
//! attention) with an RMS norm over each query and key head before the rotary
//! embedding, and heads whose width the config gives (`head_dim`, which need not be
//! `hidden_size / num_attention_heads`).

use candle_core::Device;
use candle_nn::VarBuilder;
use serde::Deserialize;
use serde_json::Value;

use super::{CommonConfig, Family, attention, decoder, dense, read, rms_norm};
use crate::ModelError;
use crate::llama::{Layer, Llama, LlamaConfig, ModelFamily};

/// The qwen3 family.
pub struct Qwen3;

#[derive(Deserialize)]
struct Extra {
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    use_sliding_window: bool,
}

fn default_eps() -> f64 {
    1e-6
}

impl Family for Qwen3 {
    fn family(&self) -> ModelFamily {
        ModelFamily::Qwen3
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["qwen3"]
    }

    fn config(&self, json: &Value) -> Result<(LlamaConfig, bool), String> {
        let common: CommonConfig = read(json)?;
        let extra: Extra = read(json)?;
        if extra.use_sliding_window {
            return Err(
                "at `use_sliding_window`: qwen3 with a sliding window on some \
                        layers is not supported"
                    .into(),
            );
        }
        let mut config = common.shape(ModelFamily::Qwen3, extra.rms_norm_eps);
        if let Some(head_dim) = extra.head_dim {
            config.head_dim = head_dim;
        }
        Ok((config, extra.tie_word_embeddings))
    }

    fn build(
        &self,
        vb: VarBuilder,
        config: LlamaConfig,
        tie_embeddings: bool,
        device: &Device,
    ) -> Result<Llama, ModelError> {
        let (h, d, ffn) = (
            config.hidden_size,
            config.head_dim,
            config.intermediate_size,
        );
        let c = config.clone();
        decoder(vb, config, tie_embeddings, device, rms_norm, |l| {
            let (a, f) = (l.pp("self_attn"), l.pp("mlp"));
            let [wq, wk, wv, wo] = attention(&a, &c, true)?;
            Ok(Layer {
                attn_norm: rms_norm(l.pp("input_layernorm"), h)?,
                wq,
                wk,
                wv,
                wo,
                q_norm: Some(rms_norm(a.pp("q_norm"), d)?),
                k_norm: Some(rms_norm(a.pp("k_norm"), d)?),
                ffn_norm: rms_norm(l.pp("post_attention_layernorm"), h)?,
                gate: Some(dense(f.pp("gate_proj"), h, ffn, false)?),
                up: dense(f.pp("up_proj"), h, ffn, false)?,
                down: dense(f.pp("down_proj"), ffn, h, false)?,
            })
        })
    }
}
