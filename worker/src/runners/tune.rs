//! `tune` jobs: pick the best trial of a sweep. `enqueue` has already expanded the
//! sweep into retrain (and eval) jobs, and this job runs after all of them: it reads
//! each trial's metric from the manifest (the mean over its replicates), adds the
//! trials of earlier sweeps named in `build_on`, and records the ranking.

use async_trait::async_trait;
use labelfleet_core::job::{Goal, Job, JobBody, JobKind, TuneSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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
    pub params: serde_json::Map<String, Value>,
    /// The metric of each replicate that reported it.
    pub values: Vec<f64>,
    /// Their mean; absent when no replicate reported the metric.
    pub value: Option<f64>,
    /// The retrain jobs of its replicates (`group/name`).
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

async fn results_of(
    job: &Job,
    spec: &TuneSpec,
    ctx: &JobContext,
) -> Result<Vec<TrialResult>, JobFailure> {
    let (from_eval, metric) = match spec.metric.strip_prefix("eval.") {
        Some(m) => (true, m),
        None => (false, spec.metric.as_str()),
    };
    let mut out = Vec::new();
    for trial in &spec.planned {
        let mut values = Vec::new();
        for run in &trial.runs {
            let source = if from_eval {
                run.eval.as_deref()
            } else {
                Some(run.retrain.as_str())
            };
            if let Some(name) = source
                && let Some(v) = metric_of(ctx, &job.group_id, name, metric).await?
            {
                values.push(v);
            }
        }
        let value = (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
        out.push(TrialResult {
            sweep: job.key().to_string(),
            trial: trial.trial.clone(),
            params: trial.params.clone().into_iter().collect(),
            values,
            value,
            runs: trial
                .runs
                .iter()
                .map(|r| format!("{}/{}", job.group_id, r.retrain))
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
        let mut results = results_of(job, spec, ctx).await?;
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
