//! self_label end to end on the embedded default: `generate-runs` → `enqueue --mini` →
//! two worker processes with the real MiniLM retriever and SmolLM2 GGUF → manifest.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Fleet, repo_root, wait_until};
use serde_json::{Value, json};

fn models() -> PathBuf {
    let dir = std::env::var_os("LABELFLEET_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".models"));
    assert!(
        dir.join("all-MiniLM-L6-v2/model.safetensors").exists(),
        "{} lacks the test models: run scripts/fetch-models.sh",
        dir.display()
    );
    dir
}

fn data() -> PathBuf {
    std::env::var_os("LABELFLEET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data"))
        .join("multiwoz21/val.json.zip")
}

#[test]
fn dependents_label_with_examples_retrieved_from_job_0() {
    let fleet = Fleet::new();
    let runs = fleet.dir.path().join("runs");
    let models = models();
    fleet.ok(&[
        "generate-runs",
        "--data",
        data().to_str().unwrap(),
        "--out",
        runs.to_str().unwrap(),
        "--group",
        "selflabel",
        "--chunk",
        "4",
        "--dialogues",
        "12",
        "--k-examples",
        "2",
        "--minimum-distinct",
        "1",
        "--example-warmup",
        "2",
        "--model",
        models.join("SmolLM2-135M-Instruct").to_str().unwrap(),
        "--retriever",
        models.join("all-MiniLM-L6-v2").to_str().unwrap(),
    ]);
    fleet.ok(&["enqueue", runs.to_str().unwrap(), "--mini", "--allow-dirty"]);
    let mut workers: Vec<_> = (0..2)
        .map(|w| fleet.spawn_worker(&format!("w{w}"), &["--wait", "1"]))
        .collect();
    wait_until(Duration::from_secs(900), "three self_label entries", || {
        fleet.entries("selflabel").len() == 3
    });
    for w in &workers {
        w.signal("TERM");
    }
    for w in &mut workers {
        assert!(w.wait(Duration::from_secs(60)).success());
    }

    let entries = fleet.entries("selflabel");
    let log_of = |run: &str| -> Value {
        let entry = entries.iter().find(|e| e.run_id == run).unwrap();
        assert_eq!(entry.kind, "self_label");
        // --mini: two dialogues, three turns each.
        assert_eq!(entry.counts["dialogues"], 2, "{run}");
        assert_eq!(entry.counts["turns"], 6, "{run}");
        let jga = entry.metrics["joint_goal_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&jga), "{run}: JGA {jga}");
        let path = fleet
            .home()
            .join("artifacts")
            .join(&entry.artifacts["labels"]);
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let seed = log_of("job_0");
    let seed_turns = seed["turns"].as_array().unwrap();
    for run in ["job_1", "job_2"] {
        let log = log_of(run);
        let turns = log["turns"].as_array().unwrap();
        assert_eq!(log["complete"], true);
        let own: Vec<&str> = turns
            .iter()
            .map(|t| t["dialogue_id"].as_str().unwrap())
            .collect();
        for turn in turns {
            let sources = turn["examples"].as_array().unwrap();
            assert_eq!(sources.len(), 2, "{run}: k_examples");
            let prompt = turn["prompt"].as_str().unwrap();
            for source in sources {
                let source = source.as_str().unwrap();
                // Examples come from job_0's labels or this job's own earlier turns.
                let (origin, _) = source.split_once(':').unwrap();
                assert!(
                    origin == "selflabel/job_0" || origin == format!("selflabel/{run}"),
                    "{source}"
                );
            }
            // The first turn of each dialogue can only draw on job_0: its examples'
            // user utterances are in the prompt.
            if turn["turn_id"] == 0 && own.first() == Some(&turn["dialogue_id"].as_str().unwrap()) {
                for source in sources {
                    let source = source.as_str().unwrap();
                    let key = source.split_once(':').unwrap().1;
                    let (dialogue, turn_id) = key.split_once('#').unwrap();
                    let example = seed_turns
                        .iter()
                        .find(|t| {
                            t["dialogue_id"] == dialogue
                                && t["turn_id"] == turn_id.parse::<u64>().unwrap()
                        })
                        .unwrap_or_else(|| panic!("{source} is not one of job_0's labels"));
                    let utterance = example["user_utterance"].as_str().unwrap().trim();
                    assert!(
                        prompt.contains(&format!("# User: {utterance}\n")),
                        "{run}: prompt lacks {source}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_killed_self_label_job_resumes_from_its_running_log() {
    let fleet = Fleet::new();
    let models = models();
    let dir = fleet.jobs_dir("resume");
    // One dialogue per batch and a running log every 2 turns: the worker is killed once
    // the first log is written, and the job must not label those turns again.
    let job = serde_json::json!({
        "kind": "self_label",
        "group_id": "resume",
        "self_label": {
            "data": {"path": "runs/sample-data/multiwoz21_val_sample.json", "format": "multiwoz21"},
            "dialogues": {"count": 2, "max_turns": 4},
            "model": {"path": models.join("SmolLM2-135M-Instruct")},
            "retriever": {"model": {"path": models.join("all-MiniLM-L6-v2")}, "k_examples": 2,
                          "minimum_distinct": 1, "example_warmup": 2},
            "generation": {"max_new_tokens": 24},
            "batch_size": 1,
            "checkpoint_turns": 2
        }
    });
    common::write_job(&dir, "job_0.json", &job);
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let args = [
        "--visibility-timeout",
        "4",
        "--heartbeat",
        "1",
        "--wait",
        "1",
    ];
    let mut victim = fleet.spawn_worker("victim", &args);
    let log_path = fleet.home().join("artifacts/resume/job_0/running_log.json");
    wait_until(Duration::from_secs(300), "the first running log", || {
        log_path.exists()
    });
    victim.signal("KILL");
    victim.wait(Duration::from_secs(10));
    let checkpoint: Value = serde_json::from_slice(&std::fs::read(&log_path).unwrap()).unwrap();
    assert_eq!(checkpoint["complete"], false);
    let saved = checkpoint["turns"].as_array().unwrap().clone();
    assert!(
        !saved.is_empty() && saved.len() < 8,
        "{} turns saved",
        saved.len()
    );

    let mut rescuer = fleet.spawn_worker("rescuer", &[&args[..], &["--idle-exit", "10"]].concat());
    assert!(rescuer.wait(Duration::from_secs(600)).success());
    let entries = fleet.entries("resume");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].worker, "rescuer");
    assert_eq!(entries[0].counts["turns"], 8);
    let done: Value = serde_json::from_slice(&std::fs::read(&log_path).unwrap()).unwrap();
    let turns = done["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 8);
    // The saved turns were kept as they were (their timings too), not labelled again.
    for (before, after) in saved.iter().zip(turns) {
        assert_eq!(before, after);
    }
    let events = rescuer.events();
    let resumed = common::find(&events, "resuming from the running log", None);
    assert_eq!(resumed.len(), 1, "the rescuer resumes once");
    assert_eq!(resumed[0]["fields"]["turns"], saved.len() as u64);
}

/// The other model families run through the same jobs: a tiny qwen3 and a tiny
/// starcoder2 (random weights, a tokenizer trained on the sample's utterances) label
/// sample dialogues in a `self_label` job and are scored by an `eval` job of the model.
#[test]
fn qwen3_and_starcoder2_models_label_and_evaluate() {
    let fleet = common::Fleet::new();
    let texts: Vec<String> = labelfleet_dst::read_dataset(
        &common::repo_root().join("runs/sample-data/multiwoz21_val_sample.json"),
        labelfleet_dst::Format::Multiwoz21,
    )
    .unwrap()
    .iter()
    .flat_map(|d| d.turns.iter().map(|t| t.user_utterance.clone()))
    .collect();
    let dir = fleet.jobs_dir("families");
    for family in ["qwen3", "starcoder2"] {
        let model = fleet.dir.path().join(family);
        labelfleet_models::tiny::write_tiny_family(&model, &texts, 3, family).unwrap();
        let data =
            json!({"path": "runs/sample-data/multiwoz21_val_sample.json", "format": "multiwoz21"});
        common::write_job(
            &dir,
            &format!("label_{family}.json"),
            &json!({
                "kind": "self_label", "group_id": "families",
                "self_label": {
                    "data": data.clone(),
                    "dialogues": {"count": 2, "max_turns": 2},
                    "model": {"path": model},
                    "retriever": {"model": {"path": models().join("all-MiniLM-L6-v2")}},
                    "generation": {"max_new_tokens": 4}
                }
            }),
        );
        common::write_job(
            &dir,
            &format!("eval_{family}.json"),
            &json!({
                "kind": "eval", "group_id": "families",
                "eval": {
                    "gold": data,
                    "max_dialogues": 2,
                    "predictions": {"model": {"model": {"path": model}, "prompt": "compact",
                                              "generation": {"max_new_tokens": 4}}}
                }
            }),
        );
    }
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let mut worker = fleet.spawn_worker("w", &["--wait", "1", "--idle-exit", "3"]);
    assert!(
        worker.wait(Duration::from_secs(600)).success(),
        "{}",
        worker.log_text()
    );
    let entries = fleet.entries("families");
    assert_eq!(entries.len(), 4, "{}", worker.log_text());
    for family in ["qwen3", "starcoder2"] {
        let label = entries
            .iter()
            .find(|e| e.run_id == format!("label_{family}"))
            .unwrap();
        assert_eq!(label.counts["turns"], 4, "{family}");
        let eval = entries
            .iter()
            .find(|e| e.run_id == format!("eval_{family}"))
            .unwrap();
        assert!(eval.counts["turns"] > 0, "{family}");
        assert!(eval.metrics["joint_goal_accuracy"].is_number(), "{family}");
    }
}
