//! Tokenizers: `tokenizer.json` when a model folder has one, otherwise built from a GGUF
//! file's metadata (GPT-2 style byte-level BPE: `tokenizer.ggml.tokens` and `.merges`).

use std::path::Path;

use candle_core::quantized::gguf_file;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use crate::ModelError;

/// A tokenizer and the special tokens generation needs.
#[derive(Clone)]
pub struct TextTokenizer {
    /// The tokenizer.
    pub inner: Tokenizer,
    /// Token that ends a sequence, if the model has one.
    pub eos: Option<u32>,
    /// Token prepended to every prompt, when the model asks for one.
    pub bos: Option<u32>,
}

impl TextTokenizer {
    /// Reads `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<TextTokenizer, ModelError> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| ModelError::Format(format!("{}: {e}", path.display())))?;
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        Ok(TextTokenizer {
            eos: find(&["</s>", "<|endoftext|>", "<|im_end|>", "<|end_of_text|>"]),
            bos: None,
            inner,
        })
    }

    /// Builds the byte-level BPE tokenizer a GGUF file describes.
    pub fn from_gguf(path: &Path) -> Result<TextTokenizer, ModelError> {
        let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| ModelError::Format(format!("{}: not a GGUF file: {e}", path.display())))?;
        let md = &content.metadata;
        let strings = |key: &str| -> Result<Vec<String>, ModelError> {
            md.get(key)
                .ok_or_else(|| {
                    ModelError::Format(format!(
                        "{}: no `{key}` in the GGUF metadata; put a tokenizer.json beside it",
                        path.display()
                    ))
                })?
                .to_vec()
                .map_err(|e| ModelError::Format(format!("`{key}`: {e}")))?
                .iter()
                .map(|v| {
                    v.to_string()
                        .cloned()
                        .map_err(|e| ModelError::Format(format!("`{key}`: {e}")))
                })
                .collect()
        };
        let model = md
            .get("tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if model != "gpt2" {
            return Err(ModelError::Unsupported(format!(
                "{}: GGUF tokenizer model `{model}`; labelfleet builds only byte-level BPE (`gpt2`) \
                 tokenizers from GGUF, put a tokenizer.json beside the file",
                path.display()
            )));
        }
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
            .into_iter()
            .filter_map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(ModelError::tokenizer)?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        // Control tokens (type 3), such as `<|im_start|>`, must match whole.
        let types: Vec<i32> = md
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.to_vec().ok())
            .map(|v| v.iter().map(|t| t.to_i32().unwrap_or(1)).collect())
            .unwrap_or_default();
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t == 3)
            .map(|(tok, _)| AddedToken::from(tok.clone(), true))
            .collect();
        inner
            .add_special_tokens(special)
            .map_err(ModelError::tokenizer)?;
        let id = |key: &str| md.get(key).and_then(|v| v.to_u32().ok());
        let add_bos = md
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        Ok(TextTokenizer {
            eos: id("tokenizer.ggml.eos_token_id"),
            bos: if add_bos {
                id("tokenizer.ggml.bos_token_id")
            } else {
                None
            },
            inner,
        })
    }

    /// Token ids of `text`, with the BOS token when the model asks for one.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(ModelError::tokenizer)?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        ids.extend(self.bos);
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// Text of `ids`, special tokens dropped.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.inner.decode(ids, true).map_err(ModelError::tokenizer)
    }
}
