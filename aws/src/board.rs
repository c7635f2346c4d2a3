//! The job board on DynamoDB, in the manifest's table under partitions that start with
//! `#` (group ids never do):
//!
//! | partition | sort key | what |
//! |---|---|---|
//! | `#board#<group>` | job name | the job: state, dependencies, message |
//! | `#dep#<dependency>` | `<group>/<name>` | an index from a dependency to its waiting jobs |
//! | `#held` | `<group>/<name>` | an index of held jobs |
//! | `#boardgroups` | group | the groups with registered jobs |
//! | `#workers` | worker id | the worker's last report |
//! | `#sweep` | `#sweep` | when the fleet last swept its held jobs |

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use labelfleet_core::board::{
    BoardJob, BoardState, Dependency, GroupCounts, GroupJob, JobBoard, WorkerReport, WorkerState,
};
use labelfleet_core::error::{BackendError, BackendResult};
use labelfleet_core::job::JobKey;
use labelfleet_core::queue::OutgoingMessage;
use serde_json::{Value, json};

use crate::spill::Spill;
use crate::table::{Item, PK, SK, Table, key, s, text};

const HELD: &str = "#held";
const GROUPS: &str = "#boardgroups";
const WORKERS: &str = "#workers";
/// The item that records the fleet's last sweep of held jobs.
const SWEEP: &str = "#sweep";
/// Message bodies larger than this are kept in S3 (DynamoDB's item limit is 400 KB).
const MAX_INLINE_BODY: usize = 300_000;

fn jobs_partition(group: &str) -> String {
    format!("#board#{group}")
}

fn dep_partition(dependency: &Dependency) -> String {
    format!("#dep#{}", dependency.token())
}

fn item(pk: &str, sk: &str, doc: Option<Value>) -> Item {
    let mut item = key(pk, sk);
    if let Some(doc) = doc {
        item.insert("doc".into(), s(doc.to_string()));
    }
    item
}

fn doc(item: &Item) -> Value {
    text(item, "doc")
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(Value::Null)
}

fn split_ref(reference: &str) -> Option<(&str, &str)> {
    reference.split_once('/')
}

/// The job board in a DynamoDB table.
#[derive(Clone)]
pub struct DynamoBoard {
    table: Table,
    spill: Option<Spill>,
}

impl DynamoBoard {
    /// The board in `table` (the manifest's); `spill` keeps large message bodies in S3.
    pub fn new(sdk: &aws_config::SdkConfig, table: &str, spill: Option<Spill>) -> DynamoBoard {
        DynamoBoard {
            table: Table::new(sdk, table),
            spill,
        }
    }

    async fn decode_job(&self, item: &Item) -> BackendResult<BoardJob> {
        let d = doc(item);
        let group = text(item, PK)
            .and_then(|p| p.strip_prefix("#board#"))
            .unwrap_or_default();
        let mut body = d["body"].as_str().unwrap_or_default().to_string();
        if let Some(spill) = &self.spill
            && let Some(resolved) = spill.resolve(&body).await?
        {
            body = resolved;
        }
        Ok(BoardJob {
            key: JobKey {
                group_id: group.to_string(),
                name: text(item, SK).unwrap_or_default().to_string(),
            },
            after: d["after"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().and_then(Dependency::from_token))
                .collect(),
            message: OutgoingMessage {
                body,
                dedup_id: d["dedup_id"].as_str().unwrap_or_default().to_string(),
                group: d["msg_group"].as_str().unwrap_or_default().to_string(),
            },
            state: if d["state"] == "held" {
                BoardState::Held
            } else {
                BoardState::Queued
            },
            version: d["version"].as_str().map(str::to_string),
        })
    }

    /// Reads the jobs named `group/name` in `references`.
    async fn jobs_by_reference(&self, references: &[String]) -> BackendResult<Vec<BoardJob>> {
        let keys: Vec<Item> = references
            .iter()
            .filter_map(|r| split_ref(r))
            .map(|(g, n)| key(&jobs_partition(g), n))
            .collect();
        let mut jobs = Vec::new();
        for item in self.table.batch_get(keys).await? {
            jobs.push(self.decode_job(&item).await?);
        }
        jobs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(jobs)
    }

    async fn sort_keys(&self, partition: &str) -> BackendResult<Vec<String>> {
        Ok(self
            .table
            .query_all(partition)
            .await?
            .iter()
            .filter_map(|i| text(i, SK).map(str::to_string))
            .collect())
    }
}

#[async_trait]
impl JobBoard for DynamoBoard {
    fn describe(&self) -> String {
        format!("DynamoDB job board dynamodb://{}", self.table.name)
    }

    async fn check(&self) -> BackendResult<()> {
        self.table.check().await
    }

    async fn register(&self, jobs: &[BoardJob]) -> BackendResult<()> {
        let mut items = Vec::new();
        for job in jobs {
            let reference = job.key.to_string();
            let tokens: Vec<String> = job.after.iter().map(Dependency::token).collect();
            let body = match &self.spill {
                Some(spill) if job.message.body.len() > MAX_INLINE_BODY => {
                    spill.put("board", &job.message.body).await?
                }
                None if job.message.body.len() > MAX_INLINE_BODY => {
                    return Err(BackendError::Invalid(format!(
                        "job {reference} is {} bytes, over DynamoDB's item limit; configure --artifacts so it can be kept in S3",
                        job.message.body.len()
                    )));
                }
                _ => job.message.body.clone(),
            };
            items.push(item(
                &jobs_partition(&job.key.group_id),
                &job.key.name,
                Some(json!({
                    "state": job.state.as_str(), "after": tokens, "body": body,
                    "dedup_id": job.message.dedup_id, "msg_group": job.message.group,
                    "version": job.version,
                })),
            ));
            for dependency in &job.after {
                items.push(item(&dep_partition(dependency), &reference, None));
            }
            items.push(item(GROUPS, &job.key.group_id, None));
            if job.state == BoardState::Held {
                items.push(item(HELD, &reference, None));
            }
        }
        self.table.batch_put(items).await?;
        for job in jobs.iter().filter(|j| j.state == BoardState::Queued) {
            self.table.delete(HELD, &job.key.to_string()).await?;
        }
        Ok(())
    }

    async fn group_jobs(&self, group_id: &str) -> BackendResult<Vec<GroupJob>> {
        let mut jobs: Vec<GroupJob> = self
            .table
            .query_all(&jobs_partition(group_id))
            .await?
            .iter()
            .map(|i| {
                let d = doc(i);
                GroupJob {
                    name: text(i, SK).unwrap_or_default().to_string(),
                    state: if d["state"] == "held" {
                        BoardState::Held
                    } else {
                        BoardState::Queued
                    },
                    version: d["version"].as_str().map(str::to_string),
                }
            })
            .collect();
        jobs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(jobs)
    }

    async fn jobs(&self, keys: &[JobKey]) -> BackendResult<Vec<Option<BoardJob>>> {
        let mut references: Vec<String> = keys.iter().map(ToString::to_string).collect();
        // A batch may not name one key twice.
        references.sort();
        references.dedup();
        let found = self.jobs_by_reference(&references).await?;
        Ok(keys
            .iter()
            .map(|k| found.iter().find(|j| &j.key == k).cloned())
            .collect())
    }

    async fn held(&self) -> BackendResult<Vec<BoardJob>> {
        let references = self.sort_keys(HELD).await?;
        let jobs = self.jobs_by_reference(&references).await?;
        Ok(jobs
            .into_iter()
            .filter(|j| j.state == BoardState::Held)
            .collect())
    }

    async fn held_waiting_on(&self, dependency: &Dependency) -> BackendResult<Vec<BoardJob>> {
        let references = self.sort_keys(&dep_partition(dependency)).await?;
        let jobs = self.jobs_by_reference(&references).await?;
        // The index may outlive a re-registration with other dependencies: check the job.
        Ok(jobs
            .into_iter()
            .filter(|j| j.state == BoardState::Held && j.after.contains(dependency))
            .collect())
    }

    async fn mark_queued(&self, key: &JobKey) -> BackendResult<()> {
        let reference = key.to_string();
        if let Some(mut item) = self
            .table
            .get(&jobs_partition(&key.group_id), &key.name)
            .await?
        {
            let mut d = doc(&item);
            d["state"] = json!("queued");
            item.insert("doc".into(), s(d.to_string()));
            self.table.put(item).await?;
        }
        self.table.delete(HELD, &reference).await
    }

    async fn groups(&self) -> BackendResult<Vec<GroupCounts>> {
        let mut counts = Vec::new();
        for group in self.sort_keys(GROUPS).await? {
            let jobs = self.group_jobs(&group).await?;
            let held = jobs.iter().filter(|j| j.state == BoardState::Held).count() as u64;
            counts.push(GroupCounts {
                group_id: group,
                held,
                queued: jobs.len() as u64 - held,
            });
        }
        counts.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(counts)
    }

    async fn report_worker(&self, report: &WorkerReport) -> BackendResult<()> {
        self.table
            .put(item(
                WORKERS,
                &report.worker_id,
                Some(json!({
                    "host": report.host, "pid": report.pid, "state": report.state.as_str(), "job": report.job,
                    "jobs_done": report.jobs_done, "jobs_failed": report.jobs_failed,
                    "last_error": report.last_error, "started_at": report.started_at, "last_seen": report.last_seen,
                    "progress": report.progress, "device": report.device, "commands": report.commands,
                })),
            ))
            .await
    }

    async fn workers(&self, seen_since: i64) -> BackendResult<Vec<WorkerReport>> {
        let mut workers: Vec<WorkerReport> = self
            .table
            .query_all(WORKERS)
            .await?
            .iter()
            .map(|i| {
                let d = doc(i);
                WorkerReport {
                    worker_id: text(i, SK).unwrap_or_default().to_string(),
                    host: d["host"].as_str().unwrap_or_default().to_string(),
                    pid: d["pid"].as_u64().unwrap_or(0) as u32,
                    state: d["state"]
                        .as_str()
                        .and_then(WorkerState::parse)
                        .unwrap_or(WorkerState::Stopped),
                    job: d["job"].as_str().map(str::to_string),
                    jobs_done: d["jobs_done"].as_u64().unwrap_or(0),
                    jobs_failed: d["jobs_failed"].as_u64().unwrap_or(0),
                    last_error: d["last_error"].as_str().map(str::to_string),
                    progress: d["progress"].as_str().map(str::to_string),
                    device: d["device"].as_str().map(str::to_string),
                    commands: d["commands"]
                        .as_array()
                        .map(|names| {
                            names
                                .iter()
                                .filter_map(|n| n.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                    started_at: d["started_at"].as_i64().unwrap_or(0),
                    last_seen: d["last_seen"].as_i64().unwrap_or(0),
                }
            })
            .filter(|w| w.last_seen >= seen_since)
            .collect();
        workers.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then(a.worker_id.cmp(&b.worker_id))
        });
        Ok(workers)
    }

    async fn claim_sweep(&self, now: i64, every: i64) -> BackendResult<bool> {
        // One conditional write: it succeeds for one claimant per interval.
        let item = Item::from([
            (PK.to_string(), s(SWEEP)),
            (SK.to_string(), s(SWEEP)),
            ("at".to_string(), AttributeValue::N(now.to_string())),
        ]);
        let result = self
            .table
            .client
            .put_item()
            .table_name(&self.table.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#sk) OR #at <= :cutoff")
            .expression_attribute_names("#sk", SK)
            .expression_attribute_names("#at", "at")
            .expression_attribute_values(":cutoff", AttributeValue::N((now - every).to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if crate::errors::code(&e) == Some("ConditionalCheckFailedException") => {
                Ok(false)
            }
            Err(e) => Err(crate::errors::classify(&self.table.op("PutItem"), e)),
        }
    }
}
