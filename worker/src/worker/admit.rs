//! Admission: what to do with each message of a received batch before anything runs.
//!
//! Poison (a body that is not a valid job) is dead-lettered at once. A message of a
//! version that `enqueue --replace` superseded is acknowledged without running; so is
//! a job the manifest already has (a duplicate delivery), unless the entry there is of
//! a version this message superseded while it ran. A job whose dependencies are not
//! complete is held on the board. The rest start, each in a slot of its own.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use labelfleet_core::board::{BoardJob, BoardState};
use labelfleet_core::error::BackendError;
use labelfleet_core::job::Job;
use labelfleet_core::queue::{Envelope, OutgoingMessage, Receipt, ReceivedMessage};
use labelfleet_manifest::{ManifestEntry, ManifestKey};
use labelfleet_schedule::release::release_dependents_of_many;
use labelfleet_schedule::resolve::{Waiting, waiting};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tracing::Instrument;

use super::Inner;
use super::recorder::Finished;
use crate::execute::retry_transient;

/// The short form of a version in logs.
fn short(version: &str) -> &str {
    &version[..version.len().min(12)]
}

/// What admission decided for one job.
enum Admission {
    Run,
    /// Acknowledge without running; the reason is logged.
    Skip(&'static str),
}

/// Decides from the job's version, the board's current version of it and its manifest
/// entry. `Err` carries the entry to move into the history before the job runs.
fn admission(
    job: &Job,
    current: Option<&str>,
    recorded: Option<&ManifestEntry>,
) -> Result<Admission, ()> {
    let version = job.version();
    if let (Some(mine), Some(current)) = (version, current)
        && mine != current
    {
        return Ok(Admission::Skip(
            "superseded by a newer version of the job (enqueue --replace); acknowledging without running",
        ));
    }
    let Some(entry) = recorded else {
        return Ok(Admission::Run);
    };
    let recorded_version = entry
        .provenance
        .as_ref()
        .and_then(|p| p.config_hash.as_deref());
    match (version, recorded_version) {
        // The entry is of an older version, written while this one replaced it.
        (Some(mine), Some(old)) if mine != old && current == Some(mine) => Err(()),
        _ => Ok(Admission::Skip(
            "already complete (a duplicate delivery); acknowledging without running",
        )),
    }
}

impl Inner {
    /// Checks a received batch and starts the jobs that should run.
    pub(super) async fn admit(
        self: &Arc<Self>,
        messages: Vec<ReceivedMessage>,
        mut slots: Vec<OwnedSemaphorePermit>,
        finished: &mpsc::UnboundedSender<Finished>,
    ) {
        let mut jobs = Vec::new();
        for message in messages {
            match Envelope::open(&message.body, &message.id) {
                Ok(job) => jobs.push((job, message)),
                Err(e) => {
                    let reason = format!("invalid job, not retried: {e}");
                    tracing::error!(message = %message.id, %reason, "dead-lettering a poison message");
                    self.dead_letter(&message, &reason).await;
                    self.report.lock().expect("report lock").last_error = Some(reason);
                }
            }
        }
        if jobs.is_empty() {
            return;
        }
        let keys: Vec<ManifestKey> = jobs
            .iter()
            .map(|(job, _)| ManifestKey::from(&job.key()))
            .collect();
        // No retries here: the messages are not heartbeated yet, and backend trouble
        // is better waited out with nothing held (see `give_back`).
        let recorded = self.backends.manifest.get_many(&keys).await;
        let keys: Vec<_> = jobs.iter().map(|(job, _)| job.key()).collect();
        let registered = self.backends.board.jobs(&keys).await;
        let (recorded, registered) = match (recorded, registered) {
            (Ok(recorded), Ok(registered)) => (recorded, registered),
            (Err(e), _) | (_, Err(e)) => {
                self.give_back_all(&jobs, "cannot read the manifest and job board", &e)
                    .await;
                return;
            }
        };
        let mut skipped = Vec::new();
        for (((job, message), existing), registration) in
            jobs.into_iter().zip(recorded).zip(registered)
        {
            let span =
                tracing::info_span!("job", job = %job.key(), attempt = message.receive_count);
            let current = registration.as_ref().and_then(|r| r.version.as_deref());
            match admission(&job, current, existing.as_ref()) {
                Ok(Admission::Skip(why)) => {
                    span.in_scope(|| {
                        tracing::info!(
                            version = job.version().map(short),
                            current = current.map(short),
                            "{why}"
                        )
                    });
                    skipped.push((job.key(), message.receipt));
                    continue;
                }
                Ok(Admission::Run) => {}
                Err(()) => {
                    let key = ManifestKey::from(&job.key());
                    match self.backends.manifest.supersede(&key).await {
                        Ok(_) => span.in_scope(|| {
                            tracing::info!("the manifest's entry is of the version this one replaced; moved it to the history; running this version")
                        }),
                        Err(e) => {
                            self.give_back(&message, "cannot move the superseded entry", &e)
                                .await;
                            continue;
                        }
                    }
                }
            }
            // A registered job was sent by `enqueue` or a release, once its
            // dependencies were complete; only a hand-sent one needs checking.
            let registered = registration.is_some();
            match self
                .hold_if_waiting(&job, &message, registered)
                .instrument(span.clone())
                .await
            {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    self.give_back(&message, "cannot check dependencies", &e)
                        .await;
                    continue;
                }
            }
            let slot = slots.pop().expect("one slot per message");
            let me = self.clone();
            let finished = finished.clone();
            self.started_jobs.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(
                async move { me.run_one(job, message, slot, finished).await }.instrument(span),
            );
        }
        if !skipped.is_empty() {
            // Their dependents may still wait if a crash came between record and ack.
            let keys: Vec<_> = skipped.iter().map(|(k, _)| k.clone()).collect();
            let _ = release_dependents_of_many(
                &keys,
                &*self.backends.queue,
                &*self.backends.board,
                &*self.backends.manifest,
            )
            .await;
            let receipts: Vec<Receipt> = skipped.into_iter().map(|(_, r)| r).collect();
            self.ack_all(&receipts).await;
        }
    }

    /// Holds a job on the board if its dependencies are not complete (it is sent again
    /// when they are). Jobs registered on the board (by `enqueue`) arrive ready; this
    /// guards hand-sent ones.
    async fn hold_if_waiting(
        &self,
        job: &Job,
        message: &ReceivedMessage,
        registered: bool,
    ) -> Result<bool, BackendError> {
        if job.after.is_empty() || registered {
            return Ok(false);
        }
        let Waiting { after, pending } =
            waiting(job, &*self.backends.board, &*self.backends.manifest).await?;
        if pending.is_empty() {
            return Ok(false);
        }
        let waiting: Vec<String> = pending.iter().map(ToString::to_string).collect();
        tracing::info!(waiting_on = %waiting.join(", "), "dependencies incomplete; holding the job until they complete");
        self.backends
            .board
            .register(&[BoardJob {
                key: job.key(),
                after,
                message: OutgoingMessage {
                    body: message.body.clone(),
                    dedup_id: job.content_hash(),
                    group: message.group.clone(),
                },
                state: BoardState::Held,
                version: job.version().map(str::to_string),
            }])
            .await?;
        self.ack_all(std::slice::from_ref(&message.receipt)).await;
        Ok(true)
    }

    /// Gives messages back at once when a backend error kept us from deciding what to
    /// do with them: it is the worker's trouble, not the jobs'. The worker then
    /// receives nothing until its backends answer again, so that good jobs do not
    /// spend their receives on it.
    pub(super) async fn give_back(
        &self,
        message: &ReceivedMessage,
        what: &str,
        error: &BackendError,
    ) {
        tracing::warn!(%error, "{what}; giving the message back");
        let _ = self
            .backends
            .queue
            .release(&message.receipt, Duration::ZERO)
            .await;
        self.backend_failed(what, error);
    }

    async fn give_back_all(
        &self,
        jobs: &[(Job, ReceivedMessage)],
        what: &str,
        error: &BackendError,
    ) {
        for (_, message) in jobs {
            self.give_back(message, what, error).await;
        }
    }

    pub(super) async fn dead_letter(&self, message: &ReceivedMessage, reason: &str) {
        let reason = labelfleet_core::text::capped(reason);
        if let Err(e) = retry_transient("dead-lettering", || {
            self.backends.queue.dead_letter(message, &reason)
        })
        .await
        {
            tracing::error!(error = %e, "could not dead-letter the message; the queue's redrive policy will");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use labelfleet_core::job::ProvenancePolicy;
    use labelfleet_core::provenance::Provenance;
    use serde_json::json;

    fn job(version: Option<&str>) -> Job {
        let mut job = Job::parse(
            json!({"kind": "noop", "name": "j", "group_id": "g", "noop": {}}),
            "j.json",
            None,
            ProvenancePolicy::Reject,
        )
        .unwrap();
        job.provenance = version.map(|v| Provenance {
            source_file: "j.json".into(),
            git_commit: None,
            git_dirty: false,
            reproducible: false,
            overrides: vec![],
            config: json!({}),
            labelfleet_version: "test".into(),
            enqueued_at: "now".into(),
            enqueued_by: None,
            config_hash: Some(v.to_string()),
            rerun: 0,
        });
        job
    }

    fn entry(version: Option<&str>) -> ManifestEntry {
        ManifestEntry {
            group_id: "g".into(),
            run_id: "j".into(),
            kind: "noop".into(),
            counts: Default::default(),
            metrics: json!({}),
            artifacts: Default::default(),
            provenance: job(version).provenance,
            worker: "w".into(),
            attempt: 1,
            completed_at: "now".into(),
        }
    }

    fn decide(
        mine: Option<&str>,
        current: Option<&str>,
        done: Option<Option<&str>>,
    ) -> &'static str {
        match admission(&job(mine), current, done.map(entry).as_ref()) {
            Ok(Admission::Run) => "run",
            Ok(Admission::Skip(why)) if why.starts_with("superseded") => "superseded",
            Ok(Admission::Skip(_)) => "duplicate",
            Err(()) => "supersede the entry, then run",
        }
    }

    #[test]
    fn only_the_board_s_version_runs_and_an_entry_of_the_old_one_moves_aside() {
        assert_eq!(decide(Some("v2"), Some("v2"), None), "run");
        assert_eq!(decide(Some("v1"), Some("v2"), None), "superseded");
        assert_eq!(
            decide(Some("v1"), Some("v2"), Some(Some("v1"))),
            "superseded"
        );
        assert_eq!(
            decide(Some("v2"), Some("v2"), Some(Some("v2"))),
            "duplicate"
        );
        assert_eq!(
            decide(Some("v2"), Some("v2"), Some(Some("v1"))),
            "supersede the entry, then run"
        );
        // Hand-sent jobs and old registrations carry no version: as before versions.
        assert_eq!(decide(None, Some("v2"), None), "run");
        assert_eq!(decide(None, None, Some(None)), "duplicate");
        assert_eq!(decide(Some("v2"), None, Some(Some("v1"))), "duplicate");
    }
}
