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
}
