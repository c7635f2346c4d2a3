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
use crate::llama::{Linear, Llama, LlamaConfig, ModelFamily, Norm};

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
pub(crate) fn lm_head(
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
