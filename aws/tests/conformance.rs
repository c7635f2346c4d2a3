//! The contract conformance suites, unchanged, against the AWS backends on a real moto
//! server (one per test process, on 127.0.0.1).

use std::sync::Arc;

use labelfleet_aws::testing::MotoServer;
use labelfleet_aws::{
    AwsTarget, DynamoBoard, DynamoManifest, S3ArtifactStore, Spill, SqsQueue, setup,
};
use labelfleet_core::artifacts::ArtifactStore;
use labelfleet_core::board::JobBoard;
use labelfleet_core::conformance::{Fixture, unique};
use labelfleet_core::queue::Queue;
use labelfleet_manifest::Manifest;

/// Fresh resources with unique names on the shared server.
async fn fresh(max_receives: u32) -> (aws_config::SdkConfig, AwsTarget) {
    let sdk = MotoServer::shared().sdk_config().await;
    let name = unique("lf").to_lowercase();
    let target = AwsTarget::parse(
        &name,
        &format!("dynamodb://{name}"),
        &format!("s3://{name}/runs"),
    )
    .unwrap();
    setup(&sdk, &target, max_receives, 30).await.unwrap();
    (sdk, target)
}

async fn fresh_queue(max_receives: u32) -> Fixture<dyn Queue> {
    let (sdk, target) = fresh(max_receives).await;
    let queue = SqsQueue::connect(&sdk, &target.queue, None).await.unwrap();
    Fixture::new(Arc::new(queue), ())
}

async fn fresh_manifest() -> Fixture<dyn Manifest> {
    let (sdk, target) = fresh(5).await;
    Fixture::new(Arc::new(DynamoManifest::new(&sdk, &target.table, None)), ())
}

async fn fresh_artifacts() -> Fixture<dyn ArtifactStore> {
    let (sdk, target) = fresh(5).await;
    // Small parts, so that the 6 MB case goes through a multipart upload.
    let store =
        S3ArtifactStore::new(&sdk, &target.bucket, &target.prefix).with_part_size(5 * 1024 * 1024);
    Fixture::new(Arc::new(store), ())
}

async fn fresh_board() -> Fixture<dyn JobBoard> {
    let (sdk, target) = fresh(5).await;
    let spill = Spill::new(Arc::new(S3ArtifactStore::new(
        &sdk,
        &target.bucket,
        &target.prefix,
    )));
    Fixture::new(
        Arc::new(DynamoBoard::new(&sdk, &target.table, Some(spill))),
        (),
    )
}

labelfleet_core::queue_conformance!(fresh_queue);
labelfleet_manifest::manifest_conformance!(fresh_manifest);
labelfleet_core::artifact_store_conformance!(fresh_artifacts);
labelfleet_core::job_board_conformance!(fresh_board);
