//! `labelfleet launch`: one worker process per visible GPU on this machine, each pinned
//! to its GPU, restarted when it dies, and stopped together.
//!
//! GPUs are those `CUDA_VISIBLE_DEVICES` lists, or every GPU `nvidia-smi -L` shows.
//! Worker N runs with `CUDA_VISIBLE_DEVICES` set to that one GPU and `--device cuda:0`,
//! so a worker sees only its own GPU. A worker that exits with an error or is killed
//! is started again after a backoff — also when its backends were unreachable at
//! start (exit status 75: the worker has already waited a minute for them) —; one that
//! exits cleanly (`--idle-exit`, `--max-jobs`, a stop signal) is not, and one that
//! finds a wrong setting right at its first start (exit status 78 or 2: no GPU, a
//! misnamed table or bucket, a bad flag) stops the launch with that error, since
//! starting it again would not help. SIGINT/SIGTERM are passed to every worker (which
//! checkpoint or finish within their grace period); the launcher exits when they have.

use std::collections::HashMap;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use labelfleet_worker::gpu::visible_gpus;
use tokio::process::{Child, Command};

use super::identity::hostname;
use super::worker::seconds_in;
use super::{Exit, GlobalArgs};

/// Arguments of `launch`.
#[derive(clap::Args, Debug)]
pub struct LaunchArgs {
    /// Run this many workers on the CPU instead of one per GPU.
    #[arg(long, value_name = "N")]
    pub cpu_workers: Option<usize>,
    /// Refuse to start without a GPU (the seed's REQUIRE_CUDA); passed to every worker.
    #[arg(long, env = "LABELFLEET_REQUIRE_GPU")]
    pub require_gpu: bool,
    /// Seconds before restarting a worker that died; doubles while it keeps dying within
    /// a minute of starting, up to 5 minutes.
    #[arg(long, default_value_t = 1.0, value_name = "SECS", value_parser = seconds_in(0.0, 3_600.0))]
    pub restart_delay: f64,
    /// Arguments for every worker, after `--` (e.g. `-- --grace 90 --idle-exit 600`).
    #[arg(last = true, value_name = "WORKER ARGS")]
    pub worker_args: Vec<String>,
}

/// A worker that finds a wrong setting this soon after its first start is not restarted.
const STARTUP_WINDOW: Duration = Duration::from_secs(10);

/// Whether an exit status says a setting is wrong (clap's usage error, or the worker's
/// [`Exit::CONFIG`]): starting the worker again would fail the same way.
fn misconfigured(status: &ExitStatus) -> bool {
    matches!(status.code(), Some(2)) || status.code() == Some(i32::from(Exit::CONFIG))
}

/// One worker slot: which GPU (or none), and the process in it.
struct Slot {
    name: String,
    gpu: Option<String>,
    child: Option<Child>,
    started: Instant,
    delay: Duration,
    restarts: u32,
}

fn global_env(global: &GlobalArgs) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("LABELFLEET_HOME", global.home.display().to_string()),
        ("LABELFLEET_LOG", global.log.clone()),
    ];
    if global.log_json {
        env.push(("LABELFLEET_LOG_JSON", "true".into()));
    }
    for (name, value) in [
        ("LABELFLEET_QUEUE", &global.queue),
        ("LABELFLEET_MANIFEST", &global.manifest),
        ("LABELFLEET_ARTIFACTS", &global.artifacts),
    ] {
        if let Some(v) = value {
            env.push((name, v.clone()));
        }
    }
    env
}

fn spawn(slot: &Slot, global: &GlobalArgs, args: &LaunchArgs) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command.arg("worker").arg("--worker-id").arg(&slot.name);
    for (name, value) in global_env(global) {
        command.env(name, value);
    }
    match &slot.gpu {
        Some(gpu) => {
            command
                .env("CUDA_VISIBLE_DEVICES", gpu)
                .args(["--device", "cuda:0"]);
            if args.require_gpu {
                command.arg("--require-gpu");
            }
        }
        None => {
            command.args(["--device", "cpu"]);
        }
    }
    command.args(&args.worker_args);
    Ok(command.spawn()?)
}

fn signal_all(slots: &[Slot], signal: i32) {
    for slot in slots {
        if let Some(pid) = slot.child.as_ref().and_then(Child::id) {
            // SAFETY: kill(2) with a pid we spawned and a valid signal number.
            unsafe {
                libc::kill(pid as i32, signal);
            }
        }
    }
}

fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => "an unknown status".into(),
    }
}

/// Runs `launch`.
pub async fn run(global: &GlobalArgs, args: LaunchArgs) -> anyhow::Result<()> {
    let host = hostname();
    let gpus: Vec<Option<String>> = match args.cpu_workers {
        Some(0) => anyhow::bail!("--cpu-workers must be at least 1"),
        Some(n) if args.require_gpu => {
            anyhow::bail!("--cpu-workers {n} and --require-gpu contradict each other")
        }
        Some(n) => vec![None; n],
        None => {
            let gpus = visible_gpus();
            if gpus.is_empty() {
                anyhow::bail!(
                    "no GPU is visible (CUDA_VISIBLE_DEVICES, nvidia-smi -L); run CPU workers with --cpu-workers N"
                );
            }
            gpus.into_iter().map(Some).collect()
        }
    };
    let base_delay = Duration::from_secs_f64(args.restart_delay);
    let mut slots: Vec<Slot> = gpus
        .into_iter()
        .enumerate()
        .map(|(i, gpu)| Slot {
            name: match &gpu {
                Some(id) => format!("{host}-gpu{id}"),
                None => format!("{host}-cpu{i}"),
            },
            gpu,
            child: None,
            started: Instant::now(),
            delay: base_delay,
            restarts: 0,
        })
        .collect();
    for slot in &mut slots {
        slot.child = Some(spawn(slot, global, &args)?);
        slot.started = Instant::now();
        tracing::info!(worker = %slot.name, gpu = slot.gpu.as_deref().unwrap_or("cpu"), "worker started");
    }

    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut stopping = false;
    let mut pending_restarts: HashMap<usize, Instant> = HashMap::new();
    let mut failed_at_start: Option<String> = None;
    loop {
        if slots.iter().all(|s| s.child.is_none()) && pending_restarts.is_empty() {
            break;
        }
        // Poll children every 200 ms: few processes, and no exit is missed.
        tokio::select! {
            _ = interrupt.recv() => {
                tracing::info!("SIGINT: passing it to every worker");
                stopping = true;
                pending_restarts.clear();
                signal_all(&slots, libc::SIGINT);
            }
            _ = terminate.recv() => {
                tracing::info!("SIGTERM: passing it to every worker");
                stopping = true;
                pending_restarts.clear();
                signal_all(&slots, libc::SIGTERM);
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        for (i, slot) in slots.iter_mut().enumerate() {
            let Some(child) = slot.child.as_mut() else {
                continue;
            };
            let Some(status) = child.try_wait()? else {
                continue;
            };
            slot.child = None;
            if status.success() || stopping {
                tracing::info!(worker = %slot.name, status = %describe(&status), "worker exited");
                continue;
            }
            // A worker that finds a wrong setting right at its first start (no GPU, a
            // misnamed table): restarting would not help. Unreachable backends (75)
            // and crashes are restarted with backoff.
            if slot.restarts == 0
                && misconfigured(&status)
                && slot.started.elapsed() < STARTUP_WINDOW
            {
                failed_at_start = Some(format!(
                    "worker {} failed at start-up ({}); its log above says why",
                    slot.name,
                    describe(&status)
                ));
                continue;
            }
            // Dying again soon after a start: back off further.
            if slot.started.elapsed() < Duration::from_secs(60) && slot.restarts > 0 {
                slot.delay = (slot.delay * 2).min(Duration::from_secs(300));
            } else {
                slot.delay = base_delay;
            }
            tracing::warn!(
                worker = %slot.name,
                status = %describe(&status),
                restart_in_s = slot.delay.as_secs_f64(),
                "worker died; restarting it"
            );
            pending_restarts.insert(i, Instant::now() + slot.delay);
        }
        if let Some(why) = &failed_at_start
            && !stopping
        {
            tracing::error!(%why, "stopping the other workers");
            stopping = true;
            pending_restarts.clear();
            signal_all(&slots, libc::SIGTERM);
        }
        let due: Vec<usize> = pending_restarts
            .iter()
            .filter(|(_, at)| Instant::now() >= **at)
            .map(|(i, _)| *i)
            .collect();
        for i in due {
            pending_restarts.remove(&i);
            let slot = &mut slots[i];
            slot.child = Some(spawn(slot, global, &args)?);
            slot.started = Instant::now();
            slot.restarts += 1;
            tracing::info!(worker = %slot.name, restarts = slot.restarts, "worker restarted");
        }
    }
    if let Some(why) = failed_at_start {
        anyhow::bail!(why);
    }
    tracing::info!("every worker has exited");
    Ok(())
}
