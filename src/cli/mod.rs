//! Command-line parsing and dispatch.

mod backends;
mod enqueue;
mod generate_runs;
mod ingest;
mod launch;
mod logging;
mod plots;
mod report;
mod results;
mod run;
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
    /// Create the AWS queue (with its dead-letter queue), table and bucket; idempotent.
    Setup(setup::SetupArgs),
    /// Split a dataset into chunks and write one self_label job per chunk: job_0 plus
    /// dependents that run after it and retrieve examples from its labels.
    GenerateRuns(generate_runs::GenerateRunsArgs),
}

const ALIASES: [&str; 11] = [
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

/// Parses arguments, runs the command, and turns errors into a message and exit code.
pub fn main() -> ExitCode {
    // SAFETY: nothing has started a thread yet.
    unsafe { labelfleet_models::pin_cpu_threads() };
    let cli = Cli::parse_from(arguments());
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
            Command::Setup(args) => setup::run(&cli.global, args).await,
            Command::GenerateRuns(args) => generate_runs::run(&cli.global, args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
