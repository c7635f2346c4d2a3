//! The manifest: the record of completed runs.
//!
//! - [`ManifestEntry`] is what a worker writes when a job completes: its key
//!   (`group_id`, `run_id`), counts, metrics, pointers to its artifacts and the job's
//!   provenance.
//! - [`Manifest`] is the contract every backend implements. Writes are idempotent per
//!   key: [`Manifest::put`] of a key that already exists changes nothing and reports
//!   [`PutOutcome::AlreadyThere`], so a job delivered twice never leaves two entries.
//!   A completed run is only ever replaced on purpose (`enqueue --rerun`):
//!   [`Manifest::supersede`] moves it into the key's [`Manifest::history`] first.
//!
//! With the `conformance` feature, `conformance` holds the suite every manifest
//! backend passes unchanged.
//!
//! # Example
//!
//! A manifest entry is keyed by its job: the job's group and its name as the run.
//!
//! ```
//! use labelfleet_core::job::JobKey;
//! use labelfleet_manifest::ManifestKey;
//!
//! let job = JobKey { group_id: "demo".into(), name: "job_0".into() };
//! let key = ManifestKey::from(&job);
//! assert_eq!((key.group_id.as_str(), key.run_id.as_str()), ("demo", "job_0"));
//! ```

#![warn(missing_docs)]

#[cfg(feature = "conformance")]
pub mod conformance;
mod entry;

pub use entry::{ManifestEntry, ManifestKey};

use async_trait::async_trait;
use labelfleet_core::error::BackendResult;

/// What a [`Manifest::put`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum PutOutcome {
    /// The entry was written.
    Written,
    /// An entry with the same key was already there; it is returned unchanged.
    AlreadyThere(Box<ManifestEntry>),
}

/// One page of a group's entries.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page {
    /// Entries sorted by `run_id`.
    pub entries: Vec<ManifestEntry>,
    /// Pass this to [`Manifest::list`] to get the next page; `None` on the last page.
    pub next: Option<String>,
}

/// How many entries a group has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// The group.
    pub group_id: String,
    /// Its completed runs.
    pub entries: u64,
}

/// The record of completed runs.
#[async_trait]
pub trait Manifest: Send + Sync {
    /// A human description of where the manifest lives.
    fn describe(&self) -> String;

    /// Checks that the manifest exists and that this process may use it; the error names the
    /// resource and what to do (`labelfleet setup`). Cheap: a worker calls it at start-up,
    /// and while it waits out backend trouble before it receives again.
    async fn check(&self) -> BackendResult<()>;

    /// Writes an entry unless one with the same key exists (then nothing changes).
    async fn put(&self, entry: &ManifestEntry) -> BackendResult<PutOutcome>;

    /// Reads one entry.
    async fn get(&self, key: &ManifestKey) -> BackendResult<Option<ManifestEntry>>;

    /// Writes several entries, each with [`Manifest::put`]'s semantics, in as few calls
    /// as the backend allows; one outcome per entry, in order.
    async fn put_many(&self, entries: &[ManifestEntry]) -> BackendResult<Vec<PutOutcome>> {
        let mut outcomes = Vec::with_capacity(entries.len());
        for entry in entries {
            outcomes.push(self.put(entry).await?);
        }
        Ok(outcomes)
    }

    /// Reads several entries in as few calls as the backend allows; one per key, in
    /// order.
    async fn get_many(&self, keys: &[ManifestKey]) -> BackendResult<Vec<Option<ManifestEntry>>> {
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            entries.push(self.get(key).await?);
        }
        Ok(entries)
    }

    /// Lists a group's entries by `run_id`, `limit` at a time, starting after the
    /// page token `after` (`None` for the first page).
    async fn list(&self, group_id: &str, after: Option<&str>, limit: usize) -> BackendResult<Page>;

    /// Entry counts for every group, sorted by group.
    async fn groups(&self) -> BackendResult<Vec<GroupSummary>>;

    /// Moves the entry of `key` (if there is one) into the key's history, in one atomic
    /// step, and returns it: the job may then be recorded again (`enqueue --rerun`),
    /// and the earlier run stays readable through [`Manifest::history`].
    async fn supersede(&self, key: &ManifestKey) -> BackendResult<Option<ManifestEntry>>;

    /// The superseded entries of `key`, oldest first.
    async fn history(&self, key: &ManifestKey) -> BackendResult<Vec<ManifestEntry>>;
}

/// Lists every entry of a group, page by page.
pub async fn list_all(
    manifest: &dyn Manifest,
    group_id: &str,
) -> BackendResult<Vec<ManifestEntry>> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = manifest.list(group_id, after.as_deref(), 500).await?;
        all.extend(page.entries);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(all),
        }
    }
}
