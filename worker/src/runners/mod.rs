//! The job runners, one module per kind (`command`, `eval`, `ingest`, `noop`,
//! `retrain`, `self_label`, `tune`), and the toolbox they share; no runner imports another.
//!
//! - [`models`]: the worker's one model cache, bounded by memory.
//! - [`data`]: dialogue files and the dialogues a job selects.
//! - [`labelling`]: labelling dialogues with a causal LM, resumably; `self_label` runs
//!   it, and `eval` runs it to score a model.
//! - [`prompts`]: a labelled turn as a prompt → completion pair, for training and
//!   scoring.
//! - [`checkpoints`]: the models `retrain` saves, fetched for the jobs that name them;
//!   [`checkpoint_cache`] keeps the folder they are fetched into under a bound.

pub mod checkpoint_cache;
pub mod checkpoints;
pub mod command;
pub mod data;
pub mod endpoint;
pub mod eval;
pub mod ingest;
pub mod labelling;
pub mod models;
pub mod noop;
pub mod prompts;
pub mod retrain;
pub mod self_label;
pub mod tune;
