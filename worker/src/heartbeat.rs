//! Keeping a received message invisible while its job runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use labelfleet_core::error::BackendError;
use labelfleet_core::queue::{Queue, Receipt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A background task that extends a message's visibility every `every`.
pub struct Heartbeat {
    task: JoinHandle<()>,
    lost: Arc<AtomicBool>,
}

impl Heartbeat {
    /// Starts heartbeating. If the receipt goes stale (the lease was lost: another
    /// worker may now hold the message), `on_loss` is cancelled so the job stops.
    pub fn start(
        queue: Arc<dyn Queue>,
        receipt: Receipt,
        visibility: Duration,
        every: Duration,
        on_loss: CancellationToken,
    ) -> Heartbeat {
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        let task = tokio::spawn(async move {
            let mut pause = every;
            loop {
                tokio::time::sleep(pause).await;
                match queue.extend(&receipt, visibility).await {
                    Ok(()) => pause = every,
                    Err(BackendError::StaleReceipt) => {
                        tracing::warn!(
                            "lost the lease on the running job (its receipt went stale); stopping it"
                        );
                        flag.store(true, Ordering::SeqCst);
                        on_loss.cancel();
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
        Heartbeat { task, lost }
    }

    /// Whether the lease was lost.
    pub fn lease_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Stops heartbeating.
    pub fn stop(self) -> bool {
        self.task.abort();
        self.lease_lost()
    }
}
