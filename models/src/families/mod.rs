//! The model families the decoder runs, one file each, behind one trait.
//!
//! A [`Family`] knows its `config.json` (which `model_type`s it reads and the shape
//! they give) and its weights' names in the Hugging Face layout, and builds the shared
//! decoder ([`Llama`]) from them in its arrangement: which norms, which feed-forward,
//! per-head query/key norms, a sliding window. The forward pass, the key/value cache,
//! the padding masks and the CPU kernels underneath are shared by every family, so a
//! new family is fast from its first day.
//!
//! - [`llama`]: llama, SmolLM, mistral, qwen2 (and the only family `retrain` trains);
//! - [`qwen3`]: llama's layers with an RMS norm over each query and key head;
//! - [`starcoder2`]: bigcode's StarCoder2: layer norm with bias, a GELU feed-forward,
//!   biased projections, sliding-window attention.

pub mod llama;
pub mod qwen3;
pub mod starcoder2;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use serde_json::Value;

use crate::ModelError;
use crate::llama::{Layer, Linear, Llama, LlamaConfig, ModelFamily, Norm};

/// One family of decoder models.
pub trait Family: Sync {
    /// Which family this is.
    fn family(&self) -> ModelFamily;

    /// The `model_type`s of `config.json` this family reads.
    fn model_types(&self) -> &'static [&'static str];

    /// The shape a `config.json` gives, and whether the output projection is the
    /// embedding matrix. Errors name the field.
    fn config(&self, json: &Value) -> Result<(LlamaConfig, bool), String>;

    /// The model from weights in the Hugging Face layout.
    fn build(
        &self,
        vb: VarBuilder,
        config: LlamaConfig,
        tie_embeddings: bool,
        device: &Device,
    ) -> Result<Llama, ModelError>;
}

/// Every family, in the order error messages list them.
pub const FAMILIES: [&dyn Family; 3] =
    [&llama::LlamaFamily, &qwen3::Qwen3, &starcoder2::Starcoder2];

/// The family that reads `model_type`.
pub fn by_model_type(model_type: &str) -> Option<&'static dyn Family> {
    FAMILIES
        .into_iter()
        .find(|f| f.model_types().contains(&model_type))
}

/// The family of a shape.
pub fn of(family: ModelFamily) -> &'static dyn Family {
    FAMILIES
        .into_iter()
        .find(|f| f.family() == family)
        .expect("every family has a file")
}

/// Every `model_type` some family reads, for error messages.
pub fn known_model_types() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.model_types().iter().copied())
        .collect()
}

/// The `config.json` fields every family shares.
#[derive(Debug, Deserialize)]
pub(crate) struct CommonConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    #[serde(default = "default_theta")]
    pub rope_theta: f32,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
}

fn default_theta() -> f32 {
    10_000.0
}

fn default_positions() -> usize {
    4096
}

impl CommonConfig {
    /// The llama shape of these fields (`hidden / heads` wide heads, no window, a
    /// gated SiLU feed-forward), with norms of epsilon `eps`, for `family`; a family
    /// changes what differs.
    pub(crate) fn shape(&self, family: ModelFamily, eps: f64) -> LlamaConfig {
        LlamaConfig {
            family,
            ..LlamaConfig::llama(
                self.vocab_size,
                self.hidden_size,
                self.intermediate_size,
                self.num_hidden_layers,
                self.num_attention_heads,
                self.num_key_value_heads.unwrap_or(self.num_attention_heads),
                eps,
                self.rope_theta,
                self.max_position_embeddings,
            )
        }
    }
}

/// Reads a family's view of `config.json`, naming the field at fault.
pub(crate) fn read<T: serde::de::DeserializeOwned>(json: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(json.clone()).map_err(|e| {
        let path = e.path().to_string();
        format!("at `{path}`: {}", e.into_inner())
    })
}

/// A projection `vb` holds, `(outputs, inputs)`, with its bias when `bias` says to look
/// for one and the file has it.
pub(crate) fn dense(
    vb: VarBuilder,
    inputs: usize,
    outputs: usize,
    bias: bool,
) -> candle_core::Result<Linear> {
    let weight = vb.get((outputs, inputs), "weight")?;
    let bias = if bias && vb.contains_tensor("bias") {
        Some(vb.get(outputs, "bias")?)
    } else {
        None
    };
    Ok(Linear::Dense(candle_nn::Linear::new(weight, bias)))
}

/// An RMS norm of width `width`.
pub(crate) fn rms_norm(vb: VarBuilder, width: usize) -> candle_core::Result<Norm> {
    Ok(Norm::rms(vb.get(width, "weight")?))
}

/// A layer norm (weight and bias) of width `width`.
pub(crate) fn layer_norm(vb: VarBuilder, width: usize) -> candle_core::Result<Norm> {
    Ok(Norm {
        weight: vb.get(width, "weight")?,
        bias: Some(vb.get(width, "bias")?),
    })
}

/// The output projection: the embedding matrix when tied, else `lm_head`.
fn lm_head(
    vb: &VarBuilder,
    embeddings: &Tensor,
    config: &LlamaConfig,
    tie_embeddings: bool,
) -> candle_core::Result<Linear> {
    if tie_embeddings {
        Ok(Linear::Dense(candle_nn::Linear::new(
            embeddings.clone(),
            None,
        )))
    } else {
        dense(
            vb.pp("lm_head"),
            config.hidden_size,
            config.vocab_size,
            false,
        )
    }
}

/// A layer's attention projections under `self_attn` (`q_proj`, `k_proj`, `v_proj`,
/// `o_proj`), with their biases where the file has them (`o_proj`'s only when
/// `o_bias`: llama's files never carry one).
pub(crate) fn attention(
    a: &VarBuilder,
    config: &LlamaConfig,
    o_bias: bool,
) -> candle_core::Result<[Linear; 4]> {
    let h = config.hidden_size;
    let (q, kv) = (
        config.num_heads * config.head_dim,
        config.num_kv_heads * config.head_dim,
    );
    Ok([
        dense(a.pp("q_proj"), h, q, true)?,
        dense(a.pp("k_proj"), h, kv, true)?,
        dense(a.pp("v_proj"), h, kv, true)?,
        dense(a.pp("o_proj"), q, h, o_bias)?,
    ])
}

/// The decoder a family's parts make, in the Hugging Face layout: the embeddings
/// (`model.embed_tokens`), each layer as `layer` builds it from `model.layers.N`, the
/// final norm as `norm` reads `model.norm`, and the output projection.
pub(crate) fn decoder(
    vb: VarBuilder,
    config: LlamaConfig,
    tie_embeddings: bool,
    device: &Device,
    norm: fn(VarBuilder, usize) -> candle_core::Result<Norm>,
    layer: impl Fn(VarBuilder) -> candle_core::Result<Layer>,
) -> Result<Llama, ModelError> {
    let m = vb.pp("model");
    let embeddings = m
        .pp("embed_tokens")
        .get((config.vocab_size, config.hidden_size), "weight")?;
    let layers = (0..config.num_layers)
        .map(|i| layer(m.pp(format!("layers.{i}"))))
        .collect::<candle_core::Result<Vec<Layer>>>()?;
    let final_norm = norm(m.pp("norm"), config.hidden_size)?;
    let head = lm_head(&vb, &embeddings, &config, tie_embeddings)?;
    Llama::assemble(config, embeddings, layers, final_norm, head, device)
}
