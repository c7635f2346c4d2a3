//! Artifacts as files under a root folder.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use labelfleet_core::artifacts::{ArtifactKey, ArtifactStore};
use labelfleet_core::error::{BackendError, BackendResult};
use rand::Rng;

/// Artifacts as files: `root/<key>`. Writes go to a temporary file beside the target and
/// are renamed into place, so readers never see half a file.
#[derive(Debug, Clone)]
pub struct FileArtifactStore {
    root: PathBuf,
}

impl FileArtifactStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: &Path) -> FileArtifactStore {
        FileArtifactStore {
            root: root.to_path_buf(),
        }
    }

    /// The file an artifact lives in. Keys are validated to stay under the root.
    pub fn path_of(&self, key: &ArtifactKey) -> PathBuf {
        self.root.join(key.as_str())
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> BackendError {
    BackendError::Other(format!("cannot {what} {}: {e}", path.display()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> BackendResult<()> {
    replace_atomically(path, |file| file.write_all(bytes))
}

/// As [`write_atomically`], streaming from the file at `source`.
fn copy_atomically(source: &Path, path: &Path) -> BackendResult<()> {
    let mut input = std::fs::File::open(source).map_err(|e| io_error("read", source, e))?;
    replace_atomically(path, |file| std::io::copy(&mut input, file).map(|_| ()))
}

/// Writes `path` through a hidden temporary file that `fill` writes, synced, then
/// renamed into place: readers see the old content or the new, never a part.
fn replace_atomically(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> BackendResult<()> {
    let dir = path.parent().expect("artifact paths have a parent");
    std::fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("artifact");
    // Hidden temporary names are skipped by `list`.
    let tmp = dir.join(format!(".{name}.tmp-{:016x}", rand::rng().random::<u64>()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        fill(&mut file)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error("write", path, e));
    }
    Ok(())
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<ArtifactKey>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(root, &path, out)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            let key = relative
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            if let Ok(key) = ArtifactKey::new(&key) {
                out.push(key);
            }
        }
    }
    Ok(())
}

#[async_trait]
impl ArtifactStore for FileArtifactStore {
    fn describe(&self) -> String {
        format!("artifacts in {}", self.root.display())
    }

    async fn check(&self) -> BackendResult<()> {
        // Writable: a probe file written and removed the way artifacts are. Its own
        // name per process and call: workers starting together each check at once.
        static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let probe = self
            .root
            .join(format!(".labelfleet-probe-{}-{n}", std::process::id()));
        tokio::task::spawn_blocking(move || {
            write_atomically(&probe, b"probe")?;
            std::fs::remove_file(&probe).map_err(|e| io_error("remove", &probe, e))
        })
        .await
        .map_err(|e| BackendError::Other(format!("artifact check task failed: {e}")))?
    }

    async fn put(&self, key: &ArtifactKey, bytes: Vec<u8>) -> BackendResult<()> {
        let path = self.path_of(key);
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| BackendError::Other(format!("artifact write task failed: {e}")))?
    }

    async fn put_file(&self, key: &ArtifactKey, source: &Path) -> BackendResult<()> {
        let path = self.path_of(key);
        let source = source.to_path_buf();
        tokio::task::spawn_blocking(move || copy_atomically(&source, &path))
            .await
            .map_err(|e| BackendError::Other(format!("artifact copy task failed: {e}")))?
    }

    async fn get(&self, key: &ArtifactKey) -> BackendResult<Option<Vec<u8>>> {
        let path = self.path_of(key);
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("read", &path, e)),
        }
    }

    async fn get_file(&self, key: &ArtifactKey, target: &Path) -> BackendResult<bool> {
        let path = self.path_of(key);
        let target = target.to_path_buf();
        tokio::task::spawn_blocking(move || match std::fs::copy(&path, &target) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !path.exists() => Ok(false),
            Err(e) => Err(io_error("copy", &path, e)),
        })
        .await
        .map_err(|e| BackendError::Other(format!("artifact copy task failed: {e}")))?
    }

    async fn delete(&self, key: &ArtifactKey) -> BackendResult<()> {
        let path = self.path_of(key);
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_error("remove", &path, e)),
            }
            // Folders left empty go too (a key's folders exist only for its files);
            // one that is not empty, or another remover's, stops the climb.
            let mut folder = path.parent();
            while let Some(dir) = folder.filter(|d| *d != root && d.starts_with(&root)) {
                if std::fs::remove_dir(dir).is_err() {
                    break;
                }
                folder = dir.parent();
            }
            Ok(())
        })
        .await
        .map_err(|e| BackendError::Other(format!("artifact remove task failed: {e}")))?
    }

    async fn list(&self, prefix: &str) -> BackendResult<Vec<ArtifactKey>> {
        let prefix = prefix.trim_end_matches('/');
        let start = if prefix.is_empty() {
            self.root.clone()
        } else {
            self.path_of(&ArtifactKey::new(prefix)?)
        };
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut keys = Vec::new();
            match std::fs::metadata(&start) {
                Ok(meta) if meta.is_dir() => collect_files(&root, &start, &mut keys)
                    .map_err(|e| io_error("list", &start, e))?,
                Ok(_) => collect_files(&root, start.parent().expect("has parent"), &mut keys)
                    .map(|_| keys.retain(|k| root.join(k.as_str()) == start))
                    .map_err(|e| io_error("list", &start, e))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("list", &start, e)),
            }
            keys.sort();
            Ok(keys)
        })
        .await
        .map_err(|e| BackendError::Other(format!("artifact list task failed: {e}")))?
    }

    fn locate(&self, key: &ArtifactKey) -> String {
        self.path_of(key).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Workers that start together check the store at the same moment: every check
    /// passes (they once shared one probe file, and one removed another's).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn checks_at_the_same_moment_all_pass() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(FileArtifactStore::new(dir.path()));
        let checks: Vec<_> = (0..32)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.check().await })
            })
            .collect();
        for check in checks {
            check.await.unwrap().unwrap();
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "probes left behind: {left:?}");
    }
}
