//! A causal LM whose parameters can be trained, saved and restored, and random
//! weights to start tiny test models from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::ModelError;
use crate::llama::{HfWeights, Llama, LlamaConfig};
use crate::load::{find_gguf, gguf_tokenizer, hf_config, hf_config_json, safetensors_files};
use crate::lora::{AdapterConfig, LoraConfig};
use crate::tokenizer::TextTokenizer;

/// A causal LM whose parameters can be trained.
pub struct TrainableLm {
    /// The model, over the trainable tensors (and the frozen base, with LoRA).
    pub model: Llama,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// The trainable parameters.
    params: VarMap,
    tie_embeddings: bool,
    lora: Option<LoraConfig>,
    /// Where the base model was read from (an adapter names it).
    base_path: Option<PathBuf>,
}

impl TrainableLm {
    /// Reads a model to fine-tune: a `.gguf` file (dequantized to f32) or a folder of
    /// safetensors with `config.json` and `tokenizer.json`. With `lora`, the weights
    /// stay frozen and adapters initialised from `seed` are trained instead.
    pub fn load(
        path: &Path,
        lora: Option<LoraConfig>,
        seed: u64,
        device: &Device,
    ) -> Result<TrainableLm, ModelError> {
        let (weights, tokenizer) = match find_gguf(path)? {
            Some(gguf) => (HfWeights::from_gguf(&gguf, device)?, gguf_tokenizer(&gguf)?),
            None => {
                let (config, tie_embeddings) = hf_config(path)?;
                let mut tensors = HashMap::new();
                for file in safetensors_files(path)? {
                    tensors.extend(candle_core::safetensors::load(&file, device)?);
                }
                let tokenizer = TextTokenizer::from_file(&path.join("tokenizer.json"))?;
                let weights = HfWeights {
                    config,
                    tie_embeddings,
                    tensors,
                };
                (weights, tokenizer)
            }
        };
        weights.config.family.check_trainable(path)?;
        let base_path = std::path::absolute(path).ok();
        let mut lm = TrainableLm::new(weights, tokenizer, lora, seed, device)?;
        lm.base_path = base_path;
        Ok(lm)
    }

    /// A trainable model from weights in memory.
    pub fn new(
        weights: HfWeights,
        tokenizer: TextTokenizer,
        lora: Option<LoraConfig>,
        seed: u64,
        device: &Device,
    ) -> Result<TrainableLm, ModelError> {
        let HfWeights {
            config,
            tie_embeddings,
            tensors,
        } = weights;
        let params = VarMap::new();
        let model = match &lora {
            None => {
                {
                    let mut data = params.data().lock().expect("var map");
                    for (name, tensor) in tensors {
                        data.insert(name, Var::from_tensor(&tensor.to_dtype(DType::F32)?)?);
                    }
                }
                let vb = VarBuilder::from_varmap(&params, DType::F32, device);
                Llama::from_var_builder(vb, config, tie_embeddings, device)?
            }
            Some(lora) => {
                // The base weights stay plain tensors (frozen); the model holds them.
                let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
                let mut model = Llama::from_var_builder(vb, config, tie_embeddings, device)?;
                crate::lora::attach_new(&mut model, &params, lora, seed)?;
                model
            }
        };
        Ok(TrainableLm {
            model,
            tokenizer,
            params,
            tie_embeddings,
            lora,
            base_path: None,
        })
    }

    /// The trainable parameters, sorted by name (a stable order for the optimizer).
    pub fn parameters(&self) -> Vec<(String, Var)> {
        let data = self.params.data().lock().expect("var map");
        let mut vars: Vec<(String, Var)> =
            data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// How many numbers training updates.
    pub fn trainable_count(&self) -> usize {
        self.parameters()
            .iter()
            .map(|(_, v)| v.as_tensor().elem_count())
            .sum()
    }

    /// The trainable parameters as a safetensors map (what a checkpoint stores).
    pub fn parameter_tensors(&self) -> HashMap<String, Tensor> {
        self.parameters()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect()
    }

    /// Overwrites the trainable parameters with saved values (resuming a checkpoint).
    pub fn restore_parameters(&self, saved: &HashMap<String, Tensor>) -> Result<(), ModelError> {
        for (name, var) in self.parameters() {
            let value = saved.get(&name).ok_or_else(|| {
                ModelError::Format(format!("the checkpoint has no parameter `{name}`"))
            })?;
            var.set(value)?;
        }
        Ok(())
    }

    /// Writes the model where [`crate::load_causal_lm`] reads it: `config.json`,
    /// `tokenizer.json` and `model.safetensors` for a full fine-tune;
    /// `adapter_config.json` and `adapter_model.safetensors` (naming the base) with LoRA.
    pub fn save(&self, dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let write = |name: &str, bytes: Vec<u8>| -> Result<PathBuf, ModelError> {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(|e| ModelError::io(&path, e))?;
            Ok(path)
        };
        let mut files = Vec::new();
        match &self.lora {
            None => {
                let config = hf_config_json(self.model.config(), self.tie_embeddings);
                files.push(write(
                    "config.json",
                    serde_json::to_vec_pretty(&config).expect("config serialises"),
                )?);
                let path = dir.join("tokenizer.json");
                self.tokenizer
                    .inner
                    .save(&path, false)
                    .map_err(ModelError::tokenizer)?;
                files.push(path);
                let path = dir.join("model.safetensors");
                candle_core::safetensors::save(&self.parameter_tensors(), &path)?;
                files.push(path);
            }
            Some(lora) => {
                let base = self.base_path.as_ref().ok_or_else(|| {
                    ModelError::Invalid(
                        "an adapter needs its base model's path; load the base with TrainableLm::load"
                            .into(),
                    )
                })?;
                let config = AdapterConfig::new(lora, base);
                files.push(write(
                    crate::load::ADAPTER_CONFIG,
                    serde_json::to_vec_pretty(&config).expect("config serialises"),
                )?);
                let path = dir.join(crate::lora::ADAPTER_WEIGHTS);
                candle_core::safetensors::save(&self.parameter_tensors(), &path)?;
                files.push(path);
            }
        }
        Ok(files)
    }
}

/// Random weights for a llama of this shape: normal(0, 0.02)-like uniform noise in the
/// projections and embeddings, ones in the norms. Tests train such tiny models.
pub fn random_weights(
    config: LlamaConfig,
    tie_embeddings: bool,
    seed: u64,
    device: &Device,
) -> Result<HfWeights, ModelError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut noise = |shape: (usize, usize)| -> candle_core::Result<Tensor> {
        // Uniform on ±√3·σ has standard deviation σ = 0.02.
        let bound = 0.02f32 * 3f32.sqrt();
        let data: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        Tensor::from_vec(data, shape, device)
    };
    let (h, i) = (config.hidden_size, config.intermediate_size);
    let kv = config.num_kv_heads * (h / config.num_heads);
    let mut tensors = HashMap::new();
    tensors.insert(
        "model.embed_tokens.weight".to_string(),
        noise((config.vocab_size, h))?,
    );
    if !tie_embeddings {
        tensors.insert("lm_head.weight".to_string(), noise((config.vocab_size, h))?);
    }
    tensors.insert(
        "model.norm.weight".to_string(),
        Tensor::ones(h, DType::F32, device)?,
    );
    for l in 0..config.num_layers {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("self_attn.q_proj", (h, h)),
            ("self_attn.k_proj", (kv, h)),
            ("self_attn.v_proj", (kv, h)),
            ("self_attn.o_proj", (h, h)),
            ("mlp.gate_proj", (i, h)),
            ("mlp.up_proj", (i, h)),
            ("mlp.down_proj", (h, i)),
        ] {
            tensors.insert(format!("{p}.{name}.weight"), noise(shape)?);
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            tensors.insert(
                format!("{p}.{norm}.weight"),
                Tensor::ones(h, DType::F32, device)?,
            );
        }
    }
    Ok(HfWeights {
        config,
        tie_embeddings,
        tensors,
    })
}
