//! The polling loop.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labelfleet_core::board::{BoardJob, BoardState, WorkerReport, WorkerState};
use labelfleet_core::error::BackendError;
use labelfleet_core::job::Job;
use labelfleet_core::queue::{Envelope, OutgoingMessage, ReceivedMessage};
use labelfleet_enqueue::plan::resolve_live;
use labelfleet_enqueue::release::release_all_ready;
use labelfleet_manifest::ManifestKey;
use labelfleet_manifest::completion::incomplete;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Backends;
use crate::execute::{execute, retry_transient};
use crate::heartbeat::Heartbeat;
use crate::runner::Runners;
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
    /// After a stop signal, how long the running job may take to finish.
    pub grace: Duration,
    /// Exit after running this many jobs.
    pub max_jobs: Option<u64>,
    /// Exit once the queue has stayed empty this long.
    pub idle_exit: Option<Duration>,
    /// Handle at most one message, then exit.
    pub once: bool,
    /// How often held jobs are swept (sent when their dependencies are complete).
    pub sweep_every: Duration,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// A stop signal.
    Signal,
    /// `--max-jobs` reached.
    MaxJobs,
    /// The queue stayed empty for `--idle-exit`.
    Idle,
    /// `--once`.
    Once,
}

/// What the worker did before it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Why it stopped.
    pub reason: ExitReason,
    /// Jobs completed.
    pub done: u64,
    /// Job runs that failed (each retry counts).
    pub failed: u64,
}

enum Handled {
    Ran,
    Skipped,
    Interrupted,
}

/// A worker process's loop.
pub struct Worker {
    config: WorkerConfig,
    backends: Backends,
    runners: Runners,
    shutdown: Shutdown,
    report: Arc<Mutex<WorkerReport>>,
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
            started_at: now_secs(),
            last_seen: now_secs(),
        };
        Worker {
            config,
            backends,
            runners,
            shutdown,
            report: Arc::new(Mutex::new(report)),
        }
    }

    fn update(&self, change: impl FnOnce(&mut WorkerReport)) {
        change(&mut self.report.lock().expect("report lock"));
    }

    async fn publish(&self) {
        let report = {
            let mut r = self.report.lock().expect("report lock");
            r.last_seen = now_secs();
            r.clone()
        };
        if let Err(e) = self.backends.board.report_worker(&report).await {
            tracing::debug!(error = %e, "could not report worker status");
        }
    }

    async fn sweep(&self) {
        match release_all_ready(
            &*self.backends.queue,
            &*self.backends.board,
            &*self.backends.manifest,
        )
        .await
        {
            Ok(sent) if !sent.is_empty() => tracing::info!(
                count = sent.len(),
                "sent held jobs whose dependencies are complete"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not sweep held jobs"),
        }
    }

    /// Runs until a stop signal, `--max-jobs`, `--idle-exit` or `--once`.
    pub async fn run(self) -> WorkerSummary {
        let me = Arc::new(self);
        tracing::info!(
            worker = %me.config.worker_id,
            queue = %me.backends.queue.describe(),
            manifest = %me.backends.manifest.describe(),
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
        let summary = me.poll_loop().await;
        reporter.abort();
        me.update(|r| {
            r.state = WorkerState::Stopped;
            r.job = None;
        });
        me.publish().await;
        tracing::info!(reason = ?summary.reason, done = summary.done, failed = summary.failed, "worker stopped");
        summary
    }

    async fn poll_loop(&self) -> WorkerSummary {
        let mut done = 0u64;
        let mut failed = 0u64;
        let mut ran = 0u64;
        let mut idle_since = Instant::now();
        let mut last_sweep = Instant::now();
        let mut receive_backoff = Duration::from_millis(500);
        let summary = |reason, done, failed| WorkerSummary {
            reason,
            done,
            failed,
        };
        loop {
            if self.shutdown.level() > 0 {
                return summary(ExitReason::Signal, done, failed);
            }
            if self.config.max_jobs.is_some_and(|max| ran >= max) {
                return summary(ExitReason::MaxJobs, done, failed);
            }
            let mut wait = self.config.wait;
            if let Some(idle) = self.config.idle_exit {
                let idle_for = idle_since.elapsed();
                if idle_for >= idle {
                    return summary(ExitReason::Idle, done, failed);
                }
                wait = wait.min(idle - idle_for);
            }
            if last_sweep.elapsed() >= self.config.sweep_every {
                self.sweep().await;
                last_sweep = Instant::now();
            }
            let received = tokio::select! {
                r = self.backends.queue.receive(1, self.config.visibility, wait) => r,
                _ = self.shutdown.reached(1) => return summary(ExitReason::Signal, done, failed),
            };
            let message = match received {
                Ok(mut messages) => {
                    receive_backoff = Duration::from_millis(500);
                    messages.pop()
                }
                Err(e) => {
                    // The worker outlives backend trouble: log, back off, poll again.
                    tracing::warn!(error = %e, retry_in_ms = receive_backoff.as_millis() as u64, "receive failed");
                    tokio::select! {
                        _ = tokio::time::sleep(receive_backoff) => {}
                        _ = self.shutdown.reached(1) => return summary(ExitReason::Signal, done, failed),
                    }
                    receive_backoff = (receive_backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            let Some(message) = message else {
                if self.config.once {
                    return summary(ExitReason::Once, done, failed);
                }
                continue;
            };
            match self.handle(message).await {
                (Handled::Ran, ok) => {
                    ran += 1;
                    if ok {
                        done += 1;
                    } else {
                        failed += 1;
                    }
                }
                (Handled::Skipped, _) => {}
                (Handled::Interrupted, _) => return summary(ExitReason::Signal, done, failed),
            }
            idle_since = Instant::now();
            if self.config.once {
                return summary(ExitReason::Once, done, failed);
            }
        }
    }

    /// Handles one message; returns what happened and whether a job that ran succeeded.
    async fn handle(&self, message: ReceivedMessage) -> (Handled, bool) {
        let job = match Envelope::open(&message.body, &message.id) {
            Ok(job) => job,
            Err(e) => {
                let reason = format!("invalid job, not retried: {e}");
                tracing::error!(message = %message.id, %reason, "dead-lettering a poison message");
                self.dead_letter(&message, &reason).await;
                self.update(|r| r.last_error = Some(reason));
                return (Handled::Skipped, false);
            }
        };
        let span = tracing::info_span!("job", job = %job.key(), attempt = message.receive_count);
        self.handle_job(job, message).instrument(span).await
    }

    async fn handle_job(&self, job: Job, message: ReceivedMessage) -> (Handled, bool) {
        let key = job.key();
        let manifest_key = ManifestKey::from(&key);
        match retry_transient("reading the manifest", || {
            self.backends.manifest.get(&manifest_key)
        })
        .await
        {
            Ok(Some(_)) => {
                tracing::info!(
                    "already complete (a duplicate delivery); acknowledging without running"
                );
                let _ = labelfleet_enqueue::release::release_dependents(
                    &key,
                    &*self.backends.queue,
                    &*self.backends.board,
                    &*self.backends.manifest,
                )
                .await;
                self.ack(&message).await;
                return (Handled::Skipped, false);
            }
            Ok(None) => {}
            Err(e) => {
                self.give_back(&message, "cannot read the manifest", &e)
                    .await;
                return (Handled::Skipped, false);
            }
        }
        match self.hold_if_waiting(&job, &message).await {
            Ok(true) => return (Handled::Skipped, false),
            Ok(false) => {}
            Err(e) => {
                self.give_back(&message, "cannot check dependencies", &e)
                    .await;
                return (Handled::Skipped, false);
            }
        }
        self.run_job(job, message).await
    }

    /// Holds a job on the board if its dependencies are not complete (it is sent again
    /// when they are). Jobs from `enqueue` arrive ready; this guards hand-sent ones.
    async fn hold_if_waiting(
        &self,
        job: &Job,
        message: &ReceivedMessage,
    ) -> Result<bool, BackendError> {
        if job.after.is_empty() {
            return Ok(false);
        }
        let mut after = Vec::new();
        for entry in &job.after {
            after.push(
                resolve_live(
                    entry,
                    &job.group_id,
                    &*self.backends.board,
                    &*self.backends.manifest,
                )
                .await?,
            );
        }
        let pending = incomplete(&after, &*self.backends.manifest, &*self.backends.board).await?;
        if pending.is_empty() {
            return Ok(false);
        }
        let waiting: Vec<String> = pending.iter().map(ToString::to_string).collect();
        tracing::info!(waiting_on = %waiting.join(", "), "dependencies incomplete; holding the job until they complete");
        self.backends
            .board
            .register(&[BoardJob {
                key: job.key(),
                after,
                message: OutgoingMessage {
                    body: message.body.clone(),
                    dedup_id: job.content_hash(),
                    group: message.group.clone(),
                },
                state: BoardState::Held,
            }])
            .await?;
        self.ack(message).await;
        Ok(true)
    }

    async fn run_job(&self, job: Job, message: ReceivedMessage) -> (Handled, bool) {
        let key = job.key();
        tracing::info!(kind = %job.kind(), "job started");
        self.update(|r| {
            r.state = WorkerState::Running;
            r.job = Some(key.to_string());
        });
        self.publish().await;
        let cancel = CancellationToken::new();
        let heartbeat = Heartbeat::start(
            self.backends.queue.clone(),
            message.receipt.clone(),
            self.config.visibility,
            self.config.heartbeat_every,
            cancel.clone(),
        );
        let started = Instant::now();
        let task = {
            let (job, backends, runners, cancel) = (
                job.clone(),
                self.backends.clone(),
                self.runners.clone(),
                cancel.clone(),
            );
            let (attempt, worker_id) = (message.receive_count, self.config.worker_id.clone());
            tokio::spawn(async move {
                execute(&job, attempt, &worker_id, &backends, &runners, cancel).await
            })
        };
        tokio::pin!(task);
        let result = tokio::select! {
            r = &mut task => Some(r),
            _ = self.shutdown.reached(1) => {
                self.update(|r| r.state = WorkerState::Stopping);
                self.publish().await;
                tracing::info!(grace_s = self.config.grace.as_secs_f64(), "stop requested; letting the job finish within the grace period");
                tokio::select! {
                    r = &mut task => Some(r),
                    _ = tokio::time::sleep(self.config.grace) => None,
                    _ = self.shutdown.reached(2) => None,
                }
            }
        };
        let Some(result) = result else {
            cancel.cancel();
            task.abort();
            heartbeat.stop();
            match self
                .backends
                .queue
                .release(&message.receipt, Duration::ZERO)
                .await
            {
                Ok(()) => {
                    tracing::warn!("job interrupted by shutdown; released for another worker")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "job interrupted by shutdown; it returns after its visibility timeout")
                }
            }
            return (Handled::Interrupted, false);
        };
        let lease_lost = heartbeat.stop();
        let result = result.unwrap_or_else(|e| {
            Err(crate::runner::JobFailure::new(format!(
                "the job panicked: {e}"
            )))
        });
        let elapsed_ms = started.elapsed().as_millis() as u64;
        self.update(|r| {
            r.state = WorkerState::Idle;
            r.job = None;
        });
        match result {
            Ok(completion) => {
                if completion.written {
                    tracing::info!(elapsed_ms, released = completion.released.len(), metrics = %completion.entry.metrics, "job completed");
                } else {
                    tracing::warn!(elapsed_ms, first_worker = %completion.entry.worker, "job completed, but another worker recorded it first; keeping theirs");
                }
                self.ack(&message).await;
                self.update(|r| r.jobs_done += 1);
                self.publish().await;
                (Handled::Ran, true)
            }
            Err(failure) => {
                let reason = failure.message;
                self.update(|r| {
                    r.jobs_failed += 1;
                    r.last_error = Some(format!("{key}: {reason}"));
                });
                self.publish().await;
                if lease_lost {
                    tracing::warn!(error = %reason, "job stopped after losing its lease; another worker holds it now");
                } else if message.receive_count >= self.config.max_receives {
                    let reason = format!(
                        "failed on all {} attempts; last error: {reason}",
                        message.receive_count
                    );
                    tracing::error!(%reason, "dead-lettering the job");
                    self.dead_letter(&message, &reason).await;
                } else {
                    let delay = self.config.retry_delay(message.receive_count);
                    tracing::warn!(
                        error = %reason,
                        attempt = message.receive_count,
                        max_receives = self.config.max_receives,
                        retry_in_s = delay.as_secs_f64(),
                        "job failed; it will be retried"
                    );
                    if let Err(e) = self.backends.queue.release(&message.receipt, delay).await {
                        tracing::warn!(error = %e, "could not release the failed job; it returns after its visibility timeout");
                    }
                }
                (Handled::Ran, false)
            }
        }
    }

    /// Gives a message back for a moment when a backend error kept us from deciding
    /// what to do with it (it is not the job's fault, so no retry is spent on it).
    async fn give_back(&self, message: &ReceivedMessage, what: &str, error: &BackendError) {
        tracing::warn!(%error, "{what}; giving the message back for 5 s");
        let _ = self
            .backends
            .queue
            .release(&message.receipt, Duration::from_secs(5))
            .await;
    }

    async fn ack(&self, message: &ReceivedMessage) {
        match retry_transient("acknowledging", || {
            self.backends.queue.ack(&message.receipt)
        })
        .await
        {
            Ok(()) => {}
            Err(BackendError::StaleReceipt) => {
                tracing::warn!(
                    "could not acknowledge: the lease had run out; the next delivery finds the job complete and acknowledges it"
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not acknowledge; the next delivery finds the job complete")
            }
        }
    }

    async fn dead_letter(&self, message: &ReceivedMessage, reason: &str) {
        if let Err(e) = retry_transient("dead-lettering", || {
            self.backends.queue.dead_letter(message, reason)
        })
        .await
        {
            tracing::error!(error = %e, "could not dead-letter the message; the queue's redrive policy will");
        }
    }
}
