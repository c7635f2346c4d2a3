//! The manifest on DynamoDB.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use labelfleet_core::error::{BackendError, BackendResult};
use labelfleet_manifest::{GroupSummary, Manifest, ManifestEntry, ManifestKey, Page, PutOutcome};

use crate::errors::{classify, code};
use crate::spill::Spill;
use crate::table::{Item, PK, SK, Table, s, text};

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

#[async_trait]
impl Manifest for DynamoManifest {
    fn describe(&self) -> String {
        format!("DynamoDB manifest dynamodb://{}", self.table.name)
    }

    async fn put(&self, entry: &ManifestEntry) -> BackendResult<PutOutcome> {
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
        let put = Put::builder()
            .table_name(&self.table.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#sk)")
            .expression_attribute_names("#sk", SK)
            .build()
            .map_err(|e| BackendError::Invalid(e.to_string()))?;
        let count = Update::builder()
            .table_name(&self.table.name)
            .key(PK, s(GROUPS))
            .key(SK, s(&entry.group_id))
            .update_expression("ADD entries :one")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .build()
            .map_err(|e| BackendError::Invalid(e.to_string()))?;
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
