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

use super::{CommonConfig, Family, dense, layer_norm, lm_head, read};
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
    #[serde(default = "yes")]
    use_bias: bool,
    sliding_window: Option<usize>,
    #[serde(default = "yes")]
    tie_word_embeddings: bool,
}

fn default_eps() -> f64 {
    1e-5
}

fn default_act() -> Activation {
    Activation::GeluPytorchTanh
}

fn yes() -> bool {
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
        let c: CommonConfig = read(json)?;
        let extra: Extra = read(json)?;
        let mut config = LlamaConfig::llama(
            c.vocab_size,
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            extra.norm_epsilon,
            c.rope_theta,
            c.max_position_embeddings,
        );
        config.family = ModelFamily::Starcoder2;
        config.activation = extra.hidden_act;
        config.sliding_window = extra.sliding_window;
        let _ = extra.use_bias;
        Ok((config, extra.tie_word_embeddings))
    }

    fn build(
        &self,
        vb: VarBuilder,
        config: LlamaConfig,
        tie_embeddings: bool,
        device: &Device,
    ) -> Result<Llama, ModelError> {
        let h = config.hidden_size;
        let (q, kv) = (
            config.num_heads * config.head_dim,
            config.num_kv_heads * config.head_dim,
        );
        let ffn = config.intermediate_size;
        let m = vb.pp("model");
        let embeddings = m.pp("embed_tokens").get((config.vocab_size, h), "weight")?;
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let l = m.pp(format!("layers.{i}"));
            let (a, f) = (l.pp("self_attn"), l.pp("mlp"));
            layers.push(Layer {
                attn_norm: layer_norm(l.pp("input_layernorm"), h)?,
                wq: dense(a.pp("q_proj"), h, q, true)?,
                wk: dense(a.pp("k_proj"), h, kv, true)?,
                wv: dense(a.pp("v_proj"), h, kv, true)?,
                wo: dense(a.pp("o_proj"), q, h, true)?,
                q_norm: None,
                k_norm: None,
                ffn_norm: layer_norm(l.pp("post_attention_layernorm"), h)?,
                gate: None,
                up: dense(f.pp("c_fc"), h, ffn, true)?,
                down: dense(f.pp("c_proj"), ffn, h, true)?,
            });
        }
        let norm = layer_norm(m.pp("norm"), h)?;
        // Tied unless the file carries its own output projection.
        let tie = tie_embeddings && !vb.contains_tensor("lm_head.weight");
        let head = lm_head(&vb, &embeddings, &config, tie)?;
        Llama::assemble(config, embeddings, layers, norm, head, device)
    }
}
