//! Models for labelfleet jobs, on candle.
//!
//! - [`SentenceEmbedder`] turns texts into unit-length sentence embeddings with a
//!   BERT-family model (all-MiniLM-L6-v2 and kin): the retriever of `self_label`. On
//!   the CPU it runs our own encoder over plain buffers (`bert::cpu`, with the packed
//!   f32 matmul of `sgemm`); elsewhere candle tensor operations.
//! - [`CausalLm`] pairs a decoder ([`Llama`]: the llama family, qwen3 or starcoder2,
//!   each a [`families::Family`] with a file of its own; from GGUF or safetensors)
//!   with its [`TextTokenizer`] and [`generates`](CausalLm::generate) completions for a
//!   batch of prompts at once: prompts are left-padded, a per-row mask hides the
//!   padding, and finished prompts leave the batch.
//! - [`ModelSource`] says where a model is (a local path, or an id in the Hugging Face
//!   cache); [`load_causal_lm`] reads it; [`parse_device`] picks `cpu` or `cuda:N`.
//!
//! - [`TrainableLm`] fine-tunes such a model (fully, or LoRA adapters with
//!   [`LoraConfig`]) on [`TokenizedExample`]s with the [`train`] module's AdamW,
//!   schedule and clipping, and saves it where [`load_causal_lm`] reads it back. Its
//!   backward pass skips what candle would compute for nothing: frozen projections
//!   send gradients to their inputs only (`frozen`), RMS norm and rotary embeddings
//!   run candle's fused kernels with hand-written gradients (`fused`), and attention
//!   is one node whose backward pass recomputes its weights (`fused_attention`).
//!   [`keep_freed_memory`] stops each step faulting its buffers in afresh.
//!
//! Behind both, the CPU kernels (`kernels/`, a layer of their own) that candle lacks or
//! runs slowly for these shapes: `sgemm` (f32 against weights packed at load),
//! `qmatmul` (8-bit integer products straight on GGUF blocks) and `attention` (one
//! decoding step, fused). A GPU runs candle's tensor operations instead; loading with
//! [`Kernels::Generic`] makes a CPU run those too, which is how the GPU's code path is
//! tested without a GPU.
//!
//! Data flows one way: a job names a [`ModelSource`] → the worker resolves and loads
//! it once (and keeps it across jobs) → prompts go in, [`Completion`]s come out.
//!
//! # Example
//!
//! A tiny llama (random weights, a tokenizer trained on a few sentences) generates for
//! two prompts in one batch.
//!
//! ```
//! use labelfleet_models::{Device, GenerationParams, WeightFormat, load_causal_lm};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let texts: Vec<String> = (0..30).map(|i| format!("a table for {i} at the golden curry")).collect();
//! labelfleet_models::tiny::write_tiny_model(dir.path(), &texts, 7).unwrap();
//! let lm = load_causal_lm(dir.path(), WeightFormat::F32, &Device::Cpu).unwrap();
//! let params = GenerationParams { max_new_tokens: 4, ..GenerationParams::default() };
//! let prompts = ["a table for".to_string(), "at the golden".to_string()];
//! let (completions, _timing) = lm.generate(&prompts, &params).unwrap();
//! assert_eq!(completions.len(), 2);
//! assert!(completions.iter().all(|c| c.new_tokens <= 4));
//! ```

#![warn(missing_docs)]

mod bert;
mod device;
mod embed;
mod error;
pub mod families;
mod frozen;
mod fused;
mod fused_attention;
mod generate;
mod kernels;
pub mod llama;
mod load;
mod lora;
mod memory;
mod positions;
mod source;
mod storage;
#[cfg(test)]
mod test_values;
pub mod tiny;
mod tokenizer;
pub mod train;

pub use candle_core::Device;
pub use device::{Kernels, parse_device, pin_cpu_threads};
pub use embed::{MAX_TOKENS, SentenceEmbedder};
pub use error::ModelError;
pub use generate::{BatchTiming, CausalLm, Completion, Confidence, Finish, GenerationParams};
pub use llama::{HfWeights, LORA_TARGETS, Llama, LlamaConfig, ModelFamily, WeightFormat};
pub use load::{ADAPTER_CONFIG, load_causal_lm, load_causal_lm_with_kernels};
pub use lora::{ADAPTER_WEIGHTS, AdapterConfig, LoraConfig};
pub use memory::keep_freed_memory;
pub use source::ModelSource;
pub use tokenizer::TextTokenizer;
pub use train::{TokenizedExample, TrainableLm};
