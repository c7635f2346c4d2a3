//! The artifact store contract: files a job writes, under keys that cannot escape the
//! store's root.

use std::fmt;

use async_trait::async_trait;

use crate::error::{BackendError, BackendResult};

/// A validated artifact key: `/`-separated segments of letters, digits, `_`, `-` and
/// `.`, none of them empty, `.` or `..`. Such a key cannot name anything outside the
/// store's root, on a file system or in a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArtifactKey(String);

impl ArtifactKey {
    /// Validates a key.
    pub fn new(key: &str) -> BackendResult<ArtifactKey> {
        let bad = |why: &str| {
            Err(BackendError::Invalid(format!(
                "artifact key `{key}` {why}; use `/`-separated parts of letters, digits, `_`, `-` and `.`"
            )))
        };
        if key.is_empty() || key.len() > 512 {
            return bad("is empty or longer than 512 bytes");
        }
        for segment in key.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return bad("has an empty, `.` or `..` part");
            }
            if !segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return bad("has a character outside the allowed set");
            }
        }
        Ok(ArtifactKey(key.to_string()))
    }

    /// The key for a job's file: `{group}/{run}/{file}`.
    pub fn for_job(group_id: &str, run_id: &str, file: &str) -> BackendResult<ArtifactKey> {
        ArtifactKey::new(&format!("{group_id}/{run_id}/{file}"))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ArtifactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where jobs keep their files.
#[async_trait]
pub trait ArtifactStore: Send + Sync {
    /// A human description of where artifacts live.
    fn describe(&self) -> String;

    /// Checks that the store exists and that this process may use it; the error names the
    /// resource and what to do (`labelfleet setup`). Cheap: a worker calls it at start-up,
    /// and while it waits out backend trouble before it receives again.
    async fn check(&self) -> BackendResult<()>;

    /// Writes an artifact atomically: readers see the old content or the new, never a
    /// part. An existing artifact is replaced.
    async fn put(&self, key: &ArtifactKey, bytes: Vec<u8>) -> BackendResult<()>;

    /// Writes the file at `path` as an artifact, as [`ArtifactStore::put`] does. Stores
    /// that can stream do, so a large file never sits in memory whole; the default reads
    /// it whole.
    async fn put_file(&self, key: &ArtifactKey, path: &std::path::Path) -> BackendResult<()> {
        let bytes = std::fs::read(path)
            .map_err(|e| BackendError::Other(format!("reading {}: {e}", path.display())))?;
        self.put(key, bytes).await
    }

    /// Reads an artifact; `None` if there is none under the key.
    async fn get(&self, key: &ArtifactKey) -> BackendResult<Option<Vec<u8>>>;

    /// Writes an artifact into the file at `path` (replacing it); `false` if there is
    /// none under the key. Stores that can stream do, so a large artifact never sits in
    /// memory whole; the default reads it whole.
    async fn get_file(&self, key: &ArtifactKey, path: &std::path::Path) -> BackendResult<bool> {
        let Some(bytes) = self.get(key).await? else {
            return Ok(false);
        };
        std::fs::write(path, bytes)
            .map_err(|e| BackendError::Other(format!("writing {}: {e}", path.display())))?;
        Ok(true)
    }

    /// Removes an artifact; one that is not there is not an error, so that a removal
    /// interrupted half-way can simply be done again.
    async fn delete(&self, key: &ArtifactKey) -> BackendResult<()>;

    /// Lists the keys that start with `prefix` (whole segments), sorted.
    async fn list(&self, prefix: &str) -> BackendResult<Vec<ArtifactKey>>;

    /// A location a person can open (a path or URL) for the artifact.
    fn locate(&self, key: &ArtifactKey) -> String;
}
