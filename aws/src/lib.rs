//! labelfleet's AWS backends, for fleets that outgrow one machine.
//!
//! - [`SqsQueue`] implements the [`Queue`](labelfleet_core::queue::Queue) contract on an
//!   SQS FIFO queue with a dead-letter queue behind a redrive policy. Heartbeats are
//!   `ChangeMessageVisibility`; an explicit dead-letter re-sends the message to the DLQ
//!   with its reason as a message attribute. Bodies over the queue's size limit travel
//!   through S3 behind a pointer ([`Spill`]), transparently.
//! - [`DynamoManifest`] implements the manifest on a DynamoDB table keyed by
//!   (`group_id`, `run_id`): conditional writes (`attribute_not_exists`) make a second
//!   write of a key a no-op; queries page through a group; an entry over the 400 KB item
//!   limit keeps its bulk in S3.
//! - [`DynamoBoard`] keeps the job board in the same table, under partition keys that
//!   start with `#` (group ids never do): held jobs, their dependencies, worker reports.
//! - [`S3ArtifactStore`] keeps artifacts in a bucket under a prefix, uploads large files
//!   in parts, and checks a SHA-256 on every read.
//! - [`setup`] creates the queue with its DLQ and redrive policy, the table and the
//!   bucket, idempotently; [`AwsTarget`] parses `--queue`, `--manifest dynamodb://T`
//!   and `--artifacts s3://bucket/prefix`.
//!
//! Errors are classified once ([`errors`]): throttling, 5xx answers and connection
//! failures become [`BackendError::Unavailable`](labelfleet_core::BackendError), which
//! callers retry with backoff; a missing resource or a missing permission says which,
//! and what to do. Credentials come from the standard AWS chain and never appear in
//! logs, errors, the manifest or artifacts.
//!
//! # Example
//!
//! The command line's AWS flags name a queue, a table and a bucket with a prefix.
//!
//! ```
//! use labelfleet_aws::AwsTarget;
//!
//! let target = AwsTarget::parse("labelfleet", "dynamodb://runs", "s3://lab-bucket/fleet/").unwrap();
//! assert_eq!(target.queue_name(), "labelfleet.fifo");
//! assert_eq!((target.table.as_str(), target.bucket.as_str(), target.prefix.as_str()), ("runs", "lab-bucket", "fleet"));
//! assert!(AwsTarget::parse("labelfleet", "runs", "s3://lab-bucket").is_err());
//! ```

#![warn(missing_docs)]

mod board;
mod config;
pub mod errors;
mod manifest;
mod s3;
mod setup;
mod spill;
mod sqs;
mod table;
#[cfg(feature = "testing")]
pub mod testing;

pub use board::DynamoBoard;
pub use config::{AwsTarget, check_sdk_config, load_sdk_config, parse_s3_location};
pub use manifest::DynamoManifest;
pub use s3::S3ArtifactStore;
pub use setup::{SetupReport, setup};
pub use spill::Spill;
pub use sqs::SqsQueue;
