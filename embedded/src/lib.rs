//! The embedded default backends: nothing to install, one machine, several worker
//! processes, safe.
//!
//! Everything lives under a home folder ([`EmbeddedHome`], `.labelfleet/` by default):
//!
//! - `queue.sqlite` — [`SqliteQueue`], the [`Queue`](labelfleet_core::queue::Queue)
//!   with SQS FIFO semantics (groups, visibility timeouts, receipts, redrive to a
//!   dead-letter table after `max_receives`).
//! - `manifest.sqlite` — [`SqliteManifest`], entries keyed by (`group_id`, `run_id`),
//!   written with `INSERT OR IGNORE` so a second write of a key is a no-op.
//! - `board.sqlite` — [`SqliteBoard`], held jobs and worker reports.
//! - `artifacts/` — [`FileArtifactStore`], files written to a temporary name and
//!   renamed into place.
//!
//! Each SQLite file is opened in WAL mode with a busy timeout, and every operation that
//! reads-then-writes runs in one `BEGIN IMMEDIATE` transaction, so concurrent worker
//! processes never hand out one message twice or write one manifest key twice. The
//! blocking SQLite calls run on tokio's blocking pool (`sqlite::Db`).
//!
//! # Example
//!
//! A message sent to the queue of a fresh home is received once, then acknowledged.
//!
//! ```
//! use std::time::Duration;
//!
//! use labelfleet_core::queue::{OutgoingMessage, Queue};
//! use labelfleet_embedded::EmbeddedHome;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let home = EmbeddedHome::new(dir.path());
//! let queue = home.queue(EmbeddedHome::DEFAULT_MAX_RECEIVES).unwrap();
//! tokio::runtime::Runtime::new().unwrap().block_on(async {
//!     let message = OutgoingMessage { body: "hello".into(), dedup_id: "1".into(), group: "g".into() };
//!     queue.send(&[message]).await.unwrap();
//!     let got = queue.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
//!     assert_eq!(got.len(), 1);
//!     assert_eq!(got[0].body, "hello");
//!     queue.ack(&got[0].receipt).await.unwrap();
//! });
//! ```

#![warn(missing_docs)]

mod artifacts;
mod board;
mod home;
mod manifest;
mod queue;
mod sqlite;

pub use artifacts::FileArtifactStore;
pub use board::SqliteBoard;
pub use home::EmbeddedHome;
pub use manifest::SqliteManifest;
pub use queue::SqliteQueue;
