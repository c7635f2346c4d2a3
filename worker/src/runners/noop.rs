//! `noop` jobs: wait, then succeed (optionally writing an artifact). A health check
//! and benchmark load for the fleet.

use std::time::Duration;

use async_trait::async_trait;
use labelfleet_core::job::{Job, JobBody, JobKind};

use crate::runner::{JobContext, JobFailure, JobOutput, JobRunner};

/// Runs `noop` jobs.
pub struct NoopRunner;

#[async_trait]
impl JobRunner for NoopRunner {
    fn kind(&self) -> JobKind {
        JobKind::Noop
    }

    fn writes_artifacts(&self) -> bool {
        false
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<JobOutput, JobFailure> {
        let JobBody::Noop(spec) = &job.body else {
            return Err(JobFailure::new("not a noop job"));
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(spec.sleep_ms)) => {}
            _ = ctx.cancel.cancelled() => return Err(JobFailure::new("cancelled before it finished")),
        }
        let mut output = JobOutput {
            counts: [("slept_ms".to_string(), spec.sleep_ms)].into(),
            ..JobOutput::default()
        };
        if spec.write_bytes > 0 {
            const MAX_BYTES: u64 = 1 << 30;
            if spec.write_bytes > MAX_BYTES {
                return Err(JobFailure::new("noop.write_bytes: at most 1 GiB"));
            }
            let mut bytes = format!("written by attempt {}\n", ctx.attempt).into_bytes();
            bytes.resize(spec.write_bytes as usize, b'.');
            let key = ctx.write_artifact(job, "noop.txt", bytes).await?;
            output.artifacts.insert("noop".to_string(), key);
        }
        Ok(output)
    }
}
