//! Running one job in its slot, under its heartbeat, and deciding what becomes of its
//! message when it ends without a result ([`after_failure`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use labelfleet_core::job::Job;
use labelfleet_core::queue::{Receipt, ReceivedMessage};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;

use super::recorder::Finished;
use super::{Inner, WorkerConfig};
use crate::execute::{JobControl, run_job};
use crate::heartbeat::Heartbeat;
use crate::runner::JobFailure;

/// What becomes of a job's message after its run ended without a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    /// The lease was lost: another worker may hold the message; leave it alone.
    LeaveIt,
    /// Give it back at once for another worker (the job saved its progress for a stop,
    /// or a backend failed it: neither is the job's fault).
    HandOver,
    /// Deliver it again after this delay.
    Retry(Duration),
    /// Move it to the dead-letter queue with this reason.
    DeadLetter(String),
}

/// The failure policy, in one place: a lost lease touches nothing; a stop or a backend
/// failure hands the job over at once; a failure no retry can mend is dead-lettered at
/// once; a job's own failure (temporary or not) is retried with a doubling delay until
/// the message has been received `max_receives` times, then dead-lettered with the
/// last error.
pub fn after_failure(
    failure: &JobFailure,
    lease_lost: bool,
    receive_count: u32,
    config: &WorkerConfig,
) -> AfterFailure {
    let last = receive_count >= config.max_receives;
    if lease_lost {
        AfterFailure::LeaveIt
    } else if failure.interrupted || (failure.backend && !last) {
        AfterFailure::HandOver
    } else if failure.permanent {
        AfterFailure::DeadLetter(format!(
            "failed on attempt {receive_count}, and retrying cannot help: {}",
            failure.message
        ))
    } else if last {
        let cause = if failure.backend {
            "the last because a backend failed"
        } else {
            "last error"
        };
        AfterFailure::DeadLetter(format!(
            "failed on all {receive_count} attempts; {cause}: {}",
            failure.message
        ))
    } else {
        AfterFailure::Retry(config.retry_delay(receive_count))
    }
}

/// How long recording a failed attempt may take: it is a courtesy to whoever reads the
/// job's history, and must not hold up the message's release when a backend is slow.
const ATTEMPT_RECORD_LIMIT: Duration = Duration::from_secs(10);

/// The artifact that records a failed attempt of a job, `attempts/NNN.json` under its
/// own prefix: what `labelfleet serve` shows as the job's log of attempts.
pub fn attempt_record(
    worker: &str,
    attempt: u32,
    failure: &JobFailure,
    outcome: &AfterFailure,
) -> Option<(String, serde_json::Value)> {
    let (what, next) = match outcome {
        AfterFailure::LeaveIt => return None,
        AfterFailure::HandOver if failure.interrupted => ("stopped", "handed over".to_string()),
        AfterFailure::HandOver => ("backend failure", "handed over".to_string()),
        AfterFailure::Retry(delay) => (
            "failed",
            format!("retried after {:.0} s", delay.as_secs_f64()),
        ),
        AfterFailure::DeadLetter(_) => ("failed", "dead-lettered".to_string()),
    };
    Some((
        format!("attempts/{attempt:03}.json"),
        serde_json::json!({
            "attempt": attempt,
            "worker": worker,
            "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "outcome": what,
            "then": next,
            "error": failure.message,
        }),
    ))
}

impl Inner {
    /// Records a failed attempt as an artifact of the job (best effort: a failure to
    /// write it is logged, and the job's message is handled as if it had been written).
    async fn record_attempt(
        &self,
        job: &Job,
        attempt: u32,
        failure: &JobFailure,
        outcome: &AfterFailure,
    ) {
        let Some((file, record)) =
            attempt_record(&self.config.worker_id, attempt, failure, outcome)
        else {
            return;
        };
        let Ok(key) = job.artifact_key(&file) else {
            return;
        };
        let bytes = serde_json::to_vec_pretty(&record).expect("a record serialises");
        let put = self.backends.artifacts.put(&key, bytes);
        match tokio::time::timeout(ATTEMPT_RECORD_LIMIT, put).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not record the failed attempt"),
            Err(_) => tracing::warn!("recording the failed attempt timed out"),
        }
    }

    /// Releases a job for another worker at once, logging `what` and how.
    async fn hand_over(&self, receipt: &Receipt, what: &str, reason: Option<&str>) {
        match self.backends.queue.release(receipt, Duration::ZERO).await {
            Ok(()) => tracing::warn!(reason, "{what}; released for another worker"),
            Err(e) => {
                tracing::warn!(error = %e, reason, "{what}; it returns after its visibility timeout")
            }
        }
    }

    /// Runs one job in its slot; hands a finished job to the recorder.
    pub(super) async fn run_one(
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
                lease: Some(heartbeat.lease().clone()),
            },
        );
        tokio::pin!(run);
        let stop_now = async {
            self.shutdown.reached(1).await;
            stop.cancel();
            tracing::info!(
                grace_s = self.config.grace.as_secs_f64(),
                "stop requested; the job saves its progress and stops, or finishes within the grace period"
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
            // The job's own code stops at its next check of `cancel`, and writes
            // nothing more: its lease is given up here.
            heartbeat.give_up();
            cancel.cancel();
            self.hand_over(&message.receipt, "job interrupted by shutdown", None)
                .await;
            return;
        };
        let failure = match result {
            Ok(entry) if heartbeat.lease().held() => {
                let span = tracing::Span::current();
                let _ = finished.send(Finished {
                    entry,
                    receipt: message.receipt,
                    heartbeat,
                    started,
                    span,
                    _slot: slot,
                });
                return;
            }
            Ok(_) => JobFailure::new("finished after its lease ran out"),
            Err(failure) => failure,
        };
        let lease_lost = heartbeat.stop();
        if !failure.interrupted && !failure.transient && !lease_lost {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.report.lock().expect("report lock").last_error =
                Some(format!("{key}: {}", failure.message));
        }
        let outcome = after_failure(&failure, lease_lost, message.receive_count, &self.config);
        self.record_attempt(&job, message.receive_count, &failure, &outcome)
            .await;
        match outcome {
            AfterFailure::LeaveIt => tracing::warn!(
                error = %failure.message,
                "job stopped after losing its lease; nothing of it is recorded (another worker holds it now)"
            ),
            AfterFailure::HandOver if failure.interrupted => {
                self.hand_over(
                    &message.receipt,
                    "job saved its progress",
                    Some(&failure.message),
                )
                .await
            }
            AfterFailure::HandOver => {
                self.hand_over(
                    &message.receipt,
                    "a backend failed the job",
                    Some(&failure.message),
                )
                .await;
                self.backend_failed(
                    "running a job",
                    &labelfleet_core::error::BackendError::Other(failure.message.clone()),
                );
            }
            AfterFailure::DeadLetter(reason) => {
                tracing::error!(%reason, "dead-lettering the job");
                self.dead_letter(&message, &reason).await;
            }
            AfterFailure::Retry(delay) => {
                tracing::warn!(
                    error = %failure.message,
                    attempt = message.receive_count,
                    max_receives = self.config.max_receives,
                    retry_in_s = delay.as_secs_f64(),
                    "job failed; it will be retried"
                );
                if let Err(e) = self.backends.queue.release(&message.receipt, delay).await {
                    tracing::warn!(error = %e, "could not release the failed job; it returns after its visibility timeout");
                }
            }
        }
        drop(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WorkerConfig {
        let mut config = WorkerConfig::new("w".into());
        config.max_receives = 3;
        config.retry_base = Duration::from_secs(2);
        config
    }

    #[test]
    fn a_lost_lease_touches_nothing_whatever_else_happened() {
        for failure in [
            JobFailure::new("x"),
            JobFailure::interrupted("x"),
            JobFailure::backend("x"),
        ] {
            for count in [1, 3, 7] {
                assert_eq!(
                    after_failure(&failure, true, count, &config()),
                    AfterFailure::LeaveIt
                );
            }
        }
    }

    #[test]
    fn a_failure_no_retry_can_mend_is_dead_lettered_at_once_and_a_temporary_one_retried() {
        let unknown = JobFailure::permanent("no program `x` here");
        let AfterFailure::DeadLetter(reason) = after_failure(&unknown, false, 1, &config()) else {
            panic!("not dead-lettered");
        };
        assert!(reason.contains("no program `x` here"), "{reason}");
        let temporary = JobFailure::transient("exit 75");
        assert_eq!(
            after_failure(&temporary, false, 1, &config()),
            AfterFailure::Retry(Duration::from_secs(2))
        );
        assert!(matches!(
            after_failure(&temporary, false, 3, &config()),
            AfterFailure::DeadLetter(_)
        ));
    }

    #[test]
    fn each_failed_attempt_is_recorded_under_the_job_s_attempts_unless_the_lease_was_lost() {
        let failure = JobFailure::new("cannot read the gold dataset");
        let (file, record) = attempt_record(
            "w1",
            2,
            &failure,
            &AfterFailure::Retry(Duration::from_secs(4)),
        )
        .unwrap();
        assert_eq!(file, "attempts/002.json");
        assert_eq!(record["attempt"], 2);
        assert_eq!(record["worker"], "w1");
        assert_eq!(record["then"], "retried after 4 s");
        assert_eq!(record["error"], "cannot read the gold dataset");
        let (_, dead) =
            attempt_record("w1", 5, &failure, &AfterFailure::DeadLetter("x".into())).unwrap();
        assert_eq!(dead["then"], "dead-lettered");
        let stopped = JobFailure::interrupted("saved at turn 40");
        let (_, handed) = attempt_record("w1", 1, &stopped, &AfterFailure::HandOver).unwrap();
        assert_eq!(handed["outcome"], "stopped");
        assert!(attempt_record("w1", 1, &failure, &AfterFailure::LeaveIt).is_none());
    }

    #[test]
    fn a_stop_hands_over_even_on_the_last_receive() {
        for count in [1, 3] {
            assert_eq!(
                after_failure(&JobFailure::interrupted("saved"), false, count, &config()),
                AfterFailure::HandOver
            );
        }
    }

    #[test]
    fn a_job_s_failure_is_retried_with_a_doubling_delay_then_dead_lettered() {
        let failure = JobFailure::new("cannot read the gold dataset");
        assert_eq!(
            after_failure(&failure, false, 1, &config()),
            AfterFailure::Retry(Duration::from_secs(2))
        );
        assert_eq!(
            after_failure(&failure, false, 2, &config()),
            AfterFailure::Retry(Duration::from_secs(4))
        );
        assert_eq!(
            after_failure(&failure, false, 3, &config()),
            AfterFailure::DeadLetter(
                "failed on all 3 attempts; last error: cannot read the gold dataset".into()
            )
        );
    }

    #[test]
    fn a_backend_failure_hands_over_until_the_last_receive_and_says_so_then() {
        let failure = JobFailure::backend("writing artifact g/j/x: bucket unreachable");
        assert_eq!(
            after_failure(&failure, false, 2, &config()),
            AfterFailure::HandOver
        );
        match after_failure(&failure, false, 3, &config()) {
            AfterFailure::DeadLetter(reason) => {
                assert!(
                    reason.contains("the last because a backend failed"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
