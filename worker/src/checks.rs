//! Checking the backends before a worker receives anything, and while it waits out
//! trouble: a worker whose table or bucket is misnamed must refuse to start, not take
//! good jobs off the queue and fail them one by one until they are dead-lettered.

use std::time::{Duration, Instant};

use labelfleet_core::error::{BackendError, BackendResult};

use crate::Backends;

/// Checks the four backends, the queue first; the first failure names its resource.
pub async fn check_all(backends: &Backends) -> BackendResult<()> {
    backends.queue.check().await?;
    backends.manifest.check().await?;
    backends.board.check().await?;
    backends.artifacts.check().await?;
    Ok(())
}

/// Why a worker cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupFailure {
    /// A backend is missing or refuses this process (a misnamed table or bucket,
    /// missing permissions): starting again will not help until the setting is fixed.
    #[error("{0}")]
    Misconfigured(String),
    /// The backends could not be reached for the whole patience: try again later.
    #[error("{0}")]
    Unreachable(String),
}

/// Checks the backends at start-up, retrying while they are unreachable for up to
/// `patience` (a fleet started during a short outage should not give up).
pub async fn check_at_startup(
    backends: &Backends,
    patience: Duration,
) -> Result<(), StartupFailure> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(500);
    loop {
        match check_all(backends).await {
            Ok(()) => return Ok(()),
            Err(BackendError::Unavailable(why)) if started.elapsed() < patience => {
                tracing::warn!(reason = %why, retry_in_ms = pause.as_millis() as u64, "a backend is unreachable; checking again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
            Err(BackendError::Unavailable(why)) => {
                return Err(StartupFailure::Unreachable(format!(
                    "the backends could not be reached for {:.0} s: {why}",
                    started.elapsed().as_secs_f64()
                )));
            }
            Err(e) => {
                return Err(StartupFailure::Misconfigured(format!(
                    "{e} (the worker checks its queue, table and bucket before it receives anything)"
                )));
            }
        }
    }
}
