//! `params_from`: a job that takes its parameters, when it starts, from an earlier
//! job's manifest entry: the best point of a sweep (`best_params`), or the point a
//! model-based round proposed for this very trial (`params_for`).

use labelfleet_core::job::{Job, job_ref};
use serde_json::{Map, Value};

use crate::runner::{JobContext, JobFailure};

/// `job` with the parameters its `params_from` job recorded, and those parameters;
/// `None` when the job has no `params_from`. A source without parameters, or
/// parameters the job's schema rejects, fail the job for good: retrying gives the same.
pub async fn resolve(
    job: &Job,
    ctx: &JobContext,
) -> Result<Option<(Job, Map<String, Value>)>, JobFailure> {
    let Some(source) = &job.params_from else {
        return Ok(None);
    };
    let (group, name) = job_ref(source, &job.group_id);
    let entry = ctx.manifest_entry(group, name).await?.ok_or_else(|| {
        JobFailure::new(format!(
            "`params_from`: {group}/{name} has not completed; the job should wait for it \
             (it is one of `after`), so it was sent by hand too early"
        ))
    })?;
    let metrics = &entry.metrics;
    let params = metrics
        .get("params_for")
        .and_then(|p| p.get(&job.name))
        .or_else(|| metrics.get("best_params"))
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| {
            JobFailure::permanent(format!(
                "`params_from`: the entry of {group}/{name} gives no parameters for {}: \
                 expected a tune job (its `best_params`) or the round job of this trial",
                job.name
            ))
        })?;
    let resolved = job
        .with_params(&params, &format!("{group}/{name}"))
        .map_err(|e| JobFailure::permanent(format!("`params_from`: {e}")))?;
    Ok(Some((resolved, params)))
}
