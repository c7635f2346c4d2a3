//! The llama family: llama, SmolLM, mistral and qwen2 (q/k/v biases when present).
//! RMS norms, a gated SiLU feed-forward, grouped-query attention.

use candle_core::Device;
use candle_nn::VarBuilder;
use serde::Deserialize;
use serde_json::Value;

use super::{CommonConfig, Family, attention, decoder, dense, read, rms_norm};
use crate::ModelError;
use crate::llama::{Layer, Llama, LlamaConfig, ModelFamily};

/// The llama family.
pub struct LlamaFamily;

#[derive(Deserialize)]
struct Extra {
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default)]
    tie_word_embeddings: bool,
}

fn default_eps() -> f64 {
    1e-5
}

impl Family for LlamaFamily {
    fn family(&self) -> ModelFamily {
        ModelFamily::Llama
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["llama", "mistral", "qwen2"]
    }

    fn config(&self, json: &Value) -> Result<(LlamaConfig, bool), String> {
        let common: CommonConfig = read(json)?;
        let extra: Extra = read(json)?;
        let config = common.shape(ModelFamily::Llama, extra.rms_norm_eps);
        Ok((config, extra.tie_word_embeddings))
    }

    fn build(
        &self,
        vb: VarBuilder,
        config: LlamaConfig,
        tie_embeddings: bool,
        device: &Device,
    ) -> Result<Llama, ModelError> {
        let (h, ffn) = (config.hidden_size, config.intermediate_size);
        let c = config.clone();
        decoder(vb, config, tie_embeddings, device, rms_norm, |l| {
            let f = l.pp("mlp");
            let [wq, wk, wv, wo] = attention(&l.pp("self_attn"), &c, false)?;
            Ok(Layer {
                attn_norm: rms_norm(l.pp("input_layernorm"), h)?,
                wq,
                wk,
                wv,
                wo,
                q_norm: None,
                k_norm: None,
                ffn_norm: rms_norm(l.pp("post_attention_layernorm"), h)?,
                gate: Some(dense(f.pp("gate_proj"), h, ffn, false)?),
                up: dense(f.pp("up_proj"), h, ffn, false)?,
                down: dense(f.pp("down_proj"), ffn, h, false)?,
            })
        })
    }
}
