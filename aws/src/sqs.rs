//! The queue on SQS FIFO.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use labelfleet_core::error::{BackendError, BackendResult};
use labelfleet_core::queue::{
    DeadLetter, OutgoingMessage, Queue, QueueDepth, Receipt, ReceivedMessage, RedriveFilter,
};

use crate::errors::{classify, code};
use crate::spill::Spill;

const REASON: &str = "labelfleet-reason";
const RECEIVES: &str = "labelfleet-receive-count";
const DEAD_AT: &str = "labelfleet-dead-at";
/// SQS's longest long poll.
const MAX_WAIT_SECS: u64 = 20;
/// Room left in a message for SQS's own overhead when deciding to spill.
const SIZE_MARGIN: usize = 1024;

/// An SQS FIFO queue and its dead-letter queue.
#[derive(Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
    dlq_url: String,
    max_receives: u32,
    max_body: usize,
    spill: Option<Spill>,
    /// Calls made to SQS through this handle.
    calls: Arc<AtomicU64>,
}

fn ceil_secs(d: Duration) -> i32 {
    d.as_secs_f64().ceil().min(43_200.0) as i32
}

/// Error codes with which SQS refuses a receipt that no longer holds its message.
fn is_stale_code(code: &str) -> bool {
    matches!(
        code,
        "ReceiptHandleIsInvalid"
            | "InvalidParameterValue"
            | "MessageNotInflight"
            | "AWS.SimpleQueueService.MessageNotInflight"
            | "ReceiptHandleIsInvalidException"
    )
}

fn is_stale<E: aws_sdk_sqs::error::ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    code(e).is_some_and(is_stale_code)
}

async fn queue_url(client: &Client, name_or_url: &str) -> BackendResult<String> {
    if name_or_url.starts_with("https://") || name_or_url.starts_with("http://") {
        return Ok(name_or_url.to_string());
    }
    let name = if name_or_url.ends_with(".fifo") {
        name_or_url.to_string()
    } else {
        format!("{name_or_url}.fifo")
    };
    let out = client
        .get_queue_url()
        .queue_name(&name)
        .send()
        .await
        .map_err(|e| classify(&format!("SQS GetQueueUrl {name}"), e))?;
    out.queue_url()
        .map(str::to_string)
        .ok_or_else(|| BackendError::Other(format!("SQS returned no URL for {name}")))
}

impl SqsQueue {
    /// Connects to an existing queue (a URL or a name) and finds its dead-letter queue
    /// from the redrive policy. `spill` carries bodies over the queue's size limit.
    pub async fn connect(
        sdk: &aws_config::SdkConfig,
        queue: &str,
        spill: Option<Spill>,
    ) -> BackendResult<SqsQueue> {
        let client = Client::new(sdk);
        let url = queue_url(&client, queue).await?;
        let attributes = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .attribute_names(QueueAttributeName::MaximumMessageSize)
            .send()
            .await
            .map_err(|e| classify(&format!("SQS GetQueueAttributes {url}"), e))?;
        let attrs = attributes.attributes().cloned().unwrap_or_default();
        let policy = attrs.get(&QueueAttributeName::RedrivePolicy).ok_or_else(|| {
            BackendError::Other(format!(
                "queue {url} has no dead-letter queue (no redrive policy); create it with `labelfleet setup`"
            ))
        })?;
        let policy: serde_json::Value = serde_json::from_str(policy).map_err(|e| {
            BackendError::Other(format!("queue {url}: unreadable redrive policy: {e}"))
        })?;
        let dlq_arn = policy["deadLetterTargetArn"].as_str().unwrap_or_default();
        let dlq_name = dlq_arn.rsplit(':').next().unwrap_or_default();
        let max_receives = match &policy["maxReceiveCount"] {
            serde_json::Value::String(s) => s.parse().unwrap_or(5),
            v => v.as_u64().unwrap_or(5) as u32,
        };
        let dlq_url = queue_url(&client, dlq_name).await?;
        let max_body = attrs
            .get(&QueueAttributeName::MaximumMessageSize)
            .and_then(|s| s.parse().ok())
            .unwrap_or(262_144usize);
        Ok(SqsQueue {
            client,
            url,
            dlq_url,
            max_receives,
            max_body,
            spill,
            calls: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The client, counting the call about to be made.
    fn counted(&self) -> &Client {
        self.calls.fetch_add(1, Ordering::Relaxed);
        &self.client
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The redrive policy's `maxReceiveCount`.
    pub fn max_receives(&self) -> u32 {
        self.max_receives
    }

    async fn outgoing_body(&self, body: &str) -> BackendResult<String> {
        if body.len() + SIZE_MARGIN <= self.max_body {
            return Ok(body.to_string());
        }
        match &self.spill {
            Some(spill) => spill.put("messages", body).await,
            None => Err(BackendError::Invalid(format!(
                "a message of {} bytes is over the queue's limit of {} bytes and no artifact store is configured to carry it",
                body.len(),
                self.max_body
            ))),
        }
    }

    async fn incoming_body(&self, body: String) -> BackendResult<String> {
        match &self.spill {
            Some(spill) => Ok(spill.resolve(&body).await?.unwrap_or(body)),
            None => Ok(body),
        }
    }

    async fn count(&self, url: &str) -> BackendResult<(u64, u64)> {
        let out = self
            .counted()
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| classify(&format!("SQS GetQueueAttributes {url}"), e))?;
        let attrs = out.attributes().cloned().unwrap_or_default();
        let get = |name: QueueAttributeName| {
            attrs
                .get(&name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                + get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        ))
    }
}

#[async_trait]
impl Queue for SqsQueue {
    fn describe(&self) -> String {
        format!("SQS queue {} (dead letters: {})", self.url, self.dlq_url)
    }

    async fn check(&self) -> BackendResult<()> {
        for url in [&self.url, &self.dlq_url] {
            self.counted()
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .map_err(|e| classify(&format!("SQS GetQueueAttributes {url}"), e))?;
        }
        Ok(())
    }

    async fn send(&self, messages: &[OutgoingMessage]) -> BackendResult<()> {
        // A batch holds at most 10 messages and at most the size limit in total.
        let mut batch: Vec<SendMessageBatchRequestEntry> = Vec::new();
        let mut batch_bytes = 0;
        for (i, m) in messages.iter().enumerate() {
            let body = self.outgoing_body(&m.body).await?;
            if batch.len() == 10
                || (batch_bytes + body.len() + SIZE_MARGIN > self.max_body && !batch.is_empty())
            {
                self.send_batch(std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
            batch_bytes += body.len();
            batch.push(
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .message_group_id(&m.group)
                    .message_deduplication_id(&m.dedup_id)
                    .build()
                    .map_err(|e| BackendError::Invalid(e.to_string()))?,
            );
        }
        if !batch.is_empty() {
            self.send_batch(batch).await?;
        }
        Ok(())
    }

    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> BackendResult<Vec<ReceivedMessage>> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let out = self
                .counted()
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(max.clamp(1, 10) as i32)
                .visibility_timeout(ceil_secs(visibility).max(1))
                // Whole seconds, rounded up: rounding down would turn the last part of a
                // wait into a burst of zero-second polls.
                .wait_time_seconds(left.as_secs_f64().ceil().min(MAX_WAIT_SECS as f64) as i32)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
                .send()
                .await
                .map_err(|e| classify(&format!("SQS ReceiveMessage {}", self.url), e))?;
            let mut got = Vec::new();
            for m in out.messages() {
                let attrs = m.attributes().cloned().unwrap_or_default();
                let receive_count = attrs
                    .get(&MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                got.push(ReceivedMessage {
                    id: m.message_id().unwrap_or_default().to_string(),
                    body: self
                        .incoming_body(m.body().unwrap_or_default().to_string())
                        .await?,
                    group: attrs
                        .get(&MessageSystemAttributeName::MessageGroupId)
                        .cloned()
                        .unwrap_or_default(),
                    receipt: Receipt(m.receipt_handle().unwrap_or_default().to_string()),
                    receive_count,
                });
            }
            if !got.is_empty() || Instant::now() >= deadline {
                return Ok(got);
            }
        }
    }

    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> BackendResult<()> {
        self.change_visibility(receipt, ceil_secs(visibility)).await
    }

    async fn ack(&self, receipt: &Receipt) -> BackendResult<()> {
        match self
            .counted()
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&receipt.0)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_stale(&e) => Err(BackendError::StaleReceipt),
            Err(e) => Err(classify(&format!("SQS DeleteMessage {}", self.url), e)),
        }
    }

    async fn ack_batch(&self, receipts: &[Receipt]) -> Vec<BackendResult<()>> {
        let mut results = Vec::with_capacity(receipts.len());
        for chunk in receipts.chunks(10) {
            let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&r.0)
                        .build()
                        .ok()
                })
                .collect();
            match self
                .counted()
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => {
                    for i in 0..chunk.len() {
                        let failure = out.failed().iter().find(|f| f.id() == i.to_string());
                        results.push(match failure {
                            None => Ok(()),
                            Some(f) if is_stale_code(f.code()) => Err(BackendError::StaleReceipt),
                            Some(f) => Err(BackendError::Unavailable(format!(
                                "SQS DeleteMessageBatch {}: {}: {}",
                                self.url,
                                f.code(),
                                f.message().unwrap_or_default()
                            ))),
                        });
                    }
                }
                Err(e) => {
                    let e = classify(&format!("SQS DeleteMessageBatch {}", self.url), e);
                    for _ in chunk {
                        results.push(Err(match &e {
                            BackendError::Unavailable(m) => BackendError::Unavailable(m.clone()),
                            other => BackendError::Other(other.to_string()),
                        }));
                    }
                }
            }
        }
        results
    }

    fn transport_calls(&self) -> Option<u64> {
        Some(self.calls.load(Ordering::Relaxed))
    }

    async fn release(&self, receipt: &Receipt, delay: Duration) -> BackendResult<()> {
        self.change_visibility(receipt, ceil_secs(delay)).await
    }

    async fn dead_letter(&self, message: &ReceivedMessage, reason: &str) -> BackendResult<()> {
        let attribute = |value: String, kind: &str| {
            MessageAttributeValue::builder()
                .data_type(kind)
                .string_value(value)
                .build()
                .map_err(|e| BackendError::Invalid(e.to_string()))
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // SQS caps a message attribute with the body; keep the reason readable but bounded.
        let reason: String = reason.chars().take(8_000).collect();
        self.counted()
            .send_message()
            .queue_url(&self.dlq_url)
            .message_body(self.outgoing_body(&message.body).await?)
            .message_group_id(if message.group.is_empty() {
                "dead-letters"
            } else {
                &message.group
            })
            .message_deduplication_id(format!("dead-{}", message.id))
            .message_attributes(REASON, attribute(reason, "String")?)
            .message_attributes(
                RECEIVES,
                attribute(message.receive_count.to_string(), "Number")?,
            )
            .message_attributes(DEAD_AT, attribute(now.to_string(), "Number")?)
            .send()
            .await
            .map_err(|e| classify(&format!("SQS SendMessage {}", self.dlq_url), e))?;
        self.ack(&message.receipt).await
    }

    async fn dead_letters(&self, limit: usize) -> BackendResult<Vec<DeadLetter>> {
        // SQS has no peek: receive (hidden for half a minute, so that each is seen
        // once), then make them visible again at once, so that a `redrive` right after
        // a `status` finds them.
        let mut seen = std::collections::HashSet::new();
        let mut letters = Vec::new();
        let mut receipts = Vec::new();
        while letters.len() < limit {
            let batch = self
                .receive_dead((limit - letters.len()).clamp(1, 10), 30)
                .await;
            let batch = match batch {
                Ok(batch) if !batch.is_empty() => batch,
                other => {
                    self.show_dead(&receipts).await;
                    other?;
                    break;
                }
            };
            for (letter, raw) in batch {
                receipts.push(raw.receipt);
                if seen.insert(letter.id.clone()) {
                    letters.push(letter);
                }
            }
        }
        self.show_dead(&receipts).await;
        letters.sort_by_key(|d| d.dead_at);
        Ok(letters)
    }

    async fn redrive(&self, select: &RedriveFilter<'_>) -> BackendResult<Vec<DeadLetter>> {
        let mut seen = std::collections::HashSet::new();
        let mut moved = Vec::new();
        let mut passed_over = Vec::new();
        loop {
            // Held for a minute while the scan goes on, so each is seen once.
            let batch = self.receive_dead(10, 60).await?;
            let mut new = false;
            for (letter, raw) in batch {
                if !seen.insert(letter.id.clone()) {
                    continue;
                }
                new = true;
                if !select(&letter) {
                    passed_over.push(raw.receipt);
                    continue;
                }
                // A new message (received zero times), with its body as stored: a
                // pointer to S3 stays a pointer. A unique deduplication id, so that a
                // job redriven twice within SQS's 5-minute window is not dropped.
                let dedup = format!("redrive-{}-{}", letter.id, unix_millis());
                self.counted()
                    .send_message()
                    .queue_url(&self.url)
                    .message_body(raw.body)
                    .message_group_id(if raw.group.is_empty() {
                        "redriven"
                    } else {
                        &raw.group
                    })
                    .message_deduplication_id(dedup)
                    .send()
                    .await
                    .map_err(|e| classify(&format!("SQS SendMessage {}", self.url), e))?;
                self.counted()
                    .delete_message()
                    .queue_url(&self.dlq_url)
                    .receipt_handle(&raw.receipt)
                    .send()
                    .await
                    .map_err(|e| classify(&format!("SQS DeleteMessage {}", self.dlq_url), e))?;
                moved.push(letter);
            }
            if !new {
                break;
            }
        }
        self.show_dead(&passed_over).await;
        Ok(moved)
    }

    async fn depth(&self) -> BackendResult<QueueDepth> {
        let (visible, in_flight) = self.count(&self.url).await?;
        let (dead_visible, dead_hidden) = self.count(&self.dlq_url).await?;
        Ok(QueueDepth {
            visible,
            in_flight,
            dead_lettered: dead_visible + dead_hidden,
        })
    }
}

/// A dead-letter queue message as SQS handed it out.
struct RawDead {
    body: String,
    group: String,
    receipt: String,
}

fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

impl SqsQueue {
    /// Makes dead-letter queue messages received for a listing visible again.
    /// Best effort: one that stays hidden shows again after its visibility timeout.
    async fn show_dead(&self, receipts: &[String]) {
        for chunk in receipts.chunks(10) {
            let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .visibility_timeout(0)
                        .build()
                        .ok()
                })
                .collect();
            let _ = self
                .counted()
                .change_message_visibility_batch()
                .queue_url(&self.dlq_url)
                .set_entries(Some(entries))
                .send()
                .await;
        }
    }

    /// Receives up to `max` messages of the dead-letter queue (no wait), hidden for
    /// `visibility` seconds: each as a [`DeadLetter`] (body resolved, reason read from
    /// its attributes) and as stored.
    async fn receive_dead(
        &self,
        max: usize,
        visibility: i32,
    ) -> BackendResult<Vec<(DeadLetter, RawDead)>> {
        let out = self
            .counted()
            .receive_message()
            .queue_url(&self.dlq_url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .visibility_timeout(visibility)
            .wait_time_seconds(0)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await
            .map_err(|e| classify(&format!("SQS ReceiveMessage {}", self.dlq_url), e))?;
        let mut letters = Vec::new();
        for m in out.messages() {
            let attrs = m.message_attributes().cloned().unwrap_or_default();
            let text = |name: &str| {
                attrs
                    .get(name)
                    .and_then(|v| v.string_value())
                    .map(str::to_string)
            };
            let system = m.attributes().cloned().unwrap_or_default();
            let sent_at = system
                .get(&MessageSystemAttributeName::SentTimestamp)
                .and_then(|t| t.parse::<i64>().ok())
                .map(|ms| ms / 1000)
                .unwrap_or(0);
            let raw_body = m.body().unwrap_or_default().to_string();
            let letter = DeadLetter {
                id: m.message_id().unwrap_or_default().to_string(),
                body: self.incoming_body(raw_body.clone()).await?,
                reason: text(REASON).unwrap_or_else(|| {
                    format!(
                        "moved by the queue's redrive policy after {} receives without an acknowledgement \
                         (the worker may have been killed or lost its lease each time)",
                        self.max_receives
                    )
                }),
                receive_count: text(RECEIVES)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(self.max_receives),
                dead_at: text(DEAD_AT).and_then(|v| v.parse().ok()).unwrap_or(sent_at),
            };
            let raw = RawDead {
                body: raw_body,
                group: system
                    .get(&MessageSystemAttributeName::MessageGroupId)
                    .cloned()
                    .unwrap_or_default(),
                receipt: m.receipt_handle().unwrap_or_default().to_string(),
            };
            letters.push((letter, raw));
        }
        Ok(letters)
    }

    async fn send_batch(&self, entries: Vec<SendMessageBatchRequestEntry>) -> BackendResult<()> {
        let out = self
            .counted()
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| classify(&format!("SQS SendMessageBatch {}", self.url), e))?;
        if let Some(failed) = out.failed().first() {
            let message = format!(
                "SQS SendMessageBatch {}: {} message(s) failed, first: {}: {}",
                self.url,
                out.failed().len(),
                failed.code(),
                failed.message().unwrap_or_default()
            );
            return Err(if failed.sender_fault() {
                BackendError::Invalid(message)
            } else {
                BackendError::Unavailable(message)
            });
        }
        Ok(())
    }

    async fn change_visibility(&self, receipt: &Receipt, seconds: i32) -> BackendResult<()> {
        match self
            .counted()
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&receipt.0)
            .visibility_timeout(seconds)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_stale(&e) => Err(BackendError::StaleReceipt),
            Err(e) => Err(classify(
                &format!("SQS ChangeMessageVisibility {}", self.url),
                e,
            )),
        }
    }
}
