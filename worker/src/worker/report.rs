//! The worker's line in `status`: its state, its job and the job's progress, sent to
//! the job board every few seconds and whenever the state changes.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use labelfleet_core::board::WorkerState;

use super::{Inner, now_secs};

impl Inner {
    /// Sends the worker's report to the job board.
    pub(super) async fn publish(&self) {
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

    /// Sets the worker's state, reporting a change.
    pub(super) async fn set_state(&self, state: WorkerState) {
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
    pub(super) async fn track(&self, job: &str, running: bool) {
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
}
