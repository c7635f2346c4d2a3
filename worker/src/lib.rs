//! The labelfleet worker.
//!
//! - [`Backends`] bundles the four contracts a worker talks to.
//! - [`runner::JobRunner`] runs one kind of job; [`runner::Runners`] registers one
//!   long-lived runner per kind in one place, so models and other heavy state are
//!   cached across jobs. The runners live in [`runners`]: `self_label` retrieves
//!   examples from the manifest, prompts a causal LM (from `labelfleet-models`) in
//!   batches across dialogues, and keeps a running log artifact it resumes from;
//!   `retrain` fine-tunes a model on labelled turns with resumable checkpoints;
//!   `eval` scores predictions, or a model that labels the gold set through
//!   `self_label`'s path; `tune` ranks a sweep's trials; `noop` sleeps. Models saved by
//!   `retrain` reach other jobs through [`runners::checkpoints`]. A runner reports how
//!   far it has got through [`runner::Progress`], which `status` shows.
//! - [`execute`] holds the code path every job takes: [`execute::run_job`] runs it
//!   with its runner (which writes artifacts) and returns its manifest entry;
//!   [`execute::record`] writes entries (idempotently) and releases the held jobs that
//!   waited on them. `labelfleet run job.json` calls both through
//!   [`execute::execute`]; the worker calls them for every message.
//! - [`worker::Worker`] is the polling loop: receive up to its free job slots, open each
//!   [`Envelope`](labelfleet_core::queue::Envelope), skip jobs the manifest already
//!   has, hold jobs whose dependencies are not complete, and run the rest under
//!   heartbeats ([`heartbeat`]). Jobs that finish together are recorded and
//!   acknowledged together; a failed job is released with backoff or dead-lettered
//!   with its reason. A job's error never stops the worker.
//! - [`memory`] reads this machine's and this process's memory from `/proc`: the model
//!   cache's default bound and the peak a stopping worker reports.
//! - [`checks`] checks that the queue, table and bucket exist and are usable before a
//!   worker receives anything, and while it waits out backend trouble.
//! - [`shutdown::Shutdown`] turns SIGINT/SIGTERM into "stop receiving, let the running
//!   job save its progress and stop (or finish) within the grace period, or release
//!   it".
//!
//! # Example
//!
//! The failure policy is a pure function: a job's own error is retried with backoff
//! until its last delivery, then dead-lettered with the reason.
//!
//! ```
//! use labelfleet_worker::runner::JobFailure;
//! use labelfleet_worker::worker::{AfterFailure, WorkerConfig, after_failure};
//!
//! let mut config = WorkerConfig::new("w1".into());
//! config.max_receives = 3;
//! let failure = JobFailure::new("the dataset is missing");
//! assert!(matches!(after_failure(&failure, false, 1, &config), AfterFailure::Retry(_)));
//! assert!(matches!(after_failure(&failure, false, 3, &config), AfterFailure::DeadLetter(_)));
//! // A job stopped for the worker's shutdown goes to another worker at once.
//! let stopped = JobFailure::interrupted("saved its progress");
//! assert_eq!(after_failure(&stopped, false, 1, &config), AfterFailure::HandOver);
//! ```

#![warn(missing_docs)]

pub mod checks;
pub mod execute;
pub mod gpu;
pub mod heartbeat;
pub mod memory;
pub mod params_from;
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
