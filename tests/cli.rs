//! The command line as a user meets it: enqueue's validation and provenance, `run`,
//! `results`, `status`, eval metrics, and `--help` everywhere.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Fleet, block_on, noop, repo_root, write_job};
use labelfleet_core::job::{Job, ProvenancePolicy};
use labelfleet_core::queue::Envelope;
use labelfleet_core::queue::Queue;
use labelfleet_dst::metrics::{ValueMatcher, score};
use labelfleet_dst::{Format, Prediction, read_dataset};
use labelfleet_manifest::{Manifest, ManifestKey, list_all};
use serde_json::json;

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn queued_jobs(fleet: &Fleet) -> Vec<Job> {
    let queue = fleet.embedded().queue(5).unwrap();
    let messages = block_on(queue.receive(100, Duration::from_secs(60), Duration::ZERO)).unwrap();
    messages
        .iter()
        .map(|m| Envelope::open(&m.body, &m.id).unwrap())
        .collect()
}

#[test]
fn an_invalid_folder_reports_every_problem_and_sends_nothing() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("bad");
    write_job(&dir, "good.json", &noop("g", 0, &[]));
    write_job(
        &dir,
        "typo.json",
        &json!({"kind": "noop", "group_id": "g", "noop": {"sleep_ms": 1}, "colour": 1}),
    );
    write_job(
        &dir,
        "wrong_type.json",
        &json!({"kind": "noop", "group_id": "g", "noop": {"sleep_ms": "soon"}}),
    );
    write_job(&dir, "orphan.json", &noop("g", 0, &["nobody"]));
    std::fs::write(dir.join("broken.json"), "{\"kind\": ").unwrap();
    let out = fleet.run(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("3 problems found; nothing was enqueued"),
        "{stderr}"
    );
    assert!(
        stderr.contains("typo.json: at `colour`: unknown key `colour`"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "wrong_type.json: at `noop.sleep_ms`: invalid type: string \"soon\", expected u64"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("broken.json: at `(top level)`: not valid JSON (line 1"),
        "{stderr}"
    );
    // Dependency errors are found once every file parses.
    std::fs::remove_file(dir.join("typo.json")).unwrap();
    std::fs::remove_file(dir.join("wrong_type.json")).unwrap();
    std::fs::remove_file(dir.join("broken.json")).unwrap();
    let out = fleet.run(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("orphan.json: at `after[0]`: `nobody` names no job"),
        "{stderr}"
    );
    assert!(queued_jobs(&fleet).is_empty());
}

#[test]
fn dependency_cycles_are_refused() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("cycle");
    write_job(&dir, "a.json", &noop("g", 0, &["b"]));
    write_job(&dir, "b.json", &noop("g", 0, &["a"]));
    write_job(&dir, "c.json", &noop("g", 0, &[]));
    let out = fleet.run(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("the dependencies form a cycle: g/a → g/b → g/a"),
        "{stderr}"
    );
    assert!(queued_jobs(&fleet).is_empty());
}

#[test]
fn provenance_records_a_clean_commit_and_a_dirty_tree_is_refused() {
    let fleet = Fleet::new();
    let repo = fleet.jobs_dir("repo");
    git(&repo, &["init", "-q"]);
    let runs = repo.join("runs/exp");
    write_job(&runs, "job_0.json", &noop("exp", 0, &[]));
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "runs"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    fleet.ok(&[
        "enqueue",
        runs.to_str().unwrap(),
        "--set",
        "noop.sleep_ms=7",
        "--mini",
    ]);
    let jobs = queued_jobs(&fleet);
    let p = jobs[0].provenance.as_ref().unwrap();
    assert_eq!(p.git_commit.as_deref(), Some(head.as_str()));
    assert!(!p.git_dirty && p.reproducible);
    assert_eq!(p.overrides, ["--set noop.sleep_ms=7", "--mini"]);
    assert_eq!(
        p.config["noop"]["sleep_ms"], 7,
        "the resolved config holds the override"
    );
    assert_eq!(p.config["mini"], true);
    assert!(jobs[0].mini);
    assert_eq!(p.labelfleet_version, env!("CARGO_PKG_VERSION"));
    assert!(p.source_file.ends_with("job_0.json"));

    // An untracked file makes the tree dirty.
    std::fs::write(repo.join("notes.txt"), "wip").unwrap();
    let out = fleet.run(&["enqueue", runs.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("uncommitted or untracked files (?? notes.txt)"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-dirty"), "{stderr}");
    let fleet2 = Fleet::new();
    fleet2.ok(&["enqueue", runs.to_str().unwrap(), "--allow-dirty"]);
    let p = queued_jobs(&fleet2)[0].provenance.clone().unwrap();
    assert!(p.git_dirty && !p.reproducible);
}

#[test]
fn a_folder_outside_git_needs_allow_dirty() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("loose");
    write_job(&dir, "job.json", &noop("g", 0, &[]));
    let out = fleet.run(&["enqueue", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not inside a git repository"));
}

#[test]
fn eval_of_a_predictions_file_matches_the_metrics_computed_directly() {
    let fleet = Fleet::new();
    let sample = repo_root().join("runs/sample-data/multiwoz21_val_sample.json");
    let gold = read_dataset(&sample, Format::Multiwoz21).unwrap();
    // Predictions: gold, with every third turn's state emptied.
    let predictions: Vec<Prediction> = gold
        .iter()
        .flat_map(|d| &d.turns)
        .enumerate()
        .map(|(i, t)| Prediction {
            dialogue_id: t.dialogue_id.clone(),
            turn_id: t.turn_id,
            slot_values: if i % 3 == 0 {
                Default::default()
            } else {
                t.slot_values.clone()
            },
        })
        .collect();
    let dir = fleet.jobs_dir("eval");
    let predictions_file = dir.join("predictions.json");
    std::fs::write(&predictions_file, serde_json::to_vec(&predictions).unwrap()).unwrap();
    write_job(
        &dir,
        "jobs/score.json",
        &json!({"kind": "eval", "group_id": "eval", "eval": {
            "gold": {"path": sample, "format": "multiwoz21"},
            "predictions": {"file": predictions_file}}}),
    );
    let out = fleet.ok(&[
        "run",
        dir.join("jobs/score.json").to_str().unwrap(),
        "--allow-dirty",
    ]);
    assert!(out.contains("eval/score completed"), "{out}");
    let expected = score(&gold, &predictions, ValueMatcher { threshold: 0.95 });
    let manifest = fleet.embedded().manifest().unwrap();
    let entry = block_on(manifest.get(&ManifestKey {
        group_id: "eval".into(),
        run_id: "score".into(),
    }))
    .unwrap()
    .unwrap();
    assert_eq!(
        entry.metrics["joint_goal_accuracy"],
        expected.joint_goal_accuracy
    );
    assert_eq!(entry.metrics["slot_f1"], expected.slots.f1);
    assert_eq!(entry.counts["turns"], 76);
    assert!(expected.joint_goal_accuracy > 0.6 && expected.joint_goal_accuracy < 0.7);
    // The full report, per domain too, is an artifact.
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            fleet
                .home()
                .join("artifacts")
                .join(&entry.artifacts["metrics"]),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(report["per_domain"]["hotel"]["turns"].as_u64().unwrap() > 0);
    // The job itself, with its provenance, sits beside its outputs.
    let recorded: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fleet.home().join("artifacts").join(&entry.artifacts["job"])).unwrap(),
    )
    .unwrap();
    assert_eq!(
        recorded["provenance"]["source_file"],
        dir.join("jobs/score.json").display().to_string()
    );
    assert_eq!(recorded["eval"]["gold"]["format"], "multiwoz21");
    // Running it again does nothing: it is in the manifest.
    let again = fleet.ok(&[
        "run",
        dir.join("jobs/score.json").to_str().unwrap(),
        "--allow-dirty",
    ]);
    assert!(again.contains("already in the manifest"), "{again}");
}

#[test]
fn the_demo_folder_runs_through_two_workers_and_prints_results() {
    let fleet = Fleet::new();
    let out = fleet.ok(&["enqueue", "runs/demo", "--allow-dirty", "--mini"]);
    assert!(out.contains("validated 3 jobs"), "{out}");
    let mut workers: Vec<_> = (0..2)
        .map(|w| fleet.spawn_worker(&format!("w{w}"), &["--idle-exit", "2", "--wait", "0.5"]))
        .collect();
    for w in &mut workers {
        assert!(w.wait(Duration::from_secs(60)).success());
    }
    let results = fleet.ok(&["results", "--group", "demo"]);
    assert!(results.contains("last_turn_first5"), "{results}");
    let manifest = fleet.embedded().manifest().unwrap();
    let done = block_on(list_all(&manifest, "demo")).unwrap();
    assert_eq!(done.len(), 3);
    assert!(
        done.iter().all(|e| e.counts["dialogues"] == 2),
        "--mini scores two dialogues"
    );
    let status: serde_json::Value = serde_json::from_str(&fleet.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["groups"][0]["done"], 3);
    assert_eq!(status["workers"].as_array().unwrap().len(), 2);
}

#[test]
fn every_command_has_help() {
    let fleet = Fleet::new();
    for command in [
        &["--help"][..],
        &["enqueue", "--help"],
        &["worker", "--help"],
        &["status", "--help"],
        &["run", "--help"],
        &["results", "--help"],
    ] {
        let out = fleet.ok(command);
        assert!(out.contains("Usage:"), "{command:?}: {out}");
    }
    // Invoked under a subcommand's name, the binary acts as that subcommand.
    let link = fleet.dir.path().join("worker");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_labelfleet"), &link).unwrap();
    let out = Command::new(&link).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--visibility-timeout"));
}

#[test]
fn a_job_parsed_from_the_queue_keeps_its_source_file_in_errors() {
    let body = json!({"labelfleet": 1, "job": {"kind": "noop", "name": "x", "group_id": "g", "noop": {"nap": 1},
        "provenance": {"source_file": "runs/a/x.json", "git_commit": null, "git_dirty": true, "reproducible": false,
            "overrides": [], "config": {}, "labelfleet_version": "0", "enqueued_at": "now"}}});
    let err = Envelope::open(&body.to_string(), "42").unwrap_err();
    assert_eq!(err.file, "runs/a/x.json (via queue message 42)");
    assert_eq!(err.path, "noop.nap");
    let _ = Job::parse(noop("g", 1, &[]), "f", Some("n"), ProvenancePolicy::Reject).unwrap();
}
