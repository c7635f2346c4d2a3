//! Command-line parsing and dispatch.

mod allowed_commands;
mod backends;
mod enqueue;
mod generate_runs;
mod identity;
mod ingest;
mod launch;
mod logging;
mod plots;
mod redact;
mod redrive;
mod report;
mod results;
mod run;
mod serve;
mod setup;
mod status;
mod table;
mod upload_dataset;
mod worker;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run LLM self-labelling, retraining and evaluation experiments as JSON jobs on a
/// fleet of workers that poll a queue.
#[derive(Parser, Debug)]
#[command(name = "labelfleet", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct GlobalArgs {
    /// The embedded backends' home folder (queue, manifest, job board, artifacts).
    #[arg(
        long,
        global = true,
        env = "LABELFLEET_HOME",
        default_value = ".labelfleet",
        help_heading = "Backends"
    )]
    pub home: PathBuf,
    /// Log as JSON lines (one object per event) instead of text.
    #[arg(
        long,
        global = true,
        env = "LABELFLEET_LOG_JSON",
        help_heading = "Logging"
    )]
    pub log_json: bool,
    /// Log filter, e.g. `debug` or `labelfleet_worker=debug` (RUST_LOG syntax).
    #[arg(
        long,
        global = true,
        env = "LABELFLEET_LOG",
        default_value = "info",
        help_heading = "Logging"
    )]
    pub log: String,
    /// AWS: the SQS FIFO queue (URL or name). With --manifest and --artifacts, selects the AWS backends.
    #[arg(
        long,
        global = true,
        env = "LABELFLEET_QUEUE",
        help_heading = "Backends"
    )]
    pub queue: Option<String>,
    /// AWS: the DynamoDB table for the manifest and job board, as dynamodb://TABLE.
    #[arg(
        long,
        global = true,
        env = "LABELFLEET_MANIFEST",
        help_heading = "Backends"
    )]
    pub manifest: Option<String>,
    /// AWS: where artifacts go, as s3://BUCKET/PREFIX.
    #[arg(
        long,
        global = true,
        env = "LABELFLEET_ARTIFACTS",
        help_heading = "Backends"
    )]
    pub artifacts: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate every job JSON in a folder, record provenance, order by dependencies
    /// and push the jobs onto the queue.
    Enqueue(enqueue::EnqueueArgs),
    /// Poll the queue and run jobs until stopped (SIGINT/SIGTERM), idle or done.
    Worker(worker::WorkerArgs),
    /// Start one worker per visible GPU (or N on the CPU), each pinned to its GPU;
    /// restart any that dies, and stop them together.
    Launch(launch::LaunchArgs),
    /// Show the fleet: queue depth, dead letters, held jobs, group progress, workers.
    Status(status::StatusArgs),
    /// Run one job file in this process, without a queue, with the same outputs.
    Run(run::RunArgs),
    /// Print the manifest entries (metrics) of a group, or of every group.
    Results(results::ResultsArgs),
    /// Print a table of a group's runs (a sweep's trials with their parameters) and
    /// write SVG plots: loss curves, and each sweep's metric against its parameters.
    Report(report::ReportArgs),
    /// Export a group's self-labelled turns as a Hugging Face dataset (parquet splits
    /// and a dataset card) named after its manifest entries.
    UploadDataset(upload_dataset::UploadDatasetArgs),
    /// Turn raw interaction logs (a `logs.tar.gz` per session folder) into a
    /// de-duplicated parquet dataset with a stats summary.
    Ingest(ingest::IngestArgs),
    /// Send dead-lettered jobs back to the queue once their cause is fixed (all of them,
    /// or a group's, or one job's).
    Redrive(redrive::RedriveArgs),
    /// Create the AWS queue (with its dead-letter queue), table and bucket; idempotent.
    Setup(setup::SetupArgs),
    /// Split a dataset into chunks and write one self_label job per chunk: job_0 plus
    /// dependents that run after it and retrieve examples from its labels.
    GenerateRuns(generate_runs::GenerateRunsArgs),
    /// Serve a read-only web dashboard: the fleet, groups and jobs, loss curves and
    /// sweeps, and a browser of labelled turns against gold.
    Serve(serve::ServeArgs),
}

const ALIASES: [&str; 13] = [
    "serve",
    "redrive",
    "ingest",
    "upload-dataset",
    "enqueue",
    "worker",
    "launch",
    "status",
    "run",
    "results",
    "report",
    "setup",
    "generate-runs",
];

/// Inserts the subcommand when the binary is invoked under a subcommand's name.
fn arguments() -> Vec<OsString> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = args.first().and_then(|a| {
        std::path::Path::new(a)
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
    });
    if let Some(name) = invoked_as
        && ALIASES.contains(&name.as_str())
    {
        args.insert(1, name.into());
    }
    args
}

/// A failure with an exit status of its own, from sysexits(3), so that whatever
/// supervises labelfleet (AWS Batch, systemd, `launch`) can tell a worker to start
/// again later from one that needs a person.
#[derive(Debug)]
pub struct Exit {
    /// The exit status.
    pub code: u8,
    /// What to tell the user.
    pub message: String,
}

impl Exit {
    /// EX_TEMPFAIL: the backends could not be reached; starting again later may work.
    pub const TEMPFAIL: u8 = 75;
    /// EX_CONFIG: a setting is wrong (a missing table, bucket or home); fix it first.
    pub const CONFIG: u8 = 78;

    /// A failure with this exit status.
    pub fn new(code: u8, message: impl Into<String>) -> Exit {
        Exit {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// Parses arguments, runs the command, and turns errors into a message and exit code.
pub fn main() -> ExitCode {
    // SAFETY: nothing has started a thread yet.
    unsafe { labelfleet_models::pin_cpu_threads() };
    // SAFETY: as above.
    unsafe { labelfleet_models::keep_freed_memory() };
    let cli = Cli::parse_from(arguments());
    if !matches!(cli.command, Command::Worker(_) | Command::Launch(_)) {
        // `status | head` closes the pipe early: end quietly, as other tools do,
        // instead of panicking in println!. Workers keep the default of ignoring it.
        // SAFETY: restoring the default disposition of a signal, before any thread.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    logging::init(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Enqueue(args) => enqueue::run(&cli.global, args).await,
            Command::Worker(args) => worker::run(&cli.global, args).await,
            Command::Launch(args) => launch::run(&cli.global, args).await,
            Command::Status(args) => status::run(&cli.global, args).await,
            Command::Run(args) => run::run(&cli.global, args).await,
            Command::Results(args) => results::run(&cli.global, args).await,
            Command::Report(args) => report::run(&cli.global, args).await,
            Command::UploadDataset(args) => upload_dataset::run(&cli.global, args).await,
            Command::Ingest(args) => ingest::run(args).await,
            Command::Redrive(args) => redrive::run(&cli.global, args).await,
            Command::Setup(args) => setup::run(&cli.global, args).await,
            Command::GenerateRuns(args) => generate_runs::run(&cli.global, args).await,
            Command::Serve(args) => serve::run(&cli.global, args).await,
        }
    });
    // A job's blocking work that outlived its release (it stops at its next check)
    // must not keep the process alive: exit once the async work is done.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<Exit>())
                .map_or(1, |x| x.code);
            ExitCode::from(code)
        }
    }
}
