//! The labelfleet worker.
//!
//! - [`Backends`] bundles the four contracts a worker talks to.
//! - [`runner::JobRunner`] runs one kind of job; [`runner::Runners`] registers one
//!   long-lived runner per kind in one place, so models and other heavy state are
//!   cached across jobs. The runners live in [`runners`].
//! - [`execute::execute`] is the one code path that runs a job and records it: the
//!   runner writes artifacts, then the manifest entry is written (idempotently) and the
//!   held jobs that waited on it are released. `labelfleet run job.json` calls it
//!   directly; the worker calls it for every message.
//! - [`worker::Worker`] is the polling loop: receive a message, open its
//!   [`Envelope`](labelfleet_core::queue::Envelope), skip it if the manifest already
//!   has it, hold it if its dependencies are not complete, otherwise run it under
//!   heartbeats ([`heartbeat`]), then acknowledge — or release it with backoff, or
//!   dead-letter it with its reason. A job's error never stops the worker.
//! - [`shutdown::Shutdown`] turns SIGINT/SIGTERM into "stop receiving, finish the
//!   running job within the grace period or release it".

#![warn(missing_docs)]

pub mod execute;
pub mod heartbeat;
pub mod runner;
pub mod runners;
pub mod shutdown;
pub mod worker;

use std::sync::Arc;

use labelfleet_core::artifacts::ArtifactStore;
use labelfleet_core::board::JobBoard;
use labelfleet_core::queue::Queue;
use labelfleet_manifest::Manifest;

/// The backends a worker talks to.
#[derive(Clone)]
pub struct Backends {
    /// Where jobs come from.
    pub queue: Arc<dyn Queue>,
    /// Where completed runs are recorded.
    pub manifest: Arc<dyn Manifest>,
    /// Where jobs write files.
    pub artifacts: Arc<dyn ArtifactStore>,
    /// Held jobs and worker reports.
    pub board: Arc<dyn JobBoard>,
}
