//! `eval` jobs: score predicted belief states against gold. Predictions come from a
//! file, a manifest group, a baseline, or a model (a `retrain` checkpoint, say) that
//! labels the gold dialogues as a `self_label` job would
//! ([`crate::runners::labelling`]); a model's loss and perplexity on the gold
//! completions of the same dialogues are measured as well.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use labelfleet_core::job::{
    Baseline, DatasetFormat, DialogueSelection, EvalSpec, Job, JobBody, JobKind, ModelPredictions,
    PredictionSource, SelfLabelSpec,
};
use labelfleet_dst::metrics::{ValueMatcher, score};
use labelfleet_dst::prompt::Example;
use labelfleet_dst::{Dialogue, Prediction, read_dataset, read_predictions, read_predictions_file};
use labelfleet_manifest::list_all;
use labelfleet_models::train::mean_completion_loss;
use serde_json::json;

use crate::runner::{JobContext, JobFailure, JobOutput, JobRunner};
use crate::runners::checkpoints;
use crate::runners::data::{format_of, select_dialogues};
use crate::runners::labelling::label;
use crate::runners::models::ModelCache;
use crate::runners::prompts::tokenized;

/// How many dialogues a `--mini` job scores.
pub const MINI_DIALOGUES: usize = 2;

/// Runs `eval` jobs with the worker's models. Gold datasets are cached across jobs
/// (keyed by path, format and modification time), since many jobs score against one
/// gold set.
pub struct EvalRunner {
    gold_cache: Mutex<HashMap<GoldKey, CachedGold>>,
    models: Arc<ModelCache>,
}

/// A gold file and its format.
type GoldKey = (PathBuf, String);
/// A parsed gold file and the modification time it was read at.
type CachedGold = (Option<SystemTime>, Arc<Vec<Dialogue>>);

impl EvalRunner {
    /// A runner that loads the models it scores through `models`.
    pub fn new(models: Arc<ModelCache>) -> EvalRunner {
        EvalRunner {
            gold_cache: Mutex::default(),
            models,
        }
    }

    async fn gold(
        &self,
        path: &Path,
        format: DatasetFormat,
    ) -> Result<Arc<Vec<Dialogue>>, JobFailure> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let key = (path.to_path_buf(), format!("{format:?}"));
        if let Some((stamp, cached)) = self.gold_cache.lock().expect("cache lock").get(&key)
            && *stamp == modified
            && modified.is_some()
        {
            return Ok(cached.clone());
        }
        let owned = path.to_path_buf();
        let dialogues = tokio::task::spawn_blocking(move || read_dataset(&owned, format_of(format)))
            .await
            .map_err(|e| JobFailure::new(format!("reading gold data failed: {e}")))?
            .map_err(|e| {
                JobFailure::new(format!(
                    "cannot read the gold dataset: {e} (paths are relative to the worker's working directory)"
                ))
            })?;
        let dialogues = Arc::new(dialogues);
        self.gold_cache
            .lock()
            .expect("cache lock")
            .insert(key, (modified, dialogues.clone()));
        Ok(dialogues)
    }

    async fn predictions(
        &self,
        source: &PredictionSource,
        gold: &[Dialogue],
        ctx: &JobContext,
    ) -> Result<Vec<Prediction>, JobFailure> {
        match source {
            PredictionSource::File(path) => read_predictions_file(Path::new(path))
                .map_err(|e| JobFailure::new(format!("cannot read the predictions: {e}"))),
            PredictionSource::Group(group) => {
                let entries = list_all(&*ctx.manifest, group)
                    .await
                    .map_err(|e| JobFailure::new(format!("listing manifest group {group}: {e}")))?;
                if entries.is_empty() {
                    return Err(JobFailure::new(format!(
                        "manifest group `{group}` has no entries yet; run its jobs first or list it in `after`"
                    )));
                }
                let mut all = Vec::new();
                for entry in &entries {
                    let Some((key, bytes)) = ctx.read_entry_artifact(entry, "predictions").await?
                    else {
                        continue;
                    };
                    all.extend(
                        read_predictions(&bytes, key.as_str())
                            .map_err(|e| JobFailure::new(e.to_string()))?,
                    );
                }
                Ok(all)
            }
            PredictionSource::Model(_) => Err(JobFailure::new(
                "model predictions are made by EvalRunner::evaluate_model",
            )),
            PredictionSource::Baseline(baseline) => Ok(gold
                .iter()
                .flat_map(|d| &d.turns)
                .map(|t| Prediction {
                    dialogue_id: t.dialogue_id.clone(),
                    turn_id: t.turn_id,
                    slot_values: match baseline {
                        Baseline::Empty => Default::default(),
                        Baseline::LastTurn => t.last_slot_values.clone(),
                    },
                })
                .collect()),
        }
    }
}

impl EvalRunner {
    /// Labels the gold dialogues with the model as a `self_label` job would (its running
    /// log, predictions and scores become this job's artifacts), then measures the
    /// model's loss on the gold completions of the same dialogues.
    async fn evaluate_model(
        &self,
        job: &Job,
        spec: &EvalSpec,
        predictions: &ModelPredictions,
        ctx: &JobContext,
    ) -> Result<JobOutput, JobFailure> {
        let started = std::time::Instant::now();
        let model = checkpoints::materialize(&ctx.place(&predictions.model), ctx).await?;
        let mode =
            checkpoints::prompt_for(predictions.prompt, &model, "eval.predictions.model.prompt")?;
        let labelling = Job {
            body: JobBody::SelfLabel(Box::new(SelfLabelSpec {
                data: spec.gold.clone(),
                dialogues: selection(spec),
                model: model.clone(),
                prompt: Some(mode),
                retriever: predictions.retriever.clone(),
                generation: predictions.generation.clone(),
                batch_size: Some(predictions.batch_size),
                checkpoint_turns: 100,
            })),
            after: Vec::new(),
            provenance: None,
            ..job.clone()
        };
        // The loss is measured on the very dialogues labelled, as they were read.
        let labelled = label(&labelling, ctx, &self.models).await?;
        let (mut output, dialogues) = (labelled.output, labelled.dialogues);
        if model.endpoint.is_some() {
            // The completions API gives no logits of given text: no loss to measure.
            tracing::info!(job = %job.key(), "the model is behind an endpoint: no loss pass");
            return Ok(output);
        }
        let models = self.models.clone();
        let (max_tokens, batch_size) = (predictions.max_tokens, predictions.batch_size);
        let progress = ctx.progress.clone();
        let (loss, scored) = tokio::task::spawn_blocking(move || {
            let lm = models.causal_lm(&model)?;
            let mut examples = Vec::new();
            for turn in dialogues.iter().flat_map(|d| &d.turns) {
                examples.push(
                    tokenized(
                        &lm.tokenizer,
                        &Example::of_gold_turn(turn),
                        mode,
                        max_tokens,
                    )
                    .map_err(|e| JobFailure::new(format!("{}: {e}", turn.dialogue_id)))?,
                );
            }
            progress.set(format!(
                "labelled; measuring the loss over {} gold turns",
                examples.len()
            ));
            tracing::info!(turns = examples.len(), "measuring the loss");
            let pass = std::time::Instant::now();
            let mut logged = pass;
            let mut report = |done: usize, total: usize| {
                let rate = done as f64 / pass.elapsed().as_secs_f64().max(1e-9);
                let eta = (total - done) as f64 / rate.max(1e-9);
                progress.set(format!(
                    "measuring the loss: {done}/{total} gold turns, {rate:.1} turns/s, ETA {eta:.0} s"
                ));
                // The log gets a line every half minute, as labelling's does.
                if logged.elapsed().as_secs() >= 30 || done == total {
                    logged = std::time::Instant::now();
                    tracing::info!(turns = done, total, turns_per_second = format!("{rate:.2}"), eta_seconds = eta.round(), "loss progress");
                }
            };
            let loss = mean_completion_loss(&lm.model, &examples, batch_size, &mut report)
                .map_err(|e| JobFailure::new(format!("measuring the loss: {e}")))?;
            Ok::<_, JobFailure>((
                loss,
                examples.iter().map(|e| e.scored_tokens()).sum::<usize>(),
            ))
        })
        .await
        .map_err(|e| JobFailure::new(format!("measuring the loss failed: {e}")))??;
        if let Some(metrics) = output.metrics.as_object_mut() {
            metrics.insert("loss".into(), json!(loss));
            metrics.insert("perplexity".into(), json!(loss.map(f64::exp)));
            // The whole job: labelling, then the loss pass.
            metrics.insert("seconds".into(), json!(started.elapsed().as_secs_f64()));
        }
        output.counts.insert("loss_tokens".into(), scored as u64);
        Ok(output)
    }
}

/// The gold dialogues an eval scores: the first `max_dialogues`, after a shuffle
/// with `shuffle_seed` when it names one.
fn selection(spec: &EvalSpec) -> DialogueSelection {
    DialogueSelection {
        shuffle_seed: spec.shuffle_seed,
        count: spec.max_dialogues,
        ..DialogueSelection::default()
    }
}

fn subset(gold: &[Dialogue], spec: &EvalSpec, mini: bool) -> Vec<Dialogue> {
    let mut dialogues = select_dialogues(gold.to_vec(), &selection(spec), false);
    if mini {
        dialogues.truncate(MINI_DIALOGUES);
    }
    dialogues
}

#[async_trait]
impl JobRunner for EvalRunner {
    fn kind(&self) -> JobKind {
        JobKind::Eval
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<JobOutput, JobFailure> {
        let JobBody::Eval(spec) = &job.body else {
            return Err(JobFailure::new("not an eval job"));
        };
        if let PredictionSource::Model(model) = &spec.predictions {
            return self.evaluate_model(job, spec, model, ctx).await;
        }
        let gold = self
            .gold(Path::new(&spec.gold.path), spec.gold.format)
            .await?;
        let gold = subset(&gold, spec, job.mini);
        let predictions = self.predictions(&spec.predictions, &gold, ctx).await?;
        ctx.check_cancelled()?;
        let matcher = ValueMatcher {
            threshold: spec.fuzzy_threshold,
        };
        let scores = tokio::task::spawn_blocking(move || score(&gold, &predictions, matcher))
            .await
            .map_err(|e| JobFailure::new(format!("scoring failed: {e}")))?;
        let report = serde_json::to_vec_pretty(&scores).expect("scores serialise");
        let key = ctx.write_artifact(job, "metrics.json", report).await?;
        Ok(JobOutput {
            counts: [
                ("dialogues".to_string(), scores.dialogues),
                ("turns".to_string(), scores.turns),
                (
                    "missing_predictions".to_string(),
                    scores.missing_predictions,
                ),
            ]
            .into(),
            metrics: scores.headline(),
            artifacts: [("metrics".to_string(), key)].into(),
        })
    }
}
