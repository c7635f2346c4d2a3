//! One SQLite database file shared by several processes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use labelfleet_core::error::{BackendError, BackendResult};
use rusqlite::{Connection, ErrorCode};

/// A connection to one database file, used from async code through the blocking pool.
#[derive(Clone)]
pub(crate) struct Db {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
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
                    return Ok(Db {
                        conn: Arc::new(Mutex::new(conn)),
                        path: Arc::new(path.to_path_buf()),
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
        Ok(conn)
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on the blocking pool.
    pub(crate) async fn call<T, F>(&self, f: F) -> BackendResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, CallError> + Send + 'static,
    {
        let conn = self.conn.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
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
