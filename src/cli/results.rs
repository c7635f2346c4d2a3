//! `labelfleet results`.

use anyhow::Context;
use labelfleet_manifest::list_all;

use super::GlobalArgs;
use super::backends::{self, Access, DEFAULT_MAX_RECEIVES};
use super::table::Table;

/// Arguments of `results`.
#[derive(clap::Args, Debug)]
pub struct ResultsArgs {
    /// Only this group (default: every group).
    #[arg(long)]
    pub group: Option<String>,
    /// Print the manifest entries as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `results`.
pub async fn run(global: &GlobalArgs, args: ResultsArgs) -> anyhow::Result<()> {
    let b = backends::open(global, DEFAULT_MAX_RECEIVES, Access::ReadOnly)
        .await?
        .backends;
    let groups: Vec<String> = match &args.group {
        Some(g) => vec![g.clone()],
        None => b
            .manifest
            .groups()
            .await?
            .into_iter()
            .map(|g| g.group_id)
            .collect(),
    };
    let mut entries = Vec::new();
    for g in &groups {
        entries.extend(
            list_all(&*b.manifest, g)
                .await
                .with_context(|| format!("listing group {g}"))?,
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!(
            "no results yet{}",
            args.group
                .map(|g| format!(" in group {g}"))
                .unwrap_or_default()
        );
        return Ok(());
    }
    let metric = |e: &labelfleet_manifest::ManifestEntry, name: &str| {
        e.metrics
            .get(name)
            .and_then(|v| v.as_f64())
            .map(|v| format!("{v:.3}"))
            .unwrap_or_else(|| "-".into())
    };
    let mut table = Table::new(&[
        "GROUP",
        "RUN",
        "KIND",
        "TURNS",
        "JGA",
        "TURN ACC",
        "SLOT F1",
        "ATTEMPT",
        "REPRODUCIBLE",
    ]);
    for e in &entries {
        table.row(vec![
            e.group_id.clone(),
            e.run_id.clone(),
            e.kind.clone(),
            e.counts
                .get("turns")
                .map(ToString::to_string)
                .unwrap_or_else(|| "-".into()),
            metric(e, "joint_goal_accuracy"),
            metric(e, "turn_accuracy"),
            metric(e, "slot_f1"),
            e.attempt.to_string(),
            e.provenance
                .as_ref()
                .map(|p| if p.reproducible { "yes" } else { "no" })
                .unwrap_or("-")
                .to_string(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}
