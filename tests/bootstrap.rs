//! `runs/bootstrap --mini`: the self-labelling loop's own job files, on the embedded
//! default with two workers and SmolLM2-135M. Each step runs on a few dialogues and
//! trains 4 steps; what is checked is the pipeline (every step released by the one
//! before, nothing run by hand), that the pool leaves the gold dialogues out, and that a
//! fine-tuned checkpoint's compact-prompt labels parse. The quality figures come from the
//! full run (`scripts/bootstrap.sh`, in the README).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Fleet, data_dir};
use labelfleet_dst::{Format, read_dataset};
use serde_json::Value;

#[test]
fn the_bootstrap_loop_runs_mini_and_its_fine_tuned_labels_parse() {
    let fleet = Fleet::new();
    fleet.ok(&["enqueue", "runs/bootstrap", "--mini", "--allow-dirty"]);
    fleet.run_workers(
        2,
        &["--wait", "1", "--idle-exit", "5"],
        Duration::from_secs(1800),
    );

    let main = fleet.entries("bootstrap");
    let names: BTreeSet<&str> = main.iter().map(|e| e.run_id.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "r1_train", "r1_eval", "r2_train", "r2_gold", "r2_eval", "r3_train", "r3_gold",
            "r3_eval"
        ]),
    );
    let entry = |name: &str| main.iter().find(|e| e.run_id == name).unwrap();

    // The saved models say they were trained on the compact prompt.
    let best = fleet
        .home()
        .join("artifacts")
        .join(&entry("r1_train").artifacts["best"])
        .with_file_name("labelfleet.json");
    let metadata: Value = serde_json::from_slice(&std::fs::read(best).unwrap()).unwrap();
    assert_eq!(metadata["prompt"], "compact");

    // Each round trains on the gold and its pool's labels, then on the gold alone.
    for name in ["r1_train", "r2_gold", "r3_gold"] {
        assert_eq!(entry(name).counts["new_examples"], 0, "{name}");
    }
    for name in ["r2_train", "r3_train"] {
        assert!(
            entry(name).counts["new_examples"] > 0,
            "{name}: {:?}",
            entry(name).counts
        );
    }

    // The fine-tuned models label with the compact prompt, and their labels parse:
    // four steps of two examples teach the format only partly, so some of them do (how
    // many, and how good they are, is the full run's business).
    let mut parsed = 0;
    for name in ["r1_eval", "r2_eval", "r3_eval"] {
        let eval = entry(name);
        let (turns, invalid) = (eval.counts["turns"], eval.counts["invalid_completions"]);
        assert!(
            turns > 0 && invalid <= turns,
            "{name}: {invalid} of {turns}"
        );
        parsed += turns - invalid;
        let jga = eval.metrics["joint_goal_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&jga));
    }

    // The pool is the 5% split without the 1% gold dialogues the model trained on.
    let gold: BTreeSet<String> = read_dataset(
        &data_dir().join("icdst_train/train_1p_v1.json"),
        Format::Icdst,
    )
    .unwrap()
    .into_iter()
    .map(|d| d.dialogue_id)
    .collect();
    for group in ["bootstrap-pool1", "bootstrap-pool2"] {
        let pool = fleet.entries(group);
        assert_eq!(pool.len(), 2, "{group}");
        for job in &pool {
            let key = &job.artifacts["predictions"];
            let path = fleet.home().join("artifacts").join(key);
            let predictions: Vec<Value> =
                serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            assert!(!predictions.is_empty());
            for p in &predictions {
                let id = p["dialogue_id"].as_str().unwrap();
                assert!(
                    !gold.contains(id),
                    "{group}/{}: labelled gold dialogue {id}",
                    job.run_id
                );
            }
            let (turns, invalid) = (job.counts["turns"], job.counts["invalid_completions"]);
            assert!(turns > 0 && invalid <= turns, "{group}/{}", job.run_id);
            parsed += turns - invalid;
        }
    }
    assert!(parsed > 0, "no fine-tuned label parsed");
}
