//! `labelfleet run job.json`: one job in this process, same code path as a worker.

use std::path::PathBuf;

use labelfleet_enqueue::folder::{LoadedJob, load_file};
use labelfleet_enqueue::stamp_provenance;
use labelfleet_manifest::ManifestKey;
use labelfleet_worker::execute::execute;
use labelfleet_worker::runner::Runners;
use tokio_util::sync::CancellationToken;

use super::GlobalArgs;
use super::allowed_commands::AllowedCommands;
use super::backends::{self, Access, DEFAULT_MAX_RECEIVES};
use super::enqueue::JobOptions;
use super::identity::{hostname, who};

/// Arguments of `run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The job file.
    pub job: PathBuf,
    #[command(flatten)]
    pub options: JobOptions,
    #[command(flatten)]
    pub commands: AllowedCommands,
}

/// Runs `run`.
pub async fn run(global: &GlobalArgs, args: RunArgs) -> anyhow::Result<()> {
    let overrides = args.options.overrides()?;
    let commands = args.commands.allow_list()?;
    let job = load_file(&args.job, &overrides, args.options.mini)?;
    let folder = args
        .job
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let git = args.options.check_git(folder)?;
    let described = args.options.describe(&overrides);
    let mut loaded = [LoadedJob {
        source: args.job.clone(),
        job,
    }];
    stamp_provenance(&mut loaded, &git, &described, who());
    let [LoadedJob { job, .. }] = loaded;
    let backends = backends::open(global, DEFAULT_MAX_RECEIVES, Access::Create)
        .await?
        .backends;
    if let Some(entry) = backends
        .manifest
        .get(&ManifestKey::from(&job.key()))
        .await?
    {
        println!(
            "{} is already in the manifest (completed {}); use a new group_id or name to run it again",
            job.key(),
            entry.completed_at
        );
        println!("{}", serde_json::to_string_pretty(&entry.metrics)?);
        return Ok(());
    }
    let worker_id = format!("run-{}-{}", hostname(), std::process::id());
    let completion = execute(
        &job,
        1,
        &worker_id,
        &backends,
        &Runners::standard(Default::default(), commands),
        CancellationToken::new(),
    )
    .await?;
    println!("{} completed", job.key());
    println!(
        "{}",
        serde_json::to_string_pretty(&completion.entry.metrics)?
    );
    for (role, key) in &completion.entry.artifacts {
        if let Ok(key) = labelfleet_core::artifacts::ArtifactKey::new(key) {
            println!("{role}: {}", backends.artifacts.locate(&key));
        }
    }
    Ok(())
}
