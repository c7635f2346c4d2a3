//! Sending held jobs once their dependencies are complete.

use std::collections::HashMap;

use labelfleet_core::board::{BoardJob, Dependency, JobBoard};
use labelfleet_core::error::BackendResult;
use labelfleet_core::job::JobKey;
use labelfleet_core::queue::Queue;
use labelfleet_manifest::Manifest;

use crate::completion::is_complete;

/// Sends the held jobs that waited on `done` (as a job, or through its group) and
/// whose other dependencies are complete too. Returns the jobs sent.
pub async fn release_dependents(
    done: &JobKey,
    queue: &dyn Queue,
    board: &dyn JobBoard,
    manifest: &dyn Manifest,
) -> BackendResult<Vec<JobKey>> {
    let mut candidates = board
        .held_waiting_on(&Dependency::Job(done.clone()))
        .await?;
    candidates.extend(
        board
            .held_waiting_on(&Dependency::Group(done.group_id.clone()))
            .await?,
    );
    candidates.sort_by(|a, b| a.key.cmp(&b.key));
    candidates.dedup_by(|a, b| a.key == b.key);
    release_ready(candidates, queue, board, manifest).await
}

/// The same for a batch of completed jobs, with one read of the held jobs for the whole
/// batch (a busy worker completes many jobs at once).
pub async fn release_dependents_of_many(
    done: &[JobKey],
    queue: &dyn Queue,
    board: &dyn JobBoard,
    manifest: &dyn Manifest,
) -> BackendResult<Vec<JobKey>> {
    if let [single] = done {
        return release_dependents(single, queue, board, manifest).await;
    }
    let waits_on_batch = |dep: &Dependency| match dep {
        Dependency::Job(key) => done.contains(key),
        Dependency::Group(group) => done.iter().any(|k| &k.group_id == group),
    };
    let candidates: Vec<BoardJob> = board
        .held()
        .await?
        .into_iter()
        .filter(|job| job.after.iter().any(waits_on_batch))
        .collect();
    release_ready(candidates, queue, board, manifest).await
}

/// Sends every held job whose dependencies are complete: the sweep a worker runs at
/// start-up, which also recovers jobs whose release was interrupted by a crash.
pub async fn release_all_ready(
    queue: &dyn Queue,
    board: &dyn JobBoard,
    manifest: &dyn Manifest,
) -> BackendResult<Vec<JobKey>> {
    release_ready(board.held().await?, queue, board, manifest).await
}

async fn release_ready(
    candidates: Vec<BoardJob>,
    queue: &dyn Queue,
    board: &dyn JobBoard,
    manifest: &dyn Manifest,
) -> BackendResult<Vec<JobKey>> {
    // Many dependents share one dependency (job_0 and its 166 dependents): check each once.
    let mut complete: HashMap<Dependency, bool> = HashMap::new();
    let mut ready_jobs = Vec::new();
    for job in candidates {
        let mut ready = true;
        for dep in &job.after {
            let done = match complete.get(dep) {
                Some(done) => *done,
                None => {
                    let done = is_complete(dep, manifest, board).await?;
                    complete.insert(dep.clone(), done);
                    done
                }
            };
            if !done {
                ready = false;
                break;
            }
        }
        if ready {
            ready_jobs.push(job);
        }
    }
    // Ten to a call. Sending twice is harmless (deduplication id, idempotent
    // manifest); losing a send is not, so a job is marked queued only after the call
    // that sent it succeeded.
    let mut sent = Vec::with_capacity(ready_jobs.len());
    for chunk in ready_jobs.chunks(10) {
        let messages: Vec<_> = chunk.iter().map(|j| j.message.clone()).collect();
        queue.send(&messages).await?;
        for job in chunk {
            board.mark_queued(&job.key).await?;
            tracing::info!(job = %job.key, "dependencies complete; job sent to the queue");
            sent.push(job.key.clone());
        }
    }
    Ok(sent)
}
