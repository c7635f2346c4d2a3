//! `labelfleet report GROUP`: a table of a group's runs (sweep trials with their
//! parameters) and SVG plots: every retrain run's loss curves, and each sweep's metric
//! against each of its parameters.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use labelfleet_core::artifacts::ArtifactKey;
use labelfleet_manifest::{ManifestEntry, list_all};
use serde_json::Value;

use super::GlobalArgs;
use super::backends::{self, Access, DEFAULT_MAX_RECEIVES};
use super::plots::{self, Curves};
use super::table::Table;

/// Arguments of `report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The group to report on.
    pub group: String,
    /// Where to write the plots (default: `reports/GROUP`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Metrics shown as columns when any run of the group has them, in this order.
const COLUMNS: [(&str, &str); 9] = [
    ("joint_goal_accuracy", "JGA"),
    ("slot_f1", "SLOT F1"),
    ("train_loss", "TRAIN LOSS"),
    ("valid_loss", "VALID LOSS"),
    ("test_loss", "TEST LOSS"),
    ("loss", "LOSS"),
    ("perplexity", "PPL"),
    ("tokens_per_second", "TOK/S"),
    ("best_value", "BEST"),
];

fn format_value(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.fract() != 0.0 && x.abs() < 1e-2 => format!("{x:.1e}"),
            Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
            Some(x) if x.fract() != 0.0 => format!("{x:.4}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Each trial run's parameters, from the group's tune entries' plans (and, for the
/// trials of a model-based round, from what its round job proposed).
fn trial_params(entries: &[ManifestEntry]) -> BTreeMap<String, String> {
    let proposed: BTreeMap<&str, &Value> = entries
        .iter()
        .filter(|e| e.kind == "tune")
        .filter_map(|e| e.metrics.get("proposals")?.as_object())
        .flatten()
        .map(|(trial, params)| (trial.as_str(), params))
        .collect();
    let mut out = BTreeMap::new();
    for e in entries.iter().filter(|e| e.kind == "tune") {
        let Some(config) = e.provenance.as_ref().map(|p| &p.config) else {
            continue;
        };
        if !config["tune"]["round"].is_null() {
            continue;
        }
        for trial in config["tune"]["planned"].as_array().into_iter().flatten() {
            let planned = trial["params"].as_object().filter(|m| !m.is_empty());
            let params = planned
                .or_else(|| proposed.get(trial["trial"].as_str()?)?.as_object())
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", format_value(v)))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            for run in trial["runs"].as_array().into_iter().flatten() {
                for name in [&run["job"], &run["retrain"], &run["eval"]] {
                    if let Some(name) = name.as_str() {
                        out.insert(name.to_string(), params.clone());
                    }
                }
            }
        }
    }
    out
}

async fn read_json(
    artifacts: &dyn labelfleet_core::artifacts::ArtifactStore,
    key: &str,
) -> anyhow::Result<Value> {
    let key = ArtifactKey::new(key)?;
    let bytes = artifacts
        .get(&key)
        .await?
        .with_context(|| format!("artifact {key} is missing"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{key} is not JSON"))
}

/// Runs `report`.
pub async fn run(global: &GlobalArgs, args: ReportArgs) -> anyhow::Result<()> {
    let b = backends::open(global, DEFAULT_MAX_RECEIVES, Access::ReadOnly)
        .await?
        .backends;
    let entries = list_all(&*b.manifest, &args.group)
        .await
        .with_context(|| format!("listing group {}", args.group))?;
    if entries.is_empty() {
        anyhow::bail!(
            "group `{}` has no manifest entries; `labelfleet results` lists the groups that do",
            args.group
        );
    }
    let params = trial_params(&entries);
    // The known metrics, then what the group's sweeps optimise (a command's own
    // metric, such as `valid_rmse`), when some entry has them.
    let mut candidates: Vec<(String, String)> = COLUMNS
        .iter()
        .map(|(m, h)| (m.to_string(), h.to_string()))
        .collect();
    for e in entries.iter().filter(|e| e.kind == "tune") {
        if let Some(metric) = e.metrics.get("metric").and_then(Value::as_str) {
            let metric = metric.strip_prefix("eval.").unwrap_or(metric);
            if !candidates.iter().any(|(m, _)| m == metric) {
                candidates.push((metric.to_string(), metric.to_uppercase()));
            }
        }
    }
    let columns: Vec<(String, String)> = candidates
        .into_iter()
        .filter(|(m, _)| {
            entries
                .iter()
                .any(|e| e.metrics.get(m).is_some_and(|v| !v.is_null()))
        })
        .collect();
    let mut header = vec!["RUN", "KIND"];
    header.extend(columns.iter().map(|c| c.1.as_str()));
    if !params.is_empty() {
        header.push("PARAMS");
    }
    let mut table = Table::new(&header);
    for e in &entries {
        let mut row = vec![e.run_id.clone(), e.kind.clone()];
        for (metric, _) in &columns {
            row.push(match e.metrics.get(metric) {
                Some(v) if !v.is_null() => format_value(v),
                _ => "-".into(),
            });
        }
        if !params.is_empty() {
            row.push(params.get(&e.run_id).cloned().unwrap_or_default());
        }
        table.row(row);
    }
    print!("{}", table.render());

    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("reports").join(&args.group));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();

    let mut curves = Vec::new();
    for e in entries.iter().filter(|e| e.kind == "retrain") {
        let Some(key) = e.artifacts.get("curve") else {
            continue;
        };
        let curve = read_json(&*b.artifacts, key).await?;
        curves.push(Curves::from_artifact(&e.run_id, &curve));
    }
    if !curves.is_empty() {
        let path = out.join("loss_curves.svg");
        plots::loss_curves(&path, &curves)?;
        written.push(path);
    }

    for e in entries.iter().filter(|e| e.kind == "tune") {
        let Some(key) = e.artifacts.get("trials") else {
            continue;
        };
        let trials = read_json(&*b.artifacts, key).await?;
        let metric = e.metrics["metric"].as_str().unwrap_or("metric").to_string();
        for sweep in plots::sweep_params(&trials) {
            let path = out.join(format!(
                "{}_{}.svg",
                e.run_id,
                sweep.param.replace('.', "_")
            ));
            plots::metric_vs_param(&path, &metric, &sweep.param, &sweep.points, sweep.best)?;
            written.push(path);
        }
    }
    for path in &written {
        println!("wrote {}", path.display());
    }
    if written.is_empty() {
        println!("no retrain curves or sweeps in this group: nothing to plot");
    }
    Ok(())
}
