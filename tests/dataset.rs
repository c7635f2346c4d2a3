//! upload-dataset: a group labelled by the fleet (`runs/self-label --mini`, SmolLM2 and
//! MiniLM) exported to a local folder and loaded back with the Hugging Face `datasets`
//! library (`.venv`, installed by `scripts/test.sh`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Fleet, repo_root};
use serde_json::Value;

fn python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "run scripts/test.sh once: it installs `datasets` into .venv"
    );
    python
}

/// Loads the exported folder with `datasets.load_dataset(FOLDER)`, as a user would,
/// and returns its splits; fails if `datasets` warned about anything (a card whose
/// metadata it cannot read, for one).
fn load(dir: &Path) -> Value {
    let out = std::process::Command::new(python())
        .arg(repo_root().join("scripts/reference/load_dataset.py"))
        .arg(dir)
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.parent().unwrap().join("hf-home"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loaded: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        loaded["warnings"],
        serde_json::json!([]),
        "datasets warned while loading {}",
        dir.display()
    );
    loaded["splits"].clone()
}

#[test]
fn a_fleet_labelled_group_exports_and_loads_with_datasets() {
    let fleet = Fleet::new();
    let out = fleet.dir.path().join("datasets");
    let export = |extra: &[&str]| {
        let mut args = vec![
            "upload-dataset",
            "--group-id",
            "labels-demo",
            "--owner",
            "tester",
            "--to",
            out.to_str().unwrap(),
            "--validation-dialogues",
            "2",
        ];
        args.extend_from_slice(extra);
        fleet.run(&args)
    };
    // No home yet, then a home with nothing labelled yet: clear refusals.
    let no_home = export(&[]);
    assert!(!no_home.status.success());
    assert!(String::from_utf8_lossy(&no_home.stderr).contains("there is no labelfleet home"));
    fleet.ok(&["enqueue", "runs/self-label", "--mini", "--allow-dirty"]);
    let empty = export(&[]);
    assert!(!empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stderr).contains("no self_label entries"));

    let mut worker = fleet.spawn_worker("w", &["--wait", "1", "--idle-exit", "3"]);
    assert!(worker.wait(Duration::from_secs(900)).success());
    let entries = fleet.entries("labels-demo");
    assert_eq!(entries.len(), 3);
    let turns: u64 = entries.iter().map(|e| e.counts["turns"]).sum();

    let first = export(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stdout = String::from_utf8_lossy(&first.stdout).to_string();
    let name = common::exported_name(&stdout);
    assert!(
        name.starts_with("tester/manifest_self_labelled_labels-demo_6_"),
        "{name}"
    );
    let dir = out.join(&name);

    let loaded = load(&dir);
    let split = |s: &str| &loaded[s];
    assert_eq!(split("train")["rows"], turns);
    assert_eq!(split("train")["dialogues"], 6);
    assert_eq!(split("valid_2")["dialogues"], 2);
    assert_eq!(split("train_minus_2")["dialogues"], 4);
    assert_eq!(
        split("valid_2")["rows"].as_u64().unwrap()
            + split("train_minus_2")["rows"].as_u64().unwrap(),
        turns
    );
    let columns: Vec<&str> = split("train")["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for column in [
        "dialogue_id",
        "turn_id",
        "user_utterances",
        "system_utterances",
        "system_response",
        "turn_slot_values",
        "slot_values",
        "last_slot_values",
        "domains",
        "system_response_acts",
        "last_system_response_acts",
    ] {
        assert!(columns.contains(&column), "{column} in {columns:?}");
    }
    // The system's acts come from the data: the first row's response is the system's
    // second utterance, with its acts.
    let first = &split("train")["first"];
    let gold = labelfleet_dst::read_dataset(
        &repo_root().join("runs/sample-data/multiwoz21_val_sample.json"),
        labelfleet_dst::Format::Multiwoz21,
    )
    .unwrap();
    let dialogue = gold
        .iter()
        .find(|d| d.dialogue_id == first["dialogue_id"])
        .unwrap();
    assert_eq!(first["turn_id"], 0);
    assert!(!dialogue.turns[1].system_acts.is_empty());
    assert_eq!(
        first["system_response_acts"],
        serde_json::json!(dialogue.turns[1].system_acts)
    );
    assert_eq!(first["last_system_response_acts"], serde_json::json!([]));
    // MultiWOZ has a system reply after every user turn, the last labelled one included.
    assert_eq!(split("train")["empty_responses"], 0);
    // Each row's state is the one the fleet labelled.
    let mut labelled: BTreeMap<(String, u64), Value> = BTreeMap::new();
    for e in &entries {
        let log: Value = serde_json::from_slice(
            &std::fs::read(fleet.home().join("artifacts").join(&e.artifacts["labels"])).unwrap(),
        )
        .unwrap();
        for t in log["turns"].as_array().unwrap() {
            labelled.insert(
                (
                    t["dialogue_id"].as_str().unwrap().into(),
                    t["turn_id"].as_u64().unwrap(),
                ),
                t["slot_values"].clone(),
            );
        }
    }
    let states: Vec<Value> = labelled.into_values().collect();
    assert_eq!(split("train")["slot_values"].as_array().unwrap(), &states);
    let card = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(card.starts_with("---\nconfigs:"));
    assert!(card.contains("labels-demo/job_0") && card.contains("## The first job's config"));

    // The same entries give the same name: a second export changes nothing.
    let again = export(&[]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("unchanged"));
    // A different dataset under that name is not overwritten without --force.
    std::fs::write(dir.join(".labelfleet-dataset.sha256"), "something else\n").unwrap();
    let refused = export(&[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert!(export(&["--force"]).status.success());
    assert_eq!(load(&dir)["train"]["rows"], turns);
}

/// The same export to S3 (moto): a group labelled on the AWS backends by a tiny llama
/// the test builds, uploaded under a prefix, read back, and left alone the second time.
#[test]
fn a_group_on_aws_exports_to_s3() {
    use labelfleet_core::artifacts::{ArtifactKey, ArtifactStore};
    let server = labelfleet_aws::testing::MotoServer::shared();
    let fleet = Fleet::on_aws(server, 3);
    let artifacts = fleet
        .env
        .iter()
        .find(|(k, _)| k == "LABELFLEET_ARTIFACTS")
        .map(|(_, v)| v.clone())
        .unwrap();
    let bucket = artifacts
        .trim_start_matches("s3://")
        .split('/')
        .next()
        .unwrap()
        .to_string();

    common::label_with_tiny_llama(&fleet, "tiny-labels", 3);

    let to = format!("s3://{bucket}/datasets");
    let args = [
        "upload-dataset",
        "--group-id",
        "tiny-labels",
        "--owner",
        "tester",
        "--to",
        &to,
    ];
    let out = fleet.ok(&args);
    let name = common::exported_name(&out);
    assert!(out.contains(&format!("→ {to}/{name}")), "{out}");

    let store = common::block_on(async {
        labelfleet_aws::S3ArtifactStore::new(&server.sdk_config().await, &bucket, "datasets")
    });
    let get = |file: &str| {
        common::block_on(store.get(&ArtifactKey::new(&format!("{name}/{file}")).unwrap()))
            .unwrap()
            .unwrap_or_else(|| panic!("{file} not uploaded"))
    };
    let parquet = get("data/train-00000-of-00001.parquet");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(parquet),
    )
    .unwrap()
    .build()
    .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 6, "3 dialogues × 2 turns");
    assert!(String::from_utf8(get("README.md")).unwrap().contains(&name));
    assert!(fleet.ok(&args).contains("unchanged"));
}
