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
//! [`JobError`] that names the file, the JSON path and what was expected, then asks
//! each kind's settings to check what serde cannot (`EvalSpec::check`,
//! `SelfLabelSpec::check`, …).
//!
//! One file per kind's settings (`eval`, `noop`, `self_label`, `retrain`, `tune`,
//! `command`, `ingest`), with
//! [`DatasetRef`] (which they share), [`JobError`] and the JSON helpers beside them.

use std::fmt;

mod command;
mod dataset;
mod error;
mod eval;
mod ingest;
mod json;
mod noop;
mod params;
mod retrain;
mod self_label;
pub mod tune;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use self::command::{CommandInput, CommandSpec, MAX_TIMEOUT_S, is_plain_relative_path};
pub use self::dataset::{DatasetFormat, DatasetRef};
pub use self::error::JobError;
pub use self::eval::{Baseline, EvalSpec, ModelPredictions, PredictionSource};
pub use self::ingest::IngestSpec;
pub use self::json::{canonical_json, parse_json, type_name};
use self::json::{deserialize_at, expect_string, quote_list};
pub use self::noop::NoopSpec;
pub use self::retrain::{
    CheckpointSpec, ConfidenceFilter, ConfidenceMeasure, DataSource, GoldData, LORA_TARGETS,
    LoraSpec, RetrainSpec, Schedule, SplitPolicy, SplitSpec, SplitUse, TrainingData, TrainingSpec,
};
pub use self::self_label::{
    CheckpointRef, DialogueSelection, GenerationSpec, ModelRef, PromptMode, RetrieverSpec,
    SelfLabelSpec, TokenPrices, WeightFormat, check_retriever,
};
pub use self::tune::{
    Goal, PlannedTrial, Range, Search, TpeSettings, TrialRun, TuneSpec, round_job_name,
};
use crate::artifacts::ArtifactKey;
use crate::provenance::Provenance;
use crate::text::quoted;

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
    /// Run a program from the worker's allow-list.
    Command,
    /// Turn raw interaction logs into a de-duplicated dataset.
    Ingest,
}

impl JobKind {
    /// Every kind, in the order error messages list them.
    pub const ALL: [JobKind; 7] = [
        JobKind::SelfLabel,
        JobKind::Retrain,
        JobKind::Eval,
        JobKind::Noop,
        JobKind::Tune,
        JobKind::Command,
        JobKind::Ingest,
    ];

    /// The kind's name as it appears in job files.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::SelfLabel => "self_label",
            JobKind::Retrain => "retrain",
            JobKind::Eval => "eval",
            JobKind::Noop => "noop",
            JobKind::Tune => "tune",
            JobKind::Command => "command",
            JobKind::Ingest => "ingest",
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
    /// Settings of a `command` job.
    Command(Box<CommandSpec>),
    /// Settings of an `ingest` job.
    Ingest(IngestSpec),
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
            JobBody::Command(_) => JobKind::Command,
            JobBody::Ingest(_) => JobKind::Ingest,
        }
    }

    fn to_value(&self) -> Value {
        match self {
            JobBody::SelfLabel(spec) => serde_json::to_value(spec),
            JobBody::Retrain(spec) => serde_json::to_value(spec),
            JobBody::Eval(spec) => serde_json::to_value(spec),
            JobBody::Noop(spec) => serde_json::to_value(spec),
            JobBody::Tune(spec) => serde_json::to_value(spec),
            JobBody::Command(spec) => serde_json::to_value(spec),
            JobBody::Ingest(spec) => serde_json::to_value(spec),
        }
        .expect("job bodies serialise to JSON")
    }
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
    /// A job (`name` in the same group, or `group/name`) whose manifest entry gives
    /// this job parameters when it starts: a tune job's best (`best_params`), or the
    /// points a model-based round proposed for it (`params_for`). It is one of `after`.
    pub params_from: Option<String>,
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

/// Whether a job document may carry a `provenance` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvenancePolicy {
    /// Files written by people: `provenance` is written by `enqueue`, not by hand.
    Reject,
    /// Messages off the queue: `provenance` is expected.
    Accept,
}

const COMMON_KEYS: [&str; 7] = [
    "kind",
    "name",
    "group_id",
    "after",
    "mini",
    "params_from",
    "provenance",
];

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
        let mut after = match map.remove("after") {
            None => Vec::new(),
            Some(v) => parse_after(v, file)?,
        };
        let params_from = match map.remove("params_from") {
            None => None,
            Some(v) => {
                let source = expect_string(v, file, "params_from")?;
                for part in source.splitn(2, '/') {
                    check_id(part, file, "params_from")?;
                }
                // The job it reads from must have finished: it is a dependency.
                if !after.contains(&source) {
                    after.push(source.clone());
                }
                Some(source)
            }
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
            JobKind::Eval => {
                let spec: EvalSpec = deserialize_at(body_value, file, "eval")?;
                spec.check()
                    .map_err(|(path, message)| JobError::new(file, path, message))?;
                JobBody::Eval(spec)
            }
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
            JobKind::Command => {
                let spec: CommandSpec = deserialize_at(body_value, file, "command")?;
                spec.check()
                    .map_err(|(path, message)| JobError::new(file, path, message))?;
                // The jobs whose artifacts it reads must have finished: they are
                // dependencies.
                for input in &spec.inputs {
                    if !after.contains(&input.from) {
                        after.push(input.from.clone());
                    }
                }
                JobBody::Command(Box::new(spec))
            }
            JobKind::Ingest => {
                let spec: IngestSpec = deserialize_at(body_value, file, "ingest")?;
                spec.check()
                    .map_err(|(path, message)| JobError::new(file, path, message))?;
                if let Some(from) = &spec.from
                    && !after.contains(from)
                {
                    // The archives' job must have finished: it is a dependency.
                    after.push(from.clone());
                }
                JobBody::Ingest(spec)
            }
            JobKind::Retrain => {
                let spec: RetrainSpec = deserialize_at(body_value, file, "retrain")?;
                spec.check()
                    .map_err(|(path, message)| JobError::new(file, path, message))?;
                JobBody::Retrain(Box::new(spec))
            }
        };
        Ok(Job {
            name,
            group_id,
            after,
            mini,
            params_from,
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
        if let Some(source) = &self.params_from {
            map.insert("params_from".into(), Value::from(source.clone()));
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

/// The group and name a job reference points to: `group/name`, or a plain `name` in
/// `own_group` (how `after`, `params_from`, `inputs[].from` and `ingest.from` name
/// jobs).
pub fn job_ref<'a>(reference: &'a str, own_group: &'a str) -> (&'a str, &'a str) {
    reference.split_once('/').unwrap_or((own_group, reference))
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

    /// A retrain job of a model at `m` on `data`.
    fn retrain_on(data: Value) -> Value {
        json!({
            "kind": "retrain",
            "group_id": "demo",
            "retrain": {"model": {"path": "m"}, "data": data}
        })
    }

    fn retrain_spec(job: Value) -> RetrainSpec {
        match parse(job).unwrap().body {
            JobBody::Retrain(spec) => *spec,
            other => panic!("a retrain body, not {other:?}"),
        }
    }

    #[test]
    fn a_confidence_filter_keeps_a_share_and_ranks_by_a_known_measure() {
        let retrain = |confident: Value| {
            retrain_on(json!({"new": [{"group": "labels"}], "confident": confident}))
        };
        let spec = retrain_spec(retrain(json!({"keep": 0.5})));
        assert_eq!(
            spec.data.confident,
            Some(ConfidenceFilter {
                keep: 0.5,
                by: ConfidenceMeasure::MinLogprob
            })
        );
        for keep in [0.0, -0.1, 1.5] {
            let err = parse(retrain(json!({"keep": keep}))).unwrap_err();
            assert_eq!(err.path, "retrain.data.confident.keep", "{err}");
        }
        let err = parse(retrain(json!({"keep": 0.5, "by": "vibes"}))).unwrap_err();
        assert!(err.path.starts_with("retrain.data.confident"), "{err}");
        assert!(err.message.contains("min_logprob"), "{err}");
    }

    #[test]
    fn gold_data_repeats_at_least_once() {
        let retrain = |repeat: Value| {
            let gold = json!({"path": "g.json", "format": "icdst", "repeat": repeat});
            retrain_on(json!({"new": [{"group": "labels"}, {"gold": gold}]}))
        };
        let spec = retrain_spec(retrain(json!(3)));
        assert!(matches!(&spec.data.new[1], DataSource::Gold(g) if g.repeat == 3));
        let err = parse(retrain(json!(0))).unwrap_err();
        assert_eq!(err.path, "retrain.data.new[1].gold.repeat", "{err}");
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
        assert_eq!(spec.model.weight_format(), WeightFormat::Bf16);
        // Left out, the weights follow the device: bf16 on a GPU, f32 on a CPU.
        let mut model = spec.model.clone();
        model.weights = None;
        assert_eq!(model.weight_format(), WeightFormat::Bf16);
        model.device = "cpu".into();
        assert_eq!(model.weight_format(), WeightFormat::F32);
        model.weights = Some(WeightFormat::F16);
        assert_eq!(model.weight_format(), WeightFormat::F16);
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
