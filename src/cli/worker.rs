//! `labelfleet worker`.

use std::time::Duration;

use labelfleet_worker::runner::Runners;
use labelfleet_worker::shutdown::Shutdown;
use labelfleet_worker::worker::{Worker, WorkerConfig, new_worker_id};

use super::GlobalArgs;
use super::backends;
use super::enqueue::hostname;

/// Arguments of `worker`.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// Seconds a received job stays invisible to other workers between heartbeats.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub visibility_timeout: f64,
    /// Seconds between heartbeats (default: a third of the visibility timeout).
    #[arg(long, value_name = "SECS")]
    pub heartbeat: Option<f64>,
    /// Seconds to long-poll for a message before polling again.
    #[arg(long, default_value_t = 20.0, value_name = "SECS")]
    pub wait: f64,
    /// Deliveries after which a failing job is dead-lettered with its last error.
    #[arg(long, default_value_t = backends::DEFAULT_MAX_RECEIVES, env = "LABELFLEET_MAX_RECEIVES")]
    pub max_receives: u32,
    /// Seconds before the first retry of a failed job; doubles per attempt.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub retry_base: f64,
    /// Seconds a running job may take to finish after SIGINT/SIGTERM before it is released.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub grace: f64,
    /// Exit after running this many jobs.
    #[arg(long, value_name = "N")]
    pub max_jobs: Option<u64>,
    /// Exit once the queue has stayed empty this many seconds (not while jobs held on
    /// the board wait on a job another worker is running).
    #[arg(long, value_name = "SECS")]
    pub idle_exit: Option<f64>,
    /// Handle at most one message, then exit.
    #[arg(long)]
    pub once: bool,
    /// Job slots: how many jobs this worker runs at once. It receives only as many
    /// messages as it has free slots, so with 1 it never holds more than one.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub concurrency: usize,
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

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow::anyhow!("--{flag} must be a non-negative number of seconds"))
}

/// Runs `worker`.
pub async fn run(global: &GlobalArgs, args: WorkerArgs) -> anyhow::Result<()> {
    let host = hostname();
    let mut config = WorkerConfig::new(args.worker_id.unwrap_or_else(|| new_worker_id(&host)));
    config.visibility = seconds(args.visibility_timeout, "visibility-timeout")?;
    if config.visibility < Duration::from_secs(1) {
        anyhow::bail!("--visibility-timeout must be at least 1 second");
    }
    config.heartbeat_every = match args.heartbeat {
        Some(h) => seconds(h, "heartbeat")?,
        None => config.visibility / 3,
    };
    if config.heartbeat_every >= config.visibility {
        anyhow::bail!(
            "--heartbeat must be shorter than --visibility-timeout, or the job's lease runs out between heartbeats"
        );
    }
    config.wait = seconds(args.wait, "wait")?;
    config.max_receives = args.max_receives.max(1);
    config.retry_base = seconds(args.retry_base, "retry-base")?;
    config.grace = seconds(args.grace, "grace")?;
    config.max_jobs = args.max_jobs;
    config.idle_exit = args
        .idle_exit
        .map(|s| seconds(s, "idle-exit"))
        .transpose()?;
    config.once = args.once;
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    config.concurrency = args.concurrency;
    config.device = checked_device(args.device, args.require_gpu)?;
    if let Some(device) = &config.device {
        tracing::info!(%device, "every job's models run on this device");
    }
    let opened = backends::open(global, config.max_receives).await?;
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
    let shutdown = Shutdown::default();
    shutdown.listen_for_signals()?;
    Worker::new(config, backends, Runners::standard(), shutdown, host)
        .run()
        .await;
    Ok(())
}
