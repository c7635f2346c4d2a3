//! `labelfleet worker`.

use std::sync::Arc;
use std::time::Duration;

use labelfleet_worker::checks::{StartupFailure, check_at_startup};
use labelfleet_worker::runner::Runners;
use labelfleet_worker::runners::models::{GB, ModelCache, default_bound};
use labelfleet_worker::shutdown::Shutdown;
use labelfleet_worker::worker::{ExitReason, Worker, WorkerConfig, new_worker_id};

use super::allowed_commands::AllowedCommands;
use super::backends::{self, Access, Opened};
use super::identity::hostname;
use super::{Exit, GlobalArgs};

/// Arguments of `worker`.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// Seconds a received job stays invisible to other workers between heartbeats
    /// (1 to 43200, SQS's limit).
    #[arg(long, default_value_t = 60.0, value_name = "SECS", value_parser = seconds_in(1.0, 43_200.0))]
    pub visibility_timeout: f64,
    /// Seconds between heartbeats (default: a third of the visibility timeout; at least
    /// 0.05, and shorter than the visibility timeout).
    #[arg(long, value_name = "SECS", value_parser = seconds_in(0.05, 43_200.0))]
    pub heartbeat: Option<f64>,
    /// Seconds to long-poll for a message before polling again (SQS waits at most 20
    /// per call).
    #[arg(long, default_value_t = 20.0, value_name = "SECS", value_parser = seconds_in(0.0, 3_600.0))]
    pub wait: f64,
    /// Deliveries after which a failing job is dead-lettered with its last error
    /// (1 to 1000, as SQS's redrive policy allows).
    #[arg(long, default_value_t = backends::DEFAULT_MAX_RECEIVES, env = "LABELFLEET_MAX_RECEIVES", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_receives: u32,
    /// Seconds before the first retry of a failed job; doubles per attempt.
    #[arg(long, default_value_t = 5.0, value_name = "SECS", value_parser = seconds_in(0.0, 43_200.0))]
    pub retry_base: f64,
    /// Seconds a running job may take to save its progress or finish after
    /// SIGINT/SIGTERM before it is released.
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = seconds_in(0.0, 86_400.0))]
    pub grace: f64,
    /// Exit after running this many jobs.
    #[arg(long, value_name = "N")]
    pub max_jobs: Option<u64>,
    /// Exit once the queue has answered "empty" for this many seconds and nothing that
    /// could still bring work is in flight or held (exit status 0). A worker that
    /// cannot use its backends for this long exits with status 75 instead, so that
    /// whatever supervises it starts it again.
    #[arg(long, value_name = "SECS", value_parser = seconds_in(0.0, 2_592_000.0))]
    pub idle_exit: Option<f64>,
    /// Handle at most one message, then exit.
    #[arg(long)]
    pub once: bool,
    /// Job slots: how many jobs this worker runs at once (1 to 256). It receives only
    /// as many messages as it has free slots, so with 1 it never holds more than one.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// This worker's id in `status` (default: host-pid-random).
    #[arg(long, env = "LABELFLEET_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Run every model of every job on this device (`cpu`, `cuda`, `cuda:N`), whatever
    /// the job files say: one worker per GPU, each pinned to its own.
    #[arg(long, env = "LABELFLEET_DEVICE", value_name = "DEVICE")]
    pub device: Option<String>,
    /// Refuse to start unless a CUDA GPU can be opened (the device given, or `cuda:0`):
    /// a GPU machine that lost its driver should not quietly train on its CPU.
    #[arg(long, env = "LABELFLEET_REQUIRE_GPU")]
    pub require_gpu: bool,
    /// Gigabytes of models to keep loaded between jobs (default: half of the machine's
    /// memory, or of the pinned GPU's free memory); the least recently used go first.
    #[arg(long, env = "LABELFLEET_MODEL_MEMORY", value_name = "GB", value_parser = gigabytes)]
    pub model_memory: Option<f64>,
    #[command(flatten)]
    pub commands: AllowedCommands,
}

/// A parser of `--model-memory`: a positive number of gigabytes.
fn gigabytes(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of gigabytes"))?;
    if value.is_finite() && value > 0.0 && value <= 1e6 {
        Ok(value)
    } else {
        Err("must be more than 0 and at most 1000000 gigabytes".into())
    }
}

/// How long a starting worker waits out unreachable backends before it gives up with
/// [`Exit::TEMPFAIL`].
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);

/// A parser of seconds between `low` and `high`, for flags that take durations.
pub fn seconds_in(
    low: f64,
    high: f64,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |text: &str| {
        let value: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not a number of seconds"))?;
        if value.is_finite() && (low..=high).contains(&value) {
            Ok(value)
        } else {
            Err(format!("must be between {low} and {high} seconds"))
        }
    }
}

/// The device a worker pins its jobs to, checked: with `require_gpu`, a CUDA device
/// that opens.
pub fn checked_device(device: Option<String>, require_gpu: bool) -> anyhow::Result<Option<String>> {
    let device = match (device, require_gpu) {
        (None, true) => Some("cuda:0".to_string()),
        (device, _) => device,
    };
    if let Some(name) = &device {
        let opened = labelfleet_models::parse_device(name).map_err(|e| {
            anyhow::anyhow!(
                "{e}{}",
                if require_gpu {
                    " (--require-gpu: this worker runs only on a GPU)"
                } else {
                    ""
                }
            )
        })?;
        if require_gpu && !opened.is_cuda() {
            anyhow::bail!("--require-gpu, but the device is `{name}`; give --device cuda:N");
        }
    }
    Ok(device)
}

/// Runs `worker`.
pub async fn run(global: &GlobalArgs, args: WorkerArgs) -> anyhow::Result<()> {
    let host = hostname();
    let mut config = WorkerConfig::new(args.worker_id.unwrap_or_else(|| new_worker_id(&host)));
    // The parsers bound every duration, so none of these conversions can fail.
    config.visibility = Duration::from_secs_f64(args.visibility_timeout);
    config.heartbeat_every = args
        .heartbeat
        .map_or(config.visibility / 3, Duration::from_secs_f64);
    if config.heartbeat_every >= config.visibility {
        anyhow::bail!(Exit::new(
            Exit::CONFIG,
            "--heartbeat must be shorter than --visibility-timeout, or the job's lease runs out between heartbeats"
        ));
    }
    config.wait = Duration::from_secs_f64(args.wait);
    config.max_receives = args.max_receives;
    config.retry_base = Duration::from_secs_f64(args.retry_base);
    config.grace = Duration::from_secs_f64(args.grace);
    config.max_jobs = args.max_jobs;
    config.idle_exit = args.idle_exit.map(Duration::from_secs_f64);
    config.once = args.once;
    config.concurrency = args.concurrency as usize;
    let commands = args.commands.allow_list()?;
    if !commands.names().is_empty() {
        tracing::info!(programs = ?commands.names(), "command jobs may run these programs");
    }
    config.commands = commands.names().into_iter().map(str::to_string).collect();
    config.device = checked_device(args.device, args.require_gpu)
        .map_err(|e| Exit::new(Exit::CONFIG, format!("{e:#}")))?;
    if let Some(device) = &config.device {
        tracing::info!(%device, "every job's models run on this device");
    }
    let opened = open_patiently(global, config.max_receives).await?;
    if let Some(redrive) = opened.redrive_max_receives {
        // SQS moves a message to the dead-letter queue by itself after `redrive`
        // receives; failing jobs must be dead-lettered (with their reason) by then.
        if config.max_receives > redrive {
            tracing::info!(
                max_receives = redrive,
                "using the queue's redrive limit as --max-receives"
            );
        }
        config.max_receives = config.max_receives.min(redrive);
    }
    let backends = opened.backends;
    check_at_startup(&backends, STARTUP_PATIENCE)
        .await
        .map_err(|e| match e {
            StartupFailure::Misconfigured(why) => Exit::new(Exit::CONFIG, why),
            StartupFailure::Unreachable(why) => Exit::new(Exit::TEMPFAIL, why),
        })?;
    let shutdown = Shutdown::default();
    shutdown.listen_for_signals()?;
    let bound = args.model_memory.map_or_else(
        || default_bound(config.device.as_deref()),
        |gb| (gb * GB) as u64,
    );
    tracing::info!(
        gb = bound as f64 / GB,
        "models kept loaded between jobs, at most"
    );
    let models = Arc::new(ModelCache::new(bound));
    let summary = Worker::new(
        config,
        backends,
        Runners::standard(models, commands),
        shutdown,
        host,
    )
    .run()
    .await;
    match summary.reason {
        ExitReason::Unreachable(why) => Err(Exit::new(Exit::TEMPFAIL, why).into()),
        ExitReason::Lost(why) => Err(anyhow::anyhow!(why)),
        _ => Ok(()),
    }
}

/// Opens the backends, waiting out an outage for up to [`STARTUP_PATIENCE`].
async fn open_patiently(global: &GlobalArgs, max_receives: u32) -> anyhow::Result<Opened> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(500);
    loop {
        match backends::open(global, max_receives, Access::Create).await {
            Err(e)
                if started.elapsed() < STARTUP_PATIENCE
                    && e.downcast_ref::<Exit>()
                        .is_some_and(|x| x.code == Exit::TEMPFAIL) =>
            {
                tracing::warn!(error = %format!("{e:#}"), retry_in_ms = pause.as_millis() as u64, "the backends are unreachable; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
            other => return other,
        }
    }
}
