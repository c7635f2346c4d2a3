//! The job board contract: which jobs were submitted, which are held back until their
//! dependencies complete, and which workers are alive.
//!
//! Dependents do not wait on the queue: a message parked there would be received over
//! and over, and SQS counts every receive towards dead-lettering. Instead `enqueue`
//! registers every job here; jobs whose dependencies are incomplete stay *held*, and the
//! worker that completes a dependency sends the held jobs that are now ready. Nothing
//! polls while a dependent waits.

use std::fmt;

use async_trait::async_trait;

use crate::error::BackendResult;
use crate::job::JobKey;
use crate::queue::OutgoingMessage;

/// Something a job waits for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dependency {
    /// One job, complete once its manifest entry exists.
    Job(JobKey),
    /// A whole group, complete once every job registered in it has a manifest entry.
    Group(String),
}

impl Dependency {
    /// The dependency as one string (`job:group/name` or `group:group`), for storage.
    pub fn token(&self) -> String {
        match self {
            Dependency::Job(key) => format!("job:{key}"),
            Dependency::Group(group) => format!("group:{group}"),
        }
    }

    /// Reads a string written by [`Dependency::token`].
    pub fn from_token(token: &str) -> Option<Dependency> {
        if let Some(rest) = token.strip_prefix("job:") {
            let (group_id, name) = rest.split_once('/')?;
            Some(Dependency::Job(JobKey {
                group_id: group_id.to_string(),
                name: name.to_string(),
            }))
        } else {
            token
                .strip_prefix("group:")
                .map(|g| Dependency::Group(g.to_string()))
        }
    }
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dependency::Job(key) => write!(f, "job {key}"),
            Dependency::Group(group) => write!(f, "group {group}"),
        }
    }
}

/// Where a registered job stands on the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoardState {
    /// Waiting for its dependencies; not on the queue yet.
    Held,
    /// Sent to the queue.
    Queued,
}

impl BoardState {
    /// The state as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            BoardState::Held => "held",
            BoardState::Queued => "queued",
        }
    }
}

/// A submitted job as the board keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardJob {
    /// The job's identity.
    pub key: JobKey,
    /// What it waits for.
    pub after: Vec<Dependency>,
    /// The message to send once it is ready.
    pub message: OutgoingMessage,
    /// Held or queued.
    pub state: BoardState,
    /// The version of the job's config this registration sends
    /// ([`Job::config_hash`](crate::job::Job::config_hash)); `None` for registrations
    /// made before versions were recorded. A worker runs a message only while it is
    /// this version: an older one was superseded by `enqueue --replace`.
    pub version: Option<String>,
}

/// One job of a group, as [`JobBoard::group_jobs`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupJob {
    /// The job's name.
    pub name: String,
    /// Held or queued.
    pub state: BoardState,
    /// The registered version ([`BoardJob::version`]).
    pub version: Option<String>,
}

/// How many jobs of a group are held and queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCounts {
    /// The group.
    pub group_id: String,
    /// Jobs waiting for dependencies.
    pub held: u64,
    /// Jobs sent to the queue (done or not).
    pub queued: u64,
}

/// What a worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Polling for work.
    Idle,
    /// Running a job.
    Running,
    /// Finishing its last job after a stop signal.
    Stopping,
    /// Exited.
    Stopped,
}

impl WorkerState {
    /// The state as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Idle => "idle",
            WorkerState::Running => "running",
            WorkerState::Stopping => "stopping",
            WorkerState::Stopped => "stopped",
        }
    }

    /// Reads a stored state.
    pub fn parse(text: &str) -> Option<WorkerState> {
        [
            WorkerState::Idle,
            WorkerState::Running,
            WorkerState::Stopping,
            WorkerState::Stopped,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// A worker's report of itself, sent on every heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerReport {
    /// Unique per worker process.
    pub worker_id: String,
    /// The machine it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// What it is doing.
    pub state: WorkerState,
    /// The job it is running (`group/name`), if any.
    pub job: Option<String>,
    /// Jobs completed so far.
    pub jobs_done: u64,
    /// Jobs that failed so far.
    pub jobs_failed: u64,
    /// The last job error it saw, if any.
    pub last_error: Option<String>,
    /// What its running job last said of its progress (`step 120/200 · loss 1.23 ·
    /// 2.1 steps/s · ETA 38 s`), if it said anything.
    pub progress: Option<String>,
    /// The device it runs models on (`cuda:0`, `cpu`), when it was pinned to one.
    pub device: Option<String>,
    /// The programs its allow-list lets `command` jobs run, sorted.
    pub commands: Vec<String>,
    /// When it started (seconds since the Unix epoch).
    pub started_at: i64,
    /// When it last reported (seconds since the Unix epoch).
    pub last_seen: i64,
}

/// The job board.
#[async_trait]
pub trait JobBoard: Send + Sync {
    /// A human description of where the board lives.
    fn describe(&self) -> String;

    /// Checks that the board exists and that this process may use it; the error names the
    /// resource and what to do (`labelfleet setup`). Cheap: a worker calls it at start-up,
    /// and while it waits out backend trouble before it receives again.
    async fn check(&self) -> BackendResult<()>;

    /// Registers jobs, replacing earlier registrations of the same keys.
    async fn register(&self, jobs: &[BoardJob]) -> BackendResult<()>;

    /// The jobs registered in a group, with their states and versions, sorted by name.
    async fn group_jobs(&self, group_id: &str) -> BackendResult<Vec<GroupJob>>;

    /// The registrations of these jobs, one per key in order (`None` where a key was
    /// never registered).
    async fn jobs(&self, keys: &[JobKey]) -> BackendResult<Vec<Option<BoardJob>>>;

    /// Every held job.
    async fn held(&self) -> BackendResult<Vec<BoardJob>>;

    /// The held jobs that list `dependency` among their dependencies.
    async fn held_waiting_on(&self, dependency: &Dependency) -> BackendResult<Vec<BoardJob>>;

    /// Marks a job as sent to the queue.
    async fn mark_queued(&self, key: &JobKey) -> BackendResult<()>;

    /// Held and queued counts for every group, sorted by group.
    async fn groups(&self) -> BackendResult<Vec<GroupCounts>>;

    /// Records a worker's report, replacing its previous one.
    async fn report_worker(&self, report: &WorkerReport) -> BackendResult<()>;

    /// The workers that reported at or after `seen_since` (seconds since the Unix
    /// epoch), most recent first.
    async fn workers(&self, seen_since: i64) -> BackendResult<Vec<WorkerReport>>;

    /// Claims the fleet's next sweep of held jobs: `true` (and `now` recorded as the
    /// last sweep, atomically) unless one was claimed less than `every` seconds before
    /// `now`. A sweep reads every held job; one per interval across the whole fleet is
    /// enough, and a fleet whose workers restart often must not sweep at every start.
    async fn claim_sweep(&self, now: i64, every: i64) -> BackendResult<bool>;
}
