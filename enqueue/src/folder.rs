//! Loading and validating every job file of a folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use labelfleet_core::job::{Job, JobError, ProvenancePolicy, parse_json};
use labelfleet_core::overrides::{self, Override};

/// A job read from a file.
#[derive(Debug, Clone)]
pub struct LoadedJob {
    /// The file it came from.
    pub source: PathBuf,
    /// The validated job, overrides applied.
    pub job: Job,
}

/// Every problem found in a folder; nothing is sent while there is one.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.describe())]
pub struct FolderErrors {
    /// The problems, one per file or duplicate.
    pub errors: Vec<JobError>,
}

impl FolderErrors {
    fn describe(&self) -> String {
        let mut text = format!(
            "{} problem{} found; nothing was enqueued:",
            self.errors.len(),
            if self.errors.len() == 1 { "" } else { "s" }
        );
        for e in &self.errors {
            text.push_str(&format!("\n  - {e}"));
        }
        text
    }
}

/// Lists the job files under `dir`: every `*.json`, recursively, sorted, skipping
/// hidden files and folders.
pub fn job_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if entry.file_type()?.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Reads one job file and applies overrides; `mini` marks the job as a smoke test.
pub fn load_file(path: &Path, overrides: &[Override], mini: bool) -> Result<Job, JobError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| JobError {
        file: file.clone(),
        path: "(top level)".into(),
        message: format!("cannot read the file: {e}"),
    })?;
    let document = parse_json(&text, &file)?;
    let stem = path.file_stem().and_then(|s| s.to_str());
    let validate = |v: &serde_json::Value| {
        Job::parse(v.clone(), &file, stem, ProvenancePolicy::Reject).map(|_| ())
    };
    let resolved = overrides::apply(&document, overrides, &file, validate)?;
    let mut job = Job::parse(resolved, &file, stem, ProvenancePolicy::Reject)?;
    job.mini |= mini;
    Ok(job)
}

/// Loads and validates every job under `dir`, reporting all problems at once: invalid
/// files, and two files that define the same job.
pub fn load_folder(
    dir: &Path,
    overrides: &[Override],
    mini: bool,
) -> Result<Vec<LoadedJob>, FolderErrors> {
    let folder = dir.display().to_string();
    let files = job_files(dir).map_err(|e| FolderErrors {
        errors: vec![JobError {
            file: folder.clone(),
            path: "(top level)".into(),
            message: format!("cannot read the folder: {e}"),
        }],
    })?;
    if files.is_empty() {
        return Err(FolderErrors {
            errors: vec![JobError {
                file: folder,
                path: "(top level)".into(),
                message: "no job files (*.json) in this folder".into(),
            }],
        });
    }
    let mut errors = Vec::new();
    let mut jobs = Vec::new();
    let mut seen: HashMap<(String, String), PathBuf> = HashMap::new();
    for path in files {
        // A tune file becomes its trial jobs and itself.
        let loaded = load_file(&path, overrides, mini)
            .and_then(|job| labelfleet_core::job::tune::expand(job, &path.display().to_string()));
        match loaded {
            Ok(expanded) => {
                for job in expanded {
                    let key = (job.group_id.clone(), job.name.clone());
                    if let Some(first) = seen.get(&key) {
                        errors.push(JobError {
                            file: path.display().to_string(),
                            path: "name".into(),
                            message: format!(
                                "job `{}` of group `{}` is already defined by {}; names are unique within a group",
                                job.name,
                                job.group_id,
                                first.display()
                            ),
                        });
                        continue;
                    }
                    seen.insert(key, path.clone());
                    jobs.push(LoadedJob {
                        source: path.clone(),
                        job,
                    });
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(jobs)
    } else {
        Err(FolderErrors { errors })
    }
}
