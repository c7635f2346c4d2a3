//! The embedded manifest: one SQLite table keyed by (`group_id`, `run_id`).

use std::path::Path;

use async_trait::async_trait;
use labelfleet_core::error::{BackendError, BackendResult};
use labelfleet_manifest::{GroupSummary, Manifest, ManifestEntry, ManifestKey, Page, PutOutcome};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use crate::sqlite::{CallError, Db, now_ms};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    group_id   TEXT    NOT NULL,
    run_id     TEXT    NOT NULL,
    entry      TEXT    NOT NULL,
    written_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, run_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS superseded (
    group_id      TEXT    NOT NULL,
    run_id        TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    entry         TEXT    NOT NULL,
    superseded_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, run_id, seq)
) WITHOUT ROWID;
";

/// The embedded manifest. Open it from any number of processes.
#[derive(Clone)]
pub struct SqliteManifest {
    db: Db,
}

impl SqliteManifest {
    /// Opens (creating if needed) the manifest in `path`.
    pub fn open(path: &Path) -> BackendResult<SqliteManifest> {
        Ok(SqliteManifest {
            db: Db::open(path, SCHEMA)?,
        })
    }
}

fn decode(text: &str) -> Result<ManifestEntry, CallError> {
    serde_json::from_str(text).map_err(|e| {
        CallError::Backend(BackendError::Other(format!(
            "a manifest entry could not be read ({e}); was it written by a newer labelfleet?"
        )))
    })
}

#[async_trait]
impl Manifest for SqliteManifest {
    fn describe(&self) -> String {
        format!("embedded manifest {}", self.db.path().display())
    }

    async fn check(&self) -> BackendResult<()> {
        self.db.check("entries").await
    }

    async fn put(&self, entry: &ManifestEntry) -> BackendResult<PutOutcome> {
        let mut outcomes = self.put_many(std::slice::from_ref(entry)).await?;
        Ok(outcomes.remove(0))
    }

    async fn put_many(&self, entries: &[ManifestEntry]) -> BackendResult<Vec<PutOutcome>> {
        let rows = entries
            .iter()
            .map(|e| {
                serde_json::to_string(e)
                    .map(|text| (e.group_id.clone(), e.run_id.clone(), text))
                    .map_err(|err| {
                        BackendError::Other(format!("cannot serialise the entry: {err}"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.db
            .call(move |conn| {
                // One transaction for the batch; each key is still written at most once.
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut outcomes = Vec::with_capacity(rows.len());
                for (group_id, run_id, text) in &rows {
                    let inserted = tx.execute(
                        "INSERT OR IGNORE INTO entries (group_id, run_id, entry, written_at) VALUES (?1, ?2, ?3, ?4)",
                        params![group_id, run_id, text, now_ms()],
                    )?;
                    outcomes.push(if inserted == 1 {
                        PutOutcome::Written
                    } else {
                        let existing: String = tx.query_row(
                            "SELECT entry FROM entries WHERE group_id = ?1 AND run_id = ?2",
                            params![group_id, run_id],
                            |r| r.get(0),
                        )?;
                        PutOutcome::AlreadyThere(Box::new(decode(&existing)?))
                    });
                }
                tx.commit()?;
                Ok(outcomes)
            })
            .await
    }

    async fn get(&self, key: &ManifestKey) -> BackendResult<Option<ManifestEntry>> {
        let key = key.clone();
        self.db
            .call(move |conn| {
                let text: Option<String> = conn
                    .query_row(
                        "SELECT entry FROM entries WHERE group_id = ?1 AND run_id = ?2",
                        params![key.group_id, key.run_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                text.map(|t| decode(&t)).transpose()
            })
            .await
    }

    async fn list(&self, group_id: &str, after: Option<&str>, limit: usize) -> BackendResult<Page> {
        let group_id = group_id.to_string();
        let after = after.unwrap_or("").to_string();
        let limit = limit.max(1);
        self.db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT entry FROM entries WHERE group_id = ?1 AND run_id > ?2 ORDER BY run_id LIMIT ?3",
                )?;
                let texts: Vec<String> = stmt
                    .query_map(params![group_id, after, (limit + 1) as i64], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                let more = texts.len() > limit;
                let entries = texts
                    .iter()
                    .take(limit)
                    .map(|t| decode(t))
                    .collect::<Result<Vec<_>, _>>()?;
                let next = if more {
                    entries.last().map(|e| e.run_id.clone())
                } else {
                    None
                };
                Ok(Page { entries, next })
            })
            .await
    }

    async fn groups(&self) -> BackendResult<Vec<GroupSummary>> {
        self.db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT group_id, COUNT(*) FROM entries GROUP BY group_id ORDER BY group_id",
                )?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok(GroupSummary {
                            group_id: r.get(0)?,
                            entries: r.get::<_, i64>(1)? as u64,
                        })
                    })?
                    .collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .await
    }

    async fn supersede(&self, key: &ManifestKey) -> BackendResult<Option<ManifestEntry>> {
        let key = key.clone();
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let text: Option<String> = tx
                    .query_row(
                        "SELECT entry FROM entries WHERE group_id = ?1 AND run_id = ?2",
                        params![key.group_id, key.run_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                let Some(text) = text else {
                    return Ok(None);
                };
                tx.execute(
                    "INSERT INTO superseded (group_id, run_id, seq, entry, superseded_at)
                     SELECT ?1, ?2, COALESCE(MAX(seq), 0) + 1, ?3, ?4 FROM superseded
                     WHERE group_id = ?1 AND run_id = ?2",
                    params![key.group_id, key.run_id, text, now_ms()],
                )?;
                tx.execute(
                    "DELETE FROM entries WHERE group_id = ?1 AND run_id = ?2",
                    params![key.group_id, key.run_id],
                )?;
                tx.commit()?;
                Ok(Some(decode(&text)?))
            })
            .await
    }

    async fn history(&self, key: &ManifestKey) -> BackendResult<Vec<ManifestEntry>> {
        let key = key.clone();
        self.db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT entry FROM superseded WHERE group_id = ?1 AND run_id = ?2 ORDER BY seq",
                )?;
                let texts: Vec<String> = stmt
                    .query_map(params![key.group_id, key.run_id], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                texts.iter().map(|t| decode(t)).collect()
            })
            .await
    }
}
