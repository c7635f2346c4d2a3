//! The seam of labelfleet: what a job is, and the contracts every backend implements.
//!
//! Everything else in the workspace talks through the types in this crate:
//!
//! - [`job::Job`] is one unit of work, parsed strictly from a job JSON file by
//!   [`job::Job::parse`] (unknown keys, wrong types and missing fields are
//!   [`job::JobError`]s that name the file and the JSON path). [`overrides`] applies
//!   `--set`/`--unset` before parsing, and [`provenance::Provenance`] records where a
//!   job came from (git commit, dirty tree, resolved config, version, time). Each
//!   kind's settings are checked past serde too (`SelfLabelSpec::check`,
//!   `RetrainSpec::check`, `TuneSpec::check`, all re-exported from [`job`]); a `tune`
//!   job is a sweep that [`job::tune::expand`] turns into its trial jobs at enqueue time.
//! - [`queue::Queue`] carries jobs to workers with SQS FIFO semantics: a message is
//!   received with a visibility timeout, kept alive with [`queue::Queue::extend`]
//!   (heartbeats), and then acknowledged, released or dead-lettered.
//! - [`artifacts::ArtifactStore`] keeps the files a job writes, under
//!   [`artifacts::ArtifactKey`]s that can never escape the store's root.
//! - [`board::JobBoard`] remembers which jobs were submitted, holds the ones whose
//!   dependencies are not complete yet, and records which workers are alive.
//!   (The fourth contract, the manifest of completed runs, lives in
//!   `labelfleet-manifest`.)
//!
//! Data flows one way: `enqueue` parses [`job::Job`]s, stamps them with
//! [`provenance::Provenance`], registers them on the [`board::JobBoard`] and sends
//! the ready ones as [`queue::Envelope`]s; a worker receives an envelope, runs the
//! job, writes artifacts and a manifest entry, releases held dependents, and acks.
//!
//! [`hash`] spells every SHA-256 the workspace uses as text the same way.
//!
//! With the `conformance` feature, `conformance` holds the test suites that every
//! backend of these contracts must pass unchanged.
//!
//! # Example
//!
//! A job file is parsed strictly: a misspelt field is an error that names the file and
//! the JSON path.
//!
//! ```
//! use labelfleet_core::job::{Job, ProvenancePolicy};
//!
//! let text = r#"{"kind": "noop", "group_id": "demo", "noop": {"sleep_ms": 0}}"#;
//! let value = serde_json::from_str(text).unwrap();
//! let job = Job::parse(value, "runs/demo/job_0.json", Some("job_0"), ProvenancePolicy::Reject).unwrap();
//! assert_eq!(job.key().to_string(), "demo/job_0");
//!
//! let typo = serde_json::json!({"kind": "noop", "group_id": "demo", "noop": {"sleep_msec": 0}});
//! let error = Job::parse(typo, "runs/demo/job_1.json", Some("job_1"), ProvenancePolicy::Reject).unwrap_err();
//! assert_eq!(error.file, "runs/demo/job_1.json");
//! assert_eq!(error.path, "noop.sleep_msec");
//! ```

#![warn(missing_docs)]

pub mod artifacts;
pub mod board;
pub mod error;
pub mod hash;
pub mod job;
pub mod overrides;
pub mod provenance;
pub mod queue;
pub mod rng;
pub mod text;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::BackendError;

/// The version of labelfleet recorded in provenance.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
