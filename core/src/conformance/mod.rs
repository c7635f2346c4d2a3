//! Conformance suites: the behaviour every backend of a contract must show.
//!
//! A backend crate runs a suite by invoking its macro in a test file with an async
//! factory that builds a fresh, empty backend:
//!
//! ```ignore
//! async fn fresh_queue(max_receives: u32) -> Fixture<dyn Queue> { ... }
//! labelfleet_core::queue_conformance!(fresh_queue);
//! ```
//!
//! Each case becomes its own `#[tokio::test]`. The cases use visibility timeouts of
//! whole seconds, since SQS counts in seconds.

pub mod artifacts;
pub mod board;
pub mod queue;

use std::any::Any;
use std::sync::Arc;

/// A backend under test plus whatever must outlive it (a temporary folder, a server).
pub struct Fixture<T: ?Sized> {
    /// The backend.
    pub backend: Arc<T>,
    _keep: Box<dyn Any + Send + Sync>,
}

impl<T: ?Sized> Fixture<T> {
    /// Wraps a backend and the guard that keeps its resources alive.
    pub fn new(backend: Arc<T>, keep: impl Any + Send + Sync) -> Fixture<T> {
        Fixture {
            backend,
            _keep: Box::new(keep),
        }
    }
}

/// A unique name for test data, so that suites can share a long-lived backend.
pub fn unique(prefix: &str) -> String {
    use rand::Rng;
    format!("{prefix}-{:08x}", rand::rng().random::<u32>())
}
