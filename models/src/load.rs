//! Loading a causal LM from a GGUF file or a safetensors folder.

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::generate::CausalLm;
use crate::llama::{Llama, LlamaConfig, WeightFormat};
use crate::lora::{ADAPTER_WEIGHTS, AdapterConfig, LoraConfig};
use crate::tokenizer::TextTokenizer;
use crate::{Kernels, ModelError};

/// Loads the causal LM at `path`: a `.gguf` file, a folder holding one, or a folder with
/// `config.json`, `tokenizer.json` and `*.safetensors` (llama, mistral or qwen2), or a
/// LoRA adapter folder (`adapter_config.json`), merged into its base model at load.
///
/// On the CPU, its layers are then packed for this crate's kernels (see
/// [`Llama::use_kernels`](crate::Llama)); a model to train comes from
/// [`crate::TrainableLm`] instead.
pub fn load_causal_lm(
    path: &Path,
    format: WeightFormat,
    device: &Device,
) -> Result<CausalLm, ModelError> {
    load_causal_lm_with_kernels(path, format, device, Kernels::Native)
}

/// [`load_causal_lm`] running `kernels`: [`Kernels::Generic`] makes a CPU run the
/// tensor operations a GPU runs.
pub fn load_causal_lm_with_kernels(
    path: &Path,
    format: WeightFormat,
    device: &Device,
    kernels: Kernels,
) -> Result<CausalLm, ModelError> {
    let mut lm = load_unpacked(path, format, device)?;
    lm.model.use_kernels(kernels)?;
    Ok(lm)
}

/// [`load_causal_lm`] with its layers as loaded, such as an adapter's base model, which
/// has the adapter merged into it before it is packed.
pub(crate) fn load_unpacked(
    path: &Path,
    format: WeightFormat,
    device: &Device,
) -> Result<CausalLm, ModelError> {
    if path.join(ADAPTER_CONFIG).exists() {
        return load_with_adapter(path, device);
    }
    if let Some(gguf) = find_gguf(path)? {
        let tokenizer = gguf_tokenizer(&gguf)?;
        let model = Llama::from_gguf(&gguf, format, device)?;
        return Ok(CausalLm { model, tokenizer });
    }
    let (config, tie_embeddings) = hf_config(path)?;
    let weights = safetensors_files(path)?;
    let tokenizer = TextTokenizer::from_file(&path.join("tokenizer.json"))?;
    let model = Llama::from_safetensors(
        &weights,
        config,
        tie_embeddings,
        crate::llama::dense_dtype(format),
        device,
    )?;
    Ok(CausalLm { model, tokenizer })
}

/// The file that marks a folder as a LoRA adapter over a base model.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

/// The GGUF file `path` names: the file itself, or the one `.gguf` in a folder.
pub(crate) fn find_gguf(path: &Path) -> Result<Option<PathBuf>, ModelError> {
    if path.is_file() {
        return Ok(Some(path.to_path_buf()));
    }
    let ggufs = files_with_extension(path, "gguf")?;
    match ggufs.len() {
        0 => Ok(None),
        1 => Ok(ggufs.into_iter().next()),
        _ => Err(ModelError::Invalid(format!(
            "{} holds {} .gguf files; name one in the model's `path` (or `file`)",
            path.display(),
            ggufs.len()
        ))),
    }
}

/// The tokenizer of a GGUF model: `tokenizer.json` beside it, else its metadata's.
pub(crate) fn gguf_tokenizer(gguf: &Path) -> Result<TextTokenizer, ModelError> {
    let tokenizer_json = gguf.with_file_name("tokenizer.json");
    if tokenizer_json.exists() {
        TextTokenizer::from_file(&tokenizer_json)
    } else {
        TextTokenizer::from_gguf(gguf)
    }
}

/// The `*.safetensors` files of a model folder; an error when there are none.
pub(crate) fn safetensors_files(path: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let weights = files_with_extension(path, "safetensors")?;
    if weights.is_empty() {
        return Err(ModelError::NotFound(format!(
            "{} has neither a .gguf file nor .safetensors weights",
            path.display()
        )));
    }
    Ok(weights)
}

/// The shape of the model in folder `path` (its `config.json`, read by the family its
/// `model_type` names), and whether its embeddings are tied to the output projection.
pub(crate) fn hf_config(path: &Path) -> Result<(LlamaConfig, bool), ModelError> {
    let config_path = path.join("config.json");
    let text =
        std::fs::read_to_string(&config_path).map_err(|e| ModelError::io(&config_path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ModelError::Format(format!("{}: {e}", config_path.display())))?;
    let model_type = json
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("llama");
    let family = crate::families::by_model_type(model_type).ok_or_else(|| {
        ModelError::Unsupported(format!(
            "{}: model_type `{model_type}`; labelfleet runs {} from safetensors",
            config_path.display(),
            crate::families::known_model_types().join(", ")
        ))
    })?;
    family
        .config(&json)
        .map_err(|e| ModelError::Format(format!("{}: {e}", config_path.display())))
}

/// A Hugging Face `config.json` for a llama model of this shape.
pub(crate) fn hf_config_json(config: &LlamaConfig, tie_embeddings: bool) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "max_position_embeddings": config.max_positions,
        "tie_word_embeddings": tie_embeddings,
        "torch_dtype": "float32",
    })
}

fn files_with_extension(dir: &Path, extension: &str) -> Result<Vec<PathBuf>, ModelError> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    found.sort();
    Ok(found)
}

/// Loads the base model an adapter folder names (with f32 weights) and merges the
/// adapter into it.
pub(crate) fn load_with_adapter(dir: &Path, device: &Device) -> Result<CausalLm, ModelError> {
    let config_path = dir.join(ADAPTER_CONFIG);
    let text =
        std::fs::read_to_string(&config_path).map_err(|e| ModelError::io(&config_path, e))?;
    let config: AdapterConfig = serde_json::from_str(&text)
        .map_err(|e| ModelError::Format(format!("{}: {e}", config_path.display())))?;
    let base = PathBuf::from(&config.base_model_name_or_path);
    if !base.exists() {
        return Err(ModelError::NotFound(format!(
            "{}: the base model {} is not on this machine; put it there or retrain without LoRA",
            config_path.display(),
            base.display()
        )));
    }
    let mut lm = load_unpacked(&base, WeightFormat::F32, device)?;
    let weights_path = dir.join(ADAPTER_WEIGHTS);
    let tensors = candle_core::safetensors::load(&weights_path, device)?;
    let lora = LoraConfig {
        rank: config.r,
        alpha: config.lora_alpha,
        targets: config.target_modules.clone(),
    };
    for layer in 0..lm.model.config().num_layers {
        for target in &lora.targets {
            let get = |matrix: char| {
                let name = crate::lora::tensor_name(layer, target, matrix);
                tensors.get(&name).cloned().ok_or_else(|| {
                    ModelError::Format(format!("{}: no tensor `{name}`", weights_path.display()))
                })
            };
            lm.model
                .merge_lora(layer, target, &get('A')?, &get('B')?, lora.scale())?;
        }
    }
    Ok(lm)
}
