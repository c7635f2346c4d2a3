//! The receive loop: when to receive, how many messages, and when to stop — on a
//! signal, `--max-jobs`, `--once`, `--idle-exit`, or backend trouble that lasts.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use labelfleet_core::error::BackendError;
use labelfleet_schedule::release::release_all_ready;
use tokio::sync::mpsc;

use super::recorder::Finished;
use super::{ExitReason, Inner, Trouble};
use crate::checks::check_all;

/// What an idle worker found when it asked whether it may leave.
enum Leaving {
    /// Nothing can bring work any more.
    Leave,
    /// Work may still come: why.
    Stay(String),
}

impl Inner {
    /// Sends the held jobs whose dependencies are complete — those whose release a
    /// crash interrupted — when this worker claims the fleet's sweep (one per
    /// `sweep_every` across the fleet: a sweep reads every held job).
    pub(super) async fn sweep(&self) {
        let every = self.config.sweep_every.as_secs() as i64;
        match self
            .backends
            .board
            .claim_sweep(super::now_secs(), every)
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim the sweep of held jobs");
                return;
            }
        }
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

    pub(super) async fn poll_loop(
        self: &Arc<Self>,
        finished: &mpsc::UnboundedSender<Finished>,
    ) -> ExitReason {
        // When the queue last had work for us, or we last got an answer from it after
        // trouble: only time spent hearing "empty" counts towards `--idle-exit`.
        let mut idle_since = Instant::now();
        // Whether the worker has said why it stays idle (said once per wait).
        let mut staying = false;
        let mut last_sweep = Instant::now();
        let concurrency = self.config.concurrency.max(1);
        loop {
            if let Some(why) = self.lost_reason() {
                return ExitReason::Lost(why);
            }
            if self.shutdown.level() > 0 {
                return ExitReason::Signal;
            }
            let started = self.started_jobs.load(Ordering::Relaxed);
            if self.config.max_jobs.is_some_and(|max| started >= max) {
                return ExitReason::MaxJobs;
            }
            if self.in_trouble() {
                if let Some(exit) = self.wait_out_trouble().await {
                    return exit;
                }
                idle_since = Instant::now();
                staying = false;
                continue;
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
                    match self.may_leave().await {
                        Ok(Leaving::Leave) => return ExitReason::Idle,
                        Ok(Leaving::Stay(why)) => {
                            if !staying {
                                tracing::info!(reason = %why, "queue empty, but work may still come; staying");
                            }
                            staying = true;
                            idle_since = Instant::now();
                        }
                        Err(e) => {
                            self.backend_failed("checking whether work remains", &e);
                            continue;
                        }
                    }
                }
                wait = wait.min(
                    idle.saturating_sub(idle_since.elapsed())
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
                Ok(messages) => messages,
                Err(e) => {
                    drop(slot);
                    self.backend_failed("receiving", &e);
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

    /// Receives nothing until every backend passes its check, backing off between
    /// checks. Returns the reason to stop, if the worker must: a signal, the storage
    /// gone, or trouble that lasted longer than `--idle-exit`.
    async fn wait_out_trouble(&self) -> Option<ExitReason> {
        // Trouble that came back after the checks passed waits a pause first: checking
        // at once would pass again, and the worker would spin.
        let mut check_now =
            self.trouble.lock().expect("trouble lock").as_ref()?.pause == Trouble::FIRST_PAUSE;
        loop {
            let Trouble {
                since,
                reason,
                pause,
                ..
            } = self.trouble.lock().expect("trouble lock").clone()?;
            if check_now {
                match check_all(&self.backends).await {
                    Ok(()) => {
                        tracing::info!(
                            after_s = since.elapsed().as_secs_f64(),
                            "every backend answers again; receiving again"
                        );
                        if let Some(t) = self.trouble.lock().expect("trouble lock").as_mut() {
                            t.cleared_at = Some(Instant::now());
                        }
                        return None;
                    }
                    Err(e @ BackendError::Lost(_)) => {
                        self.backend_failed("checking the backends", &e);
                        return self.lost_reason().map(ExitReason::Lost);
                    }
                    Err(e) => self.backend_failed("checking the backends", &e),
                }
            }
            check_now = true;
            if let Some(idle) = self.config.idle_exit
                && since.elapsed() >= idle
            {
                return Some(ExitReason::Unreachable(format!(
                    "the backends could not be used for {:.0} s, longer than --idle-exit ({:.0} s); \
                     the jobs are still queued or held; last error: {reason}",
                    since.elapsed().as_secs_f64(),
                    idle.as_secs_f64()
                )));
            }
            tracing::warn!(
                %reason,
                retry_in_ms = pause.as_millis() as u64,
                "backends still unusable; checking again later"
            );
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.shutdown.reached(1) => return Some(ExitReason::Signal),
            }
            if let Some(t) = self.trouble.lock().expect("trouble lock").as_mut() {
                t.pause = (t.pause * 2).min(Trouble::LONGEST_PAUSE);
            }
        }
    }

    /// Whether an idle worker may leave: not while messages are in flight on other
    /// workers (one that dies gives its message back after its visibility timeout) or
    /// waiting for a retry, nor while held jobs can be sent.
    async fn may_leave(&self) -> Result<Leaving, BackendError> {
        let depth = self.backends.queue.depth().await?;
        if depth.visible > 0 {
            return Ok(Leaving::Stay(format!(
                "{} message(s) became visible",
                depth.visible
            )));
        }
        if depth.in_flight > 0 {
            return Ok(Leaving::Stay(format!(
                "{} message(s) are in flight on other workers or wait to be retried; \
                 staying until they are done, or come back if their worker dies",
                depth.in_flight
            )));
        }
        let held = self.backends.board.held().await?;
        if held.is_empty() {
            return Ok(Leaving::Leave);
        }
        let sent = release_all_ready(
            &*self.backends.queue,
            &*self.backends.board,
            &*self.backends.manifest,
        )
        .await?;
        if !sent.is_empty() {
            return Ok(Leaving::Stay(format!(
                "sent {} held job(s) whose dependencies are complete",
                sent.len()
            )));
        }
        let examples: Vec<String> = held.iter().take(5).map(|j| j.key.to_string()).collect();
        tracing::warn!(
            held = held.len(),
            jobs = %examples.join(", "),
            "jobs stay held, waiting on jobs that cannot complete now (dead-lettered, or never enqueued); \
             `labelfleet status` shows what blocks them"
        );
        Ok(Leaving::Leave)
    }
}
