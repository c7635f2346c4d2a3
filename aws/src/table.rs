//! A DynamoDB table keyed by (`group_id`, `run_id`), as the manifest and board use it.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, PutRequest, WriteRequest};
use labelfleet_core::error::{BackendError, BackendResult};

use crate::errors::classify;

/// A DynamoDB item.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// The partition key attribute.
pub(crate) const PK: &str = "group_id";
/// The sort key attribute.
pub(crate) const SK: &str = "run_id";

/// One table and a client for it.
#[derive(Clone)]
pub(crate) struct Table {
    pub(crate) client: Client,
    pub(crate) name: String,
}

/// A string attribute.
pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// The key of an item.
pub(crate) fn key(pk: &str, sk: &str) -> Item {
    HashMap::from([(PK.to_string(), s(pk)), (SK.to_string(), s(sk))])
}

/// A string attribute of an item.
pub(crate) fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

impl Table {
    pub(crate) fn new(sdk: &aws_config::SdkConfig, name: &str) -> Table {
        Table {
            client: Client::new(sdk),
            name: name.to_string(),
        }
    }

    pub(crate) fn op(&self, what: &str) -> String {
        format!("DynamoDB {what} on table {}", self.name)
    }

    /// Checks that the table exists with labelfleet's key schema and is ready.
    pub(crate) async fn check(&self) -> BackendResult<()> {
        let out = self
            .client
            .describe_table()
            .table_name(&self.name)
            .send()
            .await
            .map_err(|e| classify(&self.op("DescribeTable"), e))?;
        let table = out.table().ok_or_else(|| {
            BackendError::Other(format!("{}: no description", self.op("DescribeTable")))
        })?;
        let keys: Vec<&str> = table
            .key_schema()
            .iter()
            .map(|k| k.attribute_name())
            .collect();
        if keys != [PK, SK] {
            return Err(BackendError::Other(format!(
                "DynamoDB table {} has the key schema {keys:?}, not labelfleet's [{PK:?}, {SK:?}]: \
                 give --manifest a table made by `labelfleet setup`",
                self.name
            )));
        }
        Ok(())
    }

    pub(crate) async fn get(&self, pk: &str, sk: &str) -> BackendResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(&self.op("GetItem"), e))?;
        Ok(out.item().cloned())
    }

    pub(crate) async fn put(&self, item: Item) -> BackendResult<()> {
        self.client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| classify(&self.op("PutItem"), e))?;
        Ok(())
    }

    pub(crate) async fn delete(&self, pk: &str, sk: &str) -> BackendResult<()> {
        self.client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(key(pk, sk)))
            .send()
            .await
            .map_err(|e| classify(&self.op("DeleteItem"), e))?;
        Ok(())
    }

    /// A query of one partition, to be refined by the caller.
    fn partition(
        &self,
        pk: &str,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.name)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":pk", s(pk))
    }

    /// One page of a partition, sort keys after `after`; returns the items and whether
    /// DynamoDB says there may be more.
    pub(crate) async fn query_page(
        &self,
        pk: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> BackendResult<(Vec<Item>, Option<String>)> {
        let out = self
            .partition(pk)
            .set_exclusive_start_key(after.map(|a| key(pk, a)))
            .set_limit(limit.map(|l| l.min(i32::MAX as usize) as i32))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(&self.op("Query"), e))?;
        // The last page may or may not carry a LastEvaluatedKey: callers loop until it
        // is absent.
        let next = out
            .last_evaluated_key()
            .and_then(|k| text(k, SK))
            .map(str::to_string);
        Ok((out.items().to_vec(), next))
    }

    /// How many items a partition holds (a `COUNT` query, page by page).
    pub(crate) async fn count(&self, pk: &str) -> BackendResult<u64> {
        let mut total = 0u64;
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .partition(pk)
                .select(aws_sdk_dynamodb::types::Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify(&self.op("Query (count)"), e))?;
            total += out.count() as u64;
            match out.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(total),
            }
        }
    }

    /// Every item of a partition, page by page.
    pub(crate) async fn query_all(&self, pk: &str) -> BackendResult<Vec<Item>> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (items, next) = self.query_page(pk, after.as_deref(), None).await?;
            all.extend(items);
            match next {
                Some(n) => after = Some(n),
                None => return Ok(all),
            }
        }
    }

    /// Writes items 25 at a time, retrying what DynamoDB leaves unprocessed.
    pub(crate) async fn batch_put(&self, items: Vec<Item>) -> BackendResult<()> {
        // A batch may not name one key twice: keep the last write of each key.
        let mut by_key: Vec<((String, String), Item)> = Vec::with_capacity(items.len());
        for item in items {
            let k = (
                text(&item, PK).unwrap_or_default().to_string(),
                text(&item, SK).unwrap_or_default().to_string(),
            );
            match by_key.iter_mut().find(|(existing, _)| *existing == k) {
                Some(slot) => slot.1 = item,
                None => by_key.push((k, item)),
            }
        }
        let items: Vec<Item> = by_key.into_iter().map(|(_, item)| item).collect();
        for chunk in items.chunks(25) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|item| {
                    PutRequest::builder()
                        .set_item(Some(item.clone()))
                        .build()
                        .map(|p| WriteRequest::builder().put_request(p).build())
                        .map_err(|e| BackendError::Invalid(e.to_string()))
                })
                .collect::<Result<_, _>>()?;
            let mut pause = std::time::Duration::from_millis(50);
            while !requests.is_empty() {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.name, requests)
                    .send()
                    .await
                    .map_err(|e| classify(&self.op("BatchWriteItem"), e))?;
                requests = out
                    .unprocessed_items()
                    .and_then(|u| u.get(&self.name))
                    .cloned()
                    .unwrap_or_default();
                if !requests.is_empty() {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(2));
                }
            }
        }
        Ok(())
    }

    /// Reads items by key, 100 at a time, retrying unprocessed keys. Missing items are
    /// left out.
    pub(crate) async fn batch_get(&self, keys: Vec<Item>) -> BackendResult<Vec<Item>> {
        let mut found = Vec::new();
        for chunk in keys.chunks(100) {
            let mut pending = chunk.to_vec();
            while !pending.is_empty() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(pending))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| BackendError::Invalid(e.to_string()))?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.name, request)
                    .send()
                    .await
                    .map_err(|e| classify(&self.op("BatchGetItem"), e))?;
                if let Some(items) = out.responses().and_then(|r| r.get(&self.name)) {
                    found.extend(items.iter().cloned());
                }
                pending = out
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.name))
                    .map(|k| k.keys().to_vec())
                    .unwrap_or_default();
            }
        }
        Ok(found)
    }
}
