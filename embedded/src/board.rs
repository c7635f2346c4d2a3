//! The embedded job board: submitted jobs, their dependencies, and worker reports.

use std::path::Path;

use async_trait::async_trait;
use labelfleet_core::board::{
    BoardJob, BoardState, Dependency, GroupCounts, GroupJob, JobBoard, WorkerReport, WorkerState,
};
use labelfleet_core::error::BackendResult;
use labelfleet_core::job::JobKey;
use labelfleet_core::queue::OutgoingMessage;
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};

use crate::sqlite::Db;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    group_id  TEXT NOT NULL,
    name      TEXT NOT NULL,
    state     TEXT NOT NULL,
    after     TEXT NOT NULL,
    body      TEXT NOT NULL,
    dedup_id  TEXT NOT NULL,
    msg_group TEXT NOT NULL,
    PRIMARY KEY (group_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_deps (
    group_id TEXT NOT NULL,
    name     TEXT NOT NULL,
    dep      TEXT NOT NULL,
    PRIMARY KEY (group_id, name, dep)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS job_deps_by_dep ON job_deps (dep);
CREATE TABLE IF NOT EXISTS sweeps (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
-- A table of its own, so that boards created before versions were recorded need no migration.
CREATE TABLE IF NOT EXISTS job_versions (
    group_id TEXT NOT NULL,
    name     TEXT NOT NULL,
    version  TEXT NOT NULL,
    PRIMARY KEY (group_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workers (
    worker_id   TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    state       TEXT NOT NULL,
    job         TEXT,
    jobs_done   INTEGER NOT NULL,
    jobs_failed INTEGER NOT NULL,
    last_error  TEXT,
    started_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL
);
-- A table of its own, so that boards created before these columns existed need no migration.
CREATE TABLE IF NOT EXISTS worker_progress (
    worker_id TEXT PRIMARY KEY,
    progress  TEXT,
    device    TEXT
);
-- Likewise: the programs a worker allows, as a JSON list.
CREATE TABLE IF NOT EXISTS worker_commands (
    worker_id TEXT PRIMARY KEY,
    programs  TEXT NOT NULL
);
";

/// Workers not seen for this long are forgotten.
const FORGET_WORKERS_AFTER_SECS: i64 = 7 * 24 * 3600;

/// The embedded job board. Open it from any number of processes.
#[derive(Clone)]
pub struct SqliteBoard {
    db: Db,
}

impl SqliteBoard {
    /// Opens (creating if needed) the board in `path`.
    pub fn open(path: &Path) -> BackendResult<SqliteBoard> {
        Ok(SqliteBoard {
            db: Db::open(path, SCHEMA)?,
        })
    }
}

const JOB_COLUMNS: &str =
    "j.group_id, j.name, j.state, j.after, j.body, j.dedup_id, j.msg_group, v.version";
/// The jobs table with each job's version, for queries that read [`JOB_COLUMNS`].
const JOBS_WITH_VERSIONS: &str =
    "jobs j LEFT JOIN job_versions v ON v.group_id = j.group_id AND v.name = j.name";

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<BoardJob> {
    let after: String = r.get(3)?;
    let tokens: Vec<String> = serde_json::from_str(&after).unwrap_or_default();
    let state: String = r.get(2)?;
    Ok(BoardJob {
        key: JobKey {
            group_id: r.get(0)?,
            name: r.get(1)?,
        },
        after: tokens
            .iter()
            .filter_map(|t| Dependency::from_token(t))
            .collect(),
        message: OutgoingMessage {
            body: r.get(4)?,
            dedup_id: r.get(5)?,
            group: r.get(6)?,
        },
        state: state_from_text(&state),
        version: r.get(7)?,
    })
}

fn state_from_text(text: &str) -> BoardState {
    if text == "held" {
        BoardState::Held
    } else {
        BoardState::Queued
    }
}

#[async_trait]
impl JobBoard for SqliteBoard {
    fn describe(&self) -> String {
        format!("embedded job board {}", self.db.path().display())
    }

    async fn check(&self) -> BackendResult<()> {
        self.db.check("jobs").await
    }

    async fn register(&self, jobs: &[BoardJob]) -> BackendResult<()> {
        let jobs = jobs.to_vec();
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                for job in &jobs {
                    let tokens: Vec<String> = job.after.iter().map(Dependency::token).collect();
                    tx.execute(
                        "INSERT OR REPLACE INTO jobs (group_id, name, state, after, body, dedup_id, msg_group)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![
                            job.key.group_id,
                            job.key.name,
                            job.state.as_str(),
                            serde_json::to_string(&tokens).expect("strings serialise"),
                            job.message.body,
                            job.message.dedup_id,
                            job.message.group
                        ],
                    )?;
                    tx.execute(
                        "DELETE FROM job_deps WHERE group_id = ?1 AND name = ?2",
                        params![job.key.group_id, job.key.name],
                    )?;
                    match &job.version {
                        Some(version) => tx.execute(
                            "INSERT OR REPLACE INTO job_versions (group_id, name, version) VALUES (?1, ?2, ?3)",
                            params![job.key.group_id, job.key.name, version],
                        )?,
                        None => tx.execute(
                            "DELETE FROM job_versions WHERE group_id = ?1 AND name = ?2",
                            params![job.key.group_id, job.key.name],
                        )?,
                    };
                    for token in &tokens {
                        tx.execute(
                            "INSERT OR IGNORE INTO job_deps (group_id, name, dep) VALUES (?1, ?2, ?3)",
                            params![job.key.group_id, job.key.name, token],
                        )?;
                    }
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn group_jobs(&self, group_id: &str) -> BackendResult<Vec<GroupJob>> {
        let group_id = group_id.to_string();
        self.db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT j.name, j.state, v.version FROM {JOBS_WITH_VERSIONS}
                     WHERE j.group_id = ?1 ORDER BY j.name"
                ))?;
                let rows = stmt
                    .query_map(params![group_id], |r| {
                        Ok(GroupJob {
                            name: r.get(0)?,
                            state: state_from_text(&r.get::<_, String>(1)?),
                            version: r.get(2)?,
                        })
                    })?
                    .collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .await
    }

    async fn jobs(&self, keys: &[JobKey]) -> BackendResult<Vec<Option<BoardJob>>> {
        let keys = keys.to_vec();
        self.db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {JOB_COLUMNS} FROM {JOBS_WITH_VERSIONS} WHERE j.group_id = ?1 AND j.name = ?2"
                ))?;
                let mut found = Vec::with_capacity(keys.len());
                for key in &keys {
                    found.push(
                        stmt.query_row(params![key.group_id, key.name], job_from_row)
                            .optional()?,
                    );
                }
                Ok(found)
            })
            .await
    }

    async fn held(&self) -> BackendResult<Vec<BoardJob>> {
        self.db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {JOB_COLUMNS} FROM {JOBS_WITH_VERSIONS} WHERE j.state = 'held' ORDER BY j.group_id, j.name"
                ))?;
                let rows = stmt.query_map([], job_from_row)?.collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .await
    }

    async fn held_waiting_on(&self, dependency: &Dependency) -> BackendResult<Vec<BoardJob>> {
        let token = dependency.token();
        self.db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {JOB_COLUMNS} FROM job_deps d
                     JOIN jobs j ON j.group_id = d.group_id AND j.name = d.name
                     LEFT JOIN job_versions v ON v.group_id = j.group_id AND v.name = j.name
                     WHERE d.dep = ?1 AND j.state = 'held' ORDER BY j.group_id, j.name"
                ))?;
                let rows = stmt
                    .query_map(params![token], job_from_row)?
                    .collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .await
    }

    async fn mark_queued(&self, key: &JobKey) -> BackendResult<()> {
        let key = key.clone();
        self.db
            .call(move |conn| {
                conn.execute(
                    "UPDATE jobs SET state = 'queued' WHERE group_id = ?1 AND name = ?2",
                    params![key.group_id, key.name],
                )?;
                Ok(())
            })
            .await
    }

    async fn groups(&self) -> BackendResult<Vec<GroupCounts>> {
        self.db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT group_id, SUM(state = 'held'), SUM(state = 'queued') FROM jobs GROUP BY group_id ORDER BY group_id",
                )?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok(GroupCounts {
                            group_id: r.get(0)?,
                            held: r.get::<_, i64>(1)? as u64,
                            queued: r.get::<_, i64>(2)? as u64,
                        })
                    })?
                    .collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .await
    }

    async fn report_worker(&self, report: &WorkerReport) -> BackendResult<()> {
        let w = report.clone();
        self.db
            .call(move |conn| {
                conn.execute(
                    "INSERT OR REPLACE INTO workers
                     (worker_id, host, pid, state, job, jobs_done, jobs_failed, last_error, started_at, last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![
                        w.worker_id,
                        w.host,
                        w.pid,
                        w.state.as_str(),
                        w.job,
                        w.jobs_done as i64,
                        w.jobs_failed as i64,
                        w.last_error,
                        w.started_at,
                        w.last_seen
                    ],
                )?;
                conn.execute(
                    "INSERT OR REPLACE INTO worker_progress (worker_id, progress, device) VALUES (?1, ?2, ?3)",
                    params![w.worker_id, w.progress, w.device],
                )?;
                let programs =
                    serde_json::to_string(&w.commands).expect("a list of names serialises");
                conn.execute(
                    "INSERT OR REPLACE INTO worker_commands (worker_id, programs) VALUES (?1, ?2)",
                    params![w.worker_id, programs],
                )?;
                conn.execute(
                    "DELETE FROM workers WHERE last_seen < ?1",
                    params![w.last_seen - FORGET_WORKERS_AFTER_SECS],
                )?;
                for table in ["worker_progress", "worker_commands"] {
                    conn.execute(
                        &format!(
                            "DELETE FROM {table} WHERE worker_id NOT IN (SELECT worker_id FROM workers)"
                        ),
                        [],
                    )?;
                }
                Ok(())
            })
            .await
    }

    async fn workers(&self, seen_since: i64) -> BackendResult<Vec<WorkerReport>> {
        self.db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT w.worker_id, host, pid, state, job, jobs_done, jobs_failed, last_error, started_at, last_seen, p.progress, p.device, c.programs
                     FROM workers w LEFT JOIN worker_progress p ON p.worker_id = w.worker_id
                     LEFT JOIN worker_commands c ON c.worker_id = w.worker_id
                     WHERE last_seen >= ?1 ORDER BY last_seen DESC, w.worker_id",
                )?;
                let rows = stmt
                    .query_map(params![seen_since], |r| {
                        Ok(WorkerReport {
                            worker_id: r.get(0)?,
                            host: r.get(1)?,
                            pid: r.get(2)?,
                            state: WorkerState::parse(&r.get::<_, String>(3)?)
                                .unwrap_or(WorkerState::Stopped),
                            job: r.get(4)?,
                            jobs_done: r.get::<_, i64>(5)? as u64,
                            jobs_failed: r.get::<_, i64>(6)? as u64,
                            last_error: r.get(7)?,
                            started_at: r.get(8)?,
                            last_seen: r.get(9)?,
                            progress: r.get(10)?,
                            device: r.get(11)?,
                            commands: r
                                .get::<_, Option<String>>(12)?
                                .and_then(|json| serde_json::from_str(&json).ok())
                                .unwrap_or_default(),
                        })
                    })?
                    .collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .await
    }

    async fn claim_sweep(&self, now: i64, every: i64) -> BackendResult<bool> {
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let last: Option<i64> = tx
                    .query_row("SELECT at FROM sweeps WHERE id = 1", [], |r| r.get(0))
                    .optional()?;
                let claimed = last.is_none_or(|at| at <= now - every);
                if claimed {
                    tx.execute(
                        "INSERT OR REPLACE INTO sweeps (id, at) VALUES (1, ?1)",
                        params![now],
                    )?;
                }
                tx.commit()?;
                Ok(claimed)
            })
            .await
    }
}
