//! Running a job and recording it: the one code path for `worker` and `run`.

use std::future::Future;
use std::time::Duration;

use labelfleet_core::error::{BackendError, BackendResult};
use labelfleet_core::job::{Job, JobKey};
use labelfleet_manifest::{ManifestEntry, PutOutcome};
use labelfleet_schedule::release::release_dependents_of_many;
use tokio_util::sync::CancellationToken;

use crate::Backends;
use crate::heartbeat::Lease;
use crate::runner::{JobContext, JobFailure, Progress, Runners};

/// A job that ran and was recorded.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The manifest entry as it stands (ours, or the one another worker wrote first).
    pub entry: ManifestEntry,
    /// Whether our entry was written or another was already there.
    pub written: bool,
}

/// How the worker steers a running job, and hears from it.
#[derive(Clone, Default)]
pub struct JobControl {
    /// Cancelled when the job must stop (its lease was lost, or the grace period ended).
    pub cancel: CancellationToken,
    /// Cancelled when the worker is asked to stop: save progress and stop early.
    pub stop: CancellationToken,
    /// Where the job reports its progress.
    pub progress: Progress,
    /// The worker's device for every model of the job (see [`JobContext::place`]).
    pub device: Option<String>,
    /// The worker's lease on the job's message (see [`JobContext::lease`]).
    pub lease: Option<Lease>,
}

/// Runs `job` with its runner and returns the manifest entry to record. For runners
/// that write artifacts, the job's own config and provenance are written first, as the
/// `job.json` artifact.
pub async fn run_job(
    job: &Job,
    attempt: u32,
    worker_id: &str,
    backends: &Backends,
    runners: &Runners,
    control: JobControl,
) -> Result<ManifestEntry, JobFailure> {
    let runner = runners.get(job.kind()).ok_or_else(|| {
        JobFailure::new(format!(
            "this worker has no runner for `{}` jobs",
            job.kind()
        ))
    })?;
    let ctx = JobContext {
        artifacts: backends.artifacts.clone(),
        manifest: backends.manifest.clone(),
        cancel: control.cancel,
        stop: control.stop,
        attempt,
        progress: control.progress,
        device: control.device,
        lease: control.lease,
    };
    // A job with `params_from` runs, and records, the job with those parameters set.
    let resolved = crate::params_from::resolve(job, &ctx).await?;
    let (job, params) = match &resolved {
        Some((tuned, params)) => (tuned, Some(params)),
        None => (job, None),
    };
    let job_key = if runner.writes_artifacts() {
        let job_json = serde_json::to_vec_pretty(&job.to_value()).expect("jobs serialise");
        Some(ctx.write_artifact(job, "job.json", job_json).await?)
    } else {
        None
    };
    let mut output = runner.run(job, &ctx).await?;
    if let Some(key) = job_key {
        output.artifacts.insert("job".to_string(), key);
    }
    if let Some(params) = params {
        if output.metrics.is_null() {
            output.metrics = serde_json::Value::Object(Default::default());
        }
        if let Some(metrics) = output.metrics.as_object_mut() {
            metrics
                .entry("params")
                .or_insert_with(|| serde_json::Value::Object(params.clone()));
        }
    }
    Ok(ManifestEntry {
        group_id: job.group_id.clone(),
        run_id: job.name.clone(),
        kind: job.kind().to_string(),
        counts: output.counts,
        metrics: output.metrics,
        artifacts: output.artifacts,
        provenance: job.provenance.clone(),
        worker: worker_id.to_string(),
        attempt,
        completed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

/// Records finished jobs: writes their manifest entries (a no-op for keys that exist),
/// then releases the held jobs that waited on them. Returns one completion per entry,
/// in order, and the held jobs that were sent.
pub async fn record(
    entries: Vec<ManifestEntry>,
    backends: &Backends,
) -> BackendResult<(Vec<Completion>, Vec<JobKey>)> {
    let outcomes = retry_transient("writing manifest entries", || {
        backends.manifest.put_many(&entries)
    })
    .await?;
    let keys: Vec<JobKey> = entries
        .iter()
        .map(|e| JobKey {
            group_id: e.group_id.clone(),
            name: e.run_id.clone(),
        })
        .collect();
    let released = match release_dependents_of_many(
        &keys,
        &*backends.queue,
        &*backends.board,
        &*backends.manifest,
    )
    .await
    {
        Ok(released) => released,
        Err(e) => {
            // The next sweep (every worker runs one at start-up and periodically) sends them.
            tracing::warn!(error = %e, "could not release dependent jobs yet; a later sweep will");
            Vec::new()
        }
    };
    let completions = entries
        .into_iter()
        .zip(outcomes)
        .map(|(entry, outcome)| match outcome {
            PutOutcome::Written => Completion {
                entry,
                written: true,
            },
            PutOutcome::AlreadyThere(existing) => Completion {
                entry: *existing,
                written: false,
            },
        })
        .collect();
    Ok((completions, released))
}

/// Runs a job and records it: what `labelfleet run` does in one process.
pub async fn execute(
    job: &Job,
    attempt: u32,
    worker_id: &str,
    backends: &Backends,
    runners: &Runners,
    cancel: CancellationToken,
) -> Result<Completion, JobFailure> {
    let entry = run_job(
        job,
        attempt,
        worker_id,
        backends,
        runners,
        JobControl {
            cancel,
            ..JobControl::default()
        },
    )
    .await?;
    let (mut completions, _released) = record(vec![entry], backends).await.map_err(|e| {
        JobFailure::new(format!(
            "the job ran but its manifest entry could not be written: {e}"
        ))
    })?;
    Ok(completions.remove(0))
}

/// Retries a backend call while it fails transiently, for up to about a minute, so a
/// busy database or a backend restart does not fail work that already ran.
pub async fn retry_transient<T, F, Fut>(what: &str, mut call: F) -> BackendResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = BackendResult<T>>,
{
    let mut pause = Duration::from_millis(200);
    let mut waited = Duration::ZERO;
    loop {
        match call().await {
            Err(BackendError::Unavailable(reason)) if waited < Duration::from_secs(60) => {
                tracing::warn!(%reason, retry_in_ms = pause.as_millis() as u64, "{what}: backend unavailable; retrying");
                tokio::time::sleep(pause).await;
                waited += pause;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
            other => return other,
        }
    }
}
