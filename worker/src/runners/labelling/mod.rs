//! Labelling dialogues with a causal LM, as a `self_label` job does and as an `eval` of
//! a model does: prompted with examples retrieved from what earlier jobs labelled (the
//! in-context prompt), or with the turn alone (the compact prompt of a fine-tuned model).
//!
//! At job start the example index is built from the labels of the manifest groups the
//! job names (and optional gold dialogues). Dialogues are then labelled in batches: one
//! turn of each of up to `batch_size` dialogues per forward pass, since a turn's prompt
//! holds the state predicted for the turn before. Every `checkpoint_turns` labelled
//! turns the running log is written as an artifact; a redelivered job reads it back and
//! resumes. The manifest entry is written (by the worker) only when every turn is done.

mod batches;
mod labeller;
mod retrieval;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use labelfleet_core::job::{Job, JobBody, JobKind, PromptMode};
use labelfleet_dst::metrics::{ValueMatcher, score};
use labelfleet_dst::prompt::Example;
use labelfleet_dst::{Dialogue, Prediction};
use labelfleet_manifest::list_all;
use serde_json::json;

pub use self::batches::LabelledTurn;
use self::batches::{Labelling, Retrieval, RunningLog, embed_into, log_bytes};
pub use self::labeller::Labeller;
use self::retrieval::ExampleIndex;
use crate::runner::{JobContext, JobFailure, JobOutput};
use crate::runners::checkpoints::prompt_for;
use crate::runners::data::{read_data, read_selected, select_dialogues};
use crate::runners::endpoint::EndpointModel;
use crate::runners::models::ModelCache;

/// The artifact holding every labelled turn; written periodically while the job runs.
pub const RUNNING_LOG: &str = "running_log.json";

/// What labelling a job's dialogues gives.
pub struct Labelled {
    /// The job's manifest entry: counts, metrics (scores when the data has gold
    /// states), and the running log, predictions and metrics artifacts.
    pub output: JobOutput,
    /// The dialogues labelled, as read (with their gold states, if any).
    pub dialogues: Vec<Dialogue>,
}

/// Dialogues per batch, when the job leaves it open: 8 on a CPU; on a GPU as many as
/// its free memory holds at about 1,024 tokens a dialogue in the model's precision (at
/// most 64). Logged.
fn auto_batch_size(device: &str, model: &labelfleet_models::Llama) -> usize {
    const CPU_BATCH: usize = 8;
    let Some(ordinal) = crate::gpu::cuda_ordinal(device) else {
        tracing::info!(batch_size = CPU_BATCH, "batch size: the CPU default");
        return CPU_BATCH;
    };
    let per_row = model.config().bytes_per_row(1024, model.dtype());
    match crate::gpu::free_memory(ordinal) {
        Ok(free) => {
            let batch = crate::gpu::batch_for_memory(free, per_row, 64);
            tracing::info!(
                device,
                free_gib = format!("{:.1}", free as f64 / (1u64 << 30) as f64),
                per_dialogue_mib = per_row >> 20,
                batch_size = batch,
                "batch size chosen from the GPU's free memory"
            );
            batch
        }
        Err(e) => {
            tracing::warn!(device, error = %e, batch_size = CPU_BATCH, "cannot read the GPU's free memory; using the default batch size");
            CPU_BATCH
        }
    }
}

/// One turn an earlier `self_label` job labelled.
pub(crate) struct GroupTurn {
    /// Where it came from: `group/run:dialogue#turn`.
    pub source: String,
    /// Its dialogue.
    pub dialogue_id: String,
    /// Its context and the update the model gave it.
    pub example: Example,
    /// The labeller's confidence in that update, where it was recorded.
    pub confidence: Option<labelfleet_models::Confidence>,
}

/// Labelled turns of earlier `self_label` jobs in `group`.
pub(crate) async fn group_examples(
    group: &str,
    ctx: &JobContext,
) -> Result<Vec<GroupTurn>, JobFailure> {
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
            out.push(GroupTurn {
                source: format!(
                    "{}/{}:{}#{}",
                    entry.group_id, entry.run_id, t.turn.dialogue_id, t.turn.turn_id
                ),
                dialogue_id: t.turn.dialogue_id.clone(),
                example: t.example(),
                confidence: t.confidence,
            });
        }
    }
    Ok(out)
}

/// What an earlier delivery of the job left in its running log: the turns labelled,
/// by dialogue, and the seconds it spent.
#[derive(Default)]
struct Resumed {
    done: HashMap<String, Vec<LabelledTurn>>,
    seconds: f64,
}

async fn resume(job: &Job, ctx: &JobContext, hash: &str) -> Resumed {
    let Ok(key) = job.artifact_key(RUNNING_LOG) else {
        return Resumed::default();
    };
    let Ok(Some(bytes)) = ctx.artifacts.get(&key).await else {
        return Resumed::default();
    };
    let Ok(log) = serde_json::from_slice::<RunningLog>(&bytes) else {
        tracing::warn!(%key, "the running log is unreadable; labelling from the start");
        return Resumed::default();
    };
    if log.config_hash != hash {
        tracing::info!(%key, "the running log belongs to a different config; labelling from the start");
        return Resumed::default();
    }
    let mut done: HashMap<String, Vec<LabelledTurn>> = HashMap::new();
    for t in log.turns {
        done.entry(t.turn.dialogue_id.clone()).or_default().push(t);
    }
    let turns: usize = done.values().map(Vec::len).sum();
    tracing::info!(job = %job.key(), turns, "resuming from the running log");
    Resumed {
        done,
        seconds: log.seconds,
    }
}

/// Labels the dialogues the `self_label` job `job` selects, resuming from the job's
/// running log, with models from `models`. The running log, predictions and (where the data
/// has gold states) metrics are written as the job's artifacts.
pub async fn label(
    job: &Job,
    ctx: &JobContext,
    models: &Arc<ModelCache>,
) -> Result<Labelled, JobFailure> {
    let JobBody::SelfLabel(spec) = &job.body else {
        return Err(JobFailure::new("not a self_label job"));
    };
    let mut spec = (**spec).clone();
    let hash = job.config_hash();
    spec.model = crate::runners::checkpoints::materialize(&ctx.place(&spec.model), ctx).await?;
    let mode = prompt_for(spec.prompt, &spec.model, "self_label.prompt")?;
    let retriever = match (mode, spec.retriever.clone()) {
        (PromptMode::InContext, None) => {
            return Err(JobFailure::new(
                "the model labels with the in_context prompt, which shows retrieved examples: give `self_label.retriever` (or label with a model retrained with `\"prompt\": \"compact\"`)",
            ));
        }
        (PromptMode::InContext, Some(mut retriever)) => {
            retriever.model = ctx.place(&retriever.model);
            Some(retriever)
        }
        (PromptMode::Compact, retriever) => {
            if retriever.is_some() {
                tracing::info!(job = %job.key(), "the compact prompt shows no examples: the retriever is not used");
            }
            None
        }
    };
    let started = Instant::now();

    let (data, selection) = (spec.data.clone(), spec.dialogues.clone());
    let all = tokio::task::spawn_blocking(move || read_selected(&data, &selection))
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
    let groups = match &retriever {
        Some(r) => r
            .groups
            .clone()
            .unwrap_or_else(|| vec![job.group_id.clone()]),
        None => Vec::new(),
    };
    for group in &groups {
        seeds.extend(
            group_examples(group, ctx)
                .await?
                .into_iter()
                .map(|t| (t.source, t.dialogue_id, t.example)),
        );
    }
    if let Some(gold) = retriever.as_ref().and_then(|r| r.gold_examples.clone()) {
        let gold = tokio::task::spawn_blocking(move || read_data(&gold.path, gold.format))
            .await
            .map_err(|e| JobFailure::new(format!("reading gold examples failed: {e}")))??;
        for d in gold {
            for t in d.turns {
                seeds.push((
                    format!("gold:{}#{}", t.dialogue_id, t.turn_id),
                    t.dialogue_id.clone(),
                    Example::of_gold_turn(&t),
                ));
            }
        }
    }
    let Resumed {
        done,
        seconds: earlier_seconds,
    } = resume(job, ctx, &hash).await;
    ctx.check_cancelled()?;
    // Seconds spent labelling, this delivery's and earlier ones'.
    let spent = move || earlier_seconds + started.elapsed().as_secs_f64();

    let lm_ref = spec.model.clone();
    let models = models.clone();
    let retriever_owned = retriever.clone();
    let runtime = tokio::runtime::Handle::current();
    // A model behind an endpoint; or one on this worker, loaded (and kept) by the cache.
    let (lm, embedder, auto_batch) = tokio::task::spawn_blocking(move || {
        let embedder = retriever_owned
            .map(|r| models.embedder(&r.model))
            .transpose()?;
        let (lm, batch): (Arc<dyn Labeller>, usize) = if lm_ref.endpoint.is_some() {
            let endpoint = EndpointModel::new(&lm_ref, runtime)?;
            let batch = endpoint.concurrency();
            (Arc::new(endpoint), batch)
        } else {
            let lm = models.causal_lm(&lm_ref)?;
            let batch = auto_batch_size(&lm_ref.device, &lm.model);
            (lm, batch)
        };
        Ok::<_, JobFailure>((lm, embedder, batch))
    })
    .await
    .map_err(|e| JobFailure::new(format!("loading models failed: {e}")))??;
    let seeded = seeds.len();
    if spec.batch_size.is_none() {
        spec.batch_size = Some(auto_batch);
    }
    let prices = spec.model.price_per_million;
    let retrieval = match (retriever, embedder) {
        (Some(spec), Some(embedder)) => Some(Retrieval {
            spec,
            index: ExampleIndex::default(),
            embedder,
        }),
        _ => None,
    };
    let has_gold = dialogues
        .iter()
        .any(|d| d.turns.iter().any(|t| !t.slot_values.is_empty()));
    let mut labelling = Labelling {
        spec,
        mode,
        source: job.key().to_string(),
        dialogues,
        done,
        retrieval,
        has_gold,
        lm,
    };
    tracing::info!(job = %job.key(), dialogues = labelling.dialogues.len(), seeded, prompt = mode.as_str(), "labelling");

    let runtime = tokio::runtime::Handle::current();
    let (job_owned, ctx_owned, hash_owned) = (job.clone(), ctx.clone(), hash.clone());
    let labelling = tokio::task::spawn_blocking(move || -> Result<Labelling, JobFailure> {
        if let Some(retrieval) = labelling.retrieval.as_mut() {
            embed_into(&mut retrieval.index, &retrieval.embedder, seeds)?;
        }
        let total: usize = labelling.dialogues.iter().map(|d| d.turns.len()).sum();
        let labelling_started = Instant::now();
        // The log moves every 10 s or so (as `status` does after every batch step),
        // whatever `checkpoint_turns` is.
        let mut last_log = Instant::now();
        labelling.run(|step, turns| {
            let elapsed = labelling_started.elapsed().as_secs_f64().max(1e-9);
            let rate = step.labelled_now as f64 / elapsed;
            let tokens_per_second = step.new_tokens_now as f64 / elapsed;
            let eta = total.saturating_sub(step.labelled) as f64 / rate.max(1e-9);
            ctx_owned.progress.set(format!(
                "turns {}/{total} · {rate:.2} turns/s · {tokens_per_second:.1} tok/s · ETA {eta:.0} s",
                step.labelled,
            ));
            if last_log.elapsed().as_secs() >= 10 {
                tracing::info!(
                    job = %job_owned.key(),
                    turns = step.labelled,
                    total,
                    turns_per_second = format!("{rate:.2}"),
                    new_tokens_per_second = format!("{tokens_per_second:.1}"),
                    eta_seconds = eta.round(),
                    "labelling progress"
                );
                last_log = Instant::now();
            }
            // Lease lost, or the grace period over: stop, and write nothing.
            ctx_owned.check_cancelled()?;
            // Asked to stop (a spot notice): save what is done, then stop.
            if step.log_due || ctx_owned.stop.is_cancelled() {
                runtime.block_on(ctx_owned.write_artifact(
                    &job_owned,
                    RUNNING_LOG,
                    log_bytes(&hash_owned, false, turns(), spent()),
                ))?;
                tracing::info!(job = %job_owned.key(), labelled = step.labelled, total, "running log written");
            }
            ctx_owned.check_stopping()
        })?;
        Ok(labelling)
    })
    .await
    .map_err(|e| JobFailure::new(format!("labelling failed: {e}")))??;

    let turns = labelling.ordered_turns();
    let invalid = turns.iter().filter(|t| !t.valid).count() as u64;
    let new_tokens: usize = turns.iter().map(|t| t.new_tokens).sum();
    let prompt_tokens: usize = turns.iter().map(|t| t.prompt_tokens).sum();
    let predictions: Vec<Prediction> = turns
        .iter()
        .map(|t| Prediction {
            dialogue_id: t.turn.dialogue_id.clone(),
            turn_id: t.turn.turn_id,
            slot_values: t.turn.slot_values.clone(),
        })
        .collect();
    let scores = score(&labelling.dialogues, &predictions, ValueMatcher::default());
    let has_gold = labelling.has_gold;
    let seconds = spent();
    let turn_count = turns.len() as u64;

    let labels_key = ctx
        .write_artifact(job, RUNNING_LOG, log_bytes(&hash, true, turns, seconds))
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
        "prompt_tokens": prompt_tokens,
        "new_tokens_per_second": new_tokens as f64 / seconds.max(1e-9),
        "seconds": seconds,
    });
    if let (Some(prices), Some(m)) = (prices, metrics.as_object_mut()) {
        let cost =
            (prompt_tokens as f64 * prices.prompt + new_tokens as f64 * prices.completion) / 1e6;
        m.insert("cost".into(), json!(cost));
    }
    let mut artifacts: std::collections::BTreeMap<String, String> = [
        ("labels".to_string(), labels_key),
        ("predictions".to_string(), predictions_key),
    ]
    .into();
    if has_gold {
        let scored = scores.headline();
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
    let mut counts: std::collections::BTreeMap<String, u64> = [
        ("dialogues".to_string(), labelling.dialogues.len() as u64),
        ("turns".to_string(), turn_count),
        ("invalid_completions".to_string(), invalid),
        ("seed_examples".to_string(), seeded as u64),
    ]
    .into();
    if labelling.spec.model.endpoint.is_some() {
        // This delivery's retried requests: a server that often refuses shows here,
        // not only in the worker's log.
        counts.insert("endpoint_retries".into(), labelling.lm.retried_requests());
    }
    let output = JobOutput {
        counts,
        metrics,
        artifacts,
    };
    Ok(Labelled {
        output,
        dialogues: labelling.dialogues,
    })
}
