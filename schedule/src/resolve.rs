//! What a job waits for: its `after` entries resolved to jobs and groups, and which of
//! those are not complete yet.

use labelfleet_core::board::{Dependency, JobBoard};
use labelfleet_core::error::BackendResult;
use labelfleet_core::job::{Job, JobKey};
use labelfleet_manifest::{Manifest, ManifestKey};

use crate::completion::incomplete;

/// Resolves an `after` entry against the live board and manifest (for jobs that did
/// not come through `enqueue`'s plan, such as hand-sent messages): `group/name` is a
/// job; a plain name is a group only if a group of that name exists and no job of that
/// name does, and otherwise a job of the same group (which may not have been enqueued
/// yet).
pub async fn resolve_live(
    entry: &str,
    own_group: &str,
    board: &dyn JobBoard,
    manifest: &dyn Manifest,
) -> BackendResult<Dependency> {
    if let Some((group_id, name)) = entry.split_once('/') {
        return Ok(Dependency::Job(JobKey {
            group_id: group_id.into(),
            name: name.into(),
        }));
    }
    let key = JobKey {
        group_id: own_group.into(),
        name: entry.into(),
    };
    let is_job = board
        .group_jobs(own_group)
        .await?
        .iter()
        .any(|job| job.name == entry)
        || manifest.get(&ManifestKey::from(&key)).await?.is_some();
    let is_group = !is_job
        && (board.groups().await?.iter().any(|g| g.group_id == entry)
            || manifest.groups().await?.iter().any(|g| g.group_id == entry));
    Ok(if is_group {
        Dependency::Group(entry.to_string())
    } else {
        Dependency::Job(key)
    })
}

/// A job's dependencies, resolved live, and those of them not complete yet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Waiting {
    /// Every dependency, in `after` order.
    pub after: Vec<Dependency>,
    /// The ones not complete yet; the job may run when this is empty.
    pub pending: Vec<Dependency>,
}

/// What `job` waits for, now.
pub async fn waiting(
    job: &Job,
    board: &dyn JobBoard,
    manifest: &dyn Manifest,
) -> BackendResult<Waiting> {
    let mut after = Vec::with_capacity(job.after.len());
    for entry in &job.after {
        after.push(resolve_live(entry, &job.group_id, board, manifest).await?);
    }
    let pending = incomplete(&after, manifest, board).await?;
    Ok(Waiting { after, pending })
}
