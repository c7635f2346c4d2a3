//! Where a job came from, recorded with the job and carried into every manifest entry.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The record `enqueue` stamps on every job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The job file, as given to `enqueue`.
    pub source_file: String,
    /// The commit of the git repository holding the runs folder, if it is in one.
    pub git_commit: Option<String>,
    /// Whether that repository had uncommitted or untracked files.
    pub git_dirty: bool,
    /// False when the job cannot be reproduced from `git_commit` alone (a dirty tree,
    /// or no repository at all).
    pub reproducible: bool,
    /// The `--set`/`--unset`/`--mini` overrides applied at enqueue time, in order.
    #[serde(default)]
    pub overrides: Vec<String>,
    /// The resolved job config after overrides.
    pub config: Value,
    /// The labelfleet version that enqueued the job.
    pub labelfleet_version: String,
    /// When the job was enqueued (RFC 3339, UTC).
    pub enqueued_at: String,
    /// Who enqueued it (`user@host`), when known.
    #[serde(default)]
    pub enqueued_by: Option<String>,
    /// The job's version: [`Job::config_hash`](crate::job::Job::config_hash) of
    /// `config`. Workers run a message only while the job board holds this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// How many times the completed job was run again on purpose (`enqueue --rerun`)
    /// before this run; 0 for the first run. A rerun writes its artifacts under
    /// `rerun-N/` so that the earlier run's stay as they were.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rerun: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
