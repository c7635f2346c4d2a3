//! The recorder: finished jobs are recorded in batches — whatever finished within
//! `record_linger` of the first, up to 10, is written to the manifest, released and
//! acknowledged together — and only while their worker still holds their messages and
//! they are still the job board's version of the job.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use labelfleet_core::error::BackendError;
use labelfleet_core::queue::Receipt;
use labelfleet_manifest::ManifestEntry;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::Inner;
use crate::execute::{Completion, record, retry_transient};
use crate::heartbeat::Heartbeat;

/// A job that ran and waits to be recorded and acknowledged.
pub(super) struct Finished {
    pub(super) entry: ManifestEntry,
    pub(super) receipt: Receipt,
    pub(super) heartbeat: Heartbeat,
    pub(super) started: Instant,
    pub(super) span: tracing::Span,
    pub(super) _slot: OwnedSemaphorePermit,
}

impl Inner {
    pub(super) async fn recorder(self: Arc<Self>, mut finished: mpsc::UnboundedReceiver<Finished>) {
        while let Some(first) = finished.recv().await {
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + self.config.record_linger;
            while batch.len() < 10 && self.config.concurrency > 1 {
                match tokio::time::timeout_at(deadline, finished.recv()).await {
                    Ok(Some(next)) => batch.push(next),
                    _ => break,
                }
            }
            self.record_batch(batch).await;
        }
    }

    /// Drops from `batch` what must not be recorded: jobs whose lease ran out (another
    /// worker holds them now), and jobs that `enqueue --replace` superseded while they
    /// ran (their messages are acknowledged: the newer version is on the queue).
    async fn still_current(&self, batch: Vec<Finished>) -> Vec<Finished> {
        let (held, lost): (Vec<_>, Vec<_>) =
            batch.into_iter().partition(|f| f.heartbeat.lease().held());
        for f in lost {
            let _in_job = f.span.enter();
            tracing::warn!(
                "the job finished after its lease ran out; recording nothing (another worker holds it now)"
            );
            f.heartbeat.stop();
        }
        if !held.iter().any(|f| version_of(&f.entry).is_some()) {
            return held;
        }
        let keys: Vec<_> = held
            .iter()
            .map(|f| labelfleet_core::job::JobKey {
                group_id: f.entry.group_id.clone(),
                name: f.entry.run_id.clone(),
            })
            .collect();
        let registered = match self.backends.board.jobs(&keys).await {
            Ok(registered) => registered,
            // Recording goes on; the check after it fails the same way if it must.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the job board to check versions before recording");
                return held;
            }
        };
        let mut keep = Vec::with_capacity(held.len());
        let mut superseded = Vec::new();
        for (f, registration) in held.into_iter().zip(registered) {
            let current = registration.and_then(|r| r.version);
            match (version_of(&f.entry), current.as_deref()) {
                (Some(mine), Some(current)) if mine != current => superseded.push(f),
                _ => keep.push(f),
            }
        }
        if !superseded.is_empty() {
            let receipts: Vec<Receipt> = superseded.iter().map(|f| f.receipt.clone()).collect();
            self.ack_all(&receipts).await;
            for f in superseded {
                let _in_job = f.span.enter();
                tracing::warn!(
                    "a newer version of the job was enqueued (--replace) while it ran; discarding this result"
                );
                f.heartbeat.stop();
            }
        }
        keep
    }

    async fn record_batch(&self, batch: Vec<Finished>) {
        let batch = self.still_current(batch).await;
        if batch.is_empty() {
            return;
        }
        let entries: Vec<ManifestEntry> = batch.iter().map(|f| f.entry.clone()).collect();
        match record(entries, &self.backends).await {
            Ok((completions, released)) => {
                let receipts: Vec<Receipt> = batch.iter().map(|f| f.receipt.clone()).collect();
                self.ack_all(&receipts).await;
                for (f, completion) in batch.into_iter().zip(completions) {
                    let _in_job = f.span.enter();
                    let elapsed_ms = f.started.elapsed().as_millis() as u64;
                    match who_recorded(&completion, &self.config.worker_id) {
                        Recorded::Now => {
                            tracing::info!(elapsed_ms, metrics = %completion.entry.metrics, "job completed")
                        }
                        Recorded::ByOwnRetry => tracing::info!(
                            elapsed_ms,
                            "job completed; this worker's own earlier try of the write (retried after a backend error) had recorded it"
                        ),
                        Recorded::ByOther(first) => tracing::warn!(
                            elapsed_ms,
                            first_worker = %first,
                            "job completed, but another worker recorded it first; keeping theirs"
                        ),
                    }
                    f.heartbeat.stop();
                    self.done.fetch_add(1, Ordering::Relaxed);
                }
                if !released.is_empty() {
                    tracing::info!(
                        count = released.len(),
                        "released held jobs whose dependencies completed"
                    );
                }
            }
            Err(e) => {
                // The work ran but is not recorded: give the messages back to run again.
                for f in batch {
                    let _in_job = f.span.enter();
                    tracing::error!(error = %e, "the job ran but its manifest entry could not be written; releasing it");
                    f.heartbeat.stop();
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    let _ = self
                        .backends
                        .queue
                        .release(&f.receipt, std::time::Duration::ZERO)
                        .await;
                }
                self.backend_failed("writing manifest entries", &e);
            }
        }
    }

    pub(super) async fn ack_all(&self, receipts: &[Receipt]) {
        let results = self.backends.queue.ack_batch(receipts).await;
        for (receipt, result) in receipts.iter().zip(results) {
            let result = match result {
                Err(BackendError::Unavailable(_)) => {
                    retry_transient("acknowledging", || self.backends.queue.ack(receipt)).await
                }
                other => other,
            };
            match result {
                Ok(()) => {}
                Err(BackendError::StaleReceipt) => tracing::warn!(
                    "could not acknowledge: the lease had run out; the next delivery finds the job complete and acknowledges it"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "could not acknowledge; the next delivery finds the job complete")
                }
            }
        }
    }
}

fn version_of(entry: &ManifestEntry) -> Option<&str> {
    entry.provenance.as_ref()?.config_hash.as_deref()
}

/// Who wrote the manifest entry of a job this worker just finished.
#[derive(Debug, PartialEq, Eq)]
enum Recorded<'a> {
    /// This write.
    Now,
    /// This worker, earlier: a write that reached the backend but whose answer was
    /// lost (an outage), then retried.
    ByOwnRetry,
    /// Another worker (a duplicate delivery raced this one).
    ByOther(&'a str),
}

fn who_recorded<'a>(completion: &'a Completion, me: &str) -> Recorded<'a> {
    if completion.written {
        Recorded::Now
    } else if completion.entry.worker == me {
        Recorded::ByOwnRetry
    } else {
        Recorded::ByOther(&completion.entry.worker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(worker: &str, written: bool) -> Completion {
        Completion {
            entry: ManifestEntry {
                group_id: "g".into(),
                run_id: "j".into(),
                kind: "noop".into(),
                counts: Default::default(),
                metrics: serde_json::json!({}),
                artifacts: Default::default(),
                provenance: None,
                worker: worker.into(),
                attempt: 1,
                completed_at: "now".into(),
            },
            written,
        }
    }

    #[test]
    fn an_entry_found_with_this_worker_s_name_was_its_own_retried_write() {
        assert_eq!(who_recorded(&completion("me", true), "me"), Recorded::Now);
        assert_eq!(
            who_recorded(&completion("me", false), "me"),
            Recorded::ByOwnRetry
        );
        assert_eq!(
            who_recorded(&completion("other", false), "me"),
            Recorded::ByOther("other")
        );
    }
}
