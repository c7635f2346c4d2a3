//! Reading interaction logs, as droidlet's `process_s3_logs.py` does: every
//! `logs.tar.gz` (from a folder, an S3 prefix or an earlier job's artifacts) is
//! unpacked in memory by an [`Ingester`], the named pipe-delimited CSV in it is read,
//! each row is tagged with its session (the archive's folder), and rows whose command
//! text repeats (case-insensitively, ignoring surrounding spaces) are dropped. A bad
//! archive or a bad row is reported and skipped, never fatal.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

/// The archive name looked for.
pub const ARCHIVE: &str = "logs.tar.gz";

/// One kept row: its session and its fields by column.
#[derive(Debug, Clone)]
pub struct LogRow {
    /// The folder the archive was in, relative to the root.
    pub session: String,
    /// Column → value.
    pub fields: BTreeMap<String, String>,
}

/// What ingestion found and did.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    /// Archives found.
    pub archives: usize,
    /// Archives that could not be read (corrupt, or without the CSV); each with why.
    pub bad_archives: Vec<String>,
    /// Rows read from the CSVs.
    pub rows_read: usize,
    /// Rows skipped as malformed; each with where and why.
    pub bad_rows: Vec<String>,
    /// Rows dropped because their text repeated an earlier row's.
    pub duplicates: usize,
    /// Rows written.
    pub rows_kept: usize,
    /// duplicates / (rows read − bad rows).
    pub duplicate_rate: f64,
    /// Mean length of the kept rows' text, in characters.
    pub average_text_length: f64,
    /// Kept rows per session.
    pub rows_per_session: BTreeMap<String, usize>,
}

impl Stats {
    /// Records an archive that cannot be read, and why (it was counted already).
    fn reject_archive(&mut self, place: &str, why: &str) {
        tracing::warn!(archive = place, why, "skipping a bad archive");
        self.bad_archives.push(format!("{place}: {why}"));
    }
}

/// Every `logs.tar.gz` below `root`, sorted.
pub fn find_archives(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == ARCHIVE) {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The CSV named `csv_name` inside a gzipped tarball's bytes.
fn csv_in_archive(gzipped: &[u8], csv_name: &str) -> Result<Vec<u8>, String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gzipped));
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar.gz: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("corrupt archive: {e}"))?;
        let name = entry.path().map_err(|e| e.to_string())?.into_owned();
        if name.file_name().is_some_and(|n| n == csv_name) {
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| format!("corrupt archive: {e}"))?;
            return Ok(bytes);
        }
    }
    Err(format!("no {csv_name} inside"))
}

/// The key a row's text is de-duplicated by.
fn dedup_key(text: &str) -> String {
    text.trim().to_lowercase()
}

/// Reads archives one at a time, wherever they come from (a folder, an S3 prefix),
/// keeping the rows whose text has not been seen in this or an earlier archive.
pub struct Ingester {
    csv_name: String,
    text_column: String,
    rows: Vec<LogRow>,
    seen: HashSet<String>,
    stats: Stats,
}

impl Ingester {
    /// An ingester of `csv_name` (pipe-delimited, with a header) inside each archive,
    /// de-duplicating on `text_column`.
    pub fn new(csv_name: &str, text_column: &str) -> Ingester {
        Ingester {
            csv_name: csv_name.to_string(),
            text_column: text_column.to_string(),
            rows: Vec::new(),
            seen: HashSet::new(),
            stats: Stats::default(),
        }
    }

    /// Reads one archive: `gzipped` is the `logs.tar.gz` of `session`, found at `place`
    /// (a path or URL, for messages). A bad archive or row is recorded and skipped.
    pub fn add_archive(&mut self, session: &str, place: &str, gzipped: &[u8]) {
        let (csv_name, text_column) = (self.csv_name.as_str(), self.text_column.as_str());
        let stats = &mut self.stats;
        stats.archives += 1;
        let bytes = match csv_in_archive(gzipped, csv_name) {
            Ok(bytes) => bytes,
            Err(why) => return stats.reject_archive(place, &why),
        };
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(b'|')
            .flexible(false)
            .from_reader(bytes.as_slice());
        let header: Vec<String> = match reader.headers() {
            Ok(h) => h.iter().map(|c| c.trim().to_string()).collect(),
            Err(e) => return stats.reject_archive(place, &format!("unreadable header: {e}")),
        };
        let Some(text_at) = header.iter().position(|c| c == text_column) else {
            let why = format!(
                "{csv_name} has no `{text_column}` column (columns: {})",
                header.join(", ")
            );
            stats.reject_archive(place, &why);
            return;
        };
        for (line, record) in reader.records().enumerate() {
            stats.rows_read += 1;
            let at = format!("{session}/{csv_name} row {}", line + 1);
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    stats.bad_rows.push(format!("{at}: {e}"));
                    continue;
                }
            };
            let text = record.get(text_at).unwrap_or("").trim();
            if text.is_empty() {
                stats.bad_rows.push(format!("{at}: empty `{text_column}`"));
                continue;
            }
            if !self.seen.insert(dedup_key(text)) {
                stats.duplicates += 1;
                continue;
            }
            let fields = header
                .iter()
                .cloned()
                .zip(record.iter().map(|v| v.trim().to_string()))
                .collect();
            *stats
                .rows_per_session
                .entry(session.to_string())
                .or_default() += 1;
            self.rows.push(LogRow {
                session: session.to_string(),
                fields,
            });
        }
    }

    /// Counts an archive that could not even be fetched, and why.
    pub fn skip_archive(&mut self, place: &str, why: &str) {
        self.stats.archives += 1;
        self.stats.reject_archive(place, why);
    }

    /// The kept rows and the summary of everything read.
    pub fn finish(self) -> (Vec<LogRow>, Stats) {
        let Ingester {
            rows,
            mut stats,
            text_column,
            ..
        } = self;
        stats.rows_kept = rows.len();
        let valid = stats.rows_read - stats.bad_rows.len();
        stats.duplicate_rate = if valid == 0 {
            0.0
        } else {
            stats.duplicates as f64 / valid as f64
        };
        stats.average_text_length = if rows.is_empty() {
            0.0
        } else {
            rows.iter()
                .map(|r| r.fields[&text_column].chars().count())
                .sum::<usize>() as f64
                / rows.len() as f64
        };
        (rows, stats)
    }
}

/// Reads every archive under the folder `root`; a session is an archive's folder
/// relative to `root`.
pub fn ingest_folder(
    root: &Path,
    csv_name: &str,
    text_column: &str,
) -> anyhow::Result<(Vec<LogRow>, Stats)> {
    let mut ingester = Ingester::new(csv_name, text_column);
    for archive in find_archives(root)? {
        let session = archive
            .parent()
            .and_then(|p| p.strip_prefix(root).ok())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let place = archive.display().to_string();
        match std::fs::read(&archive) {
            Ok(bytes) => ingester.add_archive(&session, &place, &bytes),
            Err(e) => ingester.skip_archive(&place, &e.to_string()),
        }
    }
    Ok(ingester.finish())
}
