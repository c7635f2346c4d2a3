//! Exporting a manifest group's self-labelled turns as a Hugging Face dataset: turn
//! rows with the columns the seed pipeline publishes ([`rows`]), a stable name
//! ([`name`]), dialogue-level splits, parquet files and a dataset card ([`mod@write`]);
//! and the Hugging Face Hub's upload API ([`hub`]). (Raw interaction logs become a
//! dataset in the `labelfleet-ingest` crate.)

pub mod hub;
pub mod rows;
pub mod write;

use std::collections::BTreeSet;

use labelfleet_core::job::canonical_json;
use labelfleet_manifest::ManifestEntry;

pub use rows::{TurnRow, rows_of_log};
pub use write::write_dataset;

/// The dataset's name: `{owner}/manifest_self_labelled_{group}_{dialogues}_{hash}`,
/// where the hash is the first 12 characters of the URL-safe base64 of the SHA-256 of
/// the canonical JSON (sorted keys) of the manifest entries, `-` replaced by `x`. The
/// same entries always give the same name; any change to an entry changes it.
pub fn name(owner: &str, group: &str, dialogues: usize, entries: &[ManifestEntry]) -> String {
    let mut sorted: Vec<&ManifestEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    let value = serde_json::to_value(&sorted).expect("entries serialise");
    let digest = labelfleet_core::hash::sha256(canonical_json(&value).as_bytes());
    let hash: String = base64_url(&digest)
        .chars()
        .take(12)
        .collect::<String>()
        .replace('-', "x");
    format!("{owner}/manifest_self_labelled_{group}_{dialogues}_{hash}")
}

/// URL-safe base64 (RFC 4648 §5), without padding.
fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Dialogues among `rows`.
pub fn dialogue_count(rows: &[TurnRow]) -> usize {
    rows.iter()
        .map(|r| &r.dialogue_id)
        .collect::<BTreeSet<_>>()
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(run: &str, jga: f64) -> ManifestEntry {
        serde_json::from_value(serde_json::json!({
            "group_id": "g", "run_id": run, "kind": "self_label", "counts": {"turns": 3},
            "metrics": {"joint_goal_accuracy": jga}, "artifacts": {}, "worker": "w",
            "attempt": 1, "completed_at": "2026-11-23T00:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn base64_url_matches_rfc_4648() {
        assert_eq!(base64_url(b""), "");
        assert_eq!(base64_url(b"f"), "Zg");
        assert_eq!(base64_url(b"foob"), "Zm9vYg");
        assert_eq!(base64_url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn the_name_is_stable_and_follows_the_entries() {
        let a = [entry("job_0", 0.5), entry("job_1", 0.25)];
        let reordered = [entry("job_1", 0.25), entry("job_0", 0.5)];
        let changed = [entry("job_0", 0.5), entry("job_1", 0.3)];
        let name_a = name("me", "g", 6, &a);
        assert_eq!(name_a, name("me", "g", 6, &reordered));
        assert_ne!(name_a, name("me", "g", 6, &changed));
        let hash = name_a.rsplit('_').next().unwrap();
        assert_eq!(hash.len(), 12);
        assert!(!hash.contains('-'));
        assert!(name_a.starts_with("me/manifest_self_labelled_g_6_"));
    }
}
