//! When a job may run: the one home of dependency handling, called by `enqueue` (which
//! plans and submits) and by workers (which hold hand-sent jobs and release dependents).
//!
//! - [`order::order`] sorts jobs so that dependencies come first and names a
//!   [`Cycle`](order::Cycle) when there is one (also through jobs already held).
//! - [`resolve::resolve_live`] turns an `after` entry into a
//!   [`Dependency`](labelfleet_core::board::Dependency) against the live board and
//!   manifest; [`resolve::waiting`] says what a job still waits for.
//! - [`completion`] decides whether a dependency is complete: a job once its manifest
//!   entry exists, a group once every job registered for it has one.
//! - [`release`] sends held jobs once their dependencies are complete: after each job a
//!   worker completes, and as a sweep when a worker starts.
//!
//! Data flows from job files to the job board (held, with resolved dependencies) and on
//! to the queue as manifest entries appear.
//!
//! # Example
//!
//! ```
//! use labelfleet_core::board::Dependency;
//! use labelfleet_core::job::JobKey;
//! use labelfleet_schedule::order::order;
//!
//! let key = |name: &str| JobKey { group_id: "demo".into(), name: name.into() };
//! let after_train = [Dependency::Job(key("train"))];
//! let jobs = [(key("eval"), &after_train[..]), (key("train"), &[][..])];
//! assert_eq!(order(&jobs).unwrap(), vec![1, 0]);
//! ```

#![warn(missing_docs)]

pub mod completion;
pub mod order;
pub mod release;
pub mod resolve;
