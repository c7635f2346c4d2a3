//! The bound on the local folder that fetched checkpoints are kept in
//! ([`super::checkpoints::cache_dir`]). Every retrain job a worker's jobs name is
//! fetched once per machine and kept for the jobs after it; a long run names many
//! (each round of a self-labelling loop trains a new model), so without a bound the
//! folder fills the disk, and a worker on a full disk stops.
//!
//! Each fetched model is an entry: a folder holding only files. Its last use is the
//! time its files were last loaded (its `.complete` marker is touched then). When the
//! entries outgrow the bound, the least recently used go first. Two kinds are never
//! removed: the entry a job is about to load, and any used in the last
//! [`RECENT`] (another worker process on the same machine may be reading it).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The variable that sets the bound, in GB (10⁹ bytes).
pub const MAX_GB_VARIABLE: &str = "LABELFLEET_CACHE_MAX_GB";

/// The bound when [`MAX_GB_VARIABLE`] is unset: room for one 8B model in f32, or
/// forty SmolLM2-135M checkpoints.
pub const DEFAULT_MAX_GB: f64 = 20.0;

/// Entries used this recently are kept whatever their size: a worker that fetched one
/// may still be loading it.
pub const RECENT: Duration = Duration::from_secs(600);

/// The marker a complete entry holds; its modification time is the entry's last use.
pub const COMPLETE: &str = ".complete";

/// The bound in bytes, from [`MAX_GB_VARIABLE`] or [`DEFAULT_MAX_GB`].
pub fn max_bytes() -> Result<u64, String> {
    parse_gb(std::env::var_os(MAX_GB_VARIABLE).as_deref())
}

/// The bound a value of [`MAX_GB_VARIABLE`] sets (the default when it is unset).
fn parse_gb(value: Option<&std::ffi::OsStr>) -> Result<u64, String> {
    let Some(value) = value else {
        return Ok((DEFAULT_MAX_GB * 1e9) as u64);
    };
    value
        .to_str()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|gb| gb.is_finite() && *gb >= 0.0)
        .map(|gb| (gb * 1e9) as u64)
        .ok_or_else(|| {
            format!("{MAX_GB_VARIABLE} must be a number of GB, 0 or more (e.g. 20 or 2.5)")
        })
}

/// Marks the entry `folder` as used now.
pub fn touch(folder: &Path) -> std::io::Result<()> {
    let marker = folder.join(COMPLETE);
    std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(marker)?
        .set_modified(SystemTime::now())
}

/// One fetched model in the cache.
#[derive(Debug)]
struct Entry {
    folder: PathBuf,
    bytes: u64,
    last_used: SystemTime,
}

/// What [`evict`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    /// Entries removed.
    pub entries: usize,
    /// Bytes they held.
    pub bytes: u64,
    /// Bytes the cache holds afterwards.
    pub left: u64,
}

/// Removes the least recently used entries under `root` until the entries hold at most
/// `max_bytes`, never `keep` nor an entry used within `recent` of `now`. An entry that
/// cannot be removed is skipped (another process may have removed it first).
pub fn evict(
    root: &Path,
    keep: &Path,
    max_bytes: u64,
    now: SystemTime,
    recent: Duration,
) -> std::io::Result<Evicted> {
    let mut entries = Vec::new();
    collect(root, &mut entries)?;
    let mut left: u64 = entries.iter().map(|e| e.bytes).sum();
    entries.sort_by_key(|e| e.last_used);
    let mut evicted = Evicted::default();
    for entry in entries {
        if left <= max_bytes {
            break;
        }
        let in_use = now
            .duration_since(entry.last_used)
            .map_or(true, |age| age < recent);
        if entry.folder == keep || in_use {
            continue;
        }
        if std::fs::remove_dir_all(&entry.folder).is_ok() {
            left -= entry.bytes;
            evicted.entries += 1;
            evicted.bytes += entry.bytes;
        }
    }
    evicted.left = left;
    Ok(evicted)
}

/// Adds the entries under `dir`: folders that hold files and no folders.
fn collect(dir: &Path, entries: &mut Vec<Entry>) -> std::io::Result<()> {
    let mut bytes = 0;
    let mut newest_file = SystemTime::UNIX_EPOCH;
    let mut marker = None;
    let mut subfolders = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let meta = item.metadata()?;
        if meta.is_dir() {
            subfolders.push(item.path());
        } else {
            bytes += meta.len();
            let modified = meta.modified()?;
            newest_file = newest_file.max(modified);
            if item.file_name() == COMPLETE {
                marker = Some(modified);
            }
        }
    }
    if subfolders.is_empty() && dir.parent().is_some() && bytes > 0 {
        // An entry being fetched (or abandoned half-way) has no marker: its newest
        // file says when it was last written to.
        entries.push(Entry {
            folder: dir.to_path_buf(),
            bytes,
            last_used: marker.unwrap_or(newest_file),
        });
    }
    for folder in subfolders {
        collect(&folder, entries)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// Writes an entry of `bytes` under `root/name`, last used `age` before `now`.
    fn entry(root: &Path, name: &str, bytes: usize, now: SystemTime, age: Duration) -> PathBuf {
        let folder = root.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("model.safetensors"), vec![0u8; bytes]).unwrap();
        let when = now - age;
        for file in ["model.safetensors", COMPLETE] {
            let f = std::fs::File::options()
                .write(true)
                .create(true)
                .truncate(false)
                .open(folder.join(file))
                .unwrap();
            f.set_modified(when).unwrap();
        }
        folder
    }

    #[test]
    fn the_least_recently_used_go_first_until_the_cache_fits() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let oldest = entry(dir.path(), "s/g/a/best/v1", 1000, now, 3 * HOUR);
        let older = entry(dir.path(), "s/g/b/model/v1", 1000, now, 2 * HOUR);
        let newer = entry(dir.path(), "s/g/c/best/v1", 1000, now, HOUR);
        let evicted = evict(dir.path(), &newer, 2000, now, RECENT).unwrap();
        assert_eq!(evicted.entries, 1);
        assert_eq!(evicted.bytes, 1000);
        assert_eq!(evicted.left, 2000);
        assert!(!oldest.exists());
        assert!(older.exists() && newer.exists());
    }

    #[test]
    fn the_entry_to_load_and_recently_used_ones_stay_even_over_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let keep = entry(dir.path(), "s/g/a/best/v1", 5000, now, 5 * HOUR);
        let recent = entry(
            dir.path(),
            "s/g/b/best/v1",
            5000,
            now,
            Duration::from_secs(60),
        );
        let old = entry(dir.path(), "s/g/c/best/v1", 5000, now, 4 * HOUR);
        let evicted = evict(dir.path(), &keep, 0, now, RECENT).unwrap();
        assert_eq!(evicted.entries, 1);
        assert!(keep.exists() && recent.exists() && !old.exists());
        // Touching an entry makes it recent.
        touch(&keep).unwrap();
        let later = SystemTime::now();
        evict(dir.path(), &recent, 0, later, RECENT).unwrap();
        assert!(keep.exists());
    }

    #[test]
    fn a_cache_under_the_bound_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let a = entry(dir.path(), "s/g/a/best/v1", 100, now, 9 * HOUR);
        let b = entry(dir.path(), "s/g/b/best/v1", 100, now, 8 * HOUR);
        let evicted = evict(dir.path(), &b, 1000, now, RECENT).unwrap();
        assert_eq!(
            evicted,
            Evicted {
                entries: 0,
                bytes: 0,
                left: 200
            }
        );
        assert!(a.exists());
    }

    #[test]
    fn the_bound_is_read_in_gb_and_a_bad_one_names_the_variable() {
        let parse = |v: &str| parse_gb(Some(std::ffi::OsStr::new(v)));
        assert_eq!(parse("2.5"), Ok(2_500_000_000));
        assert_eq!(parse(" 0 "), Ok(0));
        assert_eq!(parse_gb(None), Ok(20_000_000_000));
        for bad in ["-1", "lots", "inf", ""] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains(MAX_GB_VARIABLE), "{error}");
        }
    }
}
