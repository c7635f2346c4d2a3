//! The worker process: a loop that receives messages and runs their jobs.
//!
//! A worker has `concurrency` job slots (a semaphore). The loop (`poll`) receives at
//! most as many messages as there are free slots — a worker with one slot never holds
//! more than one message, so long GPU jobs are never hoarded — and `admit` checks the
//! received batch at once: poison messages are dead-lettered, superseded versions and
//! jobs already in the manifest are acknowledged, jobs with incomplete dependencies are
//! held. Every other job runs in its own task under its own heartbeat (`job`); what
//! happens after a failure is one pure decision, [`after_failure`]. A finished job
//! goes to the `recorder`, which writes the manifest entries of everything that
//! finished together in one call, releases their dependents, and acknowledges their
//! messages in one call; the heartbeat of a job stops only once its message is
//! acknowledged. `report` keeps the worker's line in `status` up to date.
//!
//! Backend trouble is the worker's, not the job's: when a backend fails while the
//! worker serves a message, the message goes back at once and the worker receives
//! nothing more until every backend answers its check again (so it does not spend the
//! receive counts of good jobs). Only a queue that answered "empty" counts towards
//! `--idle-exit`; trouble that outlasts it ends the worker with
//! [`ExitReason::Unreachable`], a failure, so that a supervisor starts it again.

mod admit;
mod job;
mod poll;
mod recorder;
mod report;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labelfleet_core::board::{WorkerReport, WorkerState};
use labelfleet_core::error::BackendError;
use rand::Rng;
use tokio::sync::{Semaphore, mpsc};

pub use self::job::{AfterFailure, after_failure};
use crate::Backends;
use crate::runner::{Progress, Runners};
use crate::shutdown::Shutdown;

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Unique id of this worker process.
    pub worker_id: String,
    /// How long a received message stays invisible between heartbeats.
    pub visibility: Duration,
    /// How often to heartbeat (a fraction of `visibility`).
    pub heartbeat_every: Duration,
    /// Long-poll wait per receive.
    pub wait: Duration,
    /// Deliveries after which a failing job is dead-lettered.
    pub max_receives: u32,
    /// First retry delay of a failed job; doubles per attempt.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// After a stop signal, how long running jobs may take to finish.
    pub grace: Duration,
    /// Exit after running this many jobs.
    pub max_jobs: Option<u64>,
    /// Exit once the queue has answered "empty" this long (and nothing that could still
    /// bring work is in flight or held); exit with a failure once the backends have been
    /// unusable this long.
    pub idle_exit: Option<Duration>,
    /// Handle at most one message, then exit.
    pub once: bool,
    /// How often held jobs are swept (sent when their dependencies are complete).
    pub sweep_every: Duration,
    /// Job slots: how many jobs run at once.
    pub concurrency: usize,
    /// How long the recorder waits for more finished jobs to record them together.
    pub record_linger: Duration,
    /// Where this worker's jobs run their models (`cuda:1`), whatever the jobs say;
    /// `None` leaves each job's own `device`.
    pub device: Option<String>,
    /// The programs its `command` runner allows, for its reports (`enqueue` warns
    /// about a program no worker allows).
    pub commands: Vec<String>,
}

impl WorkerConfig {
    /// Defaults for a worker with this id.
    pub fn new(worker_id: String) -> WorkerConfig {
        let visibility = Duration::from_secs(60);
        WorkerConfig {
            worker_id,
            visibility,
            heartbeat_every: visibility / 3,
            wait: Duration::from_secs(20),
            max_receives: 5,
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            grace: Duration::from_secs(30),
            max_jobs: None,
            idle_exit: None,
            once: false,
            sweep_every: Duration::from_secs(60),
            concurrency: 1,
            record_linger: Duration::from_millis(20),
            device: None,
            commands: Vec::new(),
        }
    }

    /// The delay before the next delivery of a job that failed on `attempt`.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let doubled = self
            .retry_base
            .saturating_mul(1 << attempt.saturating_sub(1).min(16));
        doubled.min(self.retry_max)
    }
}

/// Why the worker stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// A stop signal.
    Signal,
    /// `--max-jobs` reached.
    MaxJobs,
    /// The queue stayed empty for `--idle-exit`, with nothing in flight that could
    /// still bring work.
    Idle,
    /// `--once`.
    Once,
    /// The backends could not be used for longer than `--idle-exit`: a failure, so
    /// that whatever supervises the worker starts it again.
    Unreachable(String),
    /// The backend's storage was removed or replaced under the worker.
    Lost(String),
}

impl ExitReason {
    /// Whether the worker stopped because something is wrong (its exit is a failure).
    pub fn failure(&self) -> Option<&str> {
        match self {
            ExitReason::Unreachable(why) | ExitReason::Lost(why) => Some(why),
            _ => None,
        }
    }
}

/// What the worker did before it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Why it stopped.
    pub reason: ExitReason,
    /// Jobs completed.
    pub done: u64,
    /// Job runs that failed (each retry counts).
    pub failed: u64,
    /// Calls this worker made to the queue service, where the backend counts them.
    pub queue_calls: Option<u64>,
}

/// Backend trouble met while serving messages: the worker receives nothing until
/// every backend answers its check again.
#[derive(Debug, Clone)]
struct Trouble {
    /// When the outage began: trouble that comes back soon after the checks passed
    /// is the same outage (a check can pass while real work still fails).
    since: Instant,
    reason: String,
    /// How long to wait before the next check; doubles while the trouble lasts.
    pause: Duration,
    /// When the checks last passed; `None` while the worker waits them out.
    cleared_at: Option<Instant>,
}

impl Trouble {
    /// How soon after the checks passed new trouble counts as the same outage.
    const SAME_OUTAGE: Duration = Duration::from_secs(60);
    /// The first pause between checks.
    const FIRST_PAUSE: Duration = Duration::from_millis(500);
    /// The longest pause between checks.
    const LONGEST_PAUSE: Duration = Duration::from_secs(30);
}

/// A worker process's loop.
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    config: WorkerConfig,
    backends: Backends,
    runners: Runners,
    shutdown: Shutdown,
    report: Mutex<WorkerReport>,
    running: Mutex<BTreeSet<String>>,
    last_publish: Mutex<Instant>,
    /// What the running job last said of its progress.
    progress: Progress,
    slots: Arc<Semaphore>,
    started_jobs: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    trouble: Mutex<Option<Trouble>>,
    /// Set when the backend's storage went away: the worker stops with this reason.
    lost: Mutex<Option<String>>,
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A worker id: host, process id and a random suffix.
pub fn new_worker_id(host: &str) -> String {
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::rng().random::<u16>()
    )
}

impl Worker {
    /// A worker over these backends, runners and shutdown signal.
    pub fn new(
        config: WorkerConfig,
        backends: Backends,
        runners: Runners,
        shutdown: Shutdown,
        host: String,
    ) -> Worker {
        let report = WorkerReport {
            worker_id: config.worker_id.clone(),
            host,
            pid: std::process::id(),
            state: WorkerState::Idle,
            job: None,
            jobs_done: 0,
            jobs_failed: 0,
            last_error: None,
            progress: None,
            device: config.device.clone(),
            commands: config.commands.clone(),
            started_at: now_secs(),
            last_seen: now_secs(),
        };
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        Worker {
            inner: Arc::new(Inner {
                config,
                backends,
                runners,
                shutdown,
                report: Mutex::new(report),
                running: Mutex::new(BTreeSet::new()),
                last_publish: Mutex::new(Instant::now()),
                progress: Progress::default(),
                slots,
                started_jobs: AtomicU64::new(0),
                done: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                trouble: Mutex::new(None),
                lost: Mutex::new(None),
            }),
        }
    }

    /// Runs until a stop signal, `--max-jobs`, `--idle-exit`, `--once` or lasting
    /// backend trouble, then waits for its running jobs (within the grace period) and
    /// their records.
    pub async fn run(self) -> WorkerSummary {
        let me = self.inner;
        tracing::info!(
            worker = %me.config.worker_id,
            queue = %me.backends.queue.describe(),
            manifest = %me.backends.manifest.describe(),
            concurrency = me.config.concurrency,
            "worker started"
        );
        me.publish().await;
        me.sweep().await;
        let reporter = {
            let me = me.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    me.publish().await;
                }
            })
        };
        let (finished_tx, finished_rx) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(me.clone().recorder(finished_rx));
        let reason = me.poll_loop(&finished_tx).await;
        if me.slots.available_permits() < me.config.concurrency {
            me.set_state(WorkerState::Stopping).await;
        }
        // Every slot back means every job finished, was released, or was recorded.
        let _all = me.slots.acquire_many(me.config.concurrency as u32).await;
        drop(finished_tx);
        let _ = recorder.await;
        reporter.abort();
        {
            let mut r = me.report.lock().expect("report lock");
            r.state = WorkerState::Stopped;
            r.job = None;
            if let Some(why) = reason.failure() {
                r.last_error = Some(why.to_string());
            }
        }
        me.publish().await;
        let summary = WorkerSummary {
            reason,
            done: me.done.load(Ordering::Relaxed),
            failed: me.failed.load(Ordering::Relaxed),
            queue_calls: me.backends.queue.transport_calls(),
        };
        match summary.reason.failure() {
            None => tracing::info!(
                reason = ?summary.reason,
                done = summary.done,
                failed = summary.failed,
                queue_calls = summary.queue_calls,
                peak_resident_mib = crate::memory::peak_resident_bytes().map(|b| b >> 20),
                "worker stopped"
            ),
            Some(why) => tracing::error!(
                reason = %why,
                done = summary.done,
                failed = summary.failed,
                "worker stopped with an error"
            ),
        }
        summary
    }
}

impl Inner {
    /// Takes note of a backend error met while serving messages: the storage going
    /// away stops the worker; anything else stops receiving until the backends answer
    /// their checks again.
    fn backend_failed(&self, what: &str, error: &BackendError) {
        if let BackendError::Lost(why) = error {
            let mut lost = self.lost.lock().expect("lost lock");
            if lost.is_none() {
                tracing::error!(reason = %why, "{what}: the backend's storage is gone; stopping");
                *lost = Some(why.clone());
                // Stop now: nothing a running job writes would be kept.
                self.shutdown.trigger();
                self.shutdown.trigger();
            }
            return;
        }
        let mut trouble = self.trouble.lock().expect("trouble lock");
        let reason = labelfleet_core::text::capped(&format!("{what}: {error}"));
        match trouble.as_mut() {
            // Still waiting it out, or back soon after the checks passed: the same
            // outage, with its start and its backoff.
            Some(t)
                if t.cleared_at
                    .is_none_or(|at| at.elapsed() < Trouble::SAME_OUTAGE) =>
            {
                if t.cleared_at.take().is_some() {
                    // Longer waits from here on: the checks pass, the work does not.
                    t.pause = (t.pause * 2).min(Trouble::LONGEST_PAUSE);
                    tracing::warn!(%reason, "backend trouble again soon after the checks passed; waiting it out");
                }
                t.reason = reason;
            }
            _ => {
                tracing::warn!(%reason, "backend trouble; receiving nothing more until every backend answers again");
                *trouble = Some(Trouble {
                    since: Instant::now(),
                    reason,
                    pause: Trouble::FIRST_PAUSE,
                    cleared_at: None,
                });
            }
        }
    }

    /// Whether the worker waits out backend trouble (receiving nothing).
    fn in_trouble(&self) -> bool {
        self.trouble
            .lock()
            .expect("trouble lock")
            .as_ref()
            .is_some_and(|t| t.cleared_at.is_none())
    }

    /// Why the worker must stop at once, if its backend's storage went away.
    fn lost_reason(&self) -> Option<String> {
        self.lost.lock().expect("lost lock").clone()
    }
}
