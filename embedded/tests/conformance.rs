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
