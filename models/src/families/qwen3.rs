//! The qwen3 family: llama's layers (RMS norms, gated SiLU feed-forward, grouped-query
//! attention) with an RMS norm over each query and key head before the rotary
//! embedding, and heads whose width the config gives (`head_dim`, which need not be
//! `hidden_size / num_attention_heads`).

use candle_core::Device;
use candle_nn::VarBuilder;
use serde::Deserialize;
use serde_json::Value;

use super::{CommonConfig, Family, dense, lm_head, read, rms_norm};
use crate::ModelError;
use crate::llama::{Activation, Layer, Llama, LlamaConfig, ModelFamily};

/// The qwen3 family.
pub struct Qwen3;

#[derive(Deserialize)]
struct Extra {
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default)]
    attention_bias: bool,
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
        let c: CommonConfig = read(json)?;
        let extra: Extra = read(json)?;
        if extra.use_sliding_window {
            return Err(
                "at `use_sliding_window`: qwen3 with a sliding window on some \
                        layers is not supported"
                    .into(),
            );
        }
        let _ = extra.attention_bias;
        let mut config = LlamaConfig::llama(
            c.vocab_size,
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            extra.rms_norm_eps,
            c.rope_theta,
            c.max_position_embeddings,
        );
        config.family = ModelFamily::Qwen3;
        config.activation = Activation::Silu;
        config.head_dim = extra
            .head_dim
            .unwrap_or(c.hidden_size / c.num_attention_heads);
        Ok((config, extra.tie_word_embeddings))
    }

    fn build(
        &self,
        vb: VarBuilder,
        config: LlamaConfig,
        tie_embeddings: bool,
        device: &Device,
    ) -> Result<Llama, ModelError> {
        let (h, d) = (config.hidden_size, config.head_dim);
        let (q, kv) = (config.num_heads * d, config.num_kv_heads * d);
        let ffn = config.intermediate_size;
        let m = vb.pp("model");
        let embeddings = m.pp("embed_tokens").get((config.vocab_size, h), "weight")?;
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let l = m.pp(format!("layers.{i}"));
            let (a, f) = (l.pp("self_attn"), l.pp("mlp"));
            layers.push(Layer {
                attn_norm: rms_norm(l.pp("input_layernorm"), h)?,
                wq: dense(a.pp("q_proj"), h, q, true)?,
                wk: dense(a.pp("k_proj"), h, kv, true)?,
                wv: dense(a.pp("v_proj"), h, kv, true)?,
                wo: dense(a.pp("o_proj"), q, h, true)?,
                q_norm: Some(rms_norm(a.pp("q_norm"), d)?),
                k_norm: Some(rms_norm(a.pp("k_norm"), d)?),
                ffn_norm: rms_norm(l.pp("post_attention_layernorm"), h)?,
                gate: Some(dense(f.pp("gate_proj"), h, ffn, false)?),
                up: dense(f.pp("up_proj"), h, ffn, false)?,
                down: dense(f.pp("down_proj"), ffn, h, false)?,
            });
        }
        let norm = rms_norm(m.pp("norm"), h)?;
        let head = lm_head(&vb, &embeddings, &config, tie_embeddings)?;
        Llama::assemble(config, embeddings, layers, norm, head, device)
    }
}
