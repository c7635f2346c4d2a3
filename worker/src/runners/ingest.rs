//! `ingest` jobs: raw interaction logs into a de-duplicated dataset on a worker, so
//! that a log-to-dataset step can sit in a chain (collect → ingest → annotate → …).
//! The archives are an earlier job's artifacts named `…/logs.tar.gz` (a session per
//! folder) or a folder on the worker; the dataset is written as parquet, JSON lines and
//! a stats summary, all artifacts of the job.

use async_trait::async_trait;
use labelfleet_core::artifacts::ArtifactKey;
use labelfleet_core::job::{IngestSpec, Job, JobBody, JobKind};
use labelfleet_ingest::{
    ARCHIVE, Ingester, LogRow, Stats, ingest_folder, write_jsonl, write_parquet,
};
use serde_json::json;

use crate::runner::{JobContext, JobFailure, JobOutput, JobRunner};

/// The dataset's parquet file, as the Hugging Face Hub lays a split out.
pub const PARQUET: &str = "data/train-00000-of-00001.parquet";

/// Runs `ingest` jobs.
pub struct IngestRunner;

/// Reads the archives an earlier job wrote: its artifacts named `logs.tar.gz` or
/// `…/logs.tar.gz`, one session per folder.
async fn from_artifacts(
    job: &Job,
    spec: &IngestSpec,
    ctx: &JobContext,
) -> Result<(Vec<LogRow>, Stats), JobFailure> {
    let (group, name) = spec.source(&job.group_id).expect("checked: `from` is set");
    let entry = ctx.manifest_entry(group, name).await?.ok_or_else(|| {
        JobFailure::new(format!(
            "ingest.from: {group}/{name} has not completed (it is one of `after`, so the job \
             was sent by hand too early)"
        ))
    })?;
    let archives: Vec<(&String, &String)> = entry
        .artifacts
        .iter()
        .filter(|(role, _)| *role == ARCHIVE || role.ends_with(&format!("/{ARCHIVE}")))
        .collect();
    if archives.is_empty() {
        let roles: Vec<&str> = entry.artifacts.keys().map(String::as_str).collect();
        return Err(JobFailure::permanent(format!(
            "ingest.from: {group}/{name} wrote no artifact named …/{ARCHIVE} (it wrote: {})",
            roles.join(", ")
        )));
    }
    let mut ingester = Ingester::new(&spec.csv, &spec.text_column);
    for (i, (role, key)) in archives.iter().enumerate() {
        ctx.check_cancelled()?;
        let session = role
            .strip_suffix(ARCHIVE)
            .unwrap_or_default()
            .trim_end_matches('/');
        let key = ArtifactKey::new(key.as_str()).map_err(|e| JobFailure::new(e.to_string()))?;
        let bytes = ctx
            .artifacts
            .get(&key)
            .await
            .map_err(|e| JobFailure::backend(format!("reading {key}: {e}")))?;
        match bytes {
            Some(bytes) => ingester.add_archive(session, key.as_str(), &bytes),
            None => ingester.skip_archive(key.as_str(), "named by the entry, but missing"),
        }
        ctx.progress
            .set(format!("{}/{} archives read", i + 1, archives.len()));
    }
    Ok(ingester.finish())
}

#[async_trait]
impl JobRunner for IngestRunner {
    fn kind(&self) -> JobKind {
        JobKind::Ingest
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<JobOutput, JobFailure> {
        let JobBody::Ingest(spec) = &job.body else {
            return Err(JobFailure::new("not an ingest job"));
        };
        let (rows, stats) = match &spec.path {
            Some(folder) => {
                let root = std::path::PathBuf::from(folder);
                if !root.is_dir() {
                    return Err(JobFailure::permanent(format!(
                        "ingest.path: {folder} is not a folder on this worker"
                    )));
                }
                let (csv, column) = (spec.csv.clone(), spec.text_column.clone());
                tokio::task::spawn_blocking(move || ingest_folder(&root, &csv, &column))
                    .await
                    .map_err(|e| JobFailure::new(format!("ingesting: {e}")))?
                    .map_err(|e| JobFailure::new(format!("ingest.path: {e:#}")))?
            }
            None => from_artifacts(job, spec, ctx).await?,
        };
        let scratch = tempfile::tempdir()
            .map_err(|e| JobFailure::new(format!("creating a scratch folder: {e}")))?;
        let parquet = scratch.path().join("train.parquet");
        let jsonl = scratch.path().join("rows.jsonl");
        write_parquet(&parquet, &rows).map_err(|e| JobFailure::new(format!("{e:#}")))?;
        write_jsonl(&jsonl, &rows).map_err(|e| JobFailure::new(format!("{e:#}")))?;
        let mut output = JobOutput::default();
        for (role, file, path) in [
            ("dataset", PARQUET, &parquet),
            ("rows", "rows.jsonl", &jsonl),
        ] {
            let key = ctx.write_artifact_file(job, file, path).await?;
            output.artifacts.insert(role.to_string(), key);
        }
        let key = ctx
            .write_artifact(
                job,
                "stats.json",
                serde_json::to_vec_pretty(&stats).expect("stats serialise"),
            )
            .await?;
        output.artifacts.insert("stats".to_string(), key);
        tracing::info!(job = %job.key(), archives = stats.archives, kept = stats.rows_kept, duplicates = stats.duplicates, "logs ingested");
        output.counts = [
            ("archives".to_string(), stats.archives as u64),
            ("rows_read".to_string(), stats.rows_read as u64),
            ("rows_kept".to_string(), stats.rows_kept as u64),
        ]
        .into();
        output.metrics = json!({
            "rows_kept": stats.rows_kept,
            "duplicates": stats.duplicates,
            "duplicate_rate": stats.duplicate_rate,
            "average_text_length": stats.average_text_length,
            "bad_archives": stats.bad_archives.len(),
            "bad_rows": stats.bad_rows.len(),
        });
        Ok(output)
    }
}
