//! Running a job and recording it: the one code path for `worker` and `run`.

use std::future::Future;
use std::time::Duration;

use labelfleet_core::error::{BackendError, BackendResult};
use labelfleet_core::job::{Job, JobKey};
use labelfleet_enqueue::release::release_dependents;
use labelfleet_manifest::{ManifestEntry, PutOutcome};
use tokio_util::sync::CancellationToken;

use crate::Backends;
use crate::runner::{JobContext, JobFailure, Runners};

/// A job that ran and was recorded.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The manifest entry as it stands (ours, or the one another worker wrote first).
    pub entry: ManifestEntry,
    /// Whether our entry was written or another was already there.
    pub written: bool,
    /// Held jobs sent to the queue because this one completed.
    pub released: Vec<JobKey>,
}

/// Runs `job` with its runner, writes its manifest entry (a no-op if one exists), and
/// releases the held jobs that waited on it.
pub async fn execute(
    job: &Job,
    attempt: u32,
    worker_id: &str,
    backends: &Backends,
    runners: &Runners,
    cancel: CancellationToken,
) -> Result<Completion, JobFailure> {
    let runner = runners.get(job.kind()).ok_or_else(|| {
        JobFailure::new(format!(
            "this worker has no runner for `{}` jobs",
            job.kind()
        ))
    })?;
    let ctx = JobContext {
        artifacts: backends.artifacts.clone(),
        manifest: backends.manifest.clone(),
        cancel,
        attempt,
    };
    // Every job's artifact folder starts with the job itself: its resolved config and
    // provenance travel with whatever the runner writes beside it.
    let job_json = serde_json::to_vec_pretty(&job.to_value()).expect("jobs serialise");
    let job_key = ctx.write_artifact(job, "job.json", job_json).await?;
    let mut output = runner.run(job, &ctx).await?;
    output.artifacts.insert("job".to_string(), job_key);
    let entry = ManifestEntry {
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
    };
    let outcome = retry_transient("writing the manifest entry", || {
        backends.manifest.put(&entry)
    })
    .await
    .map_err(|e| {
        JobFailure::new(format!(
            "the job ran but its manifest entry could not be written: {e}"
        ))
    })?;
    let (entry, written) = match outcome {
        PutOutcome::Written => (entry, true),
        PutOutcome::AlreadyThere(existing) => (*existing, false),
    };
    let released = match release_dependents(
        &job.key(),
        &*backends.queue,
        &*backends.board,
        &*backends.manifest,
    )
    .await
    {
        Ok(released) => released,
        Err(e) => {
            // The next sweep (every worker runs one at start-up and periodically) sends them.
            tracing::warn!(job = %job.key(), error = %e, "could not release dependent jobs yet; a later sweep will");
            Vec::new()
        }
    };
    Ok(Completion {
        entry,
        written,
        released,
    })
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
