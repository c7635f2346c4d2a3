//! The manifest on DynamoDB.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use labelfleet_core::error::{BackendError, BackendResult};
use labelfleet_manifest::{GroupSummary, Manifest, ManifestEntry, ManifestKey, Page, PutOutcome};

use crate::errors::{classify, code};
use crate::spill::Spill;
use crate::table::{Item, PK, SK, Table, key, s, text};

/// Per-group entry counters live in this partition (group ids never start with `#`).
const GROUPS: &str = "#groups";
/// Entries whose JSON is larger than this keep it in S3 (DynamoDB's item limit is 400 KB).
const MAX_INLINE_ENTRY: usize = 350_000;

/// The manifest in a DynamoDB table with partition key `group_id` and sort key `run_id`.
#[derive(Clone)]
pub struct DynamoManifest {
    table: Table,
    spill: Option<Spill>,
}

impl DynamoManifest {
    /// The manifest in `table`; `spill` keeps entries over the item limit in S3.
    pub fn new(sdk: &aws_config::SdkConfig, table: &str, spill: Option<Spill>) -> DynamoManifest {
        DynamoManifest {
            table: Table::new(sdk, table),
            spill,
        }
    }

    async fn decode(&self, item: &Item) -> BackendResult<ManifestEntry> {
        let raw = text(item, "entry")
            .ok_or_else(|| BackendError::Other("a manifest item has no `entry`".into()))?;
        let json = match &self.spill {
            Some(spill) => spill.resolve(raw).await?.unwrap_or_else(|| raw.to_string()),
            None => raw.to_string(),
        };
        serde_json::from_str(&json).map_err(|e| {
            BackendError::Other(format!(
                "a manifest entry could not be read ({e}); was it written by a newer labelfleet?"
            ))
        })
    }
}

impl DynamoManifest {
    /// The entry as a conditional put (the key must not exist yet).
    async fn conditional_put(&self, entry: &ManifestEntry) -> BackendResult<Put> {
        let mut json =
            serde_json::to_string(entry).map_err(|e| BackendError::Other(e.to_string()))?;
        if json.len() > MAX_INLINE_ENTRY {
            json = match &self.spill {
                Some(spill) => spill.put("manifest", &json).await?,
                None => {
                    return Err(BackendError::Invalid(format!(
                        "manifest entry {} is {} bytes, over DynamoDB's 400 KB item limit; configure --artifacts so it can be kept in S3",
                        entry.key(),
                        json.len()
                    )));
                }
            };
        }
        let item = Item::from([
            (PK.to_string(), s(&entry.group_id)),
            (SK.to_string(), s(&entry.run_id)),
            ("entry".to_string(), s(json)),
        ]);
        Put::builder()
            .table_name(&self.table.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#sk)")
            .expression_attribute_names("#sk", SK)
            .build()
            .map_err(|e| BackendError::Invalid(e.to_string()))
    }

    /// Adds `n` to a group's entry counter.
    fn count_update(&self, group_id: &str, n: usize) -> BackendResult<Update> {
        Update::builder()
            .table_name(&self.table.name)
            .key(PK, s(GROUPS))
            .key(SK, s(group_id))
            .update_expression("ADD entries :n")
            .expression_attribute_values(":n", AttributeValue::N(n.to_string()))
            .build()
            .map_err(|e| BackendError::Invalid(e.to_string()))
    }
}

#[async_trait]
impl Manifest for DynamoManifest {
    fn describe(&self) -> String {
        format!("DynamoDB manifest dynamodb://{}", self.table.name)
    }

    async fn put(&self, entry: &ManifestEntry) -> BackendResult<PutOutcome> {
        let put = self.conditional_put(entry).await?;
        let count = self.count_update(&entry.group_id, 1)?;
        let result = self
            .table
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().update(count).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(PutOutcome::Written),
            Err(e) if code(&e) == Some("TransactionCanceledException") => {
                // Cancelled because the key exists (the condition failed) — or by a
                // conflicting transaction, in which case the caller retries.
                match self.get(&entry.key()).await? {
                    Some(existing) => Ok(PutOutcome::AlreadyThere(Box::new(existing))),
                    None => Err(BackendError::Unavailable(format!(
                        "{}: the write of {} was cancelled by a conflicting transaction",
                        self.table.op("TransactWriteItems"),
                        entry.key()
                    ))),
                }
            }
            Err(e) => Err(classify(&self.table.op("TransactWriteItems"), e)),
        }
    }

    async fn put_many(&self, entries: &[ManifestEntry]) -> BackendResult<Vec<PutOutcome>> {
        // One transaction per chunk: the puts plus one counter update per group (a
        // transaction may touch an item once). If any key exists, the transaction is
        // cancelled whole, and that chunk falls back to one put per entry.
        let mut outcomes = Vec::with_capacity(entries.len());
        for chunk in entries.chunks(40) {
            let mut keys: Vec<ManifestKey> = chunk.iter().map(ManifestEntry::key).collect();
            keys.sort();
            keys.dedup();
            if keys.len() < chunk.len() {
                // A transaction may not touch one item twice: one put at a time.
                for entry in chunk {
                    outcomes.push(self.put(entry).await?);
                }
                continue;
            }
            let mut request = self.table.client.transact_write_items();
            let mut per_group: Vec<(&str, usize)> = Vec::new();
            for entry in chunk {
                request = request.transact_items(
                    TransactWriteItem::builder()
                        .put(self.conditional_put(entry).await?)
                        .build(),
                );
                match per_group.iter_mut().find(|(g, _)| *g == entry.group_id) {
                    Some((_, n)) => *n += 1,
                    None => per_group.push((&entry.group_id, 1)),
                }
            }
            for (group, n) in per_group {
                request = request.transact_items(
                    TransactWriteItem::builder()
                        .update(self.count_update(group, n)?)
                        .build(),
                );
            }
            match request.send().await {
                Ok(_) => outcomes.extend(chunk.iter().map(|_| PutOutcome::Written)),
                Err(e) if code(&e) == Some("TransactionCanceledException") => {
                    for entry in chunk {
                        outcomes.push(self.put(entry).await?);
                    }
                }
                Err(e) => return Err(classify(&self.table.op("TransactWriteItems"), e)),
            }
        }
        Ok(outcomes)
    }

    async fn get_many(&self, keys: &[ManifestKey]) -> BackendResult<Vec<Option<ManifestEntry>>> {
        // A batch may not name one key twice.
        let mut unique: Vec<&ManifestKey> = keys.iter().collect();
        unique.sort();
        unique.dedup();
        let items = self
            .table
            .batch_get(unique.iter().map(|k| key(&k.group_id, &k.run_id)).collect())
            .await?;
        let mut found = std::collections::HashMap::new();
        for item in &items {
            let entry = self.decode(item).await?;
            found.insert(entry.key(), entry);
        }
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    async fn get(&self, key: &ManifestKey) -> BackendResult<Option<ManifestEntry>> {
        match self.table.get(&key.group_id, &key.run_id).await? {
            Some(item) => Ok(Some(self.decode(&item).await?)),
            None => Ok(None),
        }
    }

    async fn list(&self, group_id: &str, after: Option<&str>, limit: usize) -> BackendResult<Page> {
        let (items, next) = self
            .table
            .query_page(group_id, after, Some(limit.max(1)))
            .await?;
        let mut entries = Vec::with_capacity(items.len());
        for item in &items {
            entries.push(self.decode(item).await?);
        }
        Ok(Page { entries, next })
    }

    async fn groups(&self) -> BackendResult<Vec<GroupSummary>> {
        let mut groups: Vec<GroupSummary> = self
            .table
            .query_all(GROUPS)
            .await?
            .iter()
            .filter_map(|item| {
                Some(GroupSummary {
                    group_id: text(item, SK)?.to_string(),
                    entries: item.get("entries")?.as_n().ok()?.parse().ok()?,
                })
            })
            .collect();
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(groups)
    }
}
