//! The manifest on DynamoDB.

use async_trait::async_trait;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use labelfleet_core::error::{BackendError, BackendResult};
use labelfleet_manifest::{GroupSummary, Manifest, ManifestEntry, ManifestKey, Page, PutOutcome};

use crate::errors::{classify, code};
use crate::spill::Spill;
use crate::table::{Item, PK, SK, Table, key, s, text};

fn key_item(k: &ManifestKey) -> Item {
    key(&k.group_id, &k.run_id)
}

/// One marker item per group lives in this partition (group ids never start with `#`),
/// so that `groups` can list them; counts come from `COUNT` queries.
const GROUPS: &str = "#groups";
/// Superseded entries of a group live in this partition, sorted by `{run_id}#{seq}`.
fn superseded_partition(group_id: &str) -> String {
    format!("#superseded#{group_id}")
}
/// Entries whose JSON is larger than this keep it in S3 (DynamoDB's item limit is 400 KB).
const MAX_INLINE_ENTRY: usize = 350_000;
/// Entries written at once by `put_many`.
const CONCURRENT_PUTS: usize = 10;

/// The manifest in a DynamoDB table with partition key `group_id` and sort key `run_id`.
///
/// Each entry is one conditional `PutItem` (`attribute_not_exists`): a second write of a
/// key fails the condition and changes nothing. Not a transaction: an entry stands
/// alone, and transactions cost more (moto even copies the whole table per item).
#[derive(Clone)]
pub struct DynamoManifest {
    table: Table,
    spill: Option<Spill>,
    /// Groups whose marker this process has written.
    marked: Arc<Mutex<HashSet<String>>>,
}

impl DynamoManifest {
    /// The manifest in `table`; `spill` keeps entries over the item limit in S3.
    pub fn new(sdk: &aws_config::SdkConfig, table: &str, spill: Option<Spill>) -> DynamoManifest {
        DynamoManifest {
            table: Table::new(sdk, table),
            spill,
            marked: Arc::default(),
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
    /// The superseded items of `key`, oldest first.
    async fn history_items(&self, key: &ManifestKey) -> BackendResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .table
                .client
                .query()
                .table_name(&self.table.name)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :run)")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":pk", s(superseded_partition(&key.group_id)))
                .expression_attribute_values(":run", s(format!("{}#", key.run_id)))
                .set_exclusive_start_key(start.take())
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| classify(&self.table.op("Query (history)"), e))?;
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(items),
            }
        }
    }

    /// The entry as an item, its JSON kept in S3 if it is too large for one.
    async fn item_for(&self, entry: &ManifestEntry) -> BackendResult<Item> {
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
        Ok(Item::from([
            (PK.to_string(), s(&entry.group_id)),
            (SK.to_string(), s(&entry.run_id)),
            ("entry".to_string(), s(json)),
        ]))
    }

    /// Writes the group's marker once per process (idempotent).
    async fn mark_group(&self, group_id: &str) -> BackendResult<()> {
        if self.marked.lock().expect("marked lock").contains(group_id) {
            return Ok(());
        }
        self.table
            .put(Item::from([
                (PK.to_string(), s(GROUPS)),
                (SK.to_string(), s(group_id)),
            ]))
            .await?;
        self.marked
            .lock()
            .expect("marked lock")
            .insert(group_id.to_string());
        Ok(())
    }
}

#[async_trait]
impl Manifest for DynamoManifest {
    fn describe(&self) -> String {
        format!("DynamoDB manifest dynamodb://{}", self.table.name)
    }

    async fn check(&self) -> BackendResult<()> {
        self.table.check().await
    }

    async fn put(&self, entry: &ManifestEntry) -> BackendResult<PutOutcome> {
        self.mark_group(&entry.group_id).await?;
        let item = self.item_for(entry).await?;
        let result = self
            .table
            .client
            .put_item()
            .table_name(&self.table.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#sk)")
            .expression_attribute_names("#sk", SK)
            .send()
            .await;
        match result {
            Ok(_) => Ok(PutOutcome::Written),
            Err(e) if code(&e) == Some("ConditionalCheckFailedException") => {
                match self.get(&entry.key()).await? {
                    Some(existing) => Ok(PutOutcome::AlreadyThere(Box::new(existing))),
                    None => Err(BackendError::Unavailable(format!(
                        "{}: the write of {} failed its condition, yet the entry is not there; retry",
                        self.table.op("PutItem"),
                        entry.key()
                    ))),
                }
            }
            Err(e) => Err(classify(&self.table.op("PutItem"), e)),
        }
    }

    async fn put_many(&self, entries: &[ManifestEntry]) -> BackendResult<Vec<PutOutcome>> {
        // Independent conditional puts, several in flight at once.
        let mut outcomes = Vec::with_capacity(entries.len());
        for chunk in entries.chunks(CONCURRENT_PUTS) {
            let mut tasks = tokio::task::JoinSet::new();
            for (i, entry) in chunk.iter().enumerate() {
                let (me, entry) = (self.clone(), entry.clone());
                tasks.spawn(async move { (i, me.put(&entry).await) });
            }
            let mut results: Vec<Option<BackendResult<PutOutcome>>> =
                (0..chunk.len()).map(|_| None).collect();
            while let Some(done) = tasks.join_next().await {
                let (i, result) = done.map_err(|e| {
                    BackendError::Other(format!("a manifest write task failed: {e}"))
                })?;
                results[i] = Some(result);
            }
            for result in results {
                outcomes.push(result.expect("every task reported")?);
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
        let mut groups = Vec::new();
        for item in self.table.query_all(GROUPS).await? {
            let Some(group_id) = text(&item, SK) else {
                continue;
            };
            let entries = self.table.count(group_id).await?;
            if entries > 0 {
                groups.push(GroupSummary {
                    group_id: group_id.to_string(),
                    entries,
                });
            }
        }
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(groups)
    }

    async fn supersede(&self, key: &ManifestKey) -> BackendResult<Option<ManifestEntry>> {
        use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};
        let Some(current) = self.table.get(&key.group_id, &key.run_id).await? else {
            return Ok(None);
        };
        let entry = self.decode(&current).await?;
        let raw = text(&current, "entry").unwrap_or_default().to_string();
        let seq = self.history_items(key).await?.len() + 1;
        let history = Item::from([
            (PK.to_string(), s(superseded_partition(&key.group_id))),
            (SK.to_string(), s(format!("{}#{seq:06}", key.run_id))),
            ("entry".to_string(), s(raw.clone())),
        ]);
        let put = Put::builder()
            .table_name(&self.table.name)
            .set_item(Some(history))
            .condition_expression("attribute_not_exists(#sk)")
            .expression_attribute_names("#sk", SK)
            .build()
            .map_err(|e| BackendError::Invalid(e.to_string()))?;
        // Only the entry just read moves: a concurrent change cancels the transaction.
        let delete = Delete::builder()
            .table_name(&self.table.name)
            .set_key(Some(key_item(key)))
            .condition_expression("#e = :e")
            .expression_attribute_names("#e", "entry")
            .expression_attribute_values(":e", s(raw))
            .build()
            .map_err(|e| BackendError::Invalid(e.to_string()))?;
        self.table
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().delete(delete).build())
            .send()
            .await
            .map_err(|e| match code(&e) {
                Some("TransactionCanceledException") => BackendError::Unavailable(format!(
                    "{}: {key} changed while it was being superseded; retry",
                    self.table.op("TransactWriteItems")
                )),
                _ => classify(&self.table.op("TransactWriteItems"), e),
            })?;
        Ok(Some(entry))
    }

    async fn history(&self, key: &ManifestKey) -> BackendResult<Vec<ManifestEntry>> {
        let mut entries = Vec::new();
        for item in self.history_items(key).await? {
            entries.push(self.decode(&item).await?);
        }
        Ok(entries)
    }
}
