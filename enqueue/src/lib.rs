//! Putting jobs on the queue.
//!
//! The flow of `labelfleet enqueue runs/<dir>`:
//!
//! 1. [`folder::load_folder`] reads every `*.json` under the folder, applies `--set` /
//!    `--unset` / `--mini` overrides and validates each job strictly, collecting every
//!    error before anything is sent.
//! 2. [`git::GitState`] records the runs repository's commit and refuses a dirty tree
//!    unless allowed; [`stamp_provenance`] writes that, the resolved config, the version
//!    and the time into each job.
//! 3. [`plan::plan`] resolves every `after` entry to a job or a group
//!    ([`Dependency`](labelfleet_core::board::Dependency)), rejects unknown names and
//!    cycles (also those that close through jobs already held on the board), and orders
//!    the jobs so that dependencies come first.
//! 4. [`versions::reconcile`] decides what to do with jobs the board or manifest
//!    already knows: the same version is sent again or skipped, an edited one is refused
//!    unless `--replace` (queued) or `--rerun` (completed) says otherwise.
//! 5. [`submit::submit`] registers every job on the job board and sends the ones whose
//!    dependencies are already complete; the rest stay held.
//! 6. Later, `labelfleet_schedule::release` sends held jobs once their dependencies
//!    complete: workers call it after each job, and on start-up as a sweep.
//!
//! Ordering, cycle checks and dependency completion are `labelfleet_schedule`'s, which
//! workers call too.
//!
//! # Example
//!
//! The bootstrap loop's job folder loads, validates and plans without a backend.
//!
//! ```
//! use std::path::Path;
//!
//! use labelfleet_core::board::Dependency;
//! use labelfleet_enqueue::folder::load_folder;
//! use labelfleet_enqueue::plan::{Known, plan};
//!
//! let folder = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../runs/bootstrap"));
//! let jobs = load_folder(folder, &[], true).unwrap();
//! let mut known = Known::default();
//! for loaded in &jobs {
//!     known.jobs.insert(loaded.job.key());
//!     known.groups.insert(loaded.job.group_id.clone());
//! }
//! let planned = plan(jobs, &known).unwrap();
//! // Every job comes after the jobs it waits for.
//! let position = |key: &labelfleet_core::job::JobKey| {
//!     planned.iter().position(|p| p.loaded.job.key() == *key).unwrap()
//! };
//! let mut waits = 0;
//! for (i, job) in planned.iter().enumerate() {
//!     for dependency in &job.after {
//!         if let Dependency::Job(key) = dependency {
//!             assert!(position(key) < i);
//!             waits += 1;
//!         }
//!     }
//! }
//! assert!(waits > 0, "the loop's steps wait on each other");
//! ```

#![warn(missing_docs)]

pub mod folder;
pub mod git;
pub mod plan;
pub mod submit;
pub mod versions;

use labelfleet_core::job::Job;
use labelfleet_core::provenance::Provenance;

/// Stamps provenance on each job: the git state, the overrides and the resolved config.
pub fn stamp_provenance(
    jobs: &mut [folder::LoadedJob],
    git: &git::GitState,
    overrides: &[String],
    enqueued_by: Option<String>,
) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for loaded in jobs {
        let job: &mut Job = &mut loaded.job;
        job.provenance = Some(Provenance {
            source_file: loaded.source.display().to_string(),
            git_commit: git.commit.clone(),
            git_dirty: git.dirty,
            reproducible: git.commit.is_some() && !git.dirty,
            overrides: overrides.to_vec(),
            config: job.config_value(),
            labelfleet_version: labelfleet_core::VERSION.to_string(),
            enqueued_at: now.clone(),
            enqueued_by: enqueued_by.clone(),
            config_hash: Some(job.config_hash()),
            rerun: 0,
        });
    }
}
