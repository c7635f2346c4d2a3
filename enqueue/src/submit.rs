//! Registering planned jobs on the board and sending the ready ones.

use labelfleet_core::board::{BoardJob, BoardState, Dependency, JobBoard};
use labelfleet_core::error::BackendResult;
use labelfleet_core::job::{Job, JobKey};
use labelfleet_core::queue::{Envelope, OutgoingMessage, Queue};
use labelfleet_manifest::{Manifest, ManifestKey};
use labelfleet_schedule::completion::incomplete;

use crate::plan::PlannedJob;
use crate::versions::{Decision, short};

/// What [`submit`] did with each job.
#[derive(Debug, Clone, Default)]
pub struct SubmitReport {
    /// Jobs sent to the queue.
    pub sent: Vec<JobKey>,
    /// Jobs held until the listed dependencies complete.
    pub held: Vec<(JobKey, Vec<Dependency>)>,
    /// Jobs skipped because the manifest already has their entry.
    pub already_complete: Vec<JobKey>,
    /// Jobs that superseded a queued or held version (`--replace`): the versions, old → new.
    pub replaced: Vec<(JobKey, String)>,
    /// Completed jobs sent to run again (`--rerun`), with their rerun number.
    pub rerun: Vec<(JobKey, u32)>,
}

/// The queue message for a job: its envelope, a deduplication id derived from the
/// job's content and provenance, and a message group of its own so that independent
/// jobs run in parallel.
pub fn message_for(job: &Job) -> OutgoingMessage {
    let key = job.key().to_string();
    // SQS limits group ids to 128 characters; long keys are hashed.
    let group = if key.len() <= 128 {
        key
    } else {
        labelfleet_core::hash::sha256_hex(key.as_bytes())
    };
    OutgoingMessage {
        body: Envelope::wrap(job),
        dedup_id: job.content_hash(),
        group,
    }
}

/// Registers the planned jobs (in plan order) as `decisions` (one per job, from
/// [`reconcile`](crate::versions::reconcile)) say, and sends those whose dependencies
/// are complete. Every job is registered as held first and marked queued only after its
/// message is sent, so a crash in between leaves it held, for the next sweep to send,
/// never lost. A registration replaces the job's earlier one, with its version: that is
/// how a queued older version is superseded. A rerun moves the completed entry into the
/// manifest's history first.
pub async fn submit(
    plan: &[PlannedJob],
    decisions: &[Decision],
    queue: &dyn Queue,
    board: &dyn JobBoard,
    manifest: &dyn Manifest,
) -> BackendResult<SubmitReport> {
    let mut report = SubmitReport::default();
    let mut registrations = Vec::new();
    let mut ready = Vec::new();
    for (planned, decision) in plan.iter().zip(decisions) {
        let job = &planned.loaded.job;
        let key = ManifestKey::from(&job.key());
        match decision {
            Decision::AlreadyComplete => {
                report.already_complete.push(job.key());
                continue;
            }
            Decision::Rerun { rerun } => {
                manifest.supersede(&key).await?;
                report.rerun.push((job.key(), *rerun));
            }
            Decision::Replace { previous } => {
                report.replaced.push((
                    job.key(),
                    format!("{} → {}", short(previous.as_deref()), short(job.version())),
                ));
            }
            // It may have completed since the plan was made.
            Decision::Send if manifest.get(&key).await?.is_some() => {
                report.already_complete.push(job.key());
                continue;
            }
            Decision::Send => {}
        }
        let pending = incomplete(&planned.after, manifest, board).await?;
        let entry = BoardJob {
            key: job.key(),
            after: planned.after.clone(),
            message: message_for(job),
            state: BoardState::Held,
            version: job.version().map(str::to_string),
        };
        if pending.is_empty() {
            ready.push(entry.clone());
        } else {
            report.held.push((job.key(), pending));
        }
        registrations.push(entry);
    }
    board.register(&registrations).await?;
    for chunk in ready.chunks(10) {
        let messages: Vec<OutgoingMessage> = chunk.iter().map(|j| j.message.clone()).collect();
        queue.send(&messages).await?;
        for job in chunk {
            board.mark_queued(&job.key).await?;
            report.sent.push(job.key.clone());
        }
    }
    Ok(report)
}
