//! Tiny models built from scratch: a byte-level BPE tokenizer trained on the texts at
//! hand and a randomly initialised llama small enough to train in seconds on a CPU.
//! Tests and smoke runs use them where a real model would take minutes.

use std::path::Path;

use candle_core::Device;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::ModelError;
use crate::llama::LlamaConfig;
use crate::tokenizer::TextTokenizer;
use crate::train::{TrainableLm, random_weights};

/// The end-of-text token of tiny tokenizers.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Trains a byte-level BPE tokenizer of at most `vocab_size` tokens on `texts`.
pub fn train_tokenizer(texts: &[String], vocab_size: usize) -> Result<TextTokenizer, ModelError> {
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(ModelError::tokenizer)?;
    let eos = tokenizer.token_to_id(END_OF_TEXT);
    Ok(TextTokenizer {
        inner: tokenizer,
        eos,
        bos: None,
    })
}

/// The shape of a tiny llama over a vocabulary of `vocab_size` tokens: 2 layers,
/// width 64, grouped-query attention (4 query heads, 2 key/value heads).
pub fn tiny_config(vocab_size: usize) -> LlamaConfig {
    LlamaConfig::llama(vocab_size, 64, 128, 2, 4, 2, 1e-5, 10_000.0, 1024)
}

/// Writes a tiny llama (tokenizer trained on `texts`, weights from `seed`) into `dir`,
/// in the layout `load_causal_lm` and `TrainableLm::load` read.
pub fn write_tiny_model(dir: &Path, texts: &[String], seed: u64) -> Result<(), ModelError> {
    let tokenizer = train_tokenizer(texts, 512)?;
    let config = tiny_config(tokenizer.inner.get_vocab_size(true));
    let device = Device::Cpu;
    let weights = random_weights(config, true, seed, &device)?;
    TrainableLm::new(weights, tokenizer, None, seed, &device)?.save(dir)?;
    Ok(())
}

/// The shape of a random model of any family (`write_random_family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyShape {
    /// Vocabulary size.
    pub vocab: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Width of the feed-forward layer.
    pub ffn: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads (each `hidden / heads` wide).
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
}

/// Writes a tiny model of another family (`qwen3` or `starcoder2`: tokenizer trained
/// on `texts`, random weights from `seed`) into `dir` as safetensors with its
/// `config.json`, in the layout `load_causal_lm` reads: enough to run a family through
/// a job in seconds.
pub fn write_tiny_family(
    dir: &Path,
    texts: &[String],
    seed: u64,
    model_type: &str,
) -> Result<(), ModelError> {
    let tokenizer = train_tokenizer(texts, 512)?;
    let shape = FamilyShape {
        vocab: tokenizer.inner.get_vocab_size(true),
        hidden: 64,
        ffn: 128,
        layers: 2,
        heads: 4,
        kv_heads: 2,
    };
    write_random_family(dir, model_type, shape, seed)?;
    tokenizer
        .inner
        .save(dir.join("tokenizer.json"), false)
        .map_err(ModelError::tokenizer)?;
    Ok(())
}

/// Writes a `qwen3` or `starcoder2` model of `shape` with random weights from `seed`
/// (norms at 1) into `dir`: `config.json` and `model.safetensors`, no tokenizer.
pub fn write_random_family(
    dir: &Path,
    model_type: &str,
    shape: FamilyShape,
    seed: u64,
) -> Result<(), ModelError> {
    use rand::{Rng, SeedableRng};
    let FamilyShape {
        vocab,
        hidden,
        ffn,
        layers,
        heads,
        kv_heads,
    } = shape;
    let common = serde_json::json!({
        "model_type": model_type, "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": ffn, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "max_position_embeddings": 1024,
    });
    let mut config = common.as_object().cloned().expect("an object");
    let head_dim = hidden / heads;
    let (kv, mut shapes) = (kv_heads * head_dim, Vec::new());
    shapes.push(("model.embed_tokens.weight".to_string(), vec![vocab, hidden]));
    let attention = [
        ("self_attn.q_proj", hidden, hidden),
        ("self_attn.k_proj", kv, hidden),
        ("self_attn.v_proj", kv, hidden),
        ("self_attn.o_proj", hidden, hidden),
    ];
    // What differs: the config's own fields, the feed-forward, whether every
    // projection and norm has a bias (starcoder2), whether heads are normed (qwen3).
    let (extra, mlp, biased, head_norms) = match model_type {
        "qwen3" => (
            serde_json::json!({
                "head_dim": head_dim, "rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0,
                "tie_word_embeddings": true, "hidden_act": "silu", "attention_bias": false,
                "sliding_window": null, "use_sliding_window": false,
                "max_window_layers": layers
            }),
            vec![
                ("mlp.gate_proj", ffn, hidden),
                ("mlp.up_proj", ffn, hidden),
                ("mlp.down_proj", hidden, ffn),
            ],
            false,
            true,
        ),
        "starcoder2" => (
            serde_json::json!({
                "norm_epsilon": 1e-5, "rope_theta": 100_000.0, "use_bias": true,
                "sliding_window": 512, "hidden_act": "gelu_pytorch_tanh"
            }),
            vec![("mlp.c_fc", ffn, hidden), ("mlp.c_proj", hidden, ffn)],
            true,
            false,
        ),
        other => {
            return Err(ModelError::Unsupported(format!(
                "no tiny `{other}`: use qwen3 or starcoder2 (or write_tiny_model for llama)"
            )));
        }
    };
    config.extend(extra.as_object().cloned().expect("an object"));
    let parts: &[&str] = if biased {
        &["weight", "bias"]
    } else {
        &["weight"]
    };
    for part in parts {
        shapes.push((format!("model.norm.{part}"), vec![hidden]));
    }
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        for (name, out, inp) in attention.iter().chain(&mlp) {
            shapes.push((format!("{p}.{name}.weight"), vec![*out, *inp]));
            if biased {
                shapes.push((format!("{p}.{name}.bias"), vec![*out]));
            }
        }
        if head_norms {
            for norm in ["self_attn.q_norm", "self_attn.k_norm"] {
                shapes.push((format!("{p}.{norm}.weight"), vec![head_dim]));
            }
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            for part in parts {
                shapes.push((format!("{p}.{norm}.{part}"), vec![hidden]));
            }
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut tensors = std::collections::HashMap::new();
    for (name, shape) in shapes {
        let count: usize = shape.iter().product();
        let is_norm_weight = name.ends_with("norm.weight");
        let data: Vec<f32> = (0..count)
            .map(|_| {
                if is_norm_weight {
                    1.0
                } else {
                    rng.random_range(-0.035f32..0.035)
                }
            })
            .collect();
        let tensor = candle_core::Tensor::from_vec(data, shape, &Device::Cpu)?;
        tensors.insert(name, tensor);
    }
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    let config_path = dir.join("config.json");
    std::fs::write(
        &config_path,
        serde_json::to_vec_pretty(&serde_json::Value::Object(config)).expect("JSON"),
    )
    .map_err(|e| ModelError::io(&config_path, e))?;
    Ok(())
}
