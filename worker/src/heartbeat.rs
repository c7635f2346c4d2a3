//! Keeping a received message invisible while its job runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    /// Starts heartbeating. The lease counts as lost (and `on_loss` is cancelled, so the
    /// job stops) when the backend says the receipt is stale, or when no heartbeat has
    /// succeeded for a whole visibility timeout: by then another worker may hold the
    /// message, whether or not the backend would refuse this receipt.
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
            let mut last_ok = Instant::now();
            let mut pause = every;
            loop {
                tokio::time::sleep(pause).await;
                let outcome = queue.extend(&receipt, visibility).await;
                let why = match outcome {
                    Ok(()) => {
                        last_ok = Instant::now();
                        pause = every;
                        continue;
                    }
                    Err(BackendError::StaleReceipt) => "its receipt went stale".to_string(),
                    Err(e) if last_ok.elapsed() >= visibility => {
                        format!(
                            "no heartbeat succeeded for a whole visibility timeout (last error: {e})"
                        )
                    }
                    Err(e) => {
                        // Keep trying, sooner: the lease lasts `visibility` from the last success.
                        tracing::warn!(error = %e, "heartbeat failed; retrying");
                        pause = (every / 4).max(Duration::from_millis(200));
                        continue;
                    }
                };
                tracing::warn!(reason = %why, "lost the lease on the running job; stopping it (another worker may hold it now)");
                flag.store(true, Ordering::SeqCst);
                on_loss.cancel();
                return;
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
