//! `labelfleet enqueue runs/<dir>`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use labelfleet_core::board::JobBoard;
use labelfleet_core::job::JobBody;
use labelfleet_core::overrides::Override;
use labelfleet_enqueue::folder::load_folder;
use labelfleet_enqueue::git::GitState;
use labelfleet_enqueue::plan::{Known, PlannedJob, plan};
use labelfleet_enqueue::stamp_provenance;
use labelfleet_enqueue::submit::submit;
use labelfleet_enqueue::versions::{VersionPolicy, reconcile};

use super::GlobalArgs;
use super::backends::{self, Access, DEFAULT_MAX_RECEIVES};
use super::identity::who;

/// Arguments of `enqueue`.
#[derive(clap::Args, Debug)]
pub struct EnqueueArgs {
    /// The folder of job files (every *.json in it and its subfolders).
    pub dir: PathBuf,
    #[command(flatten)]
    pub options: JobOptions,
    /// Validate and show the plan without sending anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Supersede queued or held jobs of the same name whose config differs: workers then
    /// run only this version (without it, such an edit is refused).
    #[arg(long)]
    pub replace: bool,
    /// Run completed jobs again, as new runs (the completed entries are kept in the
    /// manifest's history; artifacts go under `rerun-N/`). Without it, a completed job
    /// is skipped, or refused if its config changed.
    #[arg(long)]
    pub rerun: bool,
}

/// How job files are adjusted and checked before they run: shared by `enqueue` and `run`.
#[derive(clap::Args, Debug)]
pub struct JobOptions {
    /// Override a setting: `path.to.key=value` (typed by the schema).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    /// Remove a setting: `path.to.key`.
    #[arg(long = "unset", value_name = "PATH")]
    pub unset: Vec<String>,
    /// Process a tiny subset (a couple of dialogues), to smoke-test a pipeline.
    #[arg(long)]
    pub mini: bool,
    /// Go ahead even if the git tree holding the jobs is dirty; the jobs are marked not reproducible.
    #[arg(long)]
    pub allow_dirty: bool,
}

impl JobOptions {
    /// The overrides, `--set`s then `--unset`s.
    pub fn overrides(&self) -> anyhow::Result<Vec<Override>> {
        let mut overrides = Vec::new();
        for s in &self.set {
            overrides.push(Override::parse_set(s).map_err(anyhow::Error::msg)?);
        }
        for u in &self.unset {
            overrides.push(Override::parse_unset(u).map_err(anyhow::Error::msg)?);
        }
        Ok(overrides)
    }

    /// The overrides as provenance records them, `--mini` included.
    pub fn describe(&self, overrides: &[Override]) -> Vec<String> {
        let mut described: Vec<String> = overrides.iter().map(Override::describe).collect();
        if self.mini {
            described.push("--mini".into());
        }
        described
    }

    /// Inspects the git tree holding `dir`, refusing a dirty one unless allowed.
    pub fn check_git(&self, dir: &Path) -> anyhow::Result<GitState> {
        let git = GitState::of(dir);
        if git.dirty && !self.allow_dirty {
            bail!(git.refusal(dir));
        }
        Ok(git)
    }
}

/// Runs `enqueue`.
pub async fn run(global: &GlobalArgs, args: EnqueueArgs) -> anyhow::Result<()> {
    if !args.dir.is_dir() {
        bail!("{} is not a folder of job files", args.dir.display());
    }
    let overrides = args.options.overrides()?;
    let mut jobs = load_folder(&args.dir, &overrides, args.options.mini)?;
    let git = args.options.check_git(&args.dir)?;
    stamp_provenance(&mut jobs, &git, &args.options.describe(&overrides), who());
    let backends = backends::open(global, DEFAULT_MAX_RECEIVES, Access::Create)
        .await?
        .backends;
    let known = Known::gather(&jobs, &*backends.board, &*backends.manifest)
        .await
        .context("reading the job board and manifest")?;
    let count = jobs.len();
    let mut planned = plan(jobs, &known)?;
    let decisions = reconcile(
        &mut planned,
        &known,
        VersionPolicy {
            replace: args.replace,
            rerun: args.rerun,
        },
    )?;
    let commit = git
        .commit
        .as_deref()
        .map(|c| {
            format!(
                "git {}{}",
                &c[..c.len().min(10)],
                if git.dirty {
                    ", dirty: not reproducible"
                } else {
                    ", clean"
                }
            )
        })
        .unwrap_or_else(|| "no git repository: not reproducible".into());
    println!(
        "validated {count} job{} in {} ({commit})",
        plural(count),
        args.dir.display()
    );
    if args.dry_run {
        for p in &planned {
            let after: Vec<String> = p.after.iter().map(ToString::to_string).collect();
            let waits = if after.is_empty() {
                String::new()
            } else {
                format!("  after {}", after.join(", "))
            };
            println!("  {} ({}){waits}", p.loaded.job.key(), p.loaded.job.kind());
        }
        println!("dry run: nothing was sent");
        return Ok(());
    }
    let report = submit(
        &planned,
        &decisions,
        &*backends.queue,
        &*backends.board,
        &*backends.manifest,
    )
    .await
    .with_context(|| format!("sending jobs to {}", backends.queue.describe()))?;
    println!(
        "sent {} job{} to the queue",
        report.sent.len(),
        plural(report.sent.len())
    );
    if let Some(calls) = backends.queue.transport_calls() {
        tracing::info!(
            jobs = report.sent.len(),
            queue_calls = calls,
            "enqueue finished"
        );
    }
    if !report.held.is_empty() {
        println!(
            "held {} until their dependencies complete:",
            report.held.len()
        );
        for (key, waiting) in &report.held {
            let waiting: Vec<String> = waiting.iter().map(ToString::to_string).collect();
            println!("  {key}  waits for {}", waiting.join(", "));
        }
    }
    for (key, versions) in &report.replaced {
        println!("  {key}  replaces the queued version ({versions}); workers run only the new one");
    }
    for (key, rerun) in &report.rerun {
        println!(
            "  {key}  runs again as rerun {rerun} (the completed entry moved to the manifest's history)"
        );
    }
    if !report.already_complete.is_empty() {
        println!(
            "skipped {} already in the manifest (--rerun runs them again): {}",
            report.already_complete.len(),
            report
                .already_complete
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    warn_of_unknown_programs(&planned, &*backends.board).await;
    println!("next: start workers with `labelfleet worker`, and watch with `labelfleet status`");
    Ok(())
}

/// How recently a worker must have reported for its allow-list to count.
const WORKERS_SEEN_WITHIN_SECS: i64 = 600;

/// Warns (on stderr) about each program that `command` jobs name and no worker seen
/// lately allows: such jobs are dead-lettered by the first worker that receives them.
async fn warn_of_unknown_programs(planned: &[PlannedJob], board: &dyn JobBoard) {
    let mut programs: Vec<(&str, &std::path::Path)> = planned
        .iter()
        .filter_map(|p| match &p.loaded.job.body {
            JobBody::Command(spec) => Some((spec.program.as_str(), p.loaded.source.as_path())),
            _ => None,
        })
        .collect();
    if programs.is_empty() {
        return;
    }
    programs.sort();
    programs.dedup_by_key(|(program, _)| *program);
    let since = chrono::Utc::now().timestamp() - WORKERS_SEEN_WITHIN_SECS;
    let workers = match board.workers(since).await {
        Ok(workers) => workers,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the workers' reports to check their allowed programs");
            return;
        }
    };
    for (program, file) in programs {
        if !workers
            .iter()
            .any(|w| w.commands.iter().any(|c| c == program))
        {
            eprintln!(
                "warning: {}: no worker seen in the last {} minutes allows the program `{program}`; \
                 start workers with `--allow-command {program}=/path/to/executable`, or its jobs are dead-lettered",
                file.display(),
                WORKERS_SEEN_WITHIN_SECS / 60
            );
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
