//! One SQLite database file shared by several processes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use labelfleet_core::error::{BackendError, BackendResult};
use rusqlite::{Connection, ErrorCode};

/// A connection to one database file, used from async code through the blocking pool.
///
/// Every call first checks that the file at `path` is still the one that was opened
/// (same device and inode): a home deleted or replaced under a running worker would
/// otherwise take its writes into an unlinked file, and lose them without a word.
#[derive(Clone)]
pub(crate) struct Db {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
    identity: FileIdentity,
}

/// A file's device and inode.
type FileIdentity = (u64, u64);

fn identity_of(path: &Path) -> std::io::Result<FileIdentity> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

impl Db {
    /// Opens (creating if needed) the database and applies `schema`.
    pub(crate) fn open(path: &Path, schema: &str) -> BackendResult<Db> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                BackendError::Other(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        // Several processes may open a new database at once; switching it to WAL takes a
        // lock that can answer "busy" without waiting, so retry for a while.
        let mut attempt = 0;
        loop {
            match Self::try_open(path, schema) {
                Ok(conn) => {
                    let identity = identity_of(path).map_err(|e| {
                        BackendError::Other(format!("cannot read {}: {e}", path.display()))
                    })?;
                    return Ok(Db {
                        conn: Arc::new(Mutex::new(conn)),
                        path: Arc::new(path.to_path_buf()),
                        identity,
                    });
                }
                Err(e) if is_busy(&e) && attempt < 200 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(25));
                }
                Err(e) => return Err(to_backend_error(path, e)),
            }
        }
    }

    fn try_open(path: &Path, schema: &str) -> rusqlite::Result<Connection> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL in WAL mode survives a killed process (what workers face); only a power
        // loss may lose the last commits.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(schema)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS labelfleet_probe (id INTEGER PRIMARY KEY, at INTEGER NOT NULL);",
        )?;
        Ok(conn)
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Fails with [`BackendError::Lost`] unless the file at the path is still the one
    /// this handle opened.
    fn still_in_place(path: &Path, opened: FileIdentity) -> BackendResult<()> {
        let what = match identity_of(path) {
            Ok(now) if now == opened => return Ok(()),
            Ok(_) => "was replaced by another file",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "was deleted",
            Err(e) => {
                return Err(BackendError::Other(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        Err(BackendError::Lost(format!(
            "{} {what} while this process had it open (was the labelfleet home removed?); \
             nothing written now would be kept, so this process stops: check --home / \
             LABELFLEET_HOME, then enqueue the jobs again",
            path.display()
        )))
    }

    /// Checks that the file is still in place, that `table` can be read, and that a
    /// write commits (a full disk fails this, not only the next real write).
    pub(crate) async fn check(&self, table: &'static str) -> BackendResult<()> {
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT 1)"),
                [],
                |_| Ok(()),
            )?;
            conn.execute(
                "INSERT OR REPLACE INTO labelfleet_probe (id, at) VALUES (1, ?1)",
                [now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    /// Runs `f` with the connection on the blocking pool.
    pub(crate) async fn call<T, F>(&self, f: F) -> BackendResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, CallError> + Send + 'static,
    {
        let conn = self.conn.clone();
        let path = self.path.clone();
        let opened = self.identity;
        tokio::task::spawn_blocking(move || {
            Db::still_in_place(&path, opened)?;
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard).map_err(|e| match e {
                CallError::Sqlite(e) => to_backend_error(&path, e),
                CallError::Backend(e) => e,
            })
        })
        .await
        .map_err(|e| BackendError::Other(format!("database task failed: {e}")))?
    }
}

/// An error inside a database call: SQLite's, or one of the contract's.
pub(crate) enum CallError {
    Sqlite(rusqlite::Error),
    Backend(BackendError),
}

impl From<rusqlite::Error> for CallError {
    fn from(e: rusqlite::Error) -> CallError {
        CallError::Sqlite(e)
    }
}

impl From<BackendError> for CallError {
    fn from(e: BackendError) -> CallError {
        CallError::Backend(e)
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn to_backend_error(path: &Path, e: rusqlite::Error) -> BackendError {
    if is_busy(&e) {
        BackendError::Unavailable(format!("{} is busy: {e}", path.display()))
    } else {
        BackendError::Other(format!("{}: {e}", path.display()))
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
