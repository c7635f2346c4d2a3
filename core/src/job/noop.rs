//! Settings of a `noop` job: a health check and benchmark load for the fleet itself.

use serde::{Deserialize, Serialize};

/// Settings of a `noop` job.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopSpec {
    /// How long the job takes, in milliseconds.
    #[serde(default)]
    pub sleep_ms: u64,
    /// After the sleep, write an artifact `noop.txt` of this many bytes (at most
    /// 1 GiB), whose first line names the delivery that wrote it: load for an artifact
    /// store, and a witness of which delivery wrote last.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub write_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
