//! The [`Manifest`] conformance suite.

use std::collections::BTreeMap;
use std::sync::Arc;

use labelfleet_core::conformance::unique;
use serde_json::json;

use crate::{Manifest, ManifestEntry, ManifestKey, PutOutcome, list_all};

/// A complete entry for tests.
pub fn entry(group_id: &str, run_id: &str, worker: &str) -> ManifestEntry {
    ManifestEntry {
        group_id: group_id.into(),
        run_id: run_id.into(),
        kind: "noop".into(),
        counts: BTreeMap::from([("turns".to_string(), 12)]),
        metrics: json!({"jga": 0.5}),
        artifacts: BTreeMap::from([(
            "metrics".to_string(),
            format!("{group_id}/{run_id}/metrics.json"),
        )]),
        provenance: None,
        worker: worker.into(),
        attempt: 1,
        completed_at: "2026-11-23T10:00:00Z".into(),
    }
}

/// A second put of the same key changes nothing and returns the first entry.
pub async fn put_is_idempotent(m: &dyn Manifest) {
    let g = unique("idem");
    let first = entry(&g, "run_0", "worker-a");
    assert_eq!(m.put(&first).await.unwrap(), PutOutcome::Written);
    let second = entry(&g, "run_0", "worker-b");
    match m.put(&second).await.unwrap() {
        PutOutcome::AlreadyThere(existing) => assert_eq!(*existing, first),
        PutOutcome::Written => panic!("a second entry was written for the same key"),
    }
    assert_eq!(m.get(&first.key()).await.unwrap(), Some(first));
    assert_eq!(list_all(m, &g).await.unwrap().len(), 1);
}

/// Reading a missing key gives nothing.
pub async fn get_missing(m: &dyn Manifest) {
    let key = ManifestKey {
        group_id: unique("none"),
        run_id: "x".into(),
    };
    assert_eq!(m.get(&key).await.unwrap(), None);
}

/// A group lists completely and in order, page by page, without other groups' entries.
pub async fn list_pages_through_a_group(m: &dyn Manifest) {
    let g = unique("pages");
    for i in 0..230 {
        m.put(&entry(&g, &format!("run_{i:04}"), "w"))
            .await
            .unwrap();
    }
    m.put(&entry(&unique("neighbour"), "run_0000", "w"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = m.list(&g, after.as_deref(), 100).await.unwrap();
        assert!(page.entries.len() <= 100);
        seen.extend(page.entries.into_iter().map(|e| e.run_id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let expected: Vec<String> = (0..230).map(|i| format!("run_{i:04}")).collect();
    assert_eq!(seen, expected);
    let groups = m.groups().await.unwrap();
    assert_eq!(
        groups.iter().find(|s| s.group_id == g).unwrap().entries,
        230
    );
}

/// Racing writers of one key: exactly one wins.
pub async fn concurrent_puts_write_once(m: Arc<dyn Manifest>) {
    let g = unique("race");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (m, g) = (m.clone(), g.clone());
        tasks.push(tokio::spawn(async move {
            m.put(&entry(&g, "run", &format!("worker-{w}")))
                .await
                .unwrap()
        }));
    }
    let mut written = 0;
    for t in tasks {
        if t.await.unwrap() == PutOutcome::Written {
            written += 1;
        }
    }
    assert_eq!(written, 1);
    assert_eq!(list_all(&*m, &g).await.unwrap().len(), 1);
}

/// Batched writes keep each entry's semantics: new keys are written, an existing key
/// is reported with its first entry; batched reads find what exists.
pub async fn batches_keep_per_entry_semantics(m: &dyn Manifest) {
    let g = unique("batch");
    let first = entry(&g, "run_3", "worker-a");
    m.put(&first).await.unwrap();
    let batch: Vec<ManifestEntry> = (0..12)
        .map(|i| entry(&g, &format!("run_{i}"), "worker-b"))
        .collect();
    let outcomes = m.put_many(&batch).await.unwrap();
    assert_eq!(outcomes.len(), 12);
    for (i, outcome) in outcomes.iter().enumerate() {
        match outcome {
            PutOutcome::AlreadyThere(existing) => {
                assert_eq!(i, 3);
                assert_eq!(**existing, first);
            }
            PutOutcome::Written => assert_ne!(i, 3),
        }
    }
    let mut keys: Vec<ManifestKey> = batch.iter().map(ManifestEntry::key).collect();
    keys.push(ManifestKey {
        group_id: g.clone(),
        run_id: "missing".into(),
    });
    let found = m.get_many(&keys).await.unwrap();
    assert_eq!(found.len(), 13);
    assert!(found[..12].iter().all(Option::is_some));
    assert_eq!(found[3].as_ref().unwrap().worker, "worker-a");
    assert!(found[12].is_none());
    assert_eq!(list_all(m, &g).await.unwrap().len(), 12);
    let groups = m.groups().await.unwrap();
    assert_eq!(groups.iter().find(|s| s.group_id == g).unwrap().entries, 12);
}

/// Superseding moves an entry into its key's history, oldest first; the key can then
/// be written again; a missing key supersedes nothing; history never shows in lists.
pub async fn supersede_keeps_history(m: &dyn Manifest) {
    let g = unique("rerun");
    let first = entry(&g, "run_0", "worker-a");
    m.put(&first).await.unwrap();
    m.put(&entry(&g, "run_1", "worker-a")).await.unwrap();
    assert_eq!(
        m.supersede(&first.key()).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(m.get(&first.key()).await.unwrap(), None);
    let second = entry(&g, "run_0", "worker-b");
    assert_eq!(m.put(&second).await.unwrap(), PutOutcome::Written);
    assert_eq!(
        m.supersede(&first.key()).await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(
        m.history(&first.key()).await.unwrap(),
        vec![first.clone(), second]
    );
    let missing = ManifestKey {
        group_id: g.clone(),
        run_id: "missing".into(),
    };
    assert_eq!(m.supersede(&missing).await.unwrap(), None);
    assert!(m.history(&missing).await.unwrap().is_empty());
    let listed: Vec<String> = list_all(m, &g)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.run_id)
        .collect();
    assert_eq!(listed, ["run_1"]);
    // Another key's history is its own.
    assert!(
        m.history(&entry(&g, "run_1", "w").key())
            .await
            .unwrap()
            .is_empty()
    );
}

/// Generates one `#[tokio::test]` per manifest conformance case. `$factory` is an
/// async function `() -> Fixture<dyn Manifest>`.
#[macro_export]
macro_rules! manifest_conformance {
    ($factory:ident) => {
        mod manifest_conformance {
            use $crate::conformance as cases;

            macro_rules! case {
                ($name:ident, |$m:ident| $body:expr) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let fixture = super::$factory().await;
                        let $m = fixture.backend.clone();
                        $body.await;
                    }
                };
            }
            case!(put_is_idempotent, |m| cases::put_is_idempotent(&*m));
            case!(get_missing, |m| cases::get_missing(&*m));
            case!(list_pages_through_a_group, |m| {
                cases::list_pages_through_a_group(&*m)
            });
            case!(concurrent_puts_write_once, |m| {
                cases::concurrent_puts_write_once(m)
            });
            case!(batches_keep_per_entry_semantics, |m| {
                cases::batches_keep_per_entry_semantics(&*m)
            });
            case!(supersede_keeps_history, |m| cases::supersede_keeps_history(
                &*m
            ));
        }
    };
}
