//! `self_label` jobs: label dialogues with a causal LM prompted with examples retrieved
//! from what earlier jobs labelled.
//!
//! At job start the example index is built from the labels of the manifest groups the
//! job names (and optional gold dialogues). Dialogues are then labelled in batches: one
//! turn of each of up to `batch_size` dialogues per forward pass, since a turn's prompt
//! holds the state predicted for the turn before. Every `checkpoint_turns` labelled
//! turns the running log is written as an artifact; a redelivered job reads it back and
//! resumes. The manifest entry is written (by the worker) only when every turn is done.

mod models;
mod retrieval;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use labelfleet_core::artifacts::ArtifactKey;
use labelfleet_core::job::{
    DatasetFormat, DialogueSelection, Job, JobBody, JobKind, SelfLabelSpec, canonical_json,
};
use labelfleet_dst::metrics::{ValueMatcher, score};
use labelfleet_dst::prompt::{Example, apply_update, build_prompt, parse_update, retrieval_text};
use labelfleet_dst::{Dialogue, Format, Prediction, SlotValues, read_dataset};
use labelfleet_manifest::list_all;
use labelfleet_models::{CausalLm, GenerationParams, SentenceEmbedder};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use self::models::ModelCache;
use self::retrieval::{ExampleIndex, IndexedTurn, context_of, example_of};
use crate::runner::{JobContext, JobFailure, JobOutput, JobRunner};

/// Dialogues a `--mini` job labels, and turns of each.
pub const MINI_DIALOGUES: usize = 2;
/// Turns of each dialogue a `--mini` job labels.
pub const MINI_TURNS: usize = 3;
/// Texts embedded per forward pass of the retriever.
const EMBED_BATCH: usize = 32;
/// The artifact holding every labelled turn; written periodically while the job runs.
pub const RUNNING_LOG: &str = "running_log.json";

/// One labelled turn: what the model saw and said, and the state that follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelledTurn {
    /// The dialogue.
    pub dialogue_id: String,
    /// The user turn, from 0.
    pub turn_id: u32,
    /// The system utterance before the user's.
    pub system_utterance: String,
    /// The user utterance.
    pub user_utterance: String,
    /// The predicted state before the turn.
    pub last_slot_values: SlotValues,
    /// The predicted state after the turn.
    pub slot_values: SlotValues,
    /// What the turn changed, as predicted.
    pub turn_slot_values: SlotValues,
    /// The prompt the model completed.
    pub prompt: String,
    /// The model's completion, as generated.
    pub completion: String,
    /// Whether the completion parsed; an invalid one leaves the state unchanged.
    pub valid: bool,
    /// Where the in-context examples came from (`group/run:dialogue#turn`).
    pub examples: Vec<String>,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub new_tokens: usize,
    /// Seconds of the batch this turn was labelled in.
    pub batch_seconds: f64,
}

/// The running log artifact: the job's identity and its labelled turns so far.
#[derive(Debug, Serialize, Deserialize)]
struct RunningLog {
    /// Hash of the job's config: a log of a different job is never resumed.
    config_hash: String,
    /// Whether every turn has been labelled.
    complete: bool,
    turns: Vec<LabelledTurn>,
}

/// Runs `self_label` jobs; models are cached across jobs.
#[derive(Default)]
pub struct SelfLabelRunner {
    models: Arc<ModelCache>,
}

fn format_of(format: DatasetFormat) -> Format {
    match format {
        DatasetFormat::Multiwoz21 => Format::Multiwoz21,
        DatasetFormat::Icdst => Format::Icdst,
        DatasetFormat::Sgd => Format::Sgd,
    }
}

/// A stable shuffle (splitmix64-driven Fisher–Yates): the same seed picks the same
/// dialogues on every machine and every version of labelfleet.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// The dialogues a job labels, cut to its turn limit.
pub fn select_dialogues(
    mut dialogues: Vec<Dialogue>,
    selection: &DialogueSelection,
    mini: bool,
) -> Vec<Dialogue> {
    if let Some(seed) = selection.shuffle_seed {
        shuffle(&mut dialogues, seed);
    }
    let mut count = selection.count.unwrap_or(usize::MAX);
    let mut max_turns = selection.max_turns.unwrap_or(usize::MAX);
    if mini {
        count = count.min(MINI_DIALOGUES);
        max_turns = max_turns.min(MINI_TURNS);
    }
    dialogues
        .into_iter()
        .skip(selection.start)
        .take(count)
        .map(|mut d| {
            d.turns.truncate(max_turns);
            d
        })
        .collect()
}

fn read_data(path: &str, format: DatasetFormat) -> Result<Vec<Dialogue>, JobFailure> {
    read_dataset(Path::new(path), format_of(format)).map_err(|e| {
        JobFailure::new(format!(
            "cannot read the dataset: {e} (paths are relative to the worker's working directory)"
        ))
    })
}

fn config_hash(job: &Job) -> String {
    let digest = Sha256::digest(canonical_json(&job.config_value()).as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Everything the blocking labelling loop needs.
struct Labelling {
    spec: SelfLabelSpec,
    source: String,
    dialogues: Vec<Dialogue>,
    done: HashMap<String, Vec<LabelledTurn>>,
    index: ExampleIndex,
    lm: Arc<CausalLm>,
    embedder: Arc<SentenceEmbedder>,
}

impl SelfLabelRunner {
    /// Labelled turns of earlier `self_label` jobs in `group`, as index entries (without
    /// embeddings yet).
    async fn group_examples(
        &self,
        group: &str,
        ctx: &JobContext,
    ) -> Result<Vec<(String, String, Example)>, JobFailure> {
        let entries = list_all(&*ctx.manifest, group)
            .await
            .map_err(|e| JobFailure::new(format!("listing manifest group {group}: {e}")))?;
        let mut out = Vec::new();
        for entry in entries
            .iter()
            .filter(|e| e.kind == JobKind::SelfLabel.as_str())
        {
            let Some((key, bytes)) = ctx.read_entry_artifact(entry, "labels").await? else {
                continue;
            };
            let log: RunningLog = serde_json::from_slice(&bytes)
                .map_err(|e| JobFailure::new(format!("{key}: not a running log: {e}")))?;
            for t in log.turns {
                out.push((
                    format!(
                        "{}/{}:{}#{}",
                        entry.group_id, entry.run_id, t.dialogue_id, t.turn_id
                    ),
                    t.dialogue_id.clone(),
                    example_of(
                        &t.last_slot_values,
                        &t.system_utterance,
                        &t.user_utterance,
                        &t.turn_slot_values,
                    ),
                ));
            }
        }
        Ok(out)
    }

    async fn resume(
        &self,
        job: &Job,
        ctx: &JobContext,
        hash: &str,
    ) -> HashMap<String, Vec<LabelledTurn>> {
        let Ok(key) = ArtifactKey::for_job(&job.group_id, &job.name, RUNNING_LOG) else {
            return HashMap::new();
        };
        let Ok(Some(bytes)) = ctx.artifacts.get(&key).await else {
            return HashMap::new();
        };
        let Ok(log) = serde_json::from_slice::<RunningLog>(&bytes) else {
            tracing::warn!(%key, "the running log is unreadable; labelling from the start");
            return HashMap::new();
        };
        if log.config_hash != hash {
            tracing::info!(%key, "the running log belongs to a different config; labelling from the start");
            return HashMap::new();
        }
        let mut done: HashMap<String, Vec<LabelledTurn>> = HashMap::new();
        for t in log.turns {
            done.entry(t.dialogue_id.clone()).or_default().push(t);
        }
        let turns: usize = done.values().map(Vec::len).sum();
        tracing::info!(job = %job.key(), turns, "resuming from the running log");
        done
    }
}

fn embed_into(
    index: &mut ExampleIndex,
    embedder: &SentenceEmbedder,
    items: Vec<(String, String, Example)>,
) -> Result<(), JobFailure> {
    let texts: Vec<String> = items
        .iter()
        .map(|(_, _, e)| retrieval_text(&e.context))
        .collect();
    let embeddings = embedder
        .embed(&texts, EMBED_BATCH)
        .map_err(|e| JobFailure::new(format!("embedding examples: {e}")))?;
    for ((source, dialogue_id, example), embedding) in items.into_iter().zip(embeddings) {
        index.push(IndexedTurn {
            source,
            dialogue_id,
            example,
            embedding,
        });
    }
    Ok(())
}

impl Labelling {
    /// Labels every remaining turn; `checkpoint` is called with all turns so far every
    /// `checkpoint_turns` turns and may stop the job by returning an error.
    fn run(
        &mut self,
        mut checkpoint: impl FnMut(&HashMap<String, Vec<LabelledTurn>>) -> Result<(), JobFailure>,
    ) -> Result<(), JobFailure> {
        let spec = self.spec.clone();
        let params = GenerationParams {
            max_new_tokens: spec.generation.max_new_tokens,
            temperature: spec.generation.temperature,
            top_p: spec.generation.top_p,
            seed: spec.generation.seed,
            stop: labelfleet_dst::prompt::STOP_SEQUENCES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let dialogues = std::mem::take(&mut self.dialogues);
        let unfinished: Vec<&Dialogue> = dialogues
            .iter()
            .filter(|d| self.done.get(&d.dialogue_id).map_or(0, Vec::len) < d.turns.len())
            .collect();
        let mut waiting = unfinished.into_iter();
        let mut active: Vec<&Dialogue> = Vec::new();
        let mut since_checkpoint = 0;
        loop {
            while active.len() < spec.batch_size {
                match waiting.next() {
                    Some(d) => active.push(d),
                    None => break,
                }
            }
            if active.is_empty() {
                break;
            }
            let mut prompts = Vec::with_capacity(active.len());
            let mut pending = Vec::with_capacity(active.len());
            for d in &active {
                let done = self
                    .done
                    .get(&d.dialogue_id)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                let turn = &d.turns[done.len()];
                let last = done
                    .last()
                    .map(|t| t.slot_values.clone())
                    .unwrap_or_default();
                let context = context_of(&last, &turn.system_utterance, &turn.user_utterance);
                let (examples, sources) = if self.index.len() >= spec.retriever.example_warmup {
                    let query = self
                        .embedder
                        .embed(&[retrieval_text(&context)], 1)
                        .map_err(|e| JobFailure::new(format!("embedding a turn: {e}")))?
                        .remove(0);
                    let picked = self.index.top_k(
                        &query,
                        &d.dialogue_id,
                        spec.retriever.k_examples,
                        spec.retriever.minimum_distinct,
                    );
                    (
                        picked.iter().map(|t| t.example.clone()).collect::<Vec<_>>(),
                        picked.iter().map(|t| t.source.clone()).collect::<Vec<_>>(),
                    )
                } else {
                    (Vec::new(), Vec::new())
                };
                prompts.push(build_prompt(&examples, &context));
                pending.push((
                    turn,
                    last,
                    sources,
                    prompts.last().cloned().unwrap_or_default(),
                ));
            }
            let started = Instant::now();
            let (completions, _timing) = self
                .lm
                .generate(&prompts, &params)
                .map_err(|e| JobFailure::new(format!("generation failed: {e}")))?;
            let seconds = started.elapsed().as_secs_f64();
            let mut new_examples = Vec::new();
            for ((turn, last, sources, prompt), completion) in pending.into_iter().zip(completions)
            {
                let (state, valid) = match parse_update(&completion.text) {
                    Ok(update) => (apply_update(&last, &update), true),
                    Err(_) => (last.clone(), false),
                };
                let labelled = LabelledTurn {
                    dialogue_id: turn.dialogue_id.clone(),
                    turn_id: turn.turn_id,
                    system_utterance: turn.system_utterance.clone(),
                    user_utterance: turn.user_utterance.clone(),
                    turn_slot_values: labelfleet_dst::delta(&last, &state),
                    last_slot_values: last,
                    slot_values: state,
                    prompt,
                    completion: completion.text,
                    valid,
                    examples: sources,
                    prompt_tokens: completion.prompt_tokens,
                    new_tokens: completion.new_tokens,
                    batch_seconds: seconds,
                };
                if spec.retriever.add_predictions {
                    new_examples.push((
                        format!(
                            "{}:{}#{}",
                            self.source, labelled.dialogue_id, labelled.turn_id
                        ),
                        labelled.dialogue_id.clone(),
                        example_of(
                            &labelled.last_slot_values,
                            &labelled.system_utterance,
                            &labelled.user_utterance,
                            &labelled.turn_slot_values,
                        ),
                    ));
                }
                self.done
                    .entry(labelled.dialogue_id.clone())
                    .or_default()
                    .push(labelled);
                since_checkpoint += 1;
            }
            embed_into(&mut self.index, &self.embedder, new_examples)?;
            active.retain(|d| self.done.get(&d.dialogue_id).map_or(0, Vec::len) < d.turns.len());
            if since_checkpoint >= spec.checkpoint_turns {
                checkpoint(&self.done)?;
                since_checkpoint = 0;
            }
        }
        self.dialogues = dialogues;
        Ok(())
    }

    /// Every labelled turn, in the dialogues' order.
    fn ordered_turns(&self) -> Vec<LabelledTurn> {
        self.dialogues
            .iter()
            .flat_map(|d| self.done.get(&d.dialogue_id).cloned().unwrap_or_default())
            .collect()
    }
}

fn log_bytes(hash: &str, complete: bool, turns: Vec<LabelledTurn>) -> Vec<u8> {
    serde_json::to_vec(&RunningLog {
        config_hash: hash.to_string(),
        complete,
        turns,
    })
    .expect("the running log serialises")
}

#[async_trait]
impl JobRunner for SelfLabelRunner {
    fn kind(&self) -> JobKind {
        JobKind::SelfLabel
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<JobOutput, JobFailure> {
        let JobBody::SelfLabel(spec) = &job.body else {
            return Err(JobFailure::new("not a self_label job"));
        };
        let spec = (**spec).clone();
        let hash = config_hash(job);
        let started = Instant::now();

        let (data_path, data_format) = (spec.data.path.clone(), spec.data.format);
        let all = tokio::task::spawn_blocking(move || read_data(&data_path, data_format))
            .await
            .map_err(|e| JobFailure::new(format!("reading data failed: {e}")))??;
        let dialogues = select_dialogues(all, &spec.dialogues, job.mini);
        if dialogues.is_empty() {
            return Err(JobFailure::new(format!(
                "the selection {:?} of {} holds no dialogues",
                spec.dialogues, spec.data.path
            )));
        }

        let mut seeds = Vec::new();
        let groups = spec
            .retriever
            .groups
            .clone()
            .unwrap_or_else(|| vec![job.group_id.clone()]);
        for group in &groups {
            seeds.extend(self.group_examples(group, ctx).await?);
        }
        if let Some(gold) = spec.retriever.gold_examples.clone() {
            let gold = tokio::task::spawn_blocking(move || read_data(&gold.path, gold.format))
                .await
                .map_err(|e| JobFailure::new(format!("reading gold examples failed: {e}")))??;
            for d in gold {
                for t in d.turns {
                    seeds.push((
                        format!("gold:{}#{}", t.dialogue_id, t.turn_id),
                        t.dialogue_id.clone(),
                        example_of(
                            &t.last_slot_values,
                            &t.system_utterance,
                            &t.user_utterance,
                            &t.turn_slot_values,
                        ),
                    ));
                }
            }
        }
        let done = self.resume(job, ctx, &hash).await;
        ctx.check_cancelled()?;

        let lm_ref = spec.model.clone();
        let retriever_ref = spec.retriever.model.clone();
        let models = self.models.clone();
        let (lm, embedder) = tokio::task::spawn_blocking(move || {
            Ok::<_, JobFailure>((models.causal_lm(&lm_ref)?, models.embedder(&retriever_ref)?))
        })
        .await
        .map_err(|e| JobFailure::new(format!("loading models failed: {e}")))??;
        let seeded = seeds.len();
        let mut labelling = Labelling {
            spec: spec.clone(),
            source: job.key().to_string(),
            dialogues,
            done,
            index: ExampleIndex::default(),
            lm,
            embedder,
        };
        tracing::info!(job = %job.key(), dialogues = labelling.dialogues.len(), seeded, "labelling");

        let runtime = tokio::runtime::Handle::current();
        let (job_owned, ctx_owned, hash_owned) = (job.clone(), ctx.clone(), hash.clone());
        let labelling = tokio::task::spawn_blocking(move || -> Result<Labelling, JobFailure> {
            embed_into(&mut labelling.index, &labelling.embedder, seeds)?;
            let order: Vec<String> = labelling
                .dialogues
                .iter()
                .map(|d| d.dialogue_id.clone())
                .collect();
            let total: usize = labelling.dialogues.iter().map(|d| d.turns.len()).sum();
            labelling.run(|done| {
                let turns: Vec<LabelledTurn> = order
                    .iter()
                    .flat_map(|id| done.get(id).cloned().unwrap_or_default())
                    .collect();
                let labelled = turns.len();
                runtime.block_on(ctx_owned.write_artifact(
                    &job_owned,
                    RUNNING_LOG,
                    log_bytes(&hash_owned, false, turns),
                ))?;
                tracing::info!(job = %job_owned.key(), labelled, total, "running log written");
                ctx_owned.check_cancelled()
            })?;
            Ok(labelling)
        })
        .await
        .map_err(|e| JobFailure::new(format!("labelling failed: {e}")))??;

        let turns = labelling.ordered_turns();
        let invalid = turns.iter().filter(|t| !t.valid).count() as u64;
        let new_tokens: usize = turns.iter().map(|t| t.new_tokens).sum();
        let predictions: Vec<Prediction> = turns
            .iter()
            .map(|t| Prediction {
                dialogue_id: t.dialogue_id.clone(),
                turn_id: t.turn_id,
                slot_values: t.slot_values.clone(),
            })
            .collect();
        let scores = score(
            &labelling.dialogues,
            &predictions,
            ValueMatcher { threshold: 0.95 },
        );
        let has_gold = labelling
            .dialogues
            .iter()
            .any(|d| d.turns.iter().any(|t| !t.slot_values.is_empty()));
        let seconds = started.elapsed().as_secs_f64();
        let turn_count = turns.len() as u64;

        let labels_key = ctx
            .write_artifact(job, RUNNING_LOG, log_bytes(&hash, true, turns))
            .await?;
        let predictions_key = ctx
            .write_artifact(
                job,
                "predictions.json",
                serde_json::to_vec(&predictions).expect("predictions serialise"),
            )
            .await?;
        let mut metrics = json!({
            "invalid_completions": invalid,
            "turns_per_second": turn_count as f64 / seconds.max(1e-9),
            "new_tokens": new_tokens,
        });
        let mut artifacts: std::collections::BTreeMap<String, String> = [
            ("labels".to_string(), labels_key),
            ("predictions".to_string(), predictions_key),
        ]
        .into();
        if has_gold {
            let scored = crate::runners::eval::headline(&scores);
            if let (Some(m), Some(s)) = (metrics.as_object_mut(), scored.as_object()) {
                m.extend(s.clone());
            }
            let report = serde_json::to_vec_pretty(&scores).expect("scores serialise");
            artifacts.insert(
                "metrics".into(),
                ctx.write_artifact(job, "metrics.json", report).await?,
            );
        }
        tracing::info!(
            job = %job.key(),
            turns = turn_count,
            invalid,
            jga = has_gold.then_some(scores.joint_goal_accuracy),
            seconds,
            "labelled"
        );
        Ok(JobOutput {
            counts: [
                ("dialogues".to_string(), labelling.dialogues.len() as u64),
                ("turns".to_string(), turn_count),
                ("invalid_completions".to_string(), invalid),
                ("seed_examples".to_string(), seeded as u64),
            ]
            .into(),
            metrics,
            artifacts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shuffle_is_stable_and_a_permutation() {
        let mut a: Vec<u32> = (0..50).collect();
        shuffle(&mut a, 42);
        let mut b: Vec<u32> = (0..50).collect();
        shuffle(&mut b, 42);
        assert_eq!(a, b);
        assert_ne!(a, (0..50).collect::<Vec<_>>());
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }
}
