//! The starcoder2 family (bigcode's StarCoder2, the seed pipeline's StarCoder lineage):
//! layer norm with bias, a plain feed-forward `c_proj(gelu(c_fc(x)))` with biases,
//! biased q/k/v/o projections, grouped-query attention, rotary positions, and
//! sliding-window attention (each position sees the `sliding_window` positions up to
//! itself). The output projection is the embedding matrix unless the file has an
//! `lm_head`.

use candle_core::Device;
use candle_nn::VarBuilder;
use serde::Deserialize;
use serde_json::Value;

use super::{CommonConfig, Family, attention, decoder, dense, layer_norm, read};
use crate::ModelError;
use crate::llama::{Activation, Layer, Llama, LlamaConfig, ModelFamily};

/// The starcoder2 family.
pub struct Starcoder2;

#[derive(Deserialize)]
struct Extra {
    #[serde(default = "default_eps")]
    norm_epsilon: f64,
    #[serde(default = "default_act")]
    hidden_act: Activation,
    sliding_window: Option<usize>,
    #[serde(default = "tied")]
    tie_word_embeddings: bool,
}

fn default_eps() -> f64 {
    1e-5
}

fn default_act() -> Activation {
    Activation::GeluPytorchTanh
}

fn tied() -> bool {
    true
}

impl Family for Starcoder2 {
    fn family(&self) -> ModelFamily {
        ModelFamily::Starcoder2
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["starcoder2"]
    }

    fn config(&self, json: &Value) -> Result<(LlamaConfig, bool), String> {
        let common: CommonConfig = read(json)?;
        let extra: Extra = read(json)?;
        let mut config = common.shape(ModelFamily::Starcoder2, extra.norm_epsilon);
        config.activation = extra.hidden_act;
        config.sliding_window = extra.sliding_window;
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
        // Tied unless the file carries its own output projection.
        let tie = tie_embeddings && !vb.contains_tensor("lm_head.weight");
        let c = config.clone();
        decoder(vb, config, tie, device, layer_norm, |l| {
            let f = l.pp("mlp");
            let [wq, wk, wv, wo] = attention(&l.pp("self_attn"), &c, true)?;
            Ok(Layer {
                attn_norm: layer_norm(l.pp("input_layernorm"), h)?,
                wq,
                wk,
                wv,
                wo,
                q_norm: None,
                k_norm: None,
                ffn_norm: layer_norm(l.pp("post_attention_layernorm"), h)?,
                gate: None,
                up: dense(f.pp("c_fc"), h, ffn, true)?,
                down: dense(f.pp("c_proj"), ffn, h, true)?,
            })
        })
    }
}
