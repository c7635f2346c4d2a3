//! `command` jobs: run a program from the worker's allow-list.
//!
//! A job names a program ([`CommandSpec::program`]); the worker's [`AllowList`] maps
//! the name to an executable (a job never gives a path or a shell line). The program
//! runs without a shell, in its own process group, in a fresh scratch folder, with
//! only this environment:
//!
//! - `LABELFLEET_OUTPUT_DIR`: everything written there becomes the job's artifacts
//!   (`output/<path>`, named by `<path>` in the manifest entry); `metrics.json` there
//!   becomes the entry's metrics;
//! - `LABELFLEET_INPUT_DIR`: the artifacts the job's `inputs` name, at `<from>/<path>`;
//! - `LABELFLEET_RESUME_DIR`: set when an earlier attempt was stopped and left a
//!   checkpoint, holding what it had written in its output folder;
//! - `LABELFLEET_PARAMS` (the job's params as JSON), `LABELFLEET_GROUP`,
//!   `LABELFLEET_JOB`, `LABELFLEET_ATTEMPT`, `LABELFLEET_DEVICE` (when the worker is
//!   pinned), `TMPDIR` (inside the scratch folder);
//! - the worker's [`BASE_ENV`](allow::BASE_ENV) variables and those it passes
//!   (`--pass-env`): no credentials unless the operator names them.
//!
//! A stdout line `LABELFLEET_PROGRESS <text>` becomes the job's progress in `status`;
//! stdout and stderr go to the worker's log and, capped, to the `command.log`
//! artifact. Exit 0 is success; 75 (EX_TEMPFAIL) a temporary failure, retried without
//! counting against the job; anything else a failure, retried with backoff and then
//! dead-lettered with the tail of stderr as the reason. On a timeout the group gets
//! SIGTERM, then SIGKILL. When the worker is stopping the program gets SIGTERM: if it
//! exits 75 what it wrote in its output folder is kept as a checkpoint, and the next
//! attempt finds it in `LABELFLEET_RESUME_DIR`.

pub mod allow;
mod files;
pub mod process;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use labelfleet_core::job::{CommandSpec, Job, JobBody, JobKind};
use serde_json::Value;

pub use self::allow::AllowList;
use self::process::{Controls, Ended, Launch};
use crate::runner::{JobContext, JobFailure, JobOutput, JobRunner};

/// The exit status that says "temporary failure, try again" (sysexits' EX_TEMPFAIL).
pub const EXIT_TEMPFAIL: i32 = 75;

/// Runs `command` jobs with the programs its allow-list names.
pub struct CommandRunner {
    allowed: AllowList,
}

impl CommandRunner {
    /// A runner for the programs `allowed` names.
    pub fn new(allowed: AllowList) -> CommandRunner {
        CommandRunner { allowed }
    }
}

#[async_trait]
impl JobRunner for CommandRunner {
    fn kind(&self) -> JobKind {
        JobKind::Command
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<JobOutput, JobFailure> {
        let JobBody::Command(spec) = &job.body else {
            return Err(JobFailure::new("not a command job"));
        };
        let program = self.allowed.program(&spec.program).ok_or_else(|| {
            let names = self.allowed.names();
            JobFailure::permanent(format!(
                "command.program: this worker does not allow the program `{}` ({}); start \
                 workers with `--allow-command {}=/path/to/executable`",
                spec.program,
                if names.is_empty() {
                    "it allows none".to_string()
                } else {
                    format!("it allows {}", names.join(", "))
                },
                spec.program
            ))
        })?;
        let scratch = tempfile::Builder::new()
            .prefix("labelfleet-command-")
            .tempdir()
            .map_err(|e| JobFailure::new(format!("creating a scratch folder: {e}")))?;
        let [input, output, resume, tmp] =
            ["input", "output", "resume", "tmp"].map(|d| scratch.path().join(d));
        for dir in [&input, &output, &tmp] {
            std::fs::create_dir_all(dir)
                .map_err(|e| JobFailure::new(format!("creating {}: {e}", dir.display())))?;
        }
        ctx.progress.set("fetching inputs");
        let inputs = files::fetch_inputs(job, spec, ctx, &input).await?;
        let resumed = files::fetch_checkpoint(job, ctx, &resume).await?;
        if let Some(count) = resumed {
            tracing::info!(
                files = count,
                "resuming from the checkpoint of an earlier attempt"
            );
        }
        let mut env = self.allowed.inherited_env();
        let dir_text = |p: &std::path::Path| p.to_string_lossy().into_owned();
        env.extend([
            ("LABELFLEET_OUTPUT_DIR".into(), dir_text(&output)),
            ("LABELFLEET_INPUT_DIR".into(), dir_text(&input)),
            (
                "LABELFLEET_PARAMS".into(),
                Value::Object(spec.params.clone()).to_string(),
            ),
            ("LABELFLEET_GROUP".into(), job.group_id.clone()),
            ("LABELFLEET_JOB".into(), job.name.clone()),
            ("LABELFLEET_ATTEMPT".into(), ctx.attempt.to_string()),
            ("TMPDIR".into(), dir_text(&tmp)),
        ]);
        if resumed.is_some() {
            env.push(("LABELFLEET_RESUME_DIR".into(), dir_text(&resume)));
        }
        if let Some(device) = &ctx.device {
            env.push(("LABELFLEET_DEVICE".into(), device.clone()));
        }
        ctx.progress.set(format!("running {}", spec.program));
        tracing::info!(program = %spec.program, inputs, "starting the command");
        let started = Instant::now();
        let launch = Launch {
            program,
            args: &spec.args,
            env,
            cwd: scratch.path(),
            timeout: spec.timeout_s.map(Duration::from_secs),
        };
        let controls = Controls {
            stop: &ctx.stop,
            cancel: &ctx.cancel,
            progress: &ctx.progress,
        };
        let (ended, out) = process::run(launch, controls).await.map_err(|e| {
            JobFailure::new(format!(
                "could not start `{}` ({}): {e}",
                spec.program,
                program.display()
            ))
        })?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(program = %spec.program, ?ended, seconds, "the command ended");
        // The log helps most when the run failed: keep it whatever the outcome.
        let log = if ended != Ended::Cancelled && ctx.holds_lease() {
            Some(
                ctx.write_artifact(job, "command.log", out.log.into_bytes())
                    .await?,
            )
        } else {
            None
        };
        let reason = |what: String| {
            if out.stderr_tail.is_empty() {
                what
            } else {
                format!(
                    "{what}; its stderr ended with: {}",
                    out.stderr_tail.join(" | ")
                )
            }
        };
        match ended {
            Ended::Exited(0) => finish(job, spec, ctx, &output, seconds, log).await,
            Ended::Exited(EXIT_TEMPFAIL) => Err(JobFailure::transient(reason(format!(
                "`{}` exited with status 75 (temporary failure)",
                spec.program
            )))),
            Ended::Exited(code) => Err(JobFailure::new(reason(format!(
                "`{}` exited with status {code}",
                spec.program
            )))),
            Ended::Killed(signal) => Err(JobFailure::new(reason(format!(
                "`{}` was killed by signal {signal}",
                spec.program
            )))),
            Ended::TimedOut => Err(JobFailure::new(reason(format!(
                "`{}` ran past its timeout of {} s and was stopped",
                spec.program,
                spec.timeout_s.unwrap_or_default()
            )))),
            Ended::Stopped(Some(EXIT_TEMPFAIL)) => {
                let saved = files::store_checkpoint(job, ctx, &output).await?;
                tracing::info!(files = saved, "the command saved a checkpoint");
                Err(JobFailure::interrupted(format!(
                    "`{}` saved a checkpoint of {saved} files for the worker's shutdown",
                    spec.program
                )))
            }
            Ended::Stopped(_) => Err(JobFailure::interrupted(format!(
                "`{}` was stopped for the worker's shutdown without saving a checkpoint \
                 (exit 75 after SIGTERM saves one)",
                spec.program
            ))),
            Ended::Cancelled => Err(JobFailure::new(format!(
                "`{}` was killed: the job was cancelled",
                spec.program
            ))),
        }
    }
}

/// A successful run's output: its files as artifacts, its metrics, its counts.
async fn finish(
    job: &Job,
    spec: &CommandSpec,
    ctx: &JobContext,
    output: &std::path::Path,
    seconds: f64,
    log: Option<String>,
) -> Result<JobOutput, JobFailure> {
    let metrics = match std::fs::read(output.join("metrics.json")) {
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(value @ Value::Object(_)) => value,
            Ok(_) | Err(_) => {
                return Err(JobFailure::new(format!(
                    "`{}` wrote a metrics.json that is not a JSON object",
                    spec.program
                )));
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Object(Default::default()),
        Err(e) => return Err(JobFailure::new(format!("reading metrics.json: {e}"))),
    };
    ctx.progress.set("storing outputs");
    let (mut artifacts, bytes) = files::upload(job, ctx, output, "output").await?;
    let files = artifacts.len() as u64;
    artifacts.extend(log.map(|key| ("command.log".to_string(), key)));
    let mut metrics = metrics;
    if let Value::Object(map) = &mut metrics {
        map.entry("seconds").or_insert(Value::from(seconds));
    }
    Ok(JobOutput {
        counts: [
            ("output_files".to_string(), files),
            ("output_bytes".to_string(), bytes),
        ]
        .into(),
        metrics,
        artifacts,
    })
}
