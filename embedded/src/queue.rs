//! The embedded queue: SQS FIFO semantics over one SQLite table.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use labelfleet_core::error::{BackendError, BackendResult};
use labelfleet_core::queue::{
    DeadLetter, OutgoingMessage, Queue, QueueDepth, Receipt, ReceivedMessage, RedriveFilter,
};
use rand::Rng;
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use tokio::sync::Notify;

use crate::sqlite::{CallError, Db, now_ms};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    grp           TEXT    NOT NULL,
    dedup_id      TEXT    NOT NULL UNIQUE,
    body          TEXT    NOT NULL,
    sent_at       INTEGER NOT NULL,
    visible_at    INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_group ON messages (grp, id);
CREATE INDEX IF NOT EXISTS messages_by_visibility ON messages (visible_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    id            INTEGER PRIMARY KEY,
    grp           TEXT    NOT NULL,
    dedup_id      TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    receive_count INTEGER NOT NULL,
    dead_at       INTEGER NOT NULL
);
";

/// The embedded queue. Open it from any number of processes.
#[derive(Clone)]
pub struct SqliteQueue {
    db: Db,
    max_receives: u32,
    /// Wakes long polls in this process as soon as it sends; other processes' sends are
    /// seen by polling the table.
    sent: Arc<Notify>,
}

impl SqliteQueue {
    /// Opens the queue in `path`; a message received `max_receives` times without an
    /// ack is moved to the dead-letter table on its next receive.
    pub fn open(path: &Path, max_receives: u32) -> BackendResult<SqliteQueue> {
        if max_receives == 0 {
            return Err(BackendError::Invalid(
                "max_receives must be at least 1".into(),
            ));
        }
        Ok(SqliteQueue {
            db: Db::open(path, SCHEMA)?,
            max_receives,
            sent: Arc::new(Notify::new()),
        })
    }

    async fn receive_now(
        &self,
        max: usize,
        visibility: Duration,
    ) -> BackendResult<Vec<ReceivedMessage>> {
        let max_receives = self.max_receives;
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let now = now_ms();
                let mut got = Vec::new();
                // Group heads that are visible: a group whose first message is in flight
                // or delayed is blocked, as in SQS FIFO.
                let candidates: Vec<(i64, String, String, u32)> = {
                    let mut stmt = tx.prepare_cached(
                        "SELECT m.id, m.grp, m.body, m.receive_count FROM messages m
                         WHERE m.visible_at <= ?1
                           AND m.id = (SELECT MIN(id) FROM messages WHERE grp = m.grp)
                         ORDER BY m.id LIMIT ?2",
                    )?;
                    stmt.query_map(params![now, (max * 4 + 8) as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })?
                    .collect::<Result<_, _>>()?
                };
                for (id, grp, body, count) in candidates {
                    if got.len() >= max {
                        break;
                    }
                    if count >= max_receives {
                        move_to_dead_letters(
                            &tx,
                            id,
                            &format!(
                                "received {count} times without being acknowledged (max_receives = {max_receives}); \
                                 the worker may have been killed or lost its lease each time"
                            ),
                        )?;
                        continue;
                    }
                    let receipt = format!("{id}:{:016x}", rand::rng().random::<u64>());
                    tx.execute(
                        "UPDATE messages SET receive_count = receive_count + 1, receipt = ?1, visible_at = ?2 WHERE id = ?3",
                        params![receipt, now + visibility.as_millis() as i64, id],
                    )?;
                    got.push(ReceivedMessage {
                        id: id.to_string(),
                        body,
                        group: grp,
                        receipt: Receipt(receipt),
                        receive_count: count + 1,
                    });
                }
                tx.commit()?;
                Ok(got)
            })
            .await
    }
}

fn move_to_dead_letters(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    reason: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO dead_letters (id, grp, dedup_id, body, reason, receive_count, dead_at)
         SELECT id, grp, dedup_id, body, ?1, receive_count, ?2 FROM messages WHERE id = ?3",
        params![reason, now_ms() / 1000, id],
    )?;
    tx.execute("DELETE FROM messages WHERE id = ?1", params![id])?;
    Ok(())
}

impl SqliteQueue {
    /// Runs `sql` on the message a receipt holds. Its parameters are ?1 the new
    /// `visible_at` (unused by a delete), ?2 the message id and ?3 the receipt; when no
    /// row matches, the receipt no longer holds its message: it is stale.
    async fn update_held(
        &self,
        receipt: &Receipt,
        sql: &'static str,
        visible_at: Option<i64>,
    ) -> BackendResult<()> {
        let id = message_id(receipt)?;
        let receipt = receipt.0.clone();
        self.db
            .call(move |conn| {
                let changed = conn.prepare_cached(sql)?.execute(params![
                    visible_at.unwrap_or(0),
                    id,
                    receipt
                ])?;
                if changed == 0 {
                    return Err(BackendError::StaleReceipt.into());
                }
                Ok(())
            })
            .await
    }
}

fn message_id(receipt: &Receipt) -> BackendResult<i64> {
    receipt
        .0
        .split_once(':')
        .and_then(|(id, _)| id.parse().ok())
        .ok_or(BackendError::StaleReceipt)
}

#[async_trait]
impl Queue for SqliteQueue {
    fn describe(&self) -> String {
        format!("embedded queue {}", self.db.path().display())
    }

    async fn check(&self) -> BackendResult<()> {
        self.db.check("messages").await
    }

    async fn send(&self, messages: &[OutgoingMessage]) -> BackendResult<()> {
        let messages = messages.to_vec();
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let now = now_ms();
                {
                    let mut stmt = tx.prepare_cached(
                        "INSERT OR IGNORE INTO messages (grp, dedup_id, body, sent_at, visible_at) VALUES (?1, ?2, ?3, ?4, ?4)",
                    )?;
                    for m in &messages {
                        stmt.execute(params![m.group, m.dedup_id, m.body, now])?;
                    }
                }
                tx.commit()?;
                Ok(())
            })
            .await?;
        self.sent.notify_waiters();
        Ok(())
    }

    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> BackendResult<Vec<ReceivedMessage>> {
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(20);
        loop {
            let notified = self.sent.notified();
            let got = self.receive_now(max.max(1), visibility).await?;
            let now = Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let nap = pause.min(deadline - now);
            let _ = tokio::time::timeout(nap, notified).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> BackendResult<()> {
        let visible_at = now_ms() + visibility.as_millis() as i64;
        self.update_held(
            receipt,
            "UPDATE messages SET visible_at = ?1 WHERE id = ?2 AND receipt = ?3",
            Some(visible_at),
        )
        .await
    }

    async fn ack(&self, receipt: &Receipt) -> BackendResult<()> {
        self.update_held(
            receipt,
            "DELETE FROM messages WHERE id = ?2 AND receipt = ?3",
            None,
        )
        .await
    }

    async fn release(&self, receipt: &Receipt, delay: Duration) -> BackendResult<()> {
        let visible_at = now_ms() + delay.as_millis() as i64;
        self.update_held(
            receipt,
            "UPDATE messages SET visible_at = ?1, receipt = NULL WHERE id = ?2 AND receipt = ?3",
            Some(visible_at),
        )
        .await?;
        if delay.is_zero() {
            self.sent.notify_waiters();
        }
        Ok(())
    }

    async fn dead_letter(&self, message: &ReceivedMessage, reason: &str) -> BackendResult<()> {
        let id = message_id(&message.receipt)?;
        let receipt = message.receipt.0.clone();
        let reason = reason.to_string();
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let held: Option<i64> = tx
                    .query_row(
                        "SELECT id FROM messages WHERE id = ?1 AND receipt = ?2",
                        params![id, receipt],
                        |r| r.get(0),
                    )
                    .optional()?;
                if held.is_none() {
                    return Err(CallError::Backend(BackendError::StaleReceipt));
                }
                move_to_dead_letters(&tx, id, &reason)?;
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn dead_letters(&self, limit: usize) -> BackendResult<Vec<DeadLetter>> {
        self.db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, body, reason, receive_count, dead_at FROM dead_letters ORDER BY dead_at, id LIMIT ?1",
                )?;
                let rows = stmt
                    .query_map(params![limit as i64], |r| {
                        Ok(DeadLetter {
                            id: r.get::<_, i64>(0)?.to_string(),
                            body: r.get(1)?,
                            reason: r.get(2)?,
                            receive_count: r.get(3)?,
                            dead_at: r.get(4)?,
                        })
                    })?
                    .collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .await
    }

    async fn redrive(&self, select: &RedriveFilter<'_>) -> BackendResult<Vec<DeadLetter>> {
        let picked: Vec<DeadLetter> = self
            .dead_letters(usize::MAX >> 1)
            .await?
            .into_iter()
            .filter(|d| select(d))
            .collect();
        let ids: Vec<i64> = picked.iter().filter_map(|d| d.id.parse().ok()).collect();
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let now = now_ms();
                for id in ids {
                    // A copy of the job queued again since (same deduplication id) stands.
                    tx.execute(
                        "INSERT OR IGNORE INTO messages (grp, dedup_id, body, sent_at, visible_at)
                         SELECT grp, dedup_id, body, ?1, ?1 FROM dead_letters WHERE id = ?2",
                        params![now, id],
                    )?;
                    tx.execute("DELETE FROM dead_letters WHERE id = ?1", params![id])?;
                }
                tx.commit()?;
                Ok(())
            })
            .await?;
        self.sent.notify_waiters();
        Ok(picked)
    }

    async fn depth(&self) -> BackendResult<QueueDepth> {
        self.db
            .call(move |conn| {
                let now = now_ms();
                let (visible, in_flight): (i64, i64) = conn.query_row(
                    "SELECT COALESCE(SUM(visible_at <= ?1), 0), COALESCE(SUM(visible_at > ?1), 0) FROM messages",
                    params![now],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                let dead: i64 = conn.query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))?;
                Ok(QueueDepth {
                    visible: visible as u64,
                    in_flight: in_flight as u64,
                    dead_lettered: dead as u64,
                })
            })
            .await
    }
}
