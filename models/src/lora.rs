//! LoRA adapters: low-rank updates trained on top of frozen weights, saved on their own
//! (`adapter_config.json` + `adapter_model.safetensors`, tensor names as PEFT writes
//! them) and merged into the base model when a job loads the adapter folder.

use std::path::Path;

use candle_core::{DType, Tensor};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::llama::Llama;

/// The adapter weights' file name.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// The shape of the adapters to train.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank of each update.
    pub rank: usize,
    /// Scale numerator: updates are multiplied by `alpha / rank`.
    pub alpha: f64,
    /// The projections to adapt in every layer (`q_proj`, `v_proj`, …).
    pub targets: Vec<String>,
}

impl LoraConfig {
    pub(crate) fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// `adapter_config.json`: the adapter's shape and the base model it applies to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterConfig {
    /// The base model: a path on the machine that loads the adapter.
    pub base_model_name_or_path: String,
    /// Rank.
    pub r: usize,
    /// Scale numerator.
    pub lora_alpha: f64,
    /// Adapted projections.
    pub target_modules: Vec<String>,
    /// Always `LORA` (as PEFT writes it).
    #[serde(default = "lora_type")]
    pub peft_type: String,
}

fn lora_type() -> String {
    "LORA".into()
}

impl AdapterConfig {
    /// The config of adapters shaped by `lora` over the model at `base`.
    pub fn new(lora: &LoraConfig, base: &Path) -> AdapterConfig {
        AdapterConfig {
            base_model_name_or_path: base.display().to_string(),
            r: lora.rank,
            lora_alpha: lora.alpha,
            target_modules: lora.targets.clone(),
            peft_type: lora_type(),
        }
    }
}

/// The PEFT name of an adapter matrix (`A` or `B`) of `target` in layer `layer`.
pub(crate) fn tensor_name(layer: usize, target: &str, matrix: char) -> String {
    let block = if matches!(target, "gate_proj" | "up_proj" | "down_proj") {
        "mlp"
    } else {
        "self_attn"
    };
    format!("base_model.model.model.layers.{layer}.{block}.{target}.lora_{matrix}.weight")
}

/// Creates adapters for every layer's `lora.targets` in `params` and attaches them:
/// A uniform on ±1/√in (as PEFT's Kaiming init), B zero, so training starts from the
/// base model exactly.
pub(crate) fn attach_new(
    model: &mut Llama,
    params: &VarMap,
    lora: &LoraConfig,
    seed: u64,
) -> Result<(), ModelError> {
    if lora.rank == 0 || lora.targets.is_empty() {
        return Err(ModelError::Invalid(
            "LoRA needs a rank above 0 and at least one target projection".into(),
        ));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let device = model.device().clone();
    for layer in 0..model.config().num_layers {
        for target in &lora.targets {
            let (out, inp) = model.projection_shape(target)?;
            let bound = 1.0 / (inp as f32).sqrt();
            let a: Vec<f32> = (0..lora.rank * inp)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let a =
                candle_core::Var::from_tensor(&Tensor::from_vec(a, (lora.rank, inp), &device)?)?;
            let b = candle_core::Var::zeros((out, lora.rank), DType::F32, &device)?;
            {
                let mut data = params.data().lock().expect("var map");
                data.insert(tensor_name(layer, target, 'A'), a.clone());
                data.insert(tensor_name(layer, target, 'B'), b.clone());
            }
            model.attach_lora(
                layer,
                target,
                a.as_tensor().clone(),
                b.as_tensor().clone(),
                lora.scale(),
            )?;
        }
    }
    Ok(())
}
