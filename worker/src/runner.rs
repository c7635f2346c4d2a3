//! The job runner contract and the registry of runners.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use labelfleet_core::artifacts::{ArtifactKey, ArtifactStore};

use crate::heartbeat::Lease;
use crate::runners::command::AllowList;
use crate::runners::models::ModelCache;
use labelfleet_core::job::{Job, JobKind, ModelRef};
use labelfleet_manifest::{Manifest, ManifestEntry, ManifestKey};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// What a runner gets besides the job.
#[derive(Clone)]
pub struct JobContext {
    /// Where to write artifacts.
    pub artifacts: Arc<dyn ArtifactStore>,
    /// The manifest, to read earlier runs (predictions of a group, examples, …).
    pub manifest: Arc<dyn Manifest>,
    /// Cancelled when the job must stop early (shutdown, or its lease was lost).
    pub cancel: CancellationToken,
    /// Cancelled as soon as the worker is asked to stop (SIGTERM: a spot machine is
    /// going away). A job that can save its progress should do so, then return
    /// [`JobFailure::interrupted`]; the worker releases it for another worker at once,
    /// without counting a failure. Jobs that ignore it run on for the grace period.
    pub stop: CancellationToken,
    /// Which delivery of the job this is (1 for the first).
    pub attempt: u32,
    /// Where the job says how far it has got; the worker shows it in `status`.
    pub progress: Progress,
    /// The device the worker was pinned to (`worker --device cuda:1`), if any.
    pub device: Option<String>,
    /// The worker's lease on the job's message; `None` outside a queue (`labelfleet
    /// run`). Once it is lost the job writes nothing more: another worker holds it.
    pub lease: Option<Lease>,
}

/// A running job's latest word on its progress, shared with the worker that reports it.
#[derive(Clone, Default, Debug)]
pub struct Progress(Arc<std::sync::Mutex<Option<String>>>);

impl Progress {
    /// Replaces the progress line.
    pub fn set(&self, line: impl Into<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(line.into());
    }

    /// The latest line, if any.
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Forgets the line (the job ended).
    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl JobContext {
    /// Whether the job may still write: its worker holds the message's lease.
    pub fn holds_lease(&self) -> bool {
        self.lease.as_ref().is_none_or(Lease::held)
    }

    /// The key of `job`'s artifact `file`, refused once the lease is lost, so that two
    /// workers never write the same keys.
    fn writable_key(&self, job: &Job, file: &str) -> Result<ArtifactKey, JobFailure> {
        let key = job
            .artifact_key(file)
            .map_err(|e| JobFailure::new(format!("artifact {file}: {e}")))?;
        if !self.holds_lease() {
            return Err(JobFailure::new(format!(
                "not writing artifact {key}: this worker lost the job's lease, and another may hold it now"
            )));
        }
        Ok(key)
    }

    /// Writes an artifact of `job` named `file`; returns its key. Refused once the
    /// lease is lost, so that two workers never write the same keys.
    pub async fn write_artifact(
        &self,
        job: &Job,
        file: &str,
        bytes: Vec<u8>,
    ) -> Result<String, JobFailure> {
        let key = self.writable_key(job, file)?;
        self.artifacts
            .put(&key, bytes)
            .await
            .map_err(|e| JobFailure::backend(format!("writing artifact {key}: {e}")))?;
        Ok(key.as_str().to_string())
    }

    /// As [`JobContext::write_artifact`], from the file at `path`, which stores that can
    /// stream (S3, the embedded files) never hold in memory whole.
    pub async fn write_artifact_file(
        &self,
        job: &Job,
        file: &str,
        path: &std::path::Path,
    ) -> Result<String, JobFailure> {
        let key = self.writable_key(job, file)?;
        self.artifacts
            .put_file(&key, path)
            .await
            .map_err(|e| JobFailure::backend(format!("writing artifact {key}: {e}")))?;
        Ok(key.as_str().to_string())
    }

    /// Removes `job`'s artifact `file` (one that is not there is not an error). Refused
    /// once the lease is lost, as writes are: another worker may be writing it now.
    pub async fn delete_artifact(&self, job: &Job, file: &str) -> Result<(), JobFailure> {
        let key = self.writable_key(job, file)?;
        self.artifacts
            .delete(&key)
            .await
            .map_err(|e| JobFailure::backend(format!("removing artifact {key}: {e}")))
    }

    /// The manifest entry of `group/run`, if that job has completed.
    pub async fn manifest_entry(
        &self,
        group: &str,
        run: &str,
    ) -> Result<Option<ManifestEntry>, JobFailure> {
        let key = ManifestKey {
            group_id: group.to_string(),
            run_id: run.to_string(),
        };
        self.manifest.get(&key).await.map_err(|e| {
            JobFailure::backend(format!("reading the manifest entry {group}/{run}: {e}"))
        })
    }

    /// The artifact an earlier job's manifest entry names under `role` (`None` when the
    /// entry names none), with its key; a named artifact that is missing is an error.
    pub async fn read_entry_artifact(
        &self,
        entry: &ManifestEntry,
        role: &str,
    ) -> Result<Option<(ArtifactKey, Vec<u8>)>, JobFailure> {
        let Some(key) = entry.artifacts.get(role) else {
            return Ok(None);
        };
        let key = ArtifactKey::new(key).map_err(|e| JobFailure::new(e.to_string()))?;
        let bytes = self
            .artifacts
            .get(&key)
            .await
            .map_err(|e| JobFailure::backend(format!("reading {key}: {e}")))?
            .ok_or_else(|| {
                JobFailure::new(format!(
                    "artifact {key} named by {} is missing",
                    entry.key()
                ))
            })?;
        Ok(Some((key, bytes)))
    }

    /// `model` on the device this worker was pinned to, if it was: a fleet runs the
    /// same job files on every GPU, and each worker picks its own. Runners load every
    /// model through this.
    pub fn place(&self, model: &ModelRef) -> ModelRef {
        match &self.device {
            Some(device) => ModelRef {
                device: device.clone(),
                ..model.clone()
            },
            None => model.clone(),
        }
    }

    /// Fails if the job has been cancelled; call between steps of long work.
    pub fn check_cancelled(&self) -> Result<(), JobFailure> {
        if self.cancel.is_cancelled() {
            Err(JobFailure::new("cancelled before it finished"))
        } else {
            Ok(())
        }
    }

    /// As [`JobContext::check_cancelled`], and also stops (as interrupted) when the
    /// worker is stopping: call right after saving progress.
    pub fn check_stopping(&self) -> Result<(), JobFailure> {
        self.check_cancelled()?;
        if self.stop.is_cancelled() {
            Err(JobFailure::interrupted(
                "stopped for the worker's shutdown after saving its progress",
            ))
        } else {
            Ok(())
        }
    }
}

/// What a finished job reports for its manifest entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobOutput {
    /// Counts of what it processed.
    pub counts: BTreeMap<String, u64>,
    /// Its headline metrics (an object, or null).
    pub metrics: Value,
    /// Artifacts by role → key.
    pub artifacts: BTreeMap<String, String>,
}

/// A job that failed, with a message that says what went wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JobFailure {
    /// What went wrong.
    pub message: String,
    /// The job stopped because the worker is stopping, after saving its progress: not
    /// a failure of the job, and it should run again elsewhere at once.
    pub interrupted: bool,
    /// A backend failed the job (the artifact store or manifest could not be reached):
    /// the worker's trouble, not the job's; the worker gives the job back and stops
    /// receiving until its backends answer again.
    pub backend: bool,
    /// Retrying cannot help (the job names a program this worker does not allow): the
    /// job is dead-lettered at once.
    pub permanent: bool,
    /// The job's program said its failure is temporary (exit status 75, EX_TEMPFAIL):
    /// retried with backoff like any failure, but not counted against the job in the
    /// worker's figures.
    pub transient: bool,
}

impl JobFailure {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> JobFailure {
        JobFailure {
            message: labelfleet_core::text::capped(&message.into()),
            interrupted: false,
            backend: false,
            permanent: false,
            transient: false,
        }
    }

    /// A failure that no retry can mend: the job is dead-lettered at once.
    pub fn permanent(message: impl Into<String>) -> JobFailure {
        JobFailure {
            permanent: true,
            ..JobFailure::new(message)
        }
    }

    /// A failure its program called temporary.
    pub fn transient(message: impl Into<String>) -> JobFailure {
        JobFailure {
            transient: true,
            ..JobFailure::new(message)
        }
    }

    /// The job saved its progress and stopped because the worker is stopping.
    pub fn interrupted(message: impl Into<String>) -> JobFailure {
        JobFailure {
            interrupted: true,
            ..JobFailure::new(message)
        }
    }

    /// A backend the job needed failed.
    pub fn backend(message: impl Into<String>) -> JobFailure {
        JobFailure {
            backend: true,
            ..JobFailure::new(message)
        }
    }
}

/// Runs one kind of job. A runner lives as long as the worker, so it can cache models
/// and datasets across jobs.
#[async_trait]
pub trait JobRunner: Send + Sync {
    /// The kind of job it runs.
    fn kind(&self) -> JobKind;

    /// Runs a job: reads its inputs, writes its artifacts, and reports its output.
    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<JobOutput, JobFailure>;

    /// Whether jobs of this kind write artifacts; their folder then also gets the job's
    /// `job.json` (config and provenance). Jobs without artifacts keep their provenance
    /// in the manifest entry alone.
    fn writes_artifacts(&self) -> bool {
        true
    }
}

/// The runners of a worker, one per kind.
#[derive(Clone, Default)]
pub struct Runners {
    by_kind: HashMap<JobKind, Arc<dyn JobRunner>>,
}

impl Runners {
    /// Every runner this build of labelfleet has, loading their models through the
    /// worker's one cache and running the programs `commands` allows: the one place
    /// runners are registered.
    pub fn standard(models: Arc<ModelCache>, commands: AllowList) -> Runners {
        use crate::runners::{command, eval, ingest, noop, retrain, self_label, tune};
        let mut runners = Runners::default();
        runners.register(Arc::new(command::CommandRunner::new(commands)));
        runners.register(Arc::new(eval::EvalRunner::new(models.clone())));
        runners.register(Arc::new(ingest::IngestRunner));
        runners.register(Arc::new(noop::NoopRunner));
        runners.register(Arc::new(retrain::RetrainRunner));
        runners.register(Arc::new(tune::TuneRunner));
        runners.register(Arc::new(self_label::SelfLabelRunner::new(models)));
        runners
    }

    /// Adds (or replaces) the runner for its kind.
    pub fn register(&mut self, runner: Arc<dyn JobRunner>) {
        self.by_kind.insert(runner.kind(), runner);
    }

    /// The runner for a kind.
    pub fn get(&self, kind: JobKind) -> Option<Arc<dyn JobRunner>> {
        self.by_kind.get(&kind).cloned()
    }
}
