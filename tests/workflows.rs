//! The two example workflows in `runs/`, end to end on two worker processes, with the
//! allow-lists they ship (`runs/*/commands.txt`) and their scripts in `examples/`
//! (python3 with numpy: the test script installs it into `.venv`).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Fleet, repo_root};
use labelfleet_core::queue::Queue;
use labelfleet_manifest::ManifestEntry;

/// Enqueues `runs/<workflow>`, runs two workers until the queue stays empty, and
/// returns the group's manifest entries.
fn run_workflow(fleet: &mut Fleet, workflow: &str, group: &str) -> Vec<ManifestEntry> {
    let root = repo_root();
    // The scripts' `#!/usr/bin/env python3` finds the one with numpy first.
    let path = format!(
        "{}:{}",
        root.join(".venv/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    fleet.env.push(("PATH".into(), path));
    let folder = root.join("runs").join(workflow);
    fleet.ok(&["enqueue", folder.to_str().unwrap(), "--allow-dirty"]);
    let commands = folder.join("commands.txt");
    fleet.run_workers(
        2,
        &[
            "--wait",
            "0.2",
            "--idle-exit",
            "3",
            "--commands",
            commands.to_str().unwrap(),
        ],
        Duration::from_secs(300),
    );
    let dead = common::block_on(fleet.embedded().queue(5).unwrap().dead_letters(10)).unwrap();
    assert!(
        dead.is_empty(),
        "{:?}",
        dead.iter().map(|d| &d.reason).collect::<Vec<_>>()
    );
    fleet.entries(group)
}

fn names(entries: &[ManifestEntry]) -> BTreeSet<&str> {
    entries.iter().map(|e| e.run_id.as_str()).collect()
}

fn entry<'a>(entries: &'a [ManifestEntry], name: &str) -> &'a ManifestEntry {
    entries.iter().find(|e| e.run_id == name).unwrap()
}

#[test]
fn the_retail_workflow_sweeps_trains_the_best_and_evaluates_in_shards() {
    let mut fleet = Fleet::new();
    let entries = run_workflow(&mut fleet, "retail-workflow", "retail");
    // collect, 12 trials × 2 replicates, 3 model-based rounds, the sweep, the best
    // model, 4 evaluation shards and the summary: one entry each.
    let mut expected: BTreeSet<String> = ["collect", "sweep", "train_best", "metrics"]
        .map(String::from)
        .into();
    expected.extend((0..4).map(|i| format!("eval_{i}")));
    expected.extend((1..=3).map(|k| format!("sweep_round{k}")));
    expected.extend((0..12).flat_map(|t| (0..2).map(move |s| format!("sweep_t{t:02}_s{s}"))));
    assert_eq!(
        names(&entries),
        expected.iter().map(String::as_str).collect()
    );
    assert_eq!(entries.len(), expected.len());

    let sweep = entry(&entries, "sweep");
    let best = &sweep.metrics["best_params"];
    assert_eq!(best.as_object().unwrap().len(), 3, "{best}");
    // The best model was trained with the sweep's best parameters.
    let train_best = entry(&entries, "train_best");
    assert_eq!(&train_best.metrics["params"], best);
    assert!(train_best.artifacts.contains_key("model.npz"));
    // Replicates ran with their own seeds, and a trial's value is their mean.
    let trial = sweep.metrics["best_trial"].as_str().unwrap();
    let values: Vec<f64> = (0..2)
        .map(|s| {
            entry(&entries, &format!("{trial}_s{s}")).metrics["valid_rmse"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_ne!(values[0], values[1]);
    let mean = (values[0] + values[1]) / 2.0;
    assert!((sweep.metrics["best_value"].as_f64().unwrap() - mean).abs() < 1e-12);

    let summary = entry(&entries, "metrics");
    assert_eq!(summary.metrics["shards"], 4);
    assert_eq!(summary.metrics["rows"], 800);
    let rmse = summary.metrics["test_rmse"].as_f64().unwrap();
    // log(1 + units) of Poisson demand: a fitted model is far better than none
    // (the spread of the target is above 1).
    assert!(rmse > 0.1 && rmse < 0.8, "test rmse {rmse}");

    let out = fleet.dir.path().join("report");
    let report = fleet.ok(&["report", "retail", "--out", out.to_str().unwrap()]);
    assert!(report.contains("VALID_RMSE"), "{report}");
    for param in ["alpha", "features", "lengthscale"] {
        let svg = out.join(format!("sweep_command_params_{param}.svg"));
        assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    }
}

#[test]
fn the_hitl_loop_ingests_annotates_retrains_and_evaluates() {
    let mut fleet = Fleet::new();
    let entries = run_workflow(&mut fleet, "hitl-loop", "hitl");
    let expected: BTreeSet<&str> = [
        "collect",
        "ingest",
        "annotate",
        "retrain",
        "retrain_strict",
        "eval",
        "metrics",
    ]
    .into();
    assert_eq!(names(&entries), expected);
    assert_eq!(entries.len(), expected.len());

    let ingest = entry(&entries, "ingest");
    assert_eq!(ingest.counts["archives"], 8);
    assert_eq!(
        ingest.metrics["bad_rows"], 8,
        "one malformed row per session"
    );
    assert!(ingest.metrics["duplicates"].as_u64().unwrap() > 0);
    let kept = ingest.metrics["rows_kept"].as_u64().unwrap();
    assert_eq!(entry(&entries, "annotate").metrics["rows"], kept);
    // Above 100 new rows the model is retrained with the keep-old split; the strict
    // job's 1000-row threshold skips.
    let retrain = entry(&entries, "retrain");
    assert_eq!(retrain.metrics["skipped"], false);
    assert_eq!(retrain.metrics["split"], "keep_old");
    assert_eq!(retrain.metrics["new_rows"], kept);
    assert_eq!(entry(&entries, "retrain_strict").metrics["skipped"], true);
    assert!(
        !entry(&entries, "retrain_strict")
            .artifacts
            .contains_key("model.json")
    );
    let summary = entry(&entries, "metrics");
    assert_eq!(summary.metrics["retrained"], true);
    let accuracy = summary.metrics["test_accuracy"].as_f64().unwrap();
    assert_eq!(entry(&entries, "eval").metrics["test_accuracy"], accuracy);
    assert!(accuracy > 0.7, "test accuracy {accuracy}");
}
