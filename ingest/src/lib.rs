//! Raw interaction logs into a dataset.
//!
//! - [`logs::Ingester`] reads `logs.tar.gz` archives one at a time, from wherever they
//!   come (a folder through [`logs::ingest_folder`], an S3 prefix, an earlier job's
//!   artifacts): it finds the named pipe-delimited CSV inside, tags each row with its
//!   session (the archive's folder), drops rows whose text repeats, and records what it
//!   skipped and why in [`logs::Stats`].
//! - [`mod@write`] writes the kept [`logs::LogRow`]s as one parquet file and as JSON lines.
//!
//! Data flows from archives (bytes) through the ingester to rows and stats, and from
//! there to files. `labelfleet ingest` runs it from the command line; an `ingest` job
//! runs it on a worker, so that a log-to-dataset step can sit in a chain of jobs.
//!
//! # Example
//!
//! ```
//! use labelfleet_ingest::logs::Ingester;
//!
//! let mut ingester = Ingester::new("interaction_loggings.csv", "command");
//! ingester.add_archive("session_a", "session_a/logs.tar.gz", b"not an archive");
//! let (rows, stats) = ingester.finish();
//! assert!(rows.is_empty());
//! assert_eq!((stats.archives, stats.bad_archives.len()), (1, 1));
//! ```

#![warn(missing_docs)]

pub mod logs;
pub mod write;

pub use logs::{ARCHIVE, Ingester, LogRow, Stats, ingest_folder};
pub use write::{write_jsonl, write_parquet};
