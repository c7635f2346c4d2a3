//! Settings of an `eval` job: score predicted belief states against gold.

use serde::{Deserialize, Serialize};

use super::dataset::DatasetRef;
use super::self_label::{GenerationSpec, ModelRef, PromptMode, RetrieverSpec, check_retriever};

/// Settings of an `eval` job: score predicted belief states against gold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// The gold dialogues.
    pub gold: DatasetRef,
    /// Where the predicted states come from.
    pub predictions: PredictionSource,
    /// Score only the first N dialogues of the gold set (in file order, or after the
    /// shuffle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_dialogues: Option<usize>,
    /// Shuffle the gold dialogues with this seed before taking `max_dialogues`: a fixed
    /// sample of a larger set, the same in every job that names the seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shuffle_seed: Option<u64>,
    /// Values whose normalised similarity (1 − edit distance / length) reaches this
    /// threshold count as equal; 1.0 asks for exact matches after normalisation.
    #[serde(default = "default_fuzzy_threshold")]
    pub fuzzy_threshold: f64,
}

fn default_fuzzy_threshold() -> f64 {
    0.95
}

/// Where an `eval` job's predicted states come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PredictionSource {
    /// A predictions file: a JSON list of `{dialogue_id, turn_id, slot_values}`.
    File(String),
    /// The `predictions.json` artifacts of every entry of a manifest group.
    Group(String),
    /// A trivial predictor, as a floor that any labeller must beat.
    Baseline(Baseline),
    /// Label the gold dialogues with a model (as `self_label` does) and score those
    /// labels; the model's loss and perplexity on the gold completions are reported
    /// too. This is how a `retrain` checkpoint is evaluated.
    Model(Box<ModelPredictions>),
}

/// A model that labels an `eval` job's gold dialogues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPredictions {
    /// The causal LM, e.g. `{"checkpoint": "group/retrain_job"}`.
    pub model: ModelRef,
    /// The prompt (as `self_label.prompt`: by default the one the model was trained
    /// with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<PromptMode>,
    /// How in-context examples are retrieved (examples never come from the gold
    /// dialogues being scored unless `gold_examples` names them); for the
    /// `in_context` prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retriever: Option<RetrieverSpec>,
    /// How tokens are picked.
    #[serde(default)]
    pub generation: GenerationSpec,
    /// Dialogues labelled together.
    #[serde(default = "default_label_batch")]
    pub batch_size: usize,
    /// Longest scored example in tokens for the loss (longer prompts lose their start).
    #[serde(default = "default_loss_tokens")]
    pub max_tokens: usize,
}

fn default_label_batch() -> usize {
    8
}
fn default_loss_tokens() -> usize {
    512
}

/// Trivial predictors for `eval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// Predicts the empty state at every turn.
    Empty,
    /// Predicts the gold state of the previous turn: a labeller one turn late.
    LastTurn,
}

impl EvalSpec {
    /// Checks what serde cannot: the threshold's range and a model's settings. The
    /// error is the JSON path and what is wrong.
    pub fn check(&self) -> Result<(), (String, String)> {
        if !(0.0..=1.0).contains(&self.fuzzy_threshold) {
            return Err((
                "eval.fuzzy_threshold".into(),
                "expected a number between 0 and 1".into(),
            ));
        }
        if let PredictionSource::Model(m) = &self.predictions {
            let at = "eval.predictions.model";
            m.model
                .check(&format!("{at}.model"))
                .and_then(|_| check_retriever(m.prompt, m.retriever.as_ref(), at))?;
            if m.batch_size == 0 || m.max_tokens < 16 {
                return Err((
                    at.into(),
                    "batch_size must be at least 1 and max_tokens at least 16".into(),
                ));
            }
        }
        Ok(())
    }
}
