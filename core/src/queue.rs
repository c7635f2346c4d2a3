//! The queue contract: SQS FIFO semantics, so that the embedded queue and SQS behave
//! alike.
//!
//! - A message belongs to a *message group*. Messages of one group are delivered in the
//!   order they were sent, and never while another message of the same group is in
//!   flight; different groups are delivered in parallel. labelfleet gives every job its
//!   own group, so independent jobs run side by side.
//! - A send carries a *deduplication id*; a second send with the same id while the
//!   first message is still queued is dropped.
//! - A receive makes a message invisible for a *visibility timeout* and hands out a
//!   [`Receipt`]. The holder keeps it with [`Queue::extend`] (heartbeats), ends it with
//!   [`Queue::ack`], gives it back with [`Queue::release`], or moves it to the
//!   dead-letter queue with [`Queue::dead_letter`]. Once the timeout runs out the
//!   message is received again, with a higher receive count and a new receipt.
//! - A backend *may* refuse the superseded receipt with
//!   [`BackendError::StaleReceipt`](crate::BackendError::StaleReceipt) (the embedded
//!   queue does), but need not: SQS documents that a delete with an old receipt can
//!   succeed, and moto accepts any receipt a message ever had. So a worker treats its
//!   lease as lost once its heartbeats have failed for a whole visibility timeout,
//!   whatever the backend says.
//! - A message received more than `max_receives` times without being acknowledged is
//!   moved to the dead-letter queue by the backend itself (SQS's redrive policy).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::BackendResult;
use crate::job::{Job, JobError, ProvenancePolicy, parse_json};

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The body (an [`Envelope`] for labelfleet's own messages).
    pub body: String,
    /// Messages with the same deduplication id are sent once.
    pub dedup_id: String,
    /// The message group (ordering and exclusivity scope).
    pub group: String,
}

/// A handle on one receive of a message; valid until the visibility timeout runs out
/// and someone else receives the message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Receipt(pub String);

/// A message handed out by [`Queue::receive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The backend's id for the message (stable across receives).
    pub id: String,
    /// The body as sent.
    pub body: String,
    /// The message group.
    pub group: String,
    /// The handle for extend / ack / release / dead-letter.
    pub receipt: Receipt,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
}

/// A message in the dead-letter queue, with the reason it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The backend's id for the message.
    pub id: String,
    /// The body as sent.
    pub body: String,
    /// Why it was dead-lettered.
    pub reason: String,
    /// How many times it had been received.
    pub receive_count: u32,
    /// When it was dead-lettered (seconds since the Unix epoch).
    pub dead_at: i64,
}

/// Message counts, as a backend can give them (approximate on SQS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Messages waiting to be received.
    pub visible: u64,
    /// Messages received and not yet acknowledged.
    pub in_flight: u64,
    /// Messages in the dead-letter queue.
    pub dead_lettered: u64,
}

/// Which dead letters [`Queue::redrive`] sends back.
pub type RedriveFilter<'a> = dyn Fn(&DeadLetter) -> bool + Send + Sync + 'a;

/// The queue that carries jobs to workers.
#[async_trait]
pub trait Queue: Send + Sync {
    /// A human description of where the queue lives, for logs and `status`.
    fn describe(&self) -> String;

    /// Checks that the queue (and its dead-letter queue) exists and that this process may use it; the error names the
    /// resource and what to do (`labelfleet setup`). Cheap: a worker calls it at start-up,
    /// and while it waits out backend trouble before it receives again.
    async fn check(&self) -> BackendResult<()>;

    /// Sends messages (in order). A message whose deduplication id was already sent and
    /// is still queued is dropped silently, as SQS FIFO does.
    async fn send(&self, messages: &[OutgoingMessage]) -> BackendResult<()>;

    /// Receives up to `max` messages, waiting up to `wait` for the first one (long
    /// polling). Received messages stay invisible for `visibility`.
    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> BackendResult<Vec<ReceivedMessage>>;

    /// Keeps a received message invisible for `visibility` from now (a heartbeat).
    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> BackendResult<()>;

    /// Deletes a received message: the work is done.
    async fn ack(&self, receipt: &Receipt) -> BackendResult<()>;

    /// Deletes several received messages, in as few calls as the backend allows; one
    /// result per receipt, in order.
    async fn ack_batch(&self, receipts: &[Receipt]) -> Vec<BackendResult<()>> {
        let mut results = Vec::with_capacity(receipts.len());
        for receipt in receipts {
            results.push(self.ack(receipt).await);
        }
        results
    }

    /// How many calls this handle has made to the queue service so far, where the
    /// backend counts them (for benchmarks: transport calls per job).
    fn transport_calls(&self) -> Option<u64> {
        None
    }

    /// Gives a received message back, visible again after `delay`.
    async fn release(&self, receipt: &Receipt, delay: Duration) -> BackendResult<()>;

    /// Moves a received message to the dead-letter queue, keeping `reason`.
    async fn dead_letter(&self, message: &ReceivedMessage, reason: &str) -> BackendResult<()>;

    /// Lists up to `limit` dead-lettered messages, oldest first.
    async fn dead_letters(&self, limit: usize) -> BackendResult<Vec<DeadLetter>>;

    /// Moves the dead-lettered messages that `select` picks back onto the queue, as
    /// messages received zero times (once their cause is fixed), and returns them.
    async fn redrive(&self, select: &RedriveFilter<'_>) -> BackendResult<Vec<DeadLetter>>;

    /// Counts messages.
    async fn depth(&self) -> BackendResult<QueueDepth>;
}

/// The body of labelfleet's own messages: a versioned wrapper around a job.
pub struct Envelope;

impl Envelope {
    /// The envelope format version.
    pub const VERSION: u64 = 1;

    /// Wraps a job (with its provenance) into a message body.
    pub fn wrap(job: &Job) -> String {
        serde_json::json!({"labelfleet": Envelope::VERSION, "job": job.to_value()}).to_string()
    }

    /// Unwraps a message body into a job, with errors that say which message and which
    /// field is wrong. `message_id` names the message when the body is unreadable.
    pub fn open(body: &str, message_id: &str) -> Result<Job, JobError> {
        let origin = format!("queue message {message_id}");
        let value = parse_json(body, &origin)?;
        let mut value = match value {
            Value::Object(map) => map,
            _ => {
                return Err(JobError {
                    file: origin,
                    path: "(top level)".into(),
                    message:
                        "expected a labelfleet envelope object {\"labelfleet\": 1, \"job\": {...}}"
                            .into(),
                });
            }
        };
        match value.get("labelfleet").and_then(Value::as_u64) {
            Some(Envelope::VERSION) => {}
            other => {
                return Err(JobError {
                    file: origin,
                    path: "labelfleet".into(),
                    message: format!(
                        "expected envelope version {}, found {}; was this message sent by labelfleet?",
                        Envelope::VERSION,
                        other.map_or("none".to_string(), |v| v.to_string())
                    ),
                });
            }
        }
        let job = value.remove("job").ok_or_else(|| JobError {
            file: origin.clone(),
            path: "job".into(),
            message: "missing: the envelope holds no job".into(),
        })?;
        // Errors inside the job name the job file it was enqueued from, when known.
        let source = job
            .pointer("/provenance/source_file")
            .and_then(Value::as_str)
            .map(|s| format!("{s} (via {origin})"))
            .unwrap_or(origin);
        Job::parse(job, &source, None, ProvenancePolicy::Accept)
    }
}
