//! Settings of a `retrain` job: fine-tune a causal LM on labelled turns.
//!
//! ```json
//! "retrain": {
//!   "model": {"path": ".models/SmolLM2-135M-Instruct"},
//!   "data": {
//!     "old": [{"gold": {"path": "runs/sample-data/multiwoz21_val_sample.json", "format": "multiwoz21"}}],
//!     "new": [{"group": "labels-demo"}],
//!     "min_new_examples": 20
//!   },
//!   "split": {"policy": "keep_old", "ratios": [0.8, 0.1, 0.1], "seed": 0},
//!   "training": {"steps": 200, "batch_size": 4, "learning_rate": 1e-4},
//!   "lora": {"rank": 8, "alpha": 16, "targets": ["q_proj", "v_proj"]},
//!   "checkpoint": {"every_steps": 50}
//! }
//! ```

use serde::{Deserialize, Serialize};

use super::dataset::DatasetRef;
use super::self_label::ModelRef;

/// Settings of a `retrain` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainSpec {
    /// The model to start from (GGUF weights are dequantized to f32 to train).
    pub model: ModelRef,
    /// The prompt the model learns to complete. The saved model records it, and
    /// `self_label` and `eval` of the model use it: `compact` for a model that labels
    /// without examples, a few dozen tokens a turn.
    #[serde(default)]
    pub prompt: super::self_label::PromptMode,
    /// Where the training examples come from.
    pub data: TrainingData,
    /// How examples are split into train, validation and test sets.
    #[serde(default)]
    pub split: SplitSpec,
    /// Optimisation settings.
    #[serde(default)]
    pub training: TrainingSpec,
    /// Train low-rank adapters instead of every weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraSpec>,
    /// When to save a resumable checkpoint.
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
}

/// The data a model is retrained on: `old` (what it was trained on before, whose
/// validation and test sets stay fixed) and `new` (freshly labelled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingData {
    /// Earlier data.
    #[serde(default)]
    pub old: Vec<DataSource>,
    /// New data.
    #[serde(default)]
    pub new: Vec<DataSource>,
    /// Skip retraining (and say so in the manifest) when `new` holds fewer examples.
    #[serde(default)]
    pub min_new_examples: usize,
    /// Train on only the self-labelled turns (`group` sources, old or new) that the
    /// labeller was surest of; gold turns are all kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confident: Option<ConfidenceFilter>,
}

/// Which self-labelled turns a retrain keeps: the share `keep` of them (all groups
/// together) that rank highest `by` the labeller's confidence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfidenceFilter {
    /// The share of self-labelled turns kept, in (0, 1].
    pub keep: f64,
    /// What they are ranked by.
    #[serde(default)]
    pub by: ConfidenceMeasure,
}

/// A labelled turn's confidence, from its completion's token log-probabilities (which
/// `self_label` records for a local model's labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfidenceMeasure {
    /// The least likely token's log-probability: a completion is as doubtful as its
    /// most doubtful value.
    #[default]
    MinLogprob,
    /// The whole completion's log-probability (longer updates rank lower).
    Logprob,
}

/// A source of labelled turns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSource {
    /// The labels of every `self_label` entry of a manifest group.
    Group(String),
    /// Gold dialogues from a dataset file.
    Gold(GoldData),
}

/// Gold dialogues from a dataset file, optionally only the first few.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldData {
    /// Path to the file, relative to the worker's working directory unless absolute.
    pub path: String,
    /// The file's format.
    pub format: super::dataset::DatasetFormat,
    /// Use only the first N dialogues (file order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_dialogues: Option<usize>,
    /// Each of these dialogues trains this many times an epoch: gold data weighted up
    /// against many self-labels. Validation and test sets hold them once.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub repeat: usize,
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl GoldData {
    /// The file as a [`DatasetRef`].
    pub fn dataset(&self) -> DatasetRef {
        DatasetRef {
            path: self.path.clone(),
            format: self.format,
        }
    }
}

/// How examples are divided into splits (always by dialogue: turns of one dialogue
/// never sit in two splits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    /// The policy.
    #[serde(default)]
    pub policy: SplitPolicy,
    /// Train, validation and test shares; they must sum to 1.
    #[serde(default = "default_ratios")]
    pub ratios: [f64; 3],
    /// Seed of the shuffles.
    #[serde(default)]
    pub seed: u64,
    /// Which data the training set takes.
    #[serde(default = "both")]
    pub train: SplitUse,
    /// Which data the validation set takes.
    #[serde(default = "old")]
    pub valid: SplitUse,
    /// Which data the test set takes.
    #[serde(default = "old")]
    pub test: SplitUse,
}

fn default_ratios() -> [f64; 3] {
    [0.8, 0.1, 0.1]
}
fn both() -> SplitUse {
    SplitUse::Both
}
fn old() -> SplitUse {
    SplitUse::Old
}

impl Default for SplitSpec {
    fn default() -> Self {
        SplitSpec {
            policy: SplitPolicy::default(),
            ratios: default_ratios(),
            seed: 0,
            train: both(),
            valid: old(),
            test: old(),
        }
    }
}

/// How old and new data are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitPolicy {
    /// Old data keeps fixed splits (by a hash of each dialogue id, whatever the seed);
    /// new data is split by `ratios` and `seed`, or goes wholly to training when no
    /// evaluation split takes new data. Each split then takes old, new or both parts.
    #[default]
    KeepOld,
    /// Old and new dialogues are shuffled together with `seed` and cut by `ratios`.
    Resample,
}

/// Which data a split takes under `keep_old`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitUse {
    /// The old data's part.
    Old,
    /// The new data's part.
    New,
    /// Both parts.
    Both,
}

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSpec {
    /// Optimizer steps.
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Examples per micro-batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Micro-batches whose gradients add up to one optimizer step.
    #[serde(default = "one")]
    pub grad_accumulation: usize,
    /// Peak learning rate.
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// Steps of linear warm-up to the peak.
    #[serde(default)]
    pub warmup_steps: usize,
    /// The decay after warm-up.
    #[serde(default)]
    pub schedule: Schedule,
    /// The learning rate at the last step, as a share of the peak.
    #[serde(default = "default_min_lr_ratio")]
    pub min_lr_ratio: f64,
    /// AdamW's decoupled weight decay (matrices only).
    #[serde(default)]
    pub weight_decay: f64,
    /// Clip the gradients' global norm to this (0 turns clipping off).
    #[serde(default = "one_f64")]
    pub max_grad_norm: f64,
    /// Seed of the data order and of adapter initialisation: the same seed repeats a run.
    #[serde(default)]
    pub seed: u64,
    /// Longest example in tokens; longer prompts lose their beginning.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Measure the validation loss every this many steps (and at the end).
    #[serde(default = "default_eval_every")]
    pub eval_every: usize,
}

fn default_steps() -> usize {
    200
}
fn default_batch_size() -> usize {
    4
}
fn one() -> usize {
    1
}
fn one_f64() -> f64 {
    1.0
}
fn default_learning_rate() -> f64 {
    1e-4
}
fn default_min_lr_ratio() -> f64 {
    0.1
}
fn default_max_tokens() -> usize {
    512
}
fn default_eval_every() -> usize {
    50
}

impl Default for TrainingSpec {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("every field has a default")
    }
}

/// The learning rate's decay after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Stays at the peak.
    Constant,
    /// Linear to `min_lr_ratio` × peak.
    Linear,
    /// Half a cosine to `min_lr_ratio` × peak.
    #[default]
    Cosine,
}

/// Low-rank adapters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    /// Rank of each update.
    #[serde(default = "default_rank")]
    pub rank: usize,
    /// Updates are scaled by `alpha / rank`.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Projections adapted in every layer.
    #[serde(default = "default_targets")]
    pub targets: Vec<String>,
}

fn default_rank() -> usize {
    8
}
fn default_alpha() -> f64 {
    16.0
}
fn default_targets() -> Vec<String> {
    vec!["q_proj".into(), "v_proj".into()]
}

/// Projections LoRA may adapt (the models crate has the same list, which does the
/// adapting; a worker test checks the two agree).
pub const LORA_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// When a resumable checkpoint is written (whichever comes first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Every this many optimizer steps.
    #[serde(
        default = "default_every_steps",
        skip_serializing_if = "Option::is_none"
    )]
    pub every_steps: Option<usize>,
    /// Every this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_seconds: Option<u64>,
}

fn default_every_steps() -> Option<usize> {
    Some(50)
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec {
            every_steps: default_every_steps(),
            every_seconds: None,
        }
    }
}

impl RetrainSpec {
    /// Checks what serde cannot: ranges and combinations. The error names the field.
    pub fn check(&self) -> Result<(), (String, String)> {
        let at = |f: &str| format!("retrain.{f}");
        let fail = |f: &str, m: &str| Err((at(f), m.to_string()));
        self.model.check(&at("model"))?;
        if matches!(
            self.model.weights,
            Some(super::self_label::WeightFormat::F16 | super::self_label::WeightFormat::Bf16)
        ) {
            return fail(
                "model.weights",
                "training runs in f32 (its optimizer state needs the precision); leave `weights` out here, and pick f16/bf16 in the self_label or eval jobs that load the result",
            );
        }
        if self.data.old.is_empty() && self.data.new.is_empty() {
            return fail(
                "data",
                "no data: list sources under `old` and/or `new` ({\"group\": G} or {\"gold\": {path, format}})",
            );
        }
        if let Some(confident) = &self.data.confident
            && !(confident.keep > 0.0 && confident.keep <= 1.0)
        {
            return fail(
                "data.confident.keep",
                "expected the share of self-labelled turns to keep, above 0 and at most 1",
            );
        }
        for (set, sources) in [("old", &self.data.old), ("new", &self.data.new)] {
            for (i, source) in sources.iter().enumerate() {
                if let DataSource::Gold(gold) = source
                    && gold.repeat == 0
                {
                    return fail(
                        &format!("data.{set}[{i}].gold.repeat"),
                        "expected at least 1 (how many times each dialogue trains an epoch)",
                    );
                }
            }
        }
        let r = self.split.ratios;
        if r.iter().any(|x| !(0.0..=1.0).contains(x)) || (r.iter().sum::<f64>() - 1.0).abs() > 1e-6
        {
            return fail(
                "split.ratios",
                "expected three shares in [0, 1] (train, valid, test) that sum to 1",
            );
        }
        if r[0] == 0.0 {
            return fail("split.ratios", "the training share must be above 0");
        }
        let t = &self.training;
        for (field, value) in [
            ("training.steps", t.steps),
            ("training.batch_size", t.batch_size),
            ("training.grad_accumulation", t.grad_accumulation),
            ("training.eval_every", t.eval_every),
        ] {
            if value == 0 {
                return fail(field, "expected at least 1");
            }
        }
        if t.max_tokens < 16 {
            return fail("training.max_tokens", "expected at least 16");
        }
        if !(t.learning_rate > 0.0 && t.learning_rate.is_finite()) {
            return fail("training.learning_rate", "expected a positive number");
        }
        if !(0.0..=1.0).contains(&t.min_lr_ratio) {
            return fail("training.min_lr_ratio", "expected a number in [0, 1]");
        }
        if t.weight_decay.is_nan() || t.weight_decay < 0.0 {
            return fail("training.weight_decay", "expected 0 or more");
        }
        if t.max_grad_norm.is_nan() || t.max_grad_norm < 0.0 {
            return fail("training.max_grad_norm", "expected 0 (off) or more");
        }
        if let Some(lora) = &self.lora {
            if lora.rank == 0 {
                return fail("lora.rank", "expected at least 1");
            }
            if lora.targets.is_empty() {
                return fail("lora.targets", "expected at least one projection");
            }
            for (i, target) in lora.targets.iter().enumerate() {
                if !LORA_TARGETS.contains(&target.as_str()) {
                    return Err((
                        at(&format!("lora.targets[{i}]")),
                        format!("unknown projection `{target}`; expected one of {LORA_TARGETS:?}"),
                    ));
                }
            }
        }
        if self.checkpoint.every_steps == Some(0) || self.checkpoint.every_seconds == Some(0) {
            return fail("checkpoint", "intervals must be at least 1");
        }
        Ok(())
    }
}
