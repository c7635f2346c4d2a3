//! Keeping a received message invisible while its job runs, and knowing when that
//! stopped being true.
//!
//! A message's lease runs for a visibility timeout from the last heartbeat the queue
//! accepted. Once that much time has passed, another worker may have received the
//! message, whatever the backend says afterwards (SQS and moto accept a superseded
//! receipt). So the [`Lease`] is judged by the clock: a worker frozen (SIGSTOP, a
//! paused VM) past its visibility timeout finds its lease lost when it wakes, before it
//! writes anything more.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use labelfleet_core::error::BackendError;
use labelfleet_core::queue::{Queue, Receipt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Whether this worker still holds a message: shared by its heartbeat, the job (which
/// writes nothing once it is lost) and the recorder (which records nothing).
#[derive(Clone, Debug)]
pub struct Lease {
    state: Arc<LeaseState>,
}

#[derive(Debug)]
struct LeaseState {
    /// The clock's origin for `renewed_ms`.
    origin: Instant,
    /// When the last accepted heartbeat was sent (ms since `origin`); the lease runs a
    /// visibility timeout from then.
    renewed_ms: AtomicU64,
    visibility: Duration,
    lost: AtomicBool,
}

impl Lease {
    /// A lease on a message just received with this visibility timeout.
    pub fn new(visibility: Duration) -> Lease {
        Lease {
            state: Arc::new(LeaseState {
                origin: Instant::now(),
                renewed_ms: AtomicU64::new(0),
                visibility,
                lost: AtomicBool::new(false),
            }),
        }
    }

    /// Whether the message is still ours. A margin of a tenth of the visibility timeout
    /// (at most a second) allows for the queue's clock and the call's latency.
    pub fn held(&self) -> bool {
        let s = &self.state;
        if s.lost.load(Ordering::SeqCst) {
            return false;
        }
        let renewed = Duration::from_millis(s.renewed_ms.load(Ordering::SeqCst));
        let margin = (s.visibility / 10).min(Duration::from_secs(1));
        s.origin.elapsed() < renewed + s.visibility.saturating_sub(margin)
    }

    /// Marks the lease lost.
    fn lose(&self) {
        self.state.lost.store(true, Ordering::SeqCst);
    }

    /// Records a heartbeat sent at `sent` that the queue accepted.
    fn renewed(&self, sent: Instant) {
        let ms = sent.duration_since(self.state.origin).as_millis() as u64;
        self.state.renewed_ms.fetch_max(ms, Ordering::SeqCst);
    }
}

/// A background task that extends a message's visibility every `every`.
pub struct Heartbeat {
    task: JoinHandle<()>,
    lease: Lease,
}

impl Heartbeat {
    /// Starts heartbeating. The lease counts as lost (and `on_loss` is cancelled, so the
    /// job stops) when the backend says the receipt is stale, or when no heartbeat has
    /// been accepted for a whole visibility timeout: by then another worker may hold the
    /// message, whether or not the backend would refuse this receipt.
    pub fn start(
        queue: Arc<dyn Queue>,
        receipt: Receipt,
        visibility: Duration,
        every: Duration,
        on_loss: CancellationToken,
    ) -> Heartbeat {
        let lease = Lease::new(visibility);
        let held = lease.clone();
        let task = tokio::spawn(async move {
            let mut pause = every;
            loop {
                tokio::time::sleep(pause).await;
                // Checked before the call: an extend that succeeds after the lease ran
                // out (a frozen process waking up) does not give it back.
                if !held.held() {
                    lost(
                        &held,
                        &on_loss,
                        "no heartbeat was accepted for a whole visibility timeout",
                    );
                    return;
                }
                let sent = Instant::now();
                match queue.extend(&receipt, visibility).await {
                    Ok(()) => {
                        held.renewed(sent);
                        pause = every;
                    }
                    Err(BackendError::StaleReceipt) => {
                        lost(&held, &on_loss, "its receipt went stale");
                        return;
                    }
                    Err(e) => {
                        // Keep trying, sooner: the lease lasts `visibility` from the last success.
                        tracing::warn!(error = %e, "heartbeat failed; retrying");
                        pause = (every / 4).max(Duration::from_millis(200));
                    }
                }
            }
        });
        Heartbeat { task, lease }
    }

    /// The lease this heartbeat keeps.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Whether the lease was lost.
    pub fn lease_lost(&self) -> bool {
        !self.lease.held()
    }

    /// Stops heartbeating; returns whether the lease had been lost.
    pub fn stop(self) -> bool {
        self.task.abort();
        self.lease_lost()
    }

    /// Stops heartbeating and gives the lease up (the message is being handed over
    /// while the job's code may still be running): the job writes nothing more.
    pub fn give_up(self) {
        self.lease.lose();
        self.task.abort();
    }
}

fn lost(lease: &Lease, on_loss: &CancellationToken, why: &str) {
    tracing::warn!(reason = %why, "lost the lease on the running job; stopping it (another worker may hold it now), and writing nothing more for it");
    lease.lose();
    on_loss.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_out_a_visibility_timeout_after_its_last_renewal() {
        // Visibility 1 s, so held until 0.9 s after the last renewal.
        let lease = Lease::new(Duration::from_secs(1));
        assert!(lease.held());
        std::thread::sleep(Duration::from_millis(600));
        lease.renewed(Instant::now());
        std::thread::sleep(Duration::from_millis(600));
        assert!(lease.held(), "renewed 0.6 s ago");
        std::thread::sleep(Duration::from_millis(500));
        assert!(!lease.held(), "1.1 s since the renewal");
        // A renewal sent earlier than the last one accepted does not move it back.
        let fresh = Lease::new(Duration::from_secs(60));
        fresh.renewed(Instant::now());
        fresh.renewed(fresh.state.origin);
        assert!(fresh.held());
        fresh.lose();
        assert!(!fresh.held());
    }
}
