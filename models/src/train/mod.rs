//! Fine-tuning a llama-family model with candle: the model's trainable parameters, the
//! completion-only loss, AdamW with state that can be saved and restored, the learning
//! rate schedule and gradient clipping.
//!
//! A [`TrainableLm`] holds its parameters in a `VarMap` (every weight for a full
//! fine-tune, only the low-rank adapters with [`LoraConfig`](crate::LoraConfig)) and a
//! [`Llama`](crate::Llama) built over the same tensors, so an optimizer step is seen by
//! the next forward pass. Examples
//! are [`TokenizedExample`]s: prompt tokens then completion tokens, of which only the
//! completion is scored. [`completion_nll`] scores any llama, trainable or not,
//! which is also how `eval` measures a checkpoint's loss.
//!
//! One idea per file: examples and the loss (`loss`), the trainable model (`model`),
//! the learning-rate schedule (`schedule`), an optimizer step (`step`), AdamW
//! (`adamw`), and named tensors as bytes (`tensors`).

mod adamw;
mod loss;
mod model;
mod schedule;
mod step;
mod tensors;

pub use self::adamw::{AdamW, AdamWConfig};
pub use self::loss::{TokenizedExample, completion_nll, mean_completion_loss};
pub use self::model::{TrainableLm, random_weights};
pub use self::schedule::{Schedule, learning_rate};
pub use self::step::{StepReport, accumulate, clip_grad_norm, optimizer_step};
pub use self::tensors::{safetensors_bytes, tensors_from_bytes};
