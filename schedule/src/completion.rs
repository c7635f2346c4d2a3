//! Whether a job's dependencies are complete.
//!
//! A job dependency is complete once its manifest entry exists. A group dependency is
//! complete once every job registered on the board for that group has an entry (or,
//! for a group the board does not know, once the group has any entry at all: it was
//! produced before this board existed).

use std::collections::HashSet;

use labelfleet_core::board::{Dependency, JobBoard};
use labelfleet_core::error::BackendResult;

use labelfleet_manifest::{Manifest, ManifestKey, list_all};

/// Whether one dependency is complete.
pub async fn is_complete(
    dependency: &Dependency,
    manifest: &dyn Manifest,
    board: &dyn JobBoard,
) -> BackendResult<bool> {
    match dependency {
        Dependency::Job(key) => Ok(manifest.get(&ManifestKey::from(key)).await?.is_some()),
        Dependency::Group(group) => {
            let registered = board.group_jobs(group).await?;
            let done: HashSet<String> = list_all(manifest, group)
                .await?
                .into_iter()
                .map(|e| e.run_id)
                .collect();
            if registered.is_empty() {
                Ok(!done.is_empty())
            } else {
                Ok(registered.iter().all(|job| done.contains(&job.name)))
            }
        }
    }
}

/// The dependencies that are not complete yet, in the order given.
pub async fn incomplete(
    dependencies: &[Dependency],
    manifest: &dyn Manifest,
    board: &dyn JobBoard,
) -> BackendResult<Vec<Dependency>> {
    let mut pending = Vec::new();
    for dependency in dependencies {
        if !is_complete(dependency, manifest, board).await? {
            pending.push(dependency.clone());
        }
    }
    Ok(pending)
}
