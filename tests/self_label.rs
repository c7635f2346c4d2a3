//! self_label end to end on the embedded default: `generate-runs` → `enqueue --mini` →
//! two worker processes with the real MiniLM retriever and SmolLM2 GGUF → manifest.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Fleet, repo_root, wait_until};
use serde_json::Value;

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
