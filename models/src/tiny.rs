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
    LlamaConfig {
        vocab_size,
        hidden_size: 64,
        intermediate_size: 128,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_positions: 1024,
        rope_interleaved: false,
    }
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
