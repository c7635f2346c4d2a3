//! `retrain` jobs: fine-tune a causal LM on labelled turns with candle.
//!
//! The job gathers old and new labelled dialogues (`data`), skips itself with a
//! clear manifest record when there are too few new examples, splits them
//! (`splits`), renders each turn into `self_label`'s prompt → completion form and
//! trains (`trainer`). Every `checkpoint.every_steps` steps (or seconds) the
//! trainable parameters, AdamW's moments and the run state go to the artifact store
//! under `checkpoint/`; a redelivered job of the same config resumes from there. The
//! best model by validation loss is kept under `best/`, the final one under `model/`
//! (loadable by `self_label` and `eval` as `"checkpoint": "group/job"`), and the
//! training curve in `curve.json`.

mod confident;
mod data;
mod splits;
mod trainer;

use std::collections::BTreeMap;

use async_trait::async_trait;
use labelfleet_core::job::{Job, JobBody, JobKind, PromptMode, RetrainSpec};
use labelfleet_models::train::{AdamW, AdamWConfig, safetensors_bytes, tensors_from_bytes};
use labelfleet_models::{LoraConfig, TokenizedExample, TrainableLm, parse_device};
use serde_json::json;

pub use self::data::LabelledDialogue;
pub use self::splits::{Splits, repeated, split};
pub use self::trainer::{CurvePoint, RunState, ValidPoint};
use self::trainer::{Event, TrainingRun, mean_loss};
use crate::runner::{JobContext, JobFailure, JobOutput, JobRunner};
use crate::runners::checkpoints::{self, BEST_MODEL, FINAL_MODEL, ModelMetadata};
use crate::runners::models::resolve;
use crate::runners::prompts::tokenized;

/// The run state of the latest resumable checkpoint.
pub const CHECKPOINT_STATE: &str = "checkpoint/state.json";
/// The training curve artifact.
pub const CURVE: &str = "curve.json";

/// The resumable checkpoint's trained parameters in `slot` (0 or 1).
fn params_file(slot: u8) -> String {
    format!("checkpoint/params-{slot}.safetensors")
}

/// The resumable checkpoint's AdamW moments in `slot` (0 or 1).
fn optimizer_file(slot: u8) -> String {
    format!("checkpoint/optimizer-{slot}.safetensors")
}

/// Runs `retrain` jobs.
#[derive(Default)]
pub struct RetrainRunner;

fn tokenize(
    lm: &TrainableLm,
    dialogues: &[LabelledDialogue],
    mode: PromptMode,
    max_tokens: usize,
) -> Result<Vec<TokenizedExample>, JobFailure> {
    let mut out = Vec::new();
    for d in dialogues {
        for example in &d.examples {
            out.push(
                tokenized(&lm.tokenizer, example, mode, max_tokens).map_err(|e| {
                    JobFailure::new(format!(
                        "{} {}: {e}; raise `training.max_tokens`",
                        d.source, d.dialogue_id
                    ))
                })?,
            );
        }
    }
    Ok(out)
}

fn split_listing(splits: &Splits) -> serde_json::Value {
    let ids = |ds: &[LabelledDialogue]| -> Vec<String> {
        ds.iter()
            .map(|d| format!("{}#{}", d.source, d.dialogue_id))
            .collect()
    };
    json!({"train": ids(&splits.train), "valid": ids(&splits.valid), "test": ids(&splits.test)})
}

/// Writes a saved model's files under `{group}/{job}/{folder}/`; returns the key of its
/// weights.
async fn upload_model(
    job: &Job,
    ctx: &JobContext,
    folder: &str,
    files: Vec<std::path::PathBuf>,
) -> Result<String, JobFailure> {
    let mut weights = None;
    for file in files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .expect("saved files have names")
            .to_string();
        let bytes = tokio::fs::read(&file)
            .await
            .map_err(|e| JobFailure::new(format!("reading {}: {e}", file.display())))?;
        let key = ctx
            .write_artifact(job, &format!("{folder}/{name}"), bytes)
            .await?;
        if name.ends_with(".safetensors") {
            weights = Some(key);
        }
    }
    weights.ok_or_else(|| JobFailure::new("the saved model has no weights file"))
}

/// Saves `lm` into a scratch folder once and uploads it under each of `folders`;
/// returns each upload's weights key, in order.
fn save_model(
    lm: &TrainableLm,
    job: &Job,
    ctx: &JobContext,
    folders: &[&str],
    runtime: &tokio::runtime::Handle,
) -> Result<Vec<String>, JobFailure> {
    let scratch = tempfile::tempdir()
        .map_err(|e| JobFailure::new(format!("creating a scratch folder: {e}")))?;
    let mut files = lm
        .save(scratch.path())
        .map_err(|e| JobFailure::new(format!("saving the model: {e}")))?;
    let JobBody::Retrain(spec) = &job.body else {
        return Err(JobFailure::new("not a retrain job"));
    };
    files.push(checkpoints::write_metadata(
        scratch.path(),
        &ModelMetadata {
            prompt: spec.prompt,
            trained_by: job.key().to_string(),
        },
    )?);
    folders
        .iter()
        .map(|folder| runtime.block_on(upload_model(job, ctx, folder, files.clone())))
        .collect()
}

fn write_checkpoint(
    state: &RunState,
    slot: u8,
    lm: &TrainableLm,
    optimizer: &AdamW,
    job: &Job,
    ctx: &JobContext,
    runtime: &tokio::runtime::Handle,
) -> Result<(), JobFailure> {
    // Two slots, written in turn: the state file names the slot that is complete, so
    // a worker killed mid-write leaves the previous checkpoint intact.
    let state = RunState {
        slot,
        ..state.clone()
    };
    let bytes = |t| safetensors_bytes(&t).map_err(|e| JobFailure::new(e.to_string()));
    let params = bytes(lm.parameter_tensors())?;
    let moments = optimizer
        .state()
        .map_err(|e| JobFailure::new(format!("copying the optimizer's moments: {e}")))?;
    let moments = bytes(moments)?;
    runtime.block_on(async {
        ctx.write_artifact(job, &params_file(state.slot), params)
            .await?;
        ctx.write_artifact(job, &optimizer_file(state.slot), moments)
            .await?;
        ctx.write_artifact(
            job,
            CHECKPOINT_STATE,
            serde_json::to_vec(&state).expect("state serialises"),
        )
        .await
    })?;
    tracing::info!(job = %job.key(), step = state.step, "checkpoint written");
    Ok(())
}

/// Removes the resumable checkpoint of a run whose models are saved: its parameters
/// and AdamW's moments, in two slots, hold six times the trained parameters, and
/// nothing reads them once the run is over. The state file goes first, so that a
/// worker stopped half-way leaves no state naming missing files (a job delivered again
/// after that trains from the start). A store that refuses (an IAM policy without
/// `s3:DeleteObject`) keeps them, and the job still succeeds.
async fn remove_checkpoint(job: &Job, ctx: &JobContext) {
    let files = [CHECKPOINT_STATE.to_string()]
        .into_iter()
        .chain((0..2).flat_map(|slot| [params_file(slot), optimizer_file(slot)]));
    for file in files {
        if let Err(e) = ctx.delete_artifact(job, &file).await {
            tracing::warn!(
                job = %job.key(),
                "the finished run's resumable checkpoint is kept: {e}"
            );
            return;
        }
    }
}

/// What a finished training run hands back to the async side.
struct Trained {
    state: RunState,
    train_examples: usize,
    valid_examples: usize,
    test_examples: usize,
    trainable: usize,
    test_loss: Option<f64>,
    final_key: String,
    best_key: Option<String>,
}

/// Restores the latest checkpoint of this config, if there is one; returns its state.
async fn resume(
    job: &Job,
    ctx: &JobContext,
    hash: &str,
) -> Result<Option<(RunState, Vec<u8>, Vec<u8>)>, JobFailure> {
    let read = |file: String| async move {
        let key = job
            .artifact_key(&file)
            .map_err(|e| JobFailure::new(e.to_string()))?;
        ctx.artifacts
            .get(&key)
            .await
            .map_err(|e| JobFailure::new(format!("reading {key}: {e}")))
    };
    let Some(bytes) = read(CHECKPOINT_STATE.to_string()).await? else {
        return Ok(None);
    };
    let state: RunState = match serde_json::from_slice(&bytes) {
        Ok(state) => state,
        Err(e) => {
            tracing::warn!(job = %job.key(), "the checkpoint state is unreadable ({e}); training from the start");
            return Ok(None);
        }
    };
    if state.config_hash != hash {
        tracing::info!(job = %job.key(), "the checkpoint belongs to a different config; training from the start");
        return Ok(None);
    }
    let params = read(params_file(state.slot)).await?;
    let moments = read(optimizer_file(state.slot)).await?;
    match (params, moments) {
        (Some(p), Some(m)) => Ok(Some((state, p, m))),
        _ => Err(JobFailure::new(format!(
            "checkpoint of {} names slot {} whose files are missing",
            job.key(),
            state.slot
        ))),
    }
}

fn lora_config(spec: &RetrainSpec) -> Option<LoraConfig> {
    spec.lora.as_ref().map(|l| LoraConfig {
        rank: l.rank,
        alpha: l.alpha,
        targets: l.targets.clone(),
    })
}

#[async_trait]
impl JobRunner for RetrainRunner {
    fn kind(&self) -> JobKind {
        JobKind::Retrain
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<JobOutput, JobFailure> {
        let JobBody::Retrain(spec) = &job.body else {
            return Err(JobFailure::new("not a retrain job"));
        };
        let started = std::time::Instant::now();
        let mut spec = (**spec).clone();
        let hash = job.config_hash();
        let mut old = data::gather(&spec.data.old, ctx, job.mini).await?;
        let mut new = data::gather(&spec.data.new, ctx, job.mini).await?;
        let filtered = match &spec.data.confident {
            Some(filter) => Some(confident::keep_confident([&mut old, &mut new], filter)?),
            None => None,
        };
        let (old_turns, new_turns) = (data::turn_count(&old), data::turn_count(&new));
        let mut counts: BTreeMap<String, u64> = [
            ("old_examples".to_string(), old_turns as u64),
            ("new_examples".to_string(), new_turns as u64),
        ]
        .into();
        if let Some(filtered) = filtered {
            tracing::info!(job = %job.key(), self_labelled = filtered.candidates, kept = filtered.kept, "self-labelled turns filtered by confidence");
            counts.insert("self_labels_seen".into(), filtered.candidates as u64);
            counts.insert("self_labels_kept".into(), filtered.kept as u64);
        }
        if new_turns < spec.data.min_new_examples {
            let reason = format!(
                "{new_turns} new examples, fewer than min_new_examples = {}",
                spec.data.min_new_examples
            );
            tracing::info!(job = %job.key(), %reason, "retraining skipped");
            return Ok(JobOutput {
                counts,
                metrics: json!({"skipped": true, "reason": reason}),
                artifacts: BTreeMap::new(),
            });
        }
        let mut splits = split(old, new, &spec.split);
        if splits.train.is_empty() {
            return Err(JobFailure::new(
                "the training split is empty: check `data` and `split` (which data each split takes)",
            ));
        }
        let mut artifacts = BTreeMap::new();
        artifacts.insert(
            "splits".to_string(),
            ctx.write_artifact(
                job,
                "splits.json",
                serde_json::to_vec_pretty(&split_listing(&splits)).expect("listing serialises"),
            )
            .await?,
        );
        // After the listing, which names each dialogue once.
        splits.train = repeated(std::mem::take(&mut splits.train));
        if job.mini {
            // A smoke test: a few small steps show that the model loads, trains and
            // saves; the batch size of a full run would only make them slower.
            spec.training.steps = spec.training.steps.min(4);
            spec.training.batch_size = spec.training.batch_size.min(2);
        }
        spec.model = checkpoints::materialize(&ctx.place(&spec.model), ctx).await?;
        let base = resolve(&spec.model)?;
        let resumed = resume(job, ctx, &hash).await?;
        ctx.check_cancelled()?;

        let runtime = tokio::runtime::Handle::current();
        let (job_owned, ctx_owned) = (job.clone(), ctx.clone());
        let spec_owned = spec.clone();
        let trained = tokio::task::spawn_blocking(move || {
            let (job, ctx, spec) = (job_owned, ctx_owned, spec_owned);
            let device =
                parse_device(&spec.model.device).map_err(|e| JobFailure::new(e.to_string()))?;
            let lm = TrainableLm::load(&base, lora_config(&spec), spec.training.seed, &device)
                .map_err(|e| {
                    JobFailure::new(format!("loading {} to train: {e}", base.display()))
                })?;
            let max_tokens = spec.training.max_tokens;
            let mode = spec.prompt;
            let train = tokenize(&lm, &splits.train, mode, max_tokens)?;
            let valid = tokenize(&lm, &splits.valid, mode, max_tokens)?;
            let test = tokenize(&lm, &splits.test, mode, max_tokens)?;
            let optimizer = AdamW::new(
                lm.parameters(),
                AdamWConfig {
                    weight_decay: spec.training.weight_decay,
                    ..AdamWConfig::default()
                },
            )
            .map_err(|e| JobFailure::new(e.to_string()))?;
            let mut run = TrainingRun {
                spec: spec.training.clone(),
                lm,
                optimizer,
                train,
                valid,
                state: RunState {
                    config_hash: hash,
                    ..RunState::default()
                },
            };
            if let Some((state, params, moments)) = resumed {
                let load = |b: &[u8]| {
                    tensors_from_bytes(b, &device).map_err(|e| JobFailure::new(e.to_string()))
                };
                run.lm
                    .restore_parameters(&load(&params)?)
                    .map_err(|e| JobFailure::new(e.to_string()))?;
                run.optimizer
                    .restore(&load(&moments)?, state.step)
                    .map_err(|e| JobFailure::new(e.to_string()))?;
                tracing::info!(job = %job.key(), step = state.step, "resuming from the checkpoint");
                run.state = state;
            }
            tracing::info!(
                job = %job.key(),
                train = run.train.len(),
                valid = run.valid.len(),
                test = test.len(),
                trainable_parameters = run.lm.trainable_count(),
                steps = spec.training.steps,
                "training"
            );
            // The slot the next checkpoint goes to: never the one the state names now.
            let mut slot = run.state.slot;
            let mut best_key = None;
            run.run(
                spec.checkpoint.every_steps,
                spec.checkpoint.every_seconds,
                &ctx.progress,
                &|| ctx.check_stopping(),
                &mut |event| match event {
                    Event::Checkpoint(state, lm, optimizer) => {
                        slot = 1 - slot;
                        write_checkpoint(state, slot, lm, optimizer, &job, &ctx, &runtime)
                    }
                    Event::NewBest(lm) => {
                        best_key = save_model(lm, &job, &ctx, &[BEST_MODEL], &runtime)?.pop();
                        Ok(())
                    }
                },
            )?;
            let test_loss = mean_loss(&run.lm, &test, spec.training.batch_size)?;
            // With no validation split there is no best by validation loss: `best` is
            // the final model (saved once, uploaded twice), so that `group/job/best`
            // always names a model.
            let folders: &[&str] = if run.state.best.is_none() {
                &[FINAL_MODEL, BEST_MODEL]
            } else {
                &[FINAL_MODEL]
            };
            let mut keys = save_model(&run.lm, &job, &ctx, folders, &runtime)?.into_iter();
            let final_key = keys.next().expect("one key per folder");
            if let Some(key) = keys.next() {
                best_key = Some(key);
            }
            Ok::<_, JobFailure>(Trained {
                train_examples: run.train.len(),
                valid_examples: run.valid.len(),
                test_examples: test.len(),
                trainable: run.lm.trainable_count(),
                state: run.state,
                test_loss,
                final_key,
                best_key,
            })
        })
        .await
        .map_err(|e| JobFailure::new(format!("training failed: {e}")))??;
        remove_checkpoint(job, ctx).await;
        let state = &trained.state;

        artifacts.insert("model".into(), trained.final_key.clone());
        if let Some(key) = &trained.best_key {
            artifacts.insert("best".into(), key.clone());
        }
        artifacts.insert(
            "curve".into(),
            ctx.write_artifact(
                job,
                CURVE,
                serde_json::to_vec(&json!({
                    "curve": state.curve,
                    "valid": state.valid,
                    "best": state.best,
                    "test_loss": trained.test_loss,
                }))
                .expect("curve serialises"),
            )
            .await?,
        );
        // The training loss is the mean of the last tenth of the steps.
        let steps = state.curve.len();
        let tail = &state.curve[steps - steps.div_ceil(10)..];
        let train_loss = (!tail.is_empty())
            .then(|| tail.iter().map(|p| p.loss).sum::<f64>() / tail.len() as f64);
        let valid_loss = state.valid.last().map(|v| v.loss);
        counts.extend([
            ("train_examples".to_string(), trained.train_examples as u64),
            ("valid_examples".to_string(), trained.valid_examples as u64),
            ("test_examples".to_string(), trained.test_examples as u64),
            ("steps".to_string(), state.step as u64),
            ("trainable_parameters".to_string(), trained.trainable as u64),
        ]);
        Ok(JobOutput {
            counts,
            metrics: json!({
                "train_loss": train_loss,
                "valid_loss": valid_loss,
                "valid_perplexity": valid_loss.map(f64::exp),
                "best_valid_loss": state.best.map(|b| b.loss),
                "best_step": state.best.map(|b| b.step),
                "test_loss": trained.test_loss,
                "test_perplexity": trained.test_loss.map(f64::exp),
                "tokens_per_second": state.tokens as f64 / state.seconds.max(1e-9),
                "training_seconds": state.seconds,
                "seconds": started.elapsed().as_secs_f64(),
            }),
            artifacts,
        })
    }
}
