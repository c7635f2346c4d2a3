//! The home folder that holds every embedded backend.

use std::path::{Path, PathBuf};

use labelfleet_core::error::BackendResult;

use crate::{FileArtifactStore, SqliteBoard, SqliteManifest, SqliteQueue};

/// The folder the embedded backends live in (`--home`, `LABELFLEET_HOME`, or
/// `.labelfleet/` in the current folder).
#[derive(Debug, Clone)]
pub struct EmbeddedHome {
    root: PathBuf,
}

impl EmbeddedHome {
    /// The default max receives before a message is dead-lettered.
    pub const DEFAULT_MAX_RECEIVES: u32 = 5;

    /// A home at `root`; nothing is created until a backend is opened.
    pub fn new(root: &Path) -> EmbeddedHome {
        EmbeddedHome {
            root: root.to_path_buf(),
        }
    }

    /// The home folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens the queue.
    pub fn queue(&self, max_receives: u32) -> BackendResult<SqliteQueue> {
        SqliteQueue::open(&self.root.join("queue.sqlite"), max_receives)
    }

    /// Opens the manifest.
    pub fn manifest(&self) -> BackendResult<SqliteManifest> {
        SqliteManifest::open(&self.root.join("manifest.sqlite"))
    }

    /// Opens the job board.
    pub fn board(&self) -> BackendResult<SqliteBoard> {
        SqliteBoard::open(&self.root.join("board.sqlite"))
    }

    /// The artifact store.
    pub fn artifacts(&self) -> FileArtifactStore {
        FileArtifactStore::new(&self.root.join("artifacts"))
    }
}
