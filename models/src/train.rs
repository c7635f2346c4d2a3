//! Fine-tuning a llama-family model with candle: the model's trainable parameters, the
//! completion-only loss, AdamW with state that can be saved and restored, the learning
//! rate schedule and gradient clipping.
//!
//! A [`TrainableLm`] holds its parameters in a `VarMap` (every weight for a full
//! fine-tune, only the low-rank adapters with [`LoraConfig`]) and a [`Llama`] built over
//! the same tensors, so an optimizer step is seen by the next forward pass. Examples
//! are [`TokenizedExample`]s: prompt tokens then completion tokens, of which only the
//! completion is scored. [`completion_nll`] scores any [`Llama`], trainable or not,
//! which is also how `eval` measures a checkpoint's loss.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::ModelError;
use crate::llama::{HfWeights, Llama, LlamaConfig};
use crate::load::{find_gguf, gguf_tokenizer, hf_config, hf_config_json, safetensors_files};
use crate::lora::{AdapterConfig, LoraConfig};
use crate::tokenizer::TextTokenizer;

/// One training example: the prompt's tokens followed by the completion's; the loss
/// covers only the completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedExample {
    /// Prompt then completion.
    pub tokens: Vec<u32>,
    /// Where the completion starts in `tokens`.
    pub completion_start: usize,
}

impl TokenizedExample {
    /// Tokenizes `prompt` and `completion` separately (as generation sees them) and
    /// keeps at most `max_tokens`, dropping the start of the prompt when it is too long.
    pub fn new(
        tokenizer: &TextTokenizer,
        prompt: &str,
        completion: &str,
        max_tokens: usize,
    ) -> Result<TokenizedExample, ModelError> {
        let mut prompt_tokens: Vec<u32> = tokenizer.bos.into_iter().collect();
        prompt_tokens.extend(tokenizer.encode(prompt)?);
        let completion_tokens = tokenizer.encode(completion)?;
        if completion_tokens.is_empty() || completion_tokens.len() + 1 > max_tokens {
            return Err(ModelError::Invalid(format!(
                "a completion of {} tokens does not fit in {max_tokens} tokens with its prompt",
                completion_tokens.len()
            )));
        }
        let keep = (max_tokens - completion_tokens.len()).min(prompt_tokens.len());
        let mut tokens = prompt_tokens[prompt_tokens.len() - keep..].to_vec();
        let completion_start = tokens.len();
        tokens.extend(completion_tokens);
        Ok(TokenizedExample {
            tokens,
            completion_start,
        })
    }

    /// Tokens the loss is computed on.
    pub fn scored_tokens(&self) -> usize {
        self.tokens.len() - self.completion_start
    }
}

/// The summed negative log-likelihood of every completion token in `batch` (a scalar
/// tensor that gradients flow through) and how many tokens it covers. Rows are
/// left-padded to a common length.
pub fn completion_nll(
    model: &Llama,
    batch: &[&TokenizedExample],
) -> Result<(Tensor, usize), ModelError> {
    let len = batch.iter().map(|e| e.tokens.len()).max().unwrap_or(0);
    let mut tokens = Vec::with_capacity(batch.len());
    let mut padding = Vec::with_capacity(batch.len());
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    for (row, example) in batch.iter().enumerate() {
        let pad = len - example.tokens.len();
        let mut padded = vec![0u32; pad];
        padded.extend(&example.tokens);
        tokens.push(padded);
        padding.push(pad);
        // Position p's logits predict token p + 1.
        for j in example.completion_start.max(1)..example.tokens.len() {
            positions.push((row * len + pad + j - 1) as u32);
            targets.push(example.tokens[j]);
        }
    }
    if targets.is_empty() {
        return Err(ModelError::Invalid(
            "the batch has no completion tokens".into(),
        ));
    }
    let device = model.device();
    let hidden = model.hidden_for_training(&tokens, &padding)?;
    let hidden = hidden.reshape((batch.len() * len, model.config().hidden_size))?;
    let positions = Tensor::new(positions, device)?;
    let logits = model.logits(&hidden.index_select(&positions, 0)?)?;
    let count = targets.len();
    let targets = Tensor::new(targets, device)?;
    let mean = candle_nn::loss::cross_entropy(&logits, &targets)?;
    Ok(((mean * count as f64)?, count))
}

/// The mean loss per completion token of `model` over `examples`, in batches of
/// `batch_size`; `None` when there is nothing to score.
pub fn mean_completion_loss(
    model: &Llama,
    examples: &[TokenizedExample],
    batch_size: usize,
) -> Result<Option<f64>, ModelError> {
    let (mut sum, mut tokens) = (0f64, 0usize);
    for batch in examples.chunks(batch_size.max(1)) {
        let refs: Vec<&TokenizedExample> = batch.iter().collect();
        let (nll, count) = completion_nll(model, &refs)?;
        sum += nll.to_scalar::<f32>()? as f64;
        tokens += count;
    }
    Ok((tokens > 0).then(|| sum / tokens as f64))
}

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

/// How the learning rate moves after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schedule {
    /// Stays at the peak.
    Constant,
    /// Falls linearly to `min_ratio` × peak at the last step.
    Linear,
    /// Follows half a cosine down to `min_ratio` × peak at the last step.
    #[default]
    Cosine,
}

/// The learning rate of optimizer step `step` (from 0) of `total`: linear warm-up over
/// `warmup` steps to `peak`, then `schedule` down to `min_ratio` × `peak`.
pub fn learning_rate(
    step: usize,
    total: usize,
    warmup: usize,
    peak: f64,
    schedule: Schedule,
    min_ratio: f64,
) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    let floor = peak * min_ratio;
    match schedule {
        Schedule::Constant => peak,
        Schedule::Linear => peak - (peak - floor) * progress,
        Schedule::Cosine => {
            floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

/// Adds `more` into `total`, gradient by gradient (accumulation over micro-batches).
pub fn accumulate(
    total: &mut GradStore,
    more: GradStore,
    params: &[(String, Var)],
) -> Result<(), ModelError> {
    for (_, var) in params {
        if let Some(g) = more.get(var) {
            let sum = match total.get(var) {
                Some(t) => (t + g)?,
                None => g.clone(),
            };
            total.insert(var, sum);
        }
    }
    Ok(())
}

/// Scales the gradients down so that their global L2 norm is at most `max_norm`;
/// returns the norm before clipping.
pub fn clip_grad_norm(
    grads: &mut GradStore,
    params: &[(String, Var)],
    max_norm: f64,
) -> Result<f64, ModelError> {
    let mut squares = 0f64;
    for (_, var) in params {
        if let Some(g) = grads.get(var) {
            squares += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = squares.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for (_, var) in params {
            if let Some(g) = grads.get(var) {
                let scaled = (g * scale)?;
                grads.insert(var, scaled);
            }
        }
    }
    Ok(norm)
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Mean loss per completion token over the step's examples.
    pub loss: f64,
    /// The gradients' global norm before clipping.
    pub grad_norm: f64,
    /// Tokens (prompt and completion) run through the model.
    pub tokens: usize,
}

/// One optimizer step of `model` over `micro_batches`: forward and backward per
/// micro-batch, gradients summed (each loss divided by the whole step's completion
/// tokens, so accumulation equals one large batch), clipped to `max_grad_norm` (0 for
/// no clipping), then an AdamW update with learning rate `lr`.
pub fn optimizer_step(
    model: &Llama,
    optimizer: &mut AdamW,
    micro_batches: &[Vec<&TokenizedExample>],
    max_grad_norm: f64,
    lr: f64,
) -> Result<StepReport, ModelError> {
    let scored: usize = micro_batches
        .iter()
        .flatten()
        .map(|e| e.scored_tokens())
        .sum();
    let params = optimizer.params().to_vec();
    let mut total: Option<GradStore> = None;
    let (mut loss_sum, mut tokens) = (0f64, 0usize);
    for batch in micro_batches {
        tokens += batch.iter().map(|e| e.tokens.len()).sum::<usize>();
        let (nll, _) = completion_nll(model, batch)?;
        loss_sum += nll.to_scalar::<f32>()? as f64;
        let grads = (nll / scored.max(1) as f64)?.backward()?;
        match total.as_mut() {
            None => total = Some(grads),
            Some(t) => accumulate(t, grads, &params)?,
        }
    }
    let mut grads =
        total.ok_or_else(|| ModelError::Invalid("a step needs a micro-batch".into()))?;
    let grad_norm = clip_grad_norm(&mut grads, &params, max_grad_norm)?;
    optimizer.step(&grads, lr)?;
    Ok(StepReport {
        loss: loss_sum / scored.max(1) as f64,
        grad_norm,
        tokens,
    })
}

/// AdamW's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay, applied to matrices only (not norms or biases).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// AdamW whose moments can be saved and restored, so that a resumed run takes the same
/// steps as one that never stopped (candle-nn's AdamW keeps its state private).
pub struct AdamW {
    params: Vec<(String, Var)>,
    first: Vec<Tensor>,
    second: Vec<Tensor>,
    steps: usize,
    config: AdamWConfig,
}

impl AdamW {
    /// An optimizer for `params` with zeroed moments.
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig) -> Result<AdamW, ModelError> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        let first = params
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<Result<_, _>>()?;
        let second = params
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<Result<_, _>>()?;
        Ok(AdamW {
            params,
            first,
            second,
            steps: 0,
            config,
        })
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The parameters it updates.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// One update with learning rate `lr`.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<(), ModelError> {
        self.steps += 1;
        let c = self.config;
        let t = self.steps as i32;
        let (fix1, fix2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for (i, (_, var)) in self.params.iter().enumerate() {
            let Some(g) = grads.get(var) else {
                continue;
            };
            let g = g.detach();
            let m = ((&self.first[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.second[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&m / fix1)? / ((&v / fix2)?.sqrt()? + c.eps)?)?;
            let theta = var.as_tensor().detach();
            let decayed = if c.weight_decay > 0.0 && theta.rank() >= 2 {
                (&theta * (1.0 - lr * c.weight_decay))?
            } else {
                theta
            };
            var.set(&(decayed - (update * lr)?)?)?;
            self.first[i] = m;
            self.second[i] = v;
        }
        Ok(())
    }

    /// The moments as named tensors (`first.NAME`, `second.NAME`) for a checkpoint.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.insert(format!("first.{name}"), self.first[i].clone());
            out.insert(format!("second.{name}"), self.second[i].clone());
        }
        out
    }

    /// Restores moments saved by [`AdamW::state`] after `steps` steps.
    pub fn restore(
        &mut self,
        state: &HashMap<String, Tensor>,
        steps: usize,
    ) -> Result<(), ModelError> {
        for (i, (name, _)) in self.params.iter().enumerate() {
            let get = |prefix: &str| {
                state
                    .get(&format!("{prefix}.{name}"))
                    .cloned()
                    .ok_or_else(|| {
                        ModelError::Format(format!("the optimizer state has no `{prefix}.{name}`"))
                    })
            };
            self.first[i] = get("first")?;
            self.second[i] = get("second")?;
        }
        self.steps = steps;
        Ok(())
    }
}

/// Serialises named tensors to safetensors bytes.
pub fn safetensors_bytes(tensors: &HashMap<String, Tensor>) -> Result<Vec<u8>, ModelError> {
    let file = tempfile_path()?;
    candle_core::safetensors::save(tensors, &file)?;
    let bytes = std::fs::read(&file).map_err(|e| ModelError::io(&file, e));
    let _ = std::fs::remove_file(&file);
    bytes
}

/// Reads named tensors from safetensors bytes.
pub fn tensors_from_bytes(
    bytes: &[u8],
    device: &Device,
) -> Result<HashMap<String, Tensor>, ModelError> {
    Ok(candle_core::safetensors::load_buffer(bytes, device)?)
}

fn tempfile_path() -> Result<PathBuf, ModelError> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(std::env::temp_dir().join(format!("labelfleet-{}-{n}.safetensors", std::process::id())))
}
