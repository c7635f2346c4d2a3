//! Sentence embeddings from a BERT-family model, as sentence-transformers computes
//! them: mean of the last hidden states over real tokens, then L2-normalised.

use std::path::Path;

use crate::bert::{BertConfig as Config, BertEncoder, CpuEncoder, Sentence};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use crate::{Kernels, ModelError};

/// A sentence embedding model loaded from a folder with `config.json`,
/// `tokenizer.json` and `model.safetensors`.
pub struct SentenceEmbedder {
    model: Encoder,
    tokenizer: Tokenizer,
    device: Device,
    dimension: usize,
}

/// The encoder for the device: on the CPU, the one written for it over plain buffers;
/// elsewhere (or with [`Kernels::Generic`]), candle tensor operations.
enum Encoder {
    Cpu(CpuEncoder),
    Tensors(BertEncoder),
}

/// Longest input in tokens (all-MiniLM-L6-v2's `max_seq_length`); longer is truncated.
pub const MAX_TOKENS: usize = 256;

impl SentenceEmbedder {
    /// Loads the model in `dir` onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<SentenceEmbedder, ModelError> {
        SentenceEmbedder::load_with_kernels(dir, device, Kernels::Native)
    }

    /// [`SentenceEmbedder::load`] running `kernels`: [`Kernels::Generic`] makes a CPU
    /// run the tensor operations a GPU runs.
    pub fn load_with_kernels(
        dir: &Path,
        device: &Device,
        kernels: Kernels,
    ) -> Result<SentenceEmbedder, ModelError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))
        };
        let config: Config = serde_json::from_str(&read("config.json")?).map_err(|e| {
            ModelError::Format(format!(
                "{}: not a BERT config: {e}",
                dir.join("config.json").display()
            ))
        })?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| {
            ModelError::Format(format!("{}: {e}", dir.join("tokenizer.json").display()))
        })?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS.min(config.max_position_embeddings),
                ..Default::default()
            }))
            .map_err(ModelError::tokenizer)?;
        let weights = dir.join("model.safetensors");
        if !weights.exists() {
            return Err(ModelError::NotFound(format!(
                "{}: missing; the retriever folder needs model.safetensors",
                weights.display()
            )));
        }
        // SAFETY: the file is memory-mapped read-only and not modified while loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, device)? };
        let model = if kernels.native_on(device) {
            Encoder::Cpu(CpuEncoder::load(vb, &config)?)
        } else {
            Encoder::Tensors(BertEncoder::load(vb, &config)?)
        };
        Ok(SentenceEmbedder {
            model,
            tokenizer,
            device: device.clone(),
            dimension: config.hidden_size,
        })
    }

    /// Length of an embedding.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Embeds `texts` in batches of `batch_size`; each result has unit length and is
    /// returned in the order of `texts`. Texts are batched longest first, as
    /// sentence-transformers does, so that each batch pads little.
    pub fn embed(&self, texts: &[String], batch_size: usize) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].chars().count()));
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(batch_size.max(1)) {
            let batch: Vec<String> = chunk.iter().map(|&i| texts[i].clone()).collect();
            for (&i, embedding) in chunk.iter().zip(self.embed_batch(&batch)?) {
                out[i] = embedding;
            }
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(ModelError::tokenizer)?;
        let model = match &self.model {
            Encoder::Cpu(model) => {
                // Padding (on the right) is dropped: the CPU encoder takes each
                // sentence at its own length.
                let sentences: Vec<Sentence> = encodings
                    .iter()
                    .map(|e| {
                        let len = e.get_attention_mask().iter().filter(|&&m| m == 1).count();
                        Sentence {
                            ids: &e.get_ids()[..len],
                            types: &e.get_type_ids()[..len],
                        }
                    })
                    .collect();
                return Ok(model.embed(&sentences)?);
            }
            Encoder::Tensors(model) => model,
        };
        let rows = encodings.len();
        let len = encodings.first().map_or(0, |e| e.len());
        let gather = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings
                .iter()
                .flat_map(|e| f(e).iter().copied())
                .collect()
        };
        let ids = Tensor::from_vec(gather(&|e| e.get_ids()), (rows, len), &self.device)?;
        let types = Tensor::from_vec(gather(&|e| e.get_type_ids()), (rows, len), &self.device)?;
        let mask = Tensor::from_vec(
            gather(&|e| e.get_attention_mask()),
            (rows, len),
            &self.device,
        )?;
        let hidden = model.forward(&ids, &types, &mask)?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(mean.broadcast_div(&norms)?.to_vec2()?)
    }
}
