//! Models saved by `retrain` jobs, named in other jobs as `"checkpoint": "group/job"`:
//! their files are fetched from the artifact store into a local cache folder, which
//! then loads like any model folder. A finished job's model is fetched once per
//! machine and reused by every later job.

use std::path::{Path, PathBuf};

use labelfleet_core::artifacts::ArtifactKey;
use labelfleet_core::job::{ModelRef, PromptMode};
use serde::{Deserialize, Serialize};

use crate::runner::{JobContext, JobFailure};
use crate::runners::checkpoint_cache;

/// The artifact folder of a retrain job's final model, under `{group}/{job}/`.
pub const FINAL_MODEL: &str = "model";
/// The artifact folder of a retrain job's best model by validation loss.
pub const BEST_MODEL: &str = "best";

/// The file in a saved model's folder that holds what labelfleet knows of it.
pub const MODEL_METADATA: &str = "labelfleet.json";

/// What a `retrain` job records beside the model it saves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// The prompt the model was trained to complete: the one to label with.
    pub prompt: PromptMode,
    /// The job that trained it (`group/name`).
    pub trained_by: String,
}

/// Writes `metadata` into the model folder `dir`; returns the file written.
pub fn write_metadata(dir: &Path, metadata: &ModelMetadata) -> Result<PathBuf, JobFailure> {
    let path = dir.join(MODEL_METADATA);
    let bytes = serde_json::to_vec_pretty(metadata).expect("metadata serialises");
    std::fs::write(&path, bytes)
        .map_err(|e| JobFailure::new(format!("writing {}: {e}", path.display())))?;
    Ok(path)
}

/// The metadata of a local model (a folder with [`MODEL_METADATA`]), if it has any.
pub fn read_metadata(model: &ModelRef) -> Result<Option<ModelMetadata>, JobFailure> {
    let Some(path) = &model.path else {
        return Ok(None);
    };
    let file = Path::new(path).join(MODEL_METADATA);
    match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            JobFailure::new(format!(
                "{}: not labelfleet's model metadata: {e}",
                file.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(None),
        Err(e) => Err(JobFailure::new(format!("reading {}: {e}", file.display()))),
    }
}

/// The prompt to label `model` with: the one the job names, else the one the model was
/// trained with, else `in_context`. A job that names another prompt than the model's
/// fails, naming both (`at` is the job's field).
pub fn prompt_for(
    asked: Option<PromptMode>,
    model: &ModelRef,
    at: &str,
) -> Result<PromptMode, JobFailure> {
    let trained = read_metadata(model)?;
    match (asked, trained) {
        (Some(asked), Some(meta)) if asked != meta.prompt => Err(JobFailure::new(format!(
            "`{at}` is `{}`, but the model was trained by {} on the `{}` prompt: leave `{at}` out to use the model's, or name `{}`",
            asked.as_str(),
            meta.trained_by,
            meta.prompt.as_str(),
            meta.prompt.as_str()
        ))),
        (Some(asked), _) => Ok(asked),
        (None, Some(meta)) => Ok(meta.prompt),
        (None, None) => Ok(PromptMode::InContext),
    }
}

/// Where fetched checkpoints are kept: `$LABELFLEET_CACHE_DIR`, else a folder in the
/// system's temporary directory.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("LABELFLEET_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("labelfleet-cache"))
}

/// `model` with a `checkpoint` replaced by the local folder its files were fetched
/// into; any other model is returned as it is.
pub async fn materialize(model: &ModelRef, ctx: &JobContext) -> Result<ModelRef, JobFailure> {
    let Some(checkpoint) = &model.checkpoint else {
        return Ok(model.clone());
    };
    let (group, job) = (checkpoint.group_id.as_str(), checkpoint.job.as_str());
    let folder = if checkpoint.best {
        BEST_MODEL
    } else {
        FINAL_MODEL
    };
    // The entry says which run of the job is current: a rerun's files are under
    // `rerun-N/`.
    let entry = ctx.manifest_entry(group, job).await?;
    let rerun = entry
        .as_ref()
        .and_then(|e| e.provenance.as_ref())
        .map_or(0, |p| p.rerun);
    let prefix = match rerun {
        0 => format!("{group}/{job}/{folder}"),
        n => format!("{group}/{job}/rerun-{n}/{folder}"),
    };
    let keys = ctx
        .artifacts
        .list(&prefix)
        .await
        .map_err(|e| JobFailure::new(format!("listing checkpoint {prefix}: {e}")))?;
    if keys.is_empty() {
        return Err(JobFailure::new(format!(
            "checkpoint `{checkpoint}` has no files under {prefix}; is {group}/{job} a finished retrain job? (list it in `after`)"
        )));
    }
    // A folder per store and per finished run of the job: two fleets on one machine may
    // both have a `demo/train`, and a job that ran again (a new home) saved a new model.
    // A finished run's files never change, so once fetched they are reused.
    let version = match &entry {
        Some(e) => short_hash(&format!("{} {} {}", e.completed_at, e.worker, e.attempt)),
        None => format!("unfinished-{}", std::process::id()),
    };
    let local = cache_dir()
        .join("checkpoints")
        .join(short_hash(&ctx.artifacts.describe()))
        .join(&prefix)
        .join(version);
    let complete = local.join(checkpoint_cache::COMPLETE);
    let mut resolved = model.clone();
    resolved.checkpoint = None;
    resolved.path = Some(local.display().to_string());
    let max_bytes = checkpoint_cache::max_bytes().map_err(JobFailure::new)?;
    if entry.is_some() && complete.exists() {
        tracing::info!(checkpoint = %checkpoint, folder = %local.display(), "checkpoint already fetched");
        // Its last use, for the cache's bound; a failure only makes it look older.
        let _ = checkpoint_cache::touch(&local);
        return Ok(resolved);
    }
    std::fs::create_dir_all(&local)
        .map_err(|e| JobFailure::new(format!("creating {}: {e}", local.display())))?;
    for key in keys {
        let name = key
            .as_str()
            .rsplit('/')
            .next()
            .expect("keys have a last segment")
            .to_string();
        // Write beside, then rename: a worker reading the folder never sees half a file.
        let target = local.join(&name);
        let partial = local.join(format!(".{name}.{}.partial", std::process::id()));
        if let Err(e) = fetch(&key, &partial, ctx).await {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        std::fs::rename(&partial, &target)
            .map_err(|e| JobFailure::new(format!("writing {}: {e}", target.display())))?;
    }
    if entry.is_some() {
        std::fs::write(&complete, b"")
            .map_err(|e| JobFailure::new(format!("writing {}: {e}", complete.display())))?;
    }
    tracing::info!(checkpoint = %checkpoint, folder = %local.display(), "checkpoint fetched");
    keep_cache_bounded(&local, max_bytes);
    Ok(resolved)
}

/// Removes the least recently used fetched models beyond the cache's bound, keeping
/// `local` (about to be loaded). A cache that cannot be read is only reported: the job
/// has its model.
fn keep_cache_bounded(local: &Path, max_bytes: u64) {
    let root = cache_dir().join("checkpoints");
    let now = std::time::SystemTime::now();
    match checkpoint_cache::evict(&root, local, max_bytes, now, checkpoint_cache::RECENT) {
        Ok(evicted) if evicted.entries > 0 => tracing::info!(
            removed = evicted.entries,
            removed_gb = evicted.bytes as f64 / 1e9,
            left_gb = evicted.left as f64 / 1e9,
            max_gb = max_bytes as f64 / 1e9,
            "removed the least recently used checkpoints from the cache"
        ),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(folder = %root.display(), "could not check the checkpoint cache's size: {e}")
        }
    }
}

/// 12 hex digits of the SHA-256 of `text`: a short, stable folder name.
fn short_hash(text: &str) -> String {
    labelfleet_core::hash::short_sha256_hex(text.as_bytes(), 12)
}

/// Copies artifact `key` into the file at `path`, streamed where the store can (a
/// model's weights are gigabytes: read whole, they would sit in the worker's memory
/// beside the model it loads from them).
async fn fetch(key: &ArtifactKey, path: &Path, ctx: &JobContext) -> Result<(), JobFailure> {
    let found = ctx
        .artifacts
        .get_file(key, path)
        .await
        .map_err(|e| JobFailure::new(format!("reading {key} into {}: {e}", path.display())))?;
    if !found {
        return Err(JobFailure::new(format!(
            "{key} vanished while it was being fetched"
        )));
    }
    Ok(())
}
