//! What crosses between a command's scratch folder and the artifact store: the
//! artifacts of earlier jobs it reads, what it writes, and the checkpoint a stopped
//! attempt leaves for the next one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use labelfleet_core::artifacts::ArtifactKey;
use labelfleet_core::job::{CommandSpec, Job};
use serde::{Deserialize, Serialize};

use crate::runner::{JobContext, JobFailure};

/// Where a stopped attempt's checkpoint index lies, among the job's artifacts.
const CHECKPOINT_INDEX: &str = "checkpoint/latest.json";

/// The index of a checkpoint: written after its files, so a reader never sees half
/// of one.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointIndex {
    attempt: u32,
    files: Vec<String>,
}

fn io_failure(what: &str, path: &Path, e: std::io::Error) -> JobFailure {
    JobFailure::new(format!("{what} {}: {e}", path.display()))
}

/// Writes the artifacts the job's `inputs` name into `dir`, each at
/// `<from>/<path>`; returns how many.
pub async fn fetch_inputs(
    job: &Job,
    spec: &CommandSpec,
    ctx: &JobContext,
    dir: &Path,
) -> Result<usize, JobFailure> {
    for (i, input) in spec.inputs.iter().enumerate() {
        let at = format!("command.inputs[{i}]");
        let (group, name) = input.source(&job.group_id);
        let entry = ctx.manifest_entry(group, name).await?.ok_or_else(|| {
            JobFailure::new(format!(
                "{at}: job {group}/{name} has not completed; list it in `after` so this job waits for it"
            ))
        })?;
        let target = dir.join(&input.from).join(&input.path);
        let Some(stored) = entry.artifacts.get(&input.path) else {
            let names: Vec<&str> = entry.artifacts.keys().map(String::as_str).collect();
            return Err(JobFailure::permanent(format!(
                "{at}: job {group}/{name} wrote no artifact `{}` (it has: {})",
                input.path,
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        };
        let stored = ArtifactKey::new(stored).map_err(|e| JobFailure::new(e.to_string()))?;
        if !fetch_file(ctx, &stored, &target).await? {
            return Err(JobFailure::new(format!(
                "{at}: artifact {stored} named by {group}/{name} is missing"
            )));
        }
    }
    Ok(spec.inputs.len())
}

/// Writes the checkpoint an earlier attempt left into `dir`; returns how many files,
/// or `None` when there is none.
pub async fn fetch_checkpoint(
    job: &Job,
    ctx: &JobContext,
    dir: &Path,
) -> Result<Option<usize>, JobFailure> {
    let Some(index) = read(ctx, &key(job, CHECKPOINT_INDEX)?).await? else {
        return Ok(None);
    };
    let index: CheckpointIndex = serde_json::from_slice(&index)
        .map_err(|e| JobFailure::new(format!("{CHECKPOINT_INDEX}: {e}")))?;
    for file in &index.files {
        let stored = key(job, &format!("checkpoint/attempt-{}/{file}", index.attempt))?;
        if !fetch_file(ctx, &stored, &dir.join(file)).await? {
            return Err(JobFailure::new(format!(
                "the checkpoint's file {stored} is missing"
            )));
        }
    }
    Ok(Some(index.files.len()))
}

/// Stores what a stopped attempt left in `dir` as the job's checkpoint; returns how
/// many files.
pub async fn store_checkpoint(
    job: &Job,
    ctx: &JobContext,
    dir: &Path,
) -> Result<usize, JobFailure> {
    let (files, _) = upload(
        job,
        ctx,
        dir,
        &format!("checkpoint/attempt-{}", ctx.attempt),
    )
    .await?;
    let index = CheckpointIndex {
        attempt: ctx.attempt,
        files: files.keys().cloned().collect(),
    };
    let bytes = serde_json::to_vec(&index).expect("an index serialises");
    ctx.write_artifact(job, CHECKPOINT_INDEX, bytes).await?;
    Ok(files.len())
}

/// Stores every file under `dir` as an artifact of the job under `prefix`; returns
/// each file's path in `dir` → its key, and their bytes in all. Links and other
/// special files are refused.
pub async fn upload(
    job: &Job,
    ctx: &JobContext,
    dir: &Path,
    prefix: &str,
) -> Result<(BTreeMap<String, String>, u64), JobFailure> {
    let (mut stored, mut bytes) = (BTreeMap::new(), 0);
    for relative in files_under(dir)? {
        let path = dir.join(&relative);
        bytes += std::fs::metadata(&path)
            .map_err(|e| io_failure("reading", &path, e))?
            .len();
        let key = ctx
            .write_artifact_file(job, &format!("{prefix}/{relative}"), &path)
            .await?;
        stored.insert(relative, key);
    }
    Ok((stored, bytes))
}

/// The files under `dir`, as `/`-separated relative paths, sorted.
pub fn files_under(dir: &Path) -> Result<Vec<String>, JobFailure> {
    let mut found = Vec::new();
    let mut pending: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let here = dir.join(&relative);
        let entries = std::fs::read_dir(&here).map_err(|e| io_failure("listing", &here, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_failure("listing", &here, e))?;
            let path = relative.join(entry.file_name());
            let kind = entry
                .file_type()
                .map_err(|e| io_failure("reading", &dir.join(&path), e))?;
            let text = path.to_string_lossy().into_owned();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                found.push(text);
            } else {
                return Err(JobFailure::new(format!(
                    "output `{text}` is a link or special file; write plain files only"
                )));
            }
        }
    }
    found.sort();
    Ok(found)
}

fn key(job: &Job, file: &str) -> Result<ArtifactKey, JobFailure> {
    job.artifact_key(file)
        .map_err(|e| JobFailure::new(format!("artifact {file}: {e}")))
}

async fn read(ctx: &JobContext, key: &ArtifactKey) -> Result<Option<Vec<u8>>, JobFailure> {
    ctx.artifacts
        .get(key)
        .await
        .map_err(|e| JobFailure::backend(format!("reading {key}: {e}")))
}

/// Writes an artifact into the file at `path`, streamed where the store can (a large
/// input never sits in the worker's memory whole); `false` if it is missing.
async fn fetch_file(ctx: &JobContext, key: &ArtifactKey, path: &Path) -> Result<bool, JobFailure> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| io_failure("creating", parent, e))?;
    }
    ctx.artifacts
        .get_file(key, path)
        .await
        .map_err(|e| JobFailure::backend(format!("reading {key}: {e}")))
}
