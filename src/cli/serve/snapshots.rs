//! What the pages read from the backends, each kind cached for a few seconds (see
//! [`Cache`]): the fleet's status, a group's jobs and entries, a job's registration,
//! files and attempts, and JSON artifacts.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use labelfleet_core::artifacts::ArtifactKey;
use labelfleet_core::board::{BoardJob, GroupJob};
use labelfleet_core::job::{Job, JobKey};
use labelfleet_core::queue::Envelope;
use labelfleet_manifest::{ManifestEntry, ManifestKey, list_all};
use labelfleet_worker::Backends;
use labelfleet_worker::runners::labelling::RUNNING_LOG;
use serde_json::Value;

use super::cache::Cache;
use crate::cli::status::{StatusArgs, gather};

/// Dead letters the fleet page lists.
const DEAD_LETTERS_SHOWN: usize = 50;

/// A group as its pages show it.
pub struct GroupView {
    /// The jobs registered on the board, by name.
    pub jobs: Vec<GroupJob>,
    /// The manifest entries (finished jobs), by run.
    pub entries: Vec<ManifestEntry>,
}

/// One job as its page shows it.
pub struct JobView {
    /// Its registration on the board, if it was enqueued (held or sent).
    pub registration: Option<BoardJob>,
    /// The job as its registration's message holds it (config, provenance, rerun).
    pub job: Option<Job>,
    /// Its manifest entry, if it finished.
    pub entry: Option<ManifestEntry>,
    /// Earlier entries that `enqueue --rerun` superseded, oldest first.
    pub history: Vec<ManifestEntry>,
    /// Every file under its prefix.
    pub files: Vec<ArtifactKey>,
    /// Its failed attempts, as the workers recorded them (`attempts/NNN.json`).
    pub attempts: Vec<Value>,
}

impl JobView {
    /// The artifact holding its labelled turns: the entry's `labels` once it finished,
    /// else the running log its current run (a rerun's own folder) has written so far.
    pub fn labels_key(&self) -> Option<String> {
        if let Some(entry) = &self.entry {
            return entry.artifacts.get("labels").cloned();
        }
        let log = self.job.as_ref()?.artifact_key(RUNNING_LOG).ok()?;
        self.files.contains(&log).then(|| log.as_str().to_string())
    }
}

/// The backends and a cache per kind of read.
pub struct Snapshots {
    backends: Backends,
    fleet: Cache<Value>,
    groups: Cache<GroupView>,
    jobs: Cache<JobView>,
    json: Cache<Value>,
}

impl Snapshots {
    /// Reads through `backends`, keeping what was read for `ttl`.
    pub fn new(backends: Backends, ttl: Duration) -> Snapshots {
        Snapshots {
            backends,
            fleet: Cache::new(ttl),
            groups: Cache::new(ttl),
            jobs: Cache::new(ttl),
            json: Cache::new(ttl),
        }
    }

    /// The backends, for reads that are not cached (an artifact download).
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// What `labelfleet status --json` prints.
    pub async fn fleet(&self) -> anyhow::Result<Arc<Value>> {
        self.fleet
            .get("fleet", || async {
                let args = StatusArgs {
                    json: true,
                    dead_letters: DEAD_LETTERS_SHOWN,
                    workers_seen: 300,
                };
                gather(&self.backends, &args).await
            })
            .await
    }

    /// A group's jobs and entries.
    pub async fn group(&self, group: &str) -> anyhow::Result<Arc<GroupView>> {
        self.groups
            .get(group, || async {
                let jobs = self
                    .backends
                    .board
                    .group_jobs(group)
                    .await
                    .with_context(|| format!("reading group {group} on the job board"))?;
                let entries = list_all(&*self.backends.manifest, group)
                    .await
                    .with_context(|| format!("listing group {group} in the manifest"))?;
                Ok(GroupView { jobs, entries })
            })
            .await
    }

    /// One job: registration, entry, history, files and attempts.
    pub async fn job(&self, key: &JobKey) -> anyhow::Result<Arc<JobView>> {
        self.jobs
            .get(&key.to_string(), || async {
                let b = &self.backends;
                let registration = b
                    .board
                    .jobs(std::slice::from_ref(key))
                    .await
                    .context("reading the job board")?
                    .pop()
                    .flatten();
                let manifest_key = ManifestKey::from(key);
                let entry = b
                    .manifest
                    .get(&manifest_key)
                    .await
                    .context("reading the manifest")?;
                let history = b
                    .manifest
                    .history(&manifest_key)
                    .await
                    .context("reading the manifest's history")?;
                let prefix = format!("{}/{}", key.group_id, key.name);
                let files = b
                    .artifacts
                    .list(&prefix)
                    .await
                    .with_context(|| format!("listing the artifacts under {prefix}"))?;
                let mut attempts = Vec::new();
                let attempt_prefix = format!("{prefix}/attempts/");
                for file in files
                    .iter()
                    .filter(|f| f.as_str().starts_with(&attempt_prefix))
                {
                    if let Some(bytes) =
                        b.artifacts.get(file).await.context("reading an attempt")?
                    {
                        attempts.push(serde_json::from_slice(&bytes).unwrap_or(Value::Null));
                    }
                }
                let job = registration
                    .as_ref()
                    .and_then(|r| Envelope::open(&r.message.body, "board").ok());
                Ok(JobView {
                    registration,
                    job,
                    entry,
                    history,
                    files,
                    attempts,
                })
            })
            .await
    }

    /// A JSON artifact; `None` if there is none under the key.
    pub async fn json(&self, key: &str) -> anyhow::Result<Option<Arc<Value>>> {
        let read = self
            .json
            .get(key, || async {
                let artifact = ArtifactKey::new(key)?;
                match self.backends.artifacts.get(&artifact).await? {
                    Some(bytes) => serde_json::from_slice(&bytes)
                        .with_context(|| format!("artifact {key} is not JSON")),
                    None => Ok(Value::Null),
                }
            })
            .await?;
        Ok((!read.is_null()).then_some(read))
    }
}
