//! Payloads too large for a queue message or a DynamoDB item, kept in S3 behind a
//! pointer.

use std::sync::Arc;

use labelfleet_core::artifacts::{ArtifactKey, ArtifactStore};
use labelfleet_core::error::{BackendError, BackendResult};
use serde_json::Value;

use crate::S3ArtifactStore;

const POINTER_KEY: &str = "labelfleet_spill";

/// Keeps large payloads in the artifact bucket under `_spill/<kind>/<sha256>`; the
/// message or item carries `{"labelfleet_spill": "<key>"}` instead.
#[derive(Clone)]
pub struct Spill {
    store: Arc<S3ArtifactStore>,
}

impl Spill {
    /// Spills into this store.
    pub fn new(store: Arc<S3ArtifactStore>) -> Spill {
        Spill { store }
    }

    /// Stores `text` and returns the pointer to put in its place.
    pub async fn put(&self, kind: &str, text: &str) -> BackendResult<String> {
        let digest = labelfleet_core::hash::sha256_hex(text.as_bytes());
        let key = ArtifactKey::new(&format!("_spill/{kind}/{digest}"))?;
        self.store.put(&key, text.as_bytes().to_vec()).await?;
        Ok(serde_json::json!({ POINTER_KEY: key.as_str() }).to_string())
    }

    /// If `text` is a pointer, fetches what it points to; otherwise returns `None`.
    pub async fn resolve(&self, text: &str) -> BackendResult<Option<String>> {
        let Some(key) = pointer_key(text) else {
            return Ok(None);
        };
        let key = ArtifactKey::new(&key)?;
        let bytes = self.store.get(&key).await?.ok_or_else(|| {
            BackendError::Other(format!(
                "the payload at {} is gone (was the bucket cleaned?)",
                self.store.locate(&key)
            ))
        })?;
        String::from_utf8(bytes).map(Some).map_err(|_| {
            BackendError::Other(format!(
                "the payload at {} is not UTF-8",
                self.store.locate(&key)
            ))
        })
    }
}

/// The key a pointer names, if `text` is a pointer.
pub fn pointer_key(text: &str) -> Option<String> {
    if !text.starts_with("{\"labelfleet_spill\"") {
        return None;
    }
    let value: Value = serde_json::from_str(text).ok()?;
    value.get(POINTER_KEY)?.as_str().map(str::to_string)
}
