use std::collections::BTreeMap;
use std::fmt;

use labelfleet_core::job::JobKey;
use labelfleet_core::provenance::Provenance;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The key of a manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ManifestKey {
    /// The experiment group.
    pub group_id: String,
    /// The run (the job's name).
    pub run_id: String,
}

impl From<&JobKey> for ManifestKey {
    fn from(key: &JobKey) -> ManifestKey {
        ManifestKey {
            group_id: key.group_id.clone(),
            run_id: key.name.clone(),
        }
    }
}

impl fmt::Display for ManifestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group_id, self.run_id)
    }
}

/// The record of one completed run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    /// The experiment group.
    pub group_id: String,
    /// The run (the job's name).
    pub run_id: String,
    /// The job kind.
    pub kind: String,
    /// Counts of what the job processed (`dialogues`, `turns`, …).
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
    /// The job's headline metrics (an object; empty for jobs without metrics).
    #[serde(default)]
    pub metrics: Value,
    /// Artifacts by role (`metrics`, `predictions`, …) → artifact key.
    #[serde(default)]
    pub artifacts: BTreeMap<String, String>,
    /// The job's provenance, when it was enqueued.
    #[serde(default)]
    pub provenance: Option<Provenance>,
    /// The worker that wrote the entry.
    pub worker: String,
    /// How many times the job's message had been received when it completed.
    pub attempt: u32,
    /// When the job completed (RFC 3339, UTC).
    pub completed_at: String,
}

impl ManifestEntry {
    /// The entry's key.
    pub fn key(&self) -> ManifestKey {
        ManifestKey {
            group_id: self.group_id.clone(),
            run_id: self.run_id.clone(),
        }
    }
}
