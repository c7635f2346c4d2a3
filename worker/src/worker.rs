//! The polling loop.
//!
//! A worker has `concurrency` job slots (a semaphore). The loop receives at most as
//! many messages as there are free slots — a worker with one slot never holds more than
//! one message, so long GPU jobs are never hoarded — and checks the received batch at
//! once: poison messages are dead-lettered, jobs already in the manifest are
//! acknowledged, jobs with incomplete dependencies are held. Every other job runs in
//! its own task under its own heartbeat. A finished job goes to the *recorder*, which
//! writes the manifest entries of everything that finished together in one call,
//! releases their dependents, and acknowledges their messages in one call; the
//! heartbeat of a job stops only once its message is acknowledged.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labelfleet_core::board::{BoardJob, BoardState, WorkerReport, WorkerState};
use labelfleet_core::error::BackendError;
use labelfleet_core::job::Job;
use labelfleet_core::queue::{Envelope, OutgoingMessage, Receipt, ReceivedMessage};
use labelfleet_enqueue::plan::resolve_live;
use labelfleet_enqueue::release::{release_all_ready, release_dependents_of_many};
use labelfleet_manifest::completion::incomplete;
use labelfleet_manifest::{ManifestEntry, ManifestKey};
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Backends;
use crate::execute::{JobControl, record, retry_transient, run_job};
use crate::heartbeat::Heartbeat;
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
    /// Exit once the queue has stayed empty (and no job has run) this long.
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
    /// Calls this worker made to the queue service, where the backend counts them.
    pub queue_calls: Option<u64>,
}

/// A job that ran and waits to be recorded and acknowledged.
struct Finished {
    entry: ManifestEntry,
    receipt: Receipt,
    heartbeat: Heartbeat,
    started: Instant,
    span: tracing::Span,
    _slot: OwnedSemaphorePermit,
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
            }),
        }
    }

    /// Runs until a stop signal, `--max-jobs`, `--idle-exit` or `--once`, then waits for
    /// its running jobs (within the grace period) and their records.
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
        }
        me.publish().await;
        let summary = WorkerSummary {
            reason,
            done: me.done.load(Ordering::Relaxed),
            failed: me.failed.load(Ordering::Relaxed),
            queue_calls: me.backends.queue.transport_calls(),
        };
        tracing::info!(
            reason = ?summary.reason,
            done = summary.done,
            failed = summary.failed,
            queue_calls = summary.queue_calls,
            "worker stopped"
        );
        summary
    }
}

impl Inner {
    /// Whether jobs held on the board may still be sent: some are held, and another
    /// worker is running a job (whose completion may release them). An idle worker then
    /// stays, so that dependents do not find the fleet gone when their seed job ends;
    /// with no job running anywhere, held jobs cannot be released and it may leave.
    async fn work_may_be_released(&self, announce: bool) -> bool {
        let held = match self.backends.board.held().await {
            Ok(held) => held.len(),
            Err(_) => return false,
        };
        if held == 0 {
            return false;
        }
        // Running workers report every 5 s; allow for a missed report or two.
        let recent = now_secs() - 20;
        let me = self.report.lock().expect("report lock").worker_id.clone();
        let running = match self.backends.board.workers(recent).await {
            Ok(workers) => workers
                .iter()
                .filter(|w| w.worker_id != me && w.state == WorkerState::Running)
                .count(),
            Err(_) => return false,
        };
        if running > 0 && announce {
            tracing::info!(
                held,
                running,
                "queue empty, but held jobs wait on running ones; staying"
            );
        }
        running > 0
    }

    /// Releases a job for another worker at once (shutdown), logging `what` and how.
    async fn hand_over(&self, receipt: &Receipt, what: &str, reason: Option<&str>) {
        match self.backends.queue.release(receipt, Duration::ZERO).await {
            Ok(()) => tracing::warn!(reason, "{what}; released for another worker"),
            Err(e) => {
                tracing::warn!(error = %e, reason, "{what}; it returns after its visibility timeout")
            }
        }
    }

    async fn publish(&self) {
        *self.last_publish.lock().expect("publish lock") = Instant::now();
        let report = {
            let mut r = self.report.lock().expect("report lock");
            r.last_seen = now_secs();
            r.jobs_done = self.done.load(Ordering::Relaxed);
            r.jobs_failed = self.failed.load(Ordering::Relaxed);
            r.progress = if r.job.is_some() {
                self.progress.get()
            } else {
                None
            };
            r.clone()
        };
        if let Err(e) = self.backends.board.report_worker(&report).await {
            tracing::debug!(error = %e, "could not report worker status");
        }
    }

    async fn set_state(&self, state: WorkerState) {
        let changed = {
            let mut r = self.report.lock().expect("report lock");
            let changed = r.state != state;
            r.state = state;
            changed
        };
        // A busy worker with many slots flips between idle and running all the time:
        // report such flips at most once a second (the periodic report catches up).
        let recent =
            self.last_publish.lock().expect("publish lock").elapsed() < Duration::from_secs(1);
        let throttled = self.config.concurrency > 1 && recent && state != WorkerState::Stopping;
        if changed && !throttled {
            self.publish().await;
        }
    }

    /// Marks a job as running or not, and reports a change between idle and running.
    async fn track(&self, job: &str, running: bool) {
        let (label, busy) = {
            let mut set = self.running.lock().expect("running lock");
            if running {
                set.insert(job.to_string());
            } else {
                set.remove(job);
            }
            if set.is_empty() {
                self.progress.clear();
            }
            let label = match set.len() {
                0 => None,
                1 => set.iter().next().cloned(),
                n => Some(format!(
                    "{} (+{} more)",
                    set.iter().next().expect("non-empty"),
                    n - 1
                )),
            };
            (label, !set.is_empty())
        };
        let stopping = {
            let mut report = self.report.lock().expect("report lock");
            report.job = label;
            report.state == WorkerState::Stopping
        };
        if !stopping {
            self.set_state(if busy {
                WorkerState::Running
            } else {
                WorkerState::Idle
            })
            .await;
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

    async fn poll_loop(self: &Arc<Self>, finished: &mpsc::UnboundedSender<Finished>) -> ExitReason {
        let mut idle_since = Instant::now();
        // Whether the worker has said it stays idle for held jobs (said once per wait).
        let mut staying = false;
        let mut last_sweep = Instant::now();
        let mut receive_backoff = Duration::from_millis(500);
        let concurrency = self.config.concurrency.max(1);
        loop {
            if self.shutdown.level() > 0 {
                return ExitReason::Signal;
            }
            let started = self.started_jobs.load(Ordering::Relaxed);
            if self.config.max_jobs.is_some_and(|max| started >= max) {
                return ExitReason::MaxJobs;
            }
            // Wait for a free slot. Time with a job in flight (running, or waiting to be
            // recorded through a backend outage) is not idle time.
            let was_busy = self.slots.available_permits() < concurrency;
            let slot = tokio::select! {
                s = self.slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
                _ = self.shutdown.reached(1) => return ExitReason::Signal,
            };
            let busy = self.slots.available_permits() + 1 < concurrency;
            if was_busy || busy {
                idle_since = Instant::now();
            }
            let mut wait = self.config.wait;
            if let Some(idle) = self.config.idle_exit {
                let idle_for = idle_since.elapsed();
                if idle_for >= idle && !busy {
                    if !self.work_may_be_released(!staying).await {
                        return ExitReason::Idle;
                    }
                    staying = true;
                    idle_since = Instant::now();
                }
                wait = wait.min(
                    idle.saturating_sub(idle_for)
                        .max(Duration::from_millis(100)),
                );
            }
            if busy {
                // Jobs are running: poll briefly, so finished slots are refilled promptly.
                wait = wait.min(Duration::from_secs(1));
            }
            if last_sweep.elapsed() >= self.config.sweep_every {
                self.sweep().await;
                last_sweep = Instant::now();
            }
            let mut want = 1 + self.slots.available_permits();
            if self.config.once {
                want = 1;
            }
            if let Some(max) = self.config.max_jobs {
                want = want.min((max - started) as usize);
            }
            // Slots free up one by one as jobs finish; wait a moment for a few more, so
            // that one receive fills several slots (fewer calls per job).
            let batch = concurrency.min(10);
            if busy && want < batch && !self.config.once {
                let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
                while want < batch && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    want = (1 + self.slots.available_permits()).min(batch);
                }
                if let Some(max) = self.config.max_jobs {
                    want = want.min((max - started) as usize);
                }
            }
            let received = tokio::select! {
                r = self.backends.queue.receive(want.clamp(1, 10), self.config.visibility, wait) => r,
                _ = self.shutdown.reached(1) => return ExitReason::Signal,
            };
            let messages = match received {
                Ok(messages) => {
                    receive_backoff = Duration::from_millis(500);
                    messages
                }
                Err(e) => {
                    // The worker outlives backend trouble: log, back off, poll again.
                    drop(slot);
                    tracing::warn!(error = %e, retry_in_ms = receive_backoff.as_millis() as u64, "receive failed");
                    tokio::select! {
                        _ = tokio::time::sleep(receive_backoff) => {}
                        _ = self.shutdown.reached(1) => return ExitReason::Signal,
                    }
                    receive_backoff = (receive_backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            if messages.is_empty() {
                drop(slot);
                if self.config.once && self.slots.available_permits() == concurrency {
                    return ExitReason::Once;
                }
                continue;
            }
            idle_since = Instant::now();
            staying = false;
            let mut slots = vec![slot];
            while slots.len() < messages.len() {
                slots.push(
                    self.slots
                        .clone()
                        .try_acquire_owned()
                        .expect("received no more than the free slots"),
                );
            }
            self.admit(messages, slots, finished).await;
            if self.config.once {
                return ExitReason::Once;
            }
        }
    }

    /// Checks a received batch and starts the jobs that should run.
    async fn admit(
        self: &Arc<Self>,
        messages: Vec<ReceivedMessage>,
        mut slots: Vec<OwnedSemaphorePermit>,
        finished: &mpsc::UnboundedSender<Finished>,
    ) {
        let mut jobs = Vec::new();
        for message in messages {
            match Envelope::open(&message.body, &message.id) {
                Ok(job) => jobs.push((job, message)),
                Err(e) => {
                    let reason = format!("invalid job, not retried: {e}");
                    tracing::error!(message = %message.id, %reason, "dead-lettering a poison message");
                    self.dead_letter(&message, &reason).await;
                    self.report.lock().expect("report lock").last_error = Some(reason);
                }
            }
        }
        if jobs.is_empty() {
            return;
        }
        let keys: Vec<ManifestKey> = jobs
            .iter()
            .map(|(job, _)| ManifestKey::from(&job.key()))
            .collect();
        let recorded = match retry_transient("reading the manifest", || {
            self.backends.manifest.get_many(&keys)
        })
        .await
        {
            Ok(recorded) => recorded,
            Err(e) => {
                for (_, message) in &jobs {
                    self.give_back(message, "cannot read the manifest", &e)
                        .await;
                }
                return;
            }
        };
        let mut duplicates = Vec::new();
        for ((job, message), existing) in jobs.into_iter().zip(recorded) {
            let span =
                tracing::info_span!("job", job = %job.key(), attempt = message.receive_count);
            if existing.is_some() {
                span.in_scope(|| {
                    tracing::info!(
                        "already complete (a duplicate delivery); acknowledging without running"
                    )
                });
                duplicates.push((job.key(), message.receipt));
                continue;
            }
            match self
                .hold_if_waiting(&job, &message)
                .instrument(span.clone())
                .await
            {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    self.give_back(&message, "cannot check dependencies", &e)
                        .await;
                    continue;
                }
            }
            let slot = slots.pop().expect("one slot per message");
            let me = self.clone();
            let finished = finished.clone();
            self.started_jobs.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(
                async move { me.run_one(job, message, slot, finished).await }.instrument(span),
            );
        }
        if !duplicates.is_empty() {
            // Their dependents may still wait if a crash came between record and ack.
            let keys: Vec<_> = duplicates.iter().map(|(k, _)| k.clone()).collect();
            let _ = release_dependents_of_many(
                &keys,
                &*self.backends.queue,
                &*self.backends.board,
                &*self.backends.manifest,
            )
            .await;
            let receipts: Vec<Receipt> = duplicates.into_iter().map(|(_, r)| r).collect();
            self.ack_all(&receipts).await;
        }
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
        self.ack_all(std::slice::from_ref(&message.receipt)).await;
        Ok(true)
    }

    /// Runs one job in its slot; hands a finished job to the recorder.
    async fn run_one(
        self: Arc<Self>,
        job: Job,
        message: ReceivedMessage,
        slot: OwnedSemaphorePermit,
        finished: mpsc::UnboundedSender<Finished>,
    ) {
        let key = job.key().to_string();
        tracing::info!(kind = %job.kind(), "job started");
        self.track(&key, true).await;
        let cancel = CancellationToken::new();
        let heartbeat = Heartbeat::start(
            self.backends.queue.clone(),
            message.receipt.clone(),
            self.config.visibility,
            self.config.heartbeat_every,
            cancel.clone(),
        );
        let started = Instant::now();
        let stop = CancellationToken::new();
        let run = run_job(
            &job,
            message.receive_count,
            &self.config.worker_id,
            &self.backends,
            &self.runners,
            JobControl {
                cancel: cancel.clone(),
                stop: stop.clone(),
                progress: self.progress.clone(),
                device: self.config.device.clone(),
            },
        );
        tokio::pin!(run);
        let stop_now = async {
            self.shutdown.reached(1).await;
            stop.cancel();
            tracing::info!(
                grace_s = self.config.grace.as_secs_f64(),
                "stop requested; letting the job finish within the grace period"
            );
            tokio::select! {
                _ = tokio::time::sleep(self.config.grace) => {}
                _ = self.shutdown.reached(2) => {}
            }
        };
        let result = tokio::select! {
            r = &mut run => Some(r),
            _ = stop_now => None,
        };
        self.track(&key, false).await;
        let Some(result) = result else {
            cancel.cancel();
            heartbeat.stop();
            self.hand_over(&message.receipt, "job interrupted by shutdown", None)
                .await;
            return;
        };
        match result {
            Ok(entry) => {
                let span = tracing::Span::current();
                let _ = finished.send(Finished {
                    entry,
                    receipt: message.receipt,
                    heartbeat,
                    started,
                    span,
                    _slot: slot,
                });
            }
            Err(failure) if failure.interrupted => {
                heartbeat.stop();
                self.hand_over(
                    &message.receipt,
                    "job saved its progress",
                    Some(&failure.message),
                )
                .await;
                drop(slot);
            }
            Err(failure) => {
                let lease_lost = heartbeat.stop();
                let reason = failure.message;
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.report.lock().expect("report lock").last_error =
                    Some(format!("{key}: {reason}"));
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
                drop(slot);
            }
        }
    }

    /// Records finished jobs in batches: whatever finished within `record_linger` of the
    /// first, up to 10, is written, released and acknowledged together.
    async fn recorder(self: Arc<Self>, mut finished: mpsc::UnboundedReceiver<Finished>) {
        while let Some(first) = finished.recv().await {
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + self.config.record_linger;
            while batch.len() < 10 && self.config.concurrency > 1 {
                match tokio::time::timeout_at(deadline, finished.recv()).await {
                    Ok(Some(next)) => batch.push(next),
                    _ => break,
                }
            }
            self.record_batch(batch).await;
        }
    }

    async fn record_batch(&self, batch: Vec<Finished>) {
        let entries: Vec<ManifestEntry> = batch.iter().map(|f| f.entry.clone()).collect();
        match record(entries, &self.backends).await {
            Ok((completions, released)) => {
                let receipts: Vec<Receipt> = batch.iter().map(|f| f.receipt.clone()).collect();
                self.ack_all(&receipts).await;
                for (f, completion) in batch.into_iter().zip(completions) {
                    let _in_job = f.span.enter();
                    let elapsed_ms = f.started.elapsed().as_millis() as u64;
                    if completion.written {
                        tracing::info!(elapsed_ms, metrics = %completion.entry.metrics, "job completed");
                    } else {
                        tracing::warn!(elapsed_ms, first_worker = %completion.entry.worker, "job completed, but another worker recorded it first; keeping theirs");
                    }
                    f.heartbeat.stop();
                    self.done.fetch_add(1, Ordering::Relaxed);
                }
                if !released.is_empty() {
                    tracing::info!(
                        count = released.len(),
                        "released held jobs whose dependencies completed"
                    );
                }
            }
            Err(e) => {
                // The work ran but is not recorded: give the messages back to run again.
                for f in batch {
                    let _in_job = f.span.enter();
                    tracing::error!(error = %e, "the job ran but its manifest entry could not be written; releasing it");
                    f.heartbeat.stop();
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    let _ = self
                        .backends
                        .queue
                        .release(&f.receipt, self.config.retry_base)
                        .await;
                }
            }
        }
    }

    async fn ack_all(&self, receipts: &[Receipt]) {
        let results = self.backends.queue.ack_batch(receipts).await;
        for (receipt, result) in receipts.iter().zip(results) {
            let result = match result {
                Err(BackendError::Unavailable(_)) => {
                    retry_transient("acknowledging", || self.backends.queue.ack(receipt)).await
                }
                other => other,
            };
            match result {
                Ok(()) => {}
                Err(BackendError::StaleReceipt) => tracing::warn!(
                    "could not acknowledge: the lease had run out; the next delivery finds the job complete and acknowledges it"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "could not acknowledge; the next delivery finds the job complete")
                }
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
