//! `labelfleet redrive`: send dead-lettered jobs back to the queue once their cause is
//! fixed (a missing file restored, a bug fixed), with their receive counts starting
//! again from zero. The held jobs that waited on them run when they complete.

use anyhow::Context;
use labelfleet_core::job::JobKey;
use labelfleet_core::queue::{DeadLetter, Envelope};

use super::GlobalArgs;
use super::backends::{self, Access, DEFAULT_MAX_RECEIVES};

/// Arguments of `redrive`.
#[derive(clap::Args, Debug)]
pub struct RedriveArgs {
    /// Only the dead-lettered jobs of this group.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Only this job (`group/name`).
    #[arg(long, value_name = "GROUP/NAME")]
    pub job: Option<String>,
    /// List what would be sent back, and send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// The job a dead letter holds, if its body is a job at all.
fn job_of(letter: &DeadLetter) -> Option<JobKey> {
    Envelope::open(&letter.body, &letter.id)
        .ok()
        .map(|j| j.key())
}

/// Runs `redrive`.
pub async fn run(global: &GlobalArgs, args: RedriveArgs) -> anyhow::Result<()> {
    let wanted_job = args
        .job
        .as_deref()
        .map(|j| {
            j.split_once('/')
                .map(|(g, n)| JobKey {
                    group_id: g.into(),
                    name: n.into(),
                })
                .ok_or_else(|| anyhow::anyhow!("--job `{j}`: expected group/name"))
        })
        .transpose()?;
    let b = backends::open(global, DEFAULT_MAX_RECEIVES, Access::ReadOnly)
        .await?
        .backends;
    // Poison (a body that is no job) would only be dead-lettered again: never sent back.
    let select = |letter: &DeadLetter| {
        job_of(letter).is_some_and(|key| {
            args.group.as_ref().is_none_or(|g| &key.group_id == g)
                && wanted_job.as_ref().is_none_or(|j| &key == j)
        })
    };
    let chosen: Vec<DeadLetter> = if args.dry_run {
        b.queue
            .dead_letters(usize::MAX >> 1)
            .await
            .context("reading the dead-letter queue")?
            .into_iter()
            .filter(|d| select(d))
            .collect()
    } else {
        b.queue
            .redrive(&select)
            .await
            .with_context(|| format!("redriving dead letters of {}", b.queue.describe()))?
    };
    let verb = if args.dry_run {
        "would send back"
    } else {
        "sent back"
    };
    println!(
        "{verb} {} dead-lettered job{}",
        chosen.len(),
        if chosen.len() == 1 { "" } else { "s" }
    );
    for letter in &chosen {
        let key = job_of(letter).map(|k| k.to_string()).unwrap_or_default();
        println!(
            "  {key}  (dead-lettered after {} receive(s): {})",
            letter.receive_count, letter.reason
        );
    }
    if chosen.is_empty() {
        println!("nothing matched: `labelfleet status` lists the dead letters");
    } else if !args.dry_run {
        println!("next: workers run them; jobs held behind them run once they complete");
    }
    Ok(())
}
