//! The job spec: one JSON file per job, parsed strictly.
//!
//! A job file looks like this (the kind-specific settings sit under a key named after
//! the kind):
//!
//! ```json
//! {
//!   "kind": "eval",
//!   "group_id": "demo",
//!   "after": ["job_0"],
//!   "eval": {
//!     "gold": {"path": "runs/sample-data/multiwoz21_val_sample.json", "format": "multiwoz21"},
//!     "predictions": {"baseline": "last_turn"}
//!   }
//! }
//! ```
//!
//! [`Job::parse`] rejects unknown keys, wrong types and missing fields with a
//! [`JobError`] that names the file, the JSON path and what was expected.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::artifacts::ArtifactKey;
use crate::provenance::Provenance;
pub use crate::retrain::{
    CheckpointSpec, DataSource, GoldData, LORA_TARGETS, LoraSpec, RetrainSpec, Schedule,
    SplitPolicy, SplitSpec, SplitUse, TrainingData, TrainingSpec,
};
pub use crate::self_label::{
    DialogueSelection, GenerationSpec, ModelRef, PromptMode, RetrieverSpec, SelfLabelSpec,
    WeightFormat, check_retriever,
};
use crate::text::{capped, quoted};
pub use crate::tune::{Goal, PlannedTrial, Range, TrialRun, TuneSpec};

/// The kinds of job labelfleet knows about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Label dialogues with a causal LM prompted with retrieved examples.
    SelfLabel,
    /// Fine-tune a model on self-labelled data.
    Retrain,
    /// Score predicted belief states against gold.
    Eval,
    /// Do nothing for a while: a health check and benchmark load for the fleet itself.
    Noop,
    /// Pick the best of a sweep's trials (`enqueue` expands a tune file into them).
    Tune,
}

impl JobKind {
    /// Every kind, in the order error messages list them.
    pub const ALL: [JobKind; 5] = [
        JobKind::SelfLabel,
        JobKind::Retrain,
        JobKind::Eval,
        JobKind::Noop,
        JobKind::Tune,
    ];

    /// The kind's name as it appears in job files.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::SelfLabel => "self_label",
            JobKind::Retrain => "retrain",
            JobKind::Eval => "eval",
            JobKind::Noop => "noop",
            JobKind::Tune => "tune",
        }
    }

    /// Looks a kind up by its name in job files.
    pub fn from_name(name: &str) -> Option<JobKind> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind-specific settings of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobBody {
    /// Settings of a `self_label` job.
    SelfLabel(Box<SelfLabelSpec>),
    /// Settings of a `retrain` job.
    Retrain(Box<RetrainSpec>),
    /// Settings of an `eval` job.
    Eval(EvalSpec),
    /// Settings of a `noop` job.
    Noop(NoopSpec),
    /// Settings of a `tune` job.
    Tune(Box<TuneSpec>),
}

impl JobBody {
    /// The kind this body belongs to.
    pub fn kind(&self) -> JobKind {
        match self {
            JobBody::SelfLabel(_) => JobKind::SelfLabel,
            JobBody::Retrain(_) => JobKind::Retrain,
            JobBody::Eval(_) => JobKind::Eval,
            JobBody::Noop(_) => JobKind::Noop,
            JobBody::Tune(_) => JobKind::Tune,
        }
    }

    fn to_value(&self) -> Value {
        match self {
            JobBody::SelfLabel(spec) => serde_json::to_value(spec),
            JobBody::Retrain(spec) => serde_json::to_value(spec),
            JobBody::Eval(spec) => serde_json::to_value(spec),
            JobBody::Noop(spec) => serde_json::to_value(spec),
            JobBody::Tune(spec) => serde_json::to_value(spec),
        }
        .expect("job bodies serialise to JSON")
    }
}

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

/// A dataset file and its format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetRef {
    /// Path to the file, relative to the worker's working directory unless absolute.
    /// A `.zip` holding one JSON file is read as that file.
    pub path: String,
    /// The file's format.
    pub format: DatasetFormat,
}

/// The dialogue dataset formats labelfleet reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetFormat {
    /// MultiWOZ 2.1 `data.json`: `{dialogue_id: {goal, log: [turn…]}}`.
    Multiwoz21,
    /// IC-DST's turn-level list of turns.
    Icdst,
    /// Schema-Guided Dialogue / MultiWOZ 2.2 schema format.
    Sgd,
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

/// Settings of a `noop` job.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopSpec {
    /// How long the job takes, in milliseconds.
    #[serde(default)]
    pub sleep_ms: u64,
    /// After the sleep, write an artifact `noop.txt` of this many bytes (at most
    /// 1 GiB), whose first line names the delivery that wrote it: load for an artifact
    /// store, and a witness of which delivery wrote last.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub write_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One unit of work.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job's name, unique within its group; the manifest's run id.
    pub name: String,
    /// The experiment group the job belongs to.
    pub group_id: String,
    /// Jobs (`name` in the same group, or `group/name`) or whole groups that must be
    /// complete before this job may start.
    pub after: Vec<String>,
    /// Process only a tiny subset (a couple of dialogues), to smoke-test a pipeline.
    pub mini: bool,
    /// The kind-specific settings.
    pub body: JobBody,
    /// Where the job came from; set by `enqueue`, absent in files people write.
    pub provenance: Option<Provenance>,
}

/// A job's identity: its group and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey {
    /// The group.
    pub group_id: String,
    /// The job's name within the group.
    pub name: String,
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group_id, self.name)
    }
}

/// A job file that failed validation: which file, where in it, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: at `{path}`: {message}")]
pub struct JobError {
    /// The file (or message) the job came from.
    pub file: String,
    /// The JSON path of the offending value (`(top level)` for the document itself).
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl JobError {
    fn new(file: &str, path: impl Into<String>, message: impl Into<String>) -> JobError {
        let path = path.into();
        JobError {
            file: file.to_string(),
            path: if path.is_empty() {
                "(top level)".to_string()
            } else {
                quoted(&path)
            },
            message: capped(&message.into()),
        }
    }
}

/// Whether a job document may carry a `provenance` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvenancePolicy {
    /// Files written by people: `provenance` is written by `enqueue`, not by hand.
    Reject,
    /// Messages off the queue: `provenance` is expected.
    Accept,
}

const COMMON_KEYS: [&str; 6] = ["kind", "name", "group_id", "after", "mini", "provenance"];

impl Job {
    /// Parses a job document already read as JSON.
    ///
    /// `file` names the source in errors; `default_name` is used when the document has
    /// no `name`.
    pub fn parse(
        value: Value,
        file: &str,
        default_name: Option<&str>,
        provenance: ProvenancePolicy,
    ) -> Result<Job, JobError> {
        let Value::Object(mut map) = value else {
            return Err(JobError::new(
                file,
                "",
                format!(
                    "expected a JSON object describing one job, found {}",
                    type_name(&value)
                ),
            ));
        };
        let kind = parse_kind(&map, file)?;
        for key in map.keys() {
            if !COMMON_KEYS.contains(&key.as_str()) && key != kind.as_str() {
                let mut expected: Vec<&str> = COMMON_KEYS.to_vec();
                expected.push(kind.as_str());
                if provenance == ProvenancePolicy::Reject {
                    expected.retain(|k| *k != "provenance");
                }
                return Err(JobError::new(
                    file,
                    key.clone(),
                    format!(
                        "unknown key `{}`; a `{kind}` job has the keys {}",
                        quoted(key),
                        quote_list(&expected)
                    ),
                ));
            }
        }
        let name = match map.remove("name") {
            None => default_name
                .map(str::to_string)
                .ok_or_else(|| JobError::new(file, "name", "missing: the job has no name"))?,
            Some(v) => expect_string(v, file, "name")?,
        };
        check_id(&name, file, "name")?;
        let group_id = match map.remove("group_id") {
            None => {
                return Err(JobError::new(
                    file,
                    "group_id",
                    "missing: every job names the experiment group it belongs to",
                ));
            }
            Some(v) => expect_string(v, file, "group_id")?,
        };
        check_id(&group_id, file, "group_id")?;
        let after = match map.remove("after") {
            None => Vec::new(),
            Some(v) => parse_after(v, file)?,
        };
        let mini = match map.remove("mini") {
            None => false,
            Some(Value::Bool(b)) => b,
            Some(other) => {
                return Err(JobError::new(
                    file,
                    "mini",
                    format!("expected true or false, found {}", type_name(&other)),
                ));
            }
        };
        let provenance = match map.remove("provenance") {
            None => None,
            Some(_) if provenance == ProvenancePolicy::Reject => {
                return Err(JobError::new(
                    file,
                    "provenance",
                    "`provenance` is written by `enqueue`; remove it from the job file",
                ));
            }
            Some(v) => Some(deserialize_at::<Provenance>(v, file, "provenance")?),
        };
        let body_value = map.remove(kind.as_str()).ok_or_else(|| {
            JobError::new(
                file,
                kind.as_str(),
                format!("missing: a `{kind}` job keeps its settings in an object under `{kind}`"),
            )
        })?;
        if !body_value.is_object() {
            return Err(JobError::new(
                file,
                kind.as_str(),
                format!("expected an object, found {}", type_name(&body_value)),
            ));
        }
        let body = match kind {
            JobKind::Eval => JobBody::Eval(deserialize_at(body_value, file, "eval")?),
            JobKind::Noop => JobBody::Noop(deserialize_at(body_value, file, "noop")?),
            JobKind::SelfLabel => {
                let spec: SelfLabelSpec = deserialize_at(body_value, file, "self_label")?;
                spec.check()
                    .map_err(|(path, message)| JobError::new(file, path, message))?;
                JobBody::SelfLabel(Box::new(spec))
            }
            JobKind::Tune => {
                let spec: TuneSpec = deserialize_at(body_value, file, "tune")?;
                spec.check()
                    .map_err(|(path, message)| JobError::new(file, path, message))?;
                if provenance.is_none() && !spec.planned.is_empty() {
                    return Err(JobError::new(
                        file,
                        "tune.planned",
                        "`planned` is written by `enqueue` when it expands the sweep; remove it",
                    ));
                }
                JobBody::Tune(Box::new(spec))
            }
            JobKind::Retrain => {
                let spec: RetrainSpec = deserialize_at(body_value, file, "retrain")?;
                spec.check()
                    .map_err(|(path, message)| JobError::new(file, path, message))?;
                JobBody::Retrain(Box::new(spec))
            }
        };
        if let JobBody::Eval(spec) = &body {
            if !(0.0..=1.0).contains(&spec.fuzzy_threshold) {
                return Err(JobError::new(
                    file,
                    "eval.fuzzy_threshold",
                    "expected a number between 0 and 1",
                ));
            }
            if let PredictionSource::Model(m) = &spec.predictions {
                let at = "eval.predictions.model";
                m.model
                    .check(&format!("{at}.model"))
                    .and_then(|_| check_retriever(m.prompt, m.retriever.as_ref(), at))
                    .map_err(|(path, message)| JobError::new(file, path, message))?;
                if m.batch_size == 0 || m.max_tokens < 16 {
                    return Err(JobError::new(
                        file,
                        at,
                        "batch_size must be at least 1 and max_tokens at least 16",
                    ));
                }
            }
        }
        Ok(Job {
            name,
            group_id,
            after,
            mini,
            body,
            provenance,
        })
    }

    /// The job's kind.
    pub fn kind(&self) -> JobKind {
        self.body.kind()
    }

    /// The job's identity.
    pub fn key(&self) -> JobKey {
        JobKey {
            group_id: self.group_id.clone(),
            name: self.name.clone(),
        }
    }

    /// The job as a JSON document that [`Job::parse`] reads back, without provenance:
    /// the resolved config that provenance records.
    pub fn config_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("kind".into(), Value::from(self.kind().as_str()));
        map.insert("name".into(), Value::from(self.name.clone()));
        map.insert("group_id".into(), Value::from(self.group_id.clone()));
        if !self.after.is_empty() {
            map.insert("after".into(), Value::from(self.after.clone()));
        }
        if self.mini {
            map.insert("mini".into(), Value::Bool(true));
        }
        map.insert(self.kind().as_str().into(), self.body.to_value());
        Value::Object(map)
    }

    /// The job as a JSON document, provenance included.
    pub fn to_value(&self) -> Value {
        let mut value = self.config_value();
        if let (Some(p), Value::Object(map)) = (&self.provenance, &mut value) {
            map.insert(
                "provenance".into(),
                serde_json::to_value(p).expect("provenance serialises"),
            );
        }
        value
    }

    /// A stable hash of the whole job (provenance included), for deduplication ids.
    pub fn content_hash(&self) -> String {
        crate::hash::sha256_hex(canonical_json(&self.to_value()).as_bytes())
    }

    /// The job's version: a short stable hash of its config ([`Job::config_value`],
    /// provenance left out). Two enqueues of the same file agree on it; an edit changes
    /// it. Running logs and checkpoints carry it, so that work of another version is
    /// never resumed.
    pub fn config_hash(&self) -> String {
        let digest = crate::hash::sha256_hex(canonical_json(&self.config_value()).as_bytes());
        digest[..32].to_string()
    }

    /// The version `enqueue` recorded in the job's provenance, if any.
    pub fn version(&self) -> Option<&str> {
        self.provenance.as_ref()?.config_hash.as_deref()
    }

    /// Which deliberate rerun of the job this is (0: the first run).
    pub fn rerun(&self) -> u32 {
        self.provenance.as_ref().map_or(0, |p| p.rerun)
    }

    /// The key of the job's artifact `file`: `{group}/{name}/{file}`, or
    /// `{group}/{name}/rerun-N/{file}` for its N-th rerun, so that a rerun starts from
    /// nothing and leaves the earlier run's files as they were.
    pub fn artifact_key(&self, file: &str) -> crate::error::BackendResult<ArtifactKey> {
        match self.rerun() {
            0 => ArtifactKey::for_job(&self.group_id, &self.name, file),
            n => ArtifactKey::for_job(&self.group_id, &self.name, &format!("rerun-{n}/{file}")),
        }
    }
}

/// Serialises a JSON value with object keys sorted at every level, so that equal values
/// always give equal text (and equal hashes).
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&map[k])))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// Parses JSON text, turning syntax errors into a [`JobError`] with line and column.
pub fn parse_json(text: &str, file: &str) -> Result<Value, JobError> {
    serde_json::from_str(text).map_err(|e| {
        let position = format!(" at line {} column {}", e.line(), e.column());
        let text = e.to_string();
        let what = text.strip_suffix(&position).unwrap_or(&text);
        JobError::new(
            file,
            "",
            format!(
                "not valid JSON (line {}, column {}): {what}",
                e.line(),
                e.column()
            ),
        )
    })
}

fn parse_kind(map: &Map<String, Value>, file: &str) -> Result<JobKind, JobError> {
    let names: Vec<&str> = JobKind::ALL.iter().map(|k| k.as_str()).collect();
    let name = match map.get("kind") {
        None => {
            return Err(JobError::new(
                file,
                "kind",
                format!(
                    "missing: every job names its kind, one of {}",
                    quote_list(&names)
                ),
            ));
        }
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(JobError::new(
                file,
                "kind",
                format!(
                    "expected a string naming the job kind, found {}",
                    type_name(other)
                ),
            ));
        }
    };
    let kind = JobKind::from_name(name).ok_or_else(|| {
        JobError::new(
            file,
            "kind",
            format!(
                "unknown job kind `{}`; expected one of {}",
                quoted(name),
                quote_list(&names)
            ),
        )
    })?;
    Ok(kind)
}

fn parse_after(value: Value, file: &str) -> Result<Vec<String>, JobError> {
    let Value::Array(items) = value else {
        return Err(JobError::new(
            file,
            "after",
            format!(
                "expected a list of job names or group ids, found {}",
                type_name(&value)
            ),
        ));
    };
    let mut after = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let path = format!("after[{i}]");
        let text = expect_string(item, file, &path)?;
        for part in text.splitn(2, '/') {
            check_id(part, file, &path)?;
        }
        after.push(text);
    }
    Ok(after)
}

fn expect_string(value: Value, file: &str, path: &str) -> Result<String, JobError> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(JobError::new(
            file,
            path,
            format!("expected a string, found {}", type_name(&other)),
        )),
    }
}

/// Checks that a name or group id is usable in artifact keys and queue group ids.
fn check_id(id: &str, file: &str, path: &str) -> Result<(), JobError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(JobError::new(
            file,
            path,
            format!(
                "`{}` is not a valid name: use 1 to 80 letters, digits, `_`, `-` or `.`, not starting with `.`",
                quoted(id)
            ),
        ))
    }
}

/// Whether `id` is a valid job name or group id.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 80
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn deserialize_at<T: DeserializeOwned>(
    value: Value,
    file: &str,
    prefix: &str,
) -> Result<T, JobError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." || inner.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{inner}")
        };
        JobError::new(file, path, e.into_inner().to_string())
    })
}

/// A short description of a JSON value's type, for error messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn quote_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<Job, JobError> {
        Job::parse(
            value,
            "runs/x/job_0.json",
            Some("job_0"),
            ProvenancePolicy::Reject,
        )
    }

    fn eval_job() -> Value {
        json!({
            "kind": "eval",
            "group_id": "demo",
            "eval": {
                "gold": {"path": "gold.json", "format": "multiwoz21"},
                "predictions": {"baseline": "empty"}
            }
        })
    }

    #[test]
    fn a_valid_eval_job_parses_and_round_trips() {
        let job = parse(eval_job()).unwrap();
        assert_eq!(job.name, "job_0");
        assert_eq!(job.kind(), JobKind::Eval);
        let again = parse(job.config_value()).unwrap();
        assert_eq!(job, again);
    }

    #[test]
    fn unknown_top_level_key_names_the_key() {
        let mut v = eval_job();
        v["colour"] = json!("red");
        let err = parse(v).unwrap_err();
        assert_eq!(err.path, "colour");
        assert!(err.message.contains("unknown key"), "{err}");
        assert!(
            err.to_string()
                .starts_with("runs/x/job_0.json: at `colour`")
        );
    }

    #[test]
    fn unknown_nested_key_names_the_full_path() {
        let mut v = eval_job();
        v["eval"]["gold"]["shape"] = json!(1);
        let err = parse(v).unwrap_err();
        assert_eq!(err.path, "eval.gold.shape");
        assert!(err.message.contains("unknown field `shape`"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_path_and_expectation() {
        let mut v = eval_job();
        v["eval"]["max_dialogues"] = json!("ten");
        let err = parse(v).unwrap_err();
        assert_eq!(err.path, "eval.max_dialogues");
        assert!(err.message.contains("invalid type: string"), "{err}");
    }

    #[test]
    fn missing_required_fields_are_named() {
        let mut v = eval_job();
        v.as_object_mut().unwrap().remove("group_id");
        assert_eq!(parse(v).unwrap_err().path, "group_id");
        let mut v = eval_job();
        v["eval"].as_object_mut().unwrap().remove("gold");
        let err = parse(v).unwrap_err();
        assert_eq!(err.path, "eval");
        assert!(err.message.contains("missing field `gold`"), "{err}");
    }

    #[test]
    fn unknown_kinds_and_mismatched_bodies_are_errors() {
        let mut v = eval_job();
        v["kind"] = json!("paint");
        let err = parse(v).unwrap_err();
        assert_eq!(err.path, "kind");
        assert!(err.message.contains("unknown job kind `paint`"), "{err}");
        let mut v = eval_job();
        v["kind"] = json!("retrain");
        let err = parse(v).unwrap_err();
        assert_eq!(err.path, "eval");
        assert!(err.message.contains("unknown key `eval`"), "{err}");
    }

    #[test]
    fn half_precision_weights_are_for_inference_only() {
        let retrain = json!({
            "kind": "retrain",
            "group_id": "demo",
            "retrain": {
                "model": {"path": "m", "weights": "bf16"},
                "data": {"new": [{"group": "labels"}]}
            }
        });
        let err = parse(retrain).unwrap_err();
        assert_eq!(err.path, "retrain.model.weights", "{err}");
        assert!(err.message.contains("f32"), "{err}");
        let label = json!({
            "kind": "self_label",
            "group_id": "demo",
            "self_label": {
                "data": {"path": "d.json", "format": "multiwoz21"},
                "model": {"path": "m", "device": "cuda:0", "weights": "bf16"},
                "retriever": {"model": {"path": "r"}}
            }
        });
        let job = parse(label).unwrap();
        let JobBody::SelfLabel(spec) = &job.body else {
            panic!("a self_label body")
        };
        assert_eq!(spec.model.weights, crate::self_label::WeightFormat::Bf16);
    }

    #[test]
    fn invalid_json_reports_line_and_column() {
        let err = parse_json("{\n  \"kind\": }", "f.json").unwrap_err();
        assert!(err.message.contains("line 2"), "{err}");
    }

    #[test]
    fn provenance_is_refused_in_hand_written_files() {
        let mut v = eval_job();
        v["provenance"] = json!({});
        assert_eq!(parse(v).unwrap_err().path, "provenance");
    }

    #[test]
    fn names_must_be_safe_ids() {
        let mut v = eval_job();
        v["group_id"] = json!("../etc");
        assert_eq!(parse(v).unwrap_err().path, "group_id");
        let mut v = eval_job();
        v["after"] = json!(["job_0", "other/job_1", "bad name"]);
        assert_eq!(parse(v).unwrap_err().path, "after[2]");
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": 2}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":2,"d":[1,{"y":1,"z":0}]},"b":1}"#
        );
    }

    #[test]
    fn content_hash_changes_with_content() {
        let a = parse(eval_job()).unwrap();
        let mut b = a.clone();
        b.mini = true;
        assert_ne!(a.content_hash(), b.content_hash());
        assert_eq!(a.content_hash(), a.clone().content_hash());
    }
}
