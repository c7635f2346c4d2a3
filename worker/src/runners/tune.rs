//! `tune` jobs: propose a model-based round's points, or pick the best trial of a
//! sweep. `enqueue` has already expanded the sweep into its trial jobs (see
//! `labelfleet_core::job::tune`).
//!
//! - A **round job** (`{tune}_round{k}`, `round` set) runs once every trial before its
//!   round has finished: it reads their metrics from the manifest, proposes a point for
//!   each trial of round `k` with TPE, and records them in its manifest entry
//!   (`params_for`: trial job → parameters), where those trials read them when they
//!   start (`params_from`).
//! - The **tune job** runs after every trial: it reads each trial's metric (the mean
//!   over its replicates), adds the trials of earlier sweeps named in `build_on`, and
//!   records the ranking.

use std::collections::BTreeMap;

use async_trait::async_trait;
use labelfleet_core::job::tune::tpe::{Observation, proposal_seed, propose};
use labelfleet_core::job::{Goal, Job, JobBody, JobKind, TuneSpec, round_job_name};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::runner::{JobContext, JobFailure, JobOutput, JobRunner};

/// The ranking artifact.
pub const TRIALS: &str = "trials.json";

/// Runs `tune` jobs.
pub struct TuneRunner;

/// One trial's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    /// The sweep it belongs to (`group/name`).
    pub sweep: String,
    /// The trial.
    pub trial: String,
    /// Its parameters.
    pub params: Map<String, Value>,
    /// The metric of each replicate that reported it.
    pub values: Vec<f64>,
    /// Their mean; absent when no replicate reported the metric.
    pub value: Option<f64>,
    /// The jobs of its replicates (`group/name`).
    pub runs: Vec<String>,
}

async fn metric_of(
    ctx: &JobContext,
    group: &str,
    run: &str,
    metric: &str,
) -> Result<Option<f64>, JobFailure> {
    let entry = ctx.manifest_entry(group, run).await?;
    Ok(entry.and_then(|e| e.metrics.get(metric).and_then(Value::as_f64)))
}

/// The sweep's own name: a round job's name less its `_round{k}`.
fn sweep_name<'a>(job: &'a Job, spec: &TuneSpec) -> &'a str {
    spec.round
        .and_then(|k| job.name.strip_suffix(&format!("_round{k}")))
        .unwrap_or(&job.name)
}

/// The parameters a finished round job proposed for each of its trials.
async fn proposals_of(
    ctx: &JobContext,
    group: &str,
    round_job: &str,
) -> Result<Map<String, Value>, JobFailure> {
    let entry = ctx.manifest_entry(group, round_job).await?.ok_or_else(|| {
        JobFailure::new(format!(
            "the round job {group}/{round_job} has no manifest entry yet"
        ))
    })?;
    Ok(entry
        .metrics
        .get("proposals")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default())
}

/// Every planned trial of rounds before `before` (all of them for `None`) with its
/// parameters and metric.
async fn results_of(
    job: &Job,
    spec: &TuneSpec,
    ctx: &JobContext,
    before: Option<usize>,
) -> Result<Vec<TrialResult>, JobFailure> {
    let (from_eval, metric) = match spec.metric.strip_prefix("eval.") {
        Some(m) => (true, m),
        None => (false, spec.metric.as_str()),
    };
    let sweep = sweep_name(job, spec);
    let mut proposed: BTreeMap<usize, Map<String, Value>> = BTreeMap::new();
    let mut out = Vec::new();
    for trial in &spec.planned {
        if before.is_some_and(|k| trial.round >= k) {
            continue;
        }
        let params: Map<String, Value> = if trial.round == 0 {
            trial.params.clone().into_iter().collect()
        } else {
            if let std::collections::btree_map::Entry::Vacant(slot) = proposed.entry(trial.round) {
                let round_job = round_job_name(sweep, trial.round);
                slot.insert(proposals_of(ctx, &job.group_id, &round_job).await?);
            }
            proposed[&trial.round]
                .get(&trial.trial)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let mut values = Vec::new();
        for run in &trial.runs {
            let source = if from_eval {
                run.eval.as_deref()
            } else {
                Some(run.job.as_str())
            };
            if let Some(name) = source
                && let Some(v) = metric_of(ctx, &job.group_id, name, metric).await?
            {
                values.push(v);
            }
        }
        let value = (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
        out.push(TrialResult {
            sweep: format!("{}/{sweep}", job.group_id),
            trial: trial.trial.clone(),
            params,
            values,
            value,
            runs: trial
                .runs
                .iter()
                .map(|r| format!("{}/{}", job.group_id, r.job))
                .collect(),
        });
    }
    Ok(out)
}

/// The trials of an earlier sweep, from its manifest entry's ranking artifact.
async fn earlier(sweep: &str, ctx: &JobContext) -> Result<Vec<TrialResult>, JobFailure> {
    let (group, name) = sweep.split_once('/').expect("checked when parsed");
    let entry = ctx.manifest_entry(group, name).await?.ok_or_else(|| {
        JobFailure::new(format!("the earlier sweep {sweep} has no manifest entry"))
    })?;
    let (artifact, bytes) = ctx
        .read_entry_artifact(&entry, "trials")
        .await?
        .ok_or_else(|| {
            JobFailure::new(format!("{sweep} is not a tune job (no trials artifact)"))
        })?;
    serde_json::from_slice(&bytes).map_err(|e| JobFailure::new(format!("{artifact}: {e}")))
}

/// Sorts trials best first (trials without a value last).
pub fn rank(results: &mut [TrialResult], goal: Goal) {
    results.sort_by(|a, b| match (a.value, b.value) {
        (Some(x), Some(y)) => match goal {
            Goal::Minimize => x.total_cmp(&y),
            Goal::Maximize => y.total_cmp(&x),
        },
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
}

/// A round job: proposes a point for each trial of round `round` from every trial
/// finished before it (earlier sweeps' first), the same points on every attempt.
async fn propose_round(
    job: &Job,
    spec: &TuneSpec,
    round: usize,
    ctx: &JobContext,
) -> Result<JobOutput, JobFailure> {
    let mut finished = Vec::new();
    for sweep in &spec.build_on {
        finished.extend(earlier(sweep, ctx).await?);
    }
    finished.extend(results_of(job, spec, ctx, Some(round)).await?);
    let history: Vec<Observation> = finished
        .iter()
        .filter_map(|r| {
            let value = r.value?;
            Some(Observation {
                params: r.params.clone().into_iter().collect(),
                value: match spec.goal {
                    Goal::Minimize => value,
                    Goal::Maximize => -value,
                },
            })
        })
        .collect();
    let mut proposals = Map::new();
    let mut params_for = Map::new();
    let trials = spec.planned.iter().filter(|t| t.round == round);
    for (index, trial) in trials.enumerate() {
        let seed = proposal_seed(spec.seed, round, index);
        let point: Map<String, Value> = propose(&spec.ranges, &history, &spec.tpe, seed)
            .into_iter()
            .collect();
        for run in &trial.runs {
            params_for.insert(run.job.clone(), Value::Object(point.clone()));
        }
        proposals.insert(trial.trial.clone(), Value::Object(point));
    }
    tracing::info!(job = %job.key(), round, observations = history.len(), proposed = proposals.len(), "round proposed");
    Ok(JobOutput {
        counts: [
            ("observations".to_string(), history.len() as u64),
            ("proposed".to_string(), proposals.len() as u64),
        ]
        .into(),
        metrics: json!({
            "round": round,
            "proposals": proposals,
            "params_for": params_for,
        }),
        artifacts: BTreeMap::new(),
    })
}

#[async_trait]
impl JobRunner for TuneRunner {
    fn kind(&self) -> JobKind {
        JobKind::Tune
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<JobOutput, JobFailure> {
        let JobBody::Tune(spec) = &job.body else {
            return Err(JobFailure::new("not a tune job"));
        };
        if spec.planned.is_empty() {
            return Err(JobFailure::new(
                "the sweep was not expanded: enqueue tune files with `labelfleet enqueue`",
            ));
        }
        if let Some(round) = spec.round {
            return propose_round(job, spec, round, ctx).await;
        }
        let mut results = results_of(job, spec, ctx, None).await?;
        let own = results.len();
        for sweep in &spec.build_on {
            results.extend(earlier(sweep, ctx).await?);
        }
        rank(&mut results, spec.goal);
        let with_value = results.iter().filter(|r| r.value.is_some()).count();
        let best = results.first().filter(|r| r.value.is_some()).ok_or_else(|| {
            JobFailure::new(format!(
                "no trial reported `{}`; check the metric's name against the trials' manifest entries",
                spec.metric
            ))
        })?;
        tracing::info!(job = %job.key(), best = %best.trial, value = best.value, trials = results.len(), "sweep ranked");
        let metrics = json!({
            "metric": spec.metric,
            "best_trial": best.trial,
            "best_sweep": best.sweep,
            "best_value": best.value,
            "best_params": best.params,
            "best_runs": best.runs,
        });
        let key = ctx
            .write_artifact(
                job,
                TRIALS,
                serde_json::to_vec_pretty(&results).expect("results serialise"),
            )
            .await?;
        Ok(JobOutput {
            counts: [
                ("trials".to_string(), own as u64),
                ("earlier_trials".to_string(), (results.len() - own) as u64),
                ("trials_with_metric".to_string(), with_value as u64),
            ]
            .into(),
            metrics,
            artifacts: [("trials".to_string(), key)].into(),
        })
    }
}
