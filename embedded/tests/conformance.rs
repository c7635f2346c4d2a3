//! The contract conformance suites, run against the embedded backends.

use std::sync::Arc;

use labelfleet_core::artifacts::ArtifactStore;
use labelfleet_core::board::JobBoard;
use labelfleet_core::conformance::Fixture;
use labelfleet_core::queue::Queue;
use labelfleet_embedded::EmbeddedHome;
use labelfleet_manifest::Manifest;

fn home() -> (EmbeddedHome, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (EmbeddedHome::new(dir.path()), dir)
}

async fn fresh_queue(max_receives: u32) -> Fixture<dyn Queue> {
    let (home, dir) = home();
    Fixture::new(Arc::new(home.queue(max_receives).unwrap()), dir)
}

async fn fresh_manifest() -> Fixture<dyn Manifest> {
    let (home, dir) = home();
    Fixture::new(Arc::new(home.manifest().unwrap()), dir)
}

async fn fresh_artifacts() -> Fixture<dyn ArtifactStore> {
    let (home, dir) = home();
    Fixture::new(Arc::new(home.artifacts()), dir)
}

async fn fresh_board() -> Fixture<dyn JobBoard> {
    let (home, dir) = home();
    Fixture::new(Arc::new(home.board().unwrap()), dir)
}

labelfleet_core::queue_conformance!(fresh_queue);
labelfleet_manifest::manifest_conformance!(fresh_manifest);
labelfleet_core::artifact_store_conformance!(fresh_artifacts);
labelfleet_core::job_board_conformance!(fresh_board);

/// Beyond the shared suite: the embedded queue refuses a receipt that a later receive
/// superseded, for every operation.
#[tokio::test]
async fn superseded_receipts_are_refused() {
    use labelfleet_core::BackendError;
    use labelfleet_core::queue::OutgoingMessage;
    use std::time::Duration;
    let fixture = fresh_queue(5).await;
    let q = fixture.backend;
    q.send(&[OutgoingMessage {
        body: "b".into(),
        dedup_id: "d".into(),
        group: "g".into(),
    }])
    .await
    .unwrap();
    let first = q
        .receive(1, Duration::from_secs(1), Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let second = q
        .receive(1, Duration::from_secs(60), Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    assert!(matches!(
        q.extend(&first.receipt, Duration::from_secs(60)).await,
        Err(BackendError::StaleReceipt)
    ));
    assert!(matches!(
        q.release(&first.receipt, Duration::ZERO).await,
        Err(BackendError::StaleReceipt)
    ));
    assert!(matches!(
        q.ack(&first.receipt).await,
        Err(BackendError::StaleReceipt)
    ));
    assert!(matches!(
        q.dead_letter(&first, "x").await,
        Err(BackendError::StaleReceipt)
    ));
    q.ack(&second.receipt).await.unwrap();
}
