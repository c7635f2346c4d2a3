//! Settings of a `self_label` job.
//!
//! ```json
//! "self_label": {
//!   "data": {"path": "../shared/data/multiwoz21/val.json.zip", "format": "multiwoz21"},
//!   "dialogues": {"shuffle_seed": 42, "start": 0, "count": 50},
//!   "model": {"path": ".models/SmolLM2-135M-Instruct"},
//!   "retriever": {"model": {"path": ".models/all-MiniLM-L6-v2"}, "k_examples": 8},
//!   "generation": {"max_new_tokens": 48},
//!   "batch_size": 8
//! }
//! ```

use serde::{Deserialize, Serialize};

use super::dataset::DatasetRef;

/// Settings of a `self_label` job: label dialogues with a causal LM prompted with
/// examples retrieved from earlier labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfLabelSpec {
    /// The dialogues to label. Their gold states, when the file has them, are used only
    /// to score the labels (JGA), never shown to the model.
    pub data: DatasetRef,
    /// Which of the file's dialogues this job labels.
    #[serde(default)]
    pub dialogues: DialogueSelection,
    /// The causal LM.
    pub model: ModelRef,
    /// How the prompt is laid out; when absent, the prompt the model was fine-tuned with
    /// (a `retrain` checkpoint records it), else `in_context`. Naming one that differs
    /// from the model's is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<PromptMode>,
    /// How in-context examples are retrieved; needed by the `in_context` prompt only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retriever: Option<RetrieverSpec>,
    /// How tokens are picked.
    #[serde(default)]
    pub generation: GenerationSpec,
    /// Dialogues labelled together in one batch (their turns are sequential; different
    /// dialogues are independent).
    /// When absent, the worker picks it: 8 on a CPU; on a GPU as many as fit in its
    /// free memory (the decision is logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Write the progress artifact after this many labelled turns, so that a restarted
    /// job resumes where it stopped.
    #[serde(default = "default_checkpoint_turns")]
    pub checkpoint_turns: usize,
}

fn default_checkpoint_turns() -> usize {
    100
}

/// How a prompt is laid out for the causal LM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptMode {
    /// The schema as function signatures, then retrieved examples, then the turn: for a
    /// model that labels in context (any instruction-tuned model).
    #[default]
    InContext,
    /// The state so far as calls, the system's last words and the user's, then the
    /// open update: no schema, no examples, a few dozen tokens. For a model fine-tuned
    /// on this form (`retrain` with `"prompt": "compact"`).
    Compact,
}

impl PromptMode {
    /// The mode as job files spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            PromptMode::InContext => "in_context",
            PromptMode::Compact => "compact",
        }
    }
}

/// A slice of a dataset's dialogues.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialogueSelection {
    /// Leave out the dialogues that this file holds (a pool of unlabelled dialogues is
    /// a larger set minus the gold ones a model was trained on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<DatasetRef>,
    /// Shuffle the file's dialogues with this seed first (the seed pipeline uses 42);
    /// file order when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shuffle_seed: Option<u64>,
    /// First dialogue (after shuffling), from 0.
    #[serde(default)]
    pub start: usize,
    /// How many dialogues; to the end when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// Label only each dialogue's first N turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<usize>,
}

/// The model a `retrain` job saved, named in a job file as `group/job` (its final
/// model) or `group/job/best` (its best by validation loss). Parsed once, when the job
/// file is read; written back in the same form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CheckpointRef {
    /// The retrain job's group.
    pub group_id: String,
    /// The retrain job.
    pub job: String,
    /// Its best model by validation loss, rather than its final one.
    pub best: bool,
}

impl CheckpointRef {
    /// The final model of `group_id/job`.
    pub fn final_of(group_id: &str, job: &str) -> CheckpointRef {
        CheckpointRef {
            group_id: group_id.to_string(),
            job: job.to_string(),
            best: false,
        }
    }
}

impl TryFrom<String> for CheckpointRef {
    type Error = String;

    fn try_from(text: String) -> Result<CheckpointRef, String> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts[..] {
            [group, job] if !group.is_empty() && !job.is_empty() => {
                Ok(CheckpointRef::final_of(group, job))
            }
            [group, job, "best"] if !group.is_empty() && !job.is_empty() => Ok(CheckpointRef {
                best: true,
                ..CheckpointRef::final_of(group, job)
            }),
            _ => Err(format!(
                "`{}` is not a checkpoint: expected `group/job` (a retrain job's final model) or `group/job/best`",
                crate::text::capped(&text)
            )),
        }
    }
}

impl From<CheckpointRef> for String {
    fn from(reference: CheckpointRef) -> String {
        reference.to_string()
    }
}

impl std::fmt::Display for CheckpointRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.group_id, self.job)?;
        if self.best {
            f.write_str("/best")?;
        }
        Ok(())
    }
}

/// Where a model is: a local `path`, or an `id` (and `revision`) in the Hugging Face
/// cache; plus where it runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    /// A local folder or `.gguf` file, relative to the worker's working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A Hugging Face model id, found in the local Hugging Face cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The revision of `id` (`main` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// With `id`: the `.gguf` file in the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The model a `retrain` job saved, as `group/job` (its final model) or
    /// `group/job/best` (its best by validation loss); fetched from the artifact store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointRef>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// How the causal LM's weights are held: `stored` or `q8_0` (a GGUF model's
    /// quantized blocks), `f32`, `f16` or `bf16` (dense, in that precision); see the
    /// README. When absent, [`ModelRef::weight_format`] picks by device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<WeightFormat>,
    /// An OpenAI-compatible server's base URL (`http://host:8000/v1`): the causal LM
    /// runs there (vLLM, SGLang, llama.cpp's server, a hosted API), through its
    /// completions API, instead of on the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// With `endpoint`: the model's name on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// With `endpoint`: the worker's environment variable that holds the API key, sent
    /// as `Authorization: Bearer …` and nowhere else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// With `endpoint`: requests in flight at once (default 8); also the batch size
    /// when the job gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<usize>,
    /// With `endpoint`: prices per million tokens, to report the job's cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_million: Option<TokenPrices>,
}

/// Prices per million tokens, in any one currency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenPrices {
    /// Per million prompt tokens.
    pub prompt: f64,
    /// Per million completion tokens.
    pub completion: f64,
}

// Prices are checked finite, so comparing their bits is equality.
impl Eq for TokenPrices {}

impl std::hash::Hash for TokenPrices {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.prompt.to_bits().hash(state);
        self.completion.to_bits().hash(state);
    }
}

/// The most requests an endpoint model may have in flight.
pub const MAX_ENDPOINT_CONCURRENCY: usize = 1024;

fn default_device() -> String {
    "cpu".into()
}

/// How a causal LM's weights are held in memory, and so the precision it runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightFormat {
    /// As stored in the file.
    Stored,
    /// Re-quantized to Q8_0 at load.
    #[serde(rename = "q8_0")]
    Q8_0,
    /// Dequantized to f32: fastest for long prompts on a CPU, and the CPU's default.
    #[default]
    F32,
    /// Dense f16 weights, activations and KV cache: half f32's memory, and what GPU
    /// tensor cores run.
    F16,
    /// Dense bf16, as `f16` with f32's range: the usual choice on recent GPUs, and their
    /// default.
    Bf16,
}

/// How in-context examples are retrieved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrieverSpec {
    /// The sentence embedding model (BERT family).
    pub model: ModelRef,
    /// Manifest groups whose labels seed the index; the job's own group when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// Gold-labelled dialogues added to the index as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold_examples: Option<DatasetRef>,
    /// Examples per prompt.
    #[serde(default = "default_k_examples")]
    pub k_examples: usize,
    /// Of those, how many must have distinct slot signatures (which slots they set).
    #[serde(default = "default_minimum_distinct")]
    pub minimum_distinct: usize,
    /// No retrieval until the index holds this many turns.
    #[serde(default = "default_example_warmup")]
    pub example_warmup: usize,
    /// Add the job's own labels to the index as it goes.
    #[serde(default = "default_true")]
    pub add_predictions: bool,
}

fn default_k_examples() -> usize {
    8
}
fn default_minimum_distinct() -> usize {
    4
}
fn default_example_warmup() -> usize {
    32
}
fn default_true() -> bool {
    true
}

/// How tokens are picked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationSpec {
    /// Most tokens per completion.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// 0 for greedy decoding.
    #[serde(default)]
    pub temperature: f64,
    /// Nucleus sampling threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Sampling seed.
    #[serde(default)]
    pub seed: u64,
}

fn default_max_new_tokens() -> usize {
    48
}

impl Default for GenerationSpec {
    fn default() -> Self {
        GenerationSpec {
            max_new_tokens: default_max_new_tokens(),
            temperature: 0.0,
            top_p: None,
            seed: 0,
        }
    }
}

impl ModelRef {
    /// How the weights are held: as the job says, else `bf16` on a GPU (half f32's
    /// memory and bandwidth, what its tensor cores run, with f32's range) and `f32` on
    /// a CPU (batch-invariant, and the fastest for long prompts there). Read it after
    /// the worker has placed the model on its device.
    pub fn weight_format(&self) -> WeightFormat {
        self.weights
            .unwrap_or(if self.device.trim().starts_with("cuda") {
                WeightFormat::Bf16
            } else {
                WeightFormat::F32
            })
    }

    /// Checks the fields' combination; errors name the field under `at`.
    pub fn check(&self, at: &str) -> Result<(), (String, String)> {
        let err = |field: &str, message: &str| Err((format!("{at}.{field}"), message.to_string()));
        if let Some(endpoint) = &self.endpoint {
            return self.check_endpoint(endpoint, at);
        }
        for (field, given) in [
            ("name", self.name.is_some()),
            ("api_key_env", self.api_key_env.is_some()),
            ("max_concurrency", self.max_concurrency.is_some()),
            ("price_per_million", self.price_per_million.is_some()),
        ] {
            if given {
                return err(field, "goes with `endpoint` (a model served over HTTP)");
            }
        }
        if self.checkpoint.is_some() && (self.path.is_some() || self.id.is_some()) {
            return err("checkpoint", "give one of `path`, `id` and `checkpoint`");
        }
        match (&self.path, &self.id) {
            (Some(_), Some(_)) => return err("id", "give `path` or `id`, not both"),
            (None, None) if self.checkpoint.is_none() => {
                return Err((
                    format!("{at}.path"),
                    "missing: give `path` (a local folder or .gguf file), `id` (a Hugging Face model id in the local cache) or `checkpoint` (a retrain job's model)".into(),
                ));
            }
            (Some(_), None) if self.revision.is_some() => {
                return err("revision", "`revision` goes with `id`, not `path`");
            }
            (Some(_), None) if self.file.is_some() => {
                return err("file", "`file` goes with `id`; put the file in `path`");
            }
            _ => {}
        }
        let device_ok = self.device == "cpu"
            || self.device == "cuda"
            || self
                .device
                .strip_prefix("cuda:")
                .is_some_and(|n| n.parse::<usize>().is_ok());
        if !device_ok {
            return err("device", "expected `cpu`, `cuda` or `cuda:N`");
        }
        Ok(())
    }
}

impl Default for ModelRef {
    /// No model yet, on the CPU: fill in `path`, `id`, `checkpoint` or `endpoint`.
    fn default() -> Self {
        ModelRef {
            path: None,
            id: None,
            revision: None,
            file: None,
            checkpoint: None,
            device: default_device(),
            weights: None,
            endpoint: None,
            name: None,
            api_key_env: None,
            max_concurrency: None,
            price_per_million: None,
        }
    }
}

impl ModelRef {
    /// A model behind an OpenAI-compatible endpoint: a URL, a name, nothing of a local
    /// model.
    fn check_endpoint(&self, endpoint: &str, at: &str) -> Result<(), (String, String)> {
        let err = |field: &str, message: String| Err((format!("{at}.{field}"), message));
        if self.path.is_some() || self.id.is_some() || self.checkpoint.is_some() {
            return err(
                "endpoint",
                "give `endpoint` (a served model) or `path` / `id` / `checkpoint` (a local one), not both".into(),
            );
        }
        let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
        if !scheme_ok || endpoint.contains(char::is_whitespace) {
            return err(
                "endpoint",
                "expected the server's base URL, such as http://host:8000/v1".into(),
            );
        }
        if self.name.as_deref().is_none_or(|n| n.trim().is_empty()) {
            return err(
                "name",
                "missing: the model's name on the server (its `/v1/models` lists them)".into(),
            );
        }
        if let Some(var) = &self.api_key_env {
            let valid = !var.is_empty()
                && !var.starts_with(|c: char| c.is_ascii_digit())
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return err(
                    "api_key_env",
                    "expected the name of an environment variable (such as OPENAI_API_KEY), not the key".into(),
                );
            }
        }
        if let Some(n) = self.max_concurrency
            && !(1..=MAX_ENDPOINT_CONCURRENCY).contains(&n)
        {
            return err(
                "max_concurrency",
                format!("expected 1 to {MAX_ENDPOINT_CONCURRENCY}"),
            );
        }
        if let Some(p) = self.price_per_million
            && !(p.prompt >= 0.0
                && p.completion >= 0.0
                && p.prompt.is_finite()
                && p.completion.is_finite())
        {
            return err("price_per_million", "expected prices of 0 or more".into());
        }
        Ok(())
    }
}

/// Checks a retriever against the prompt it serves (under `at`): the `in_context`
/// prompt named in a job needs one. (With no prompt named, the model decides, and the
/// runner says so if it needs a retriever that is missing.)
pub fn check_retriever(
    prompt: Option<PromptMode>,
    retriever: Option<&RetrieverSpec>,
    at: &str,
) -> Result<(), (String, String)> {
    let Some(retriever) = retriever else {
        return match prompt {
            Some(PromptMode::InContext) => Err((
                format!("{at}.retriever"),
                "missing: the in_context prompt shows retrieved examples; give a retriever".into(),
            )),
            _ => Ok(()),
        };
    };
    retriever.model.check(&format!("{at}.retriever.model"))?;
    if retriever.model.endpoint.is_some() {
        return Err((
            format!("{at}.retriever.model.endpoint"),
            "the retriever's sentence embedder runs on the worker: give its `path` or `id`".into(),
        ));
    }
    if retriever.minimum_distinct > retriever.k_examples {
        return Err((
            format!("{at}.retriever.minimum_distinct"),
            format!("must not exceed k_examples ({})", retriever.k_examples),
        ));
    }
    Ok(())
}

impl SelfLabelSpec {
    /// Checks what serde cannot: ranges and combinations. The error names the field.
    pub fn check(&self) -> Result<(), (String, String)> {
        let at = |f: &str| format!("self_label.{f}");
        self.model.check(&at("model"))?;
        check_retriever(self.prompt, self.retriever.as_ref(), "self_label")?;
        if self.batch_size == Some(0) {
            return Err((at("batch_size"), "expected at least 1".into()));
        }
        if self.checkpoint_turns == 0 {
            return Err((at("checkpoint_turns"), "expected at least 1".into()));
        }
        if self.generation.max_new_tokens == 0 {
            return Err((
                at("generation.max_new_tokens"),
                "expected at least 1".into(),
            ));
        }
        if self.generation.temperature.is_nan() || self.generation.temperature < 0.0 {
            return Err((
                at("generation.temperature"),
                "expected 0 (greedy) or more".into(),
            ));
        }
        if let Some(p) = self.generation.top_p
            && (p.is_nan() || p <= 0.0 || p > 1.0)
        {
            return Err((at("generation.top_p"), "expected a number in (0, 1]".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::job::{Job, JobBody, ProvenancePolicy};

    fn parse(body: serde_json::Value) -> Result<Job, crate::job::JobError> {
        Job::parse(
            json!({"kind": "self_label", "group_id": "g", "self_label": body}),
            "runs/x/job_0.json",
            Some("job_0"),
            ProvenancePolicy::Reject,
        )
    }

    fn valid() -> serde_json::Value {
        json!({
            "data": {"path": "d.json", "format": "multiwoz21"},
            "model": {"path": ".models/lm"},
            "retriever": {"model": {"path": ".models/retriever"}}
        })
    }

    #[test]
    fn defaults_fill_what_a_job_leaves_out() {
        let job = parse(valid()).unwrap();
        let JobBody::SelfLabel(spec) = &job.body else {
            panic!("not a self_label body")
        };
        assert_eq!(spec.batch_size, None, "the worker picks it");
        assert_eq!(spec.retriever.as_ref().unwrap().k_examples, 8);
        assert_eq!(spec.retriever.as_ref().unwrap().example_warmup, 32);
        assert_eq!(spec.model.device, "cpu");
        assert_eq!(spec.generation.temperature, 0.0);
        // The resolved config reads back to the same job.
        let again = Job::parse(job.config_value(), "x", None, ProvenancePolicy::Reject).unwrap();
        assert_eq!(again, job);
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let cases = [
            (
                "/model/id",
                json!("owner/m"),
                "self_label.model.id",
                "not both",
            ),
            (
                "/model/device",
                json!("gpu"),
                "self_label.model.device",
                "cuda:N",
            ),
            (
                "/retriever/minimum_distinct",
                json!(9),
                "self_label.retriever.minimum_distinct",
                "k_examples",
            ),
            (
                "/batch_size",
                json!(0),
                "self_label.batch_size",
                "at least 1",
            ),
            (
                "/generation",
                json!({"top_p": 1.5}),
                "self_label.generation.top_p",
                "(0, 1]",
            ),
            (
                "/retriever/k",
                json!(3),
                "self_label.retriever.k",
                "unknown field",
            ),
            (
                "/model/checkpoint",
                json!("g/train/worst"),
                "self_label.model.checkpoint",
                "group/job/best",
            ),
        ];
        for (pointer, value, path, words) in cases {
            let mut body = valid();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            body.pointer_mut(if parent.is_empty() { "" } else { parent })
                .unwrap()
                .as_object_mut()
                .unwrap()
                .insert(key.to_string(), value);
            let err = parse(body).unwrap_err();
            assert_eq!(err.file, "runs/x/job_0.json");
            assert_eq!(err.path, path, "{pointer}: {err}");
            assert!(err.message.contains(words), "{pointer}: {err}");
        }
    }

    #[test]
    fn a_checkpoint_reference_is_parsed_once_and_written_back_as_it_was() {
        let mut body = valid();
        body["model"] = json!({"checkpoint": "g/train/best"});
        let job = parse(body).unwrap();
        let JobBody::SelfLabel(spec) = &job.body else {
            panic!("not a self_label body")
        };
        let reference = spec.model.checkpoint.as_ref().unwrap();
        assert_eq!(
            (
                reference.group_id.as_str(),
                reference.job.as_str(),
                reference.best
            ),
            ("g", "train", true)
        );
        assert_eq!(
            job.config_value()["self_label"]["model"]["checkpoint"],
            "g/train/best"
        );
        for bad in ["train", "g/", "/train", "g/train/final", "a/b/c/d"] {
            let mut body = valid();
            body["model"] = json!({"checkpoint": bad});
            let err = parse(body).unwrap_err();
            assert_eq!(err.path, "self_label.model.checkpoint", "{bad}: {err}");
        }
    }

    #[test]
    fn an_endpoint_model_is_a_url_and_a_name_and_nothing_local() {
        let mut body = valid();
        body["model"] = json!({"endpoint": "http://localhost:8000/v1", "name": "smol",
                               "api_key_env": "OPENAI_API_KEY", "max_concurrency": 16,
                               "price_per_million": {"prompt": 0.1, "completion": 0.4}});
        let job = parse(body.clone()).unwrap();
        let again = Job::parse(job.config_value(), "x", None, ProvenancePolicy::Reject).unwrap();
        assert_eq!(again, job);
        for (change, path) in [
            (json!({"path": "m"}), "self_label.model.endpoint"),
            (
                json!({"endpoint": "localhost:8000"}),
                "self_label.model.endpoint",
            ),
            (json!({"name": null}), "self_label.model.name"),
            (
                json!({"api_key_env": "sk-123 secret"}),
                "self_label.model.api_key_env",
            ),
            (
                json!({"max_concurrency": 0}),
                "self_label.model.max_concurrency",
            ),
        ] {
            let mut bad = body.clone();
            for (k, v) in change.as_object().unwrap() {
                if v.is_null() {
                    bad["model"].as_object_mut().unwrap().remove(k);
                } else {
                    bad["model"][k] = v.clone();
                }
            }
            let err = parse(bad).unwrap_err();
            assert_eq!(err.path, path, "{change}: {err}");
            assert!(!err.message.contains("sk-123"), "{err}");
        }
        // Endpoint settings without an endpoint, and a retriever on an endpoint.
        let mut bad = valid();
        bad["model"]["max_concurrency"] = json!(4);
        assert_eq!(
            parse(bad).unwrap_err().path,
            "self_label.model.max_concurrency"
        );
        let mut bad = valid();
        bad["retriever"]["model"] = json!({"endpoint": "http://h/v1", "name": "e"});
        assert_eq!(
            parse(bad).unwrap_err().path,
            "self_label.retriever.model.endpoint"
        );
    }
}
