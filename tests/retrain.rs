//! retrain end to end on the embedded default, with a tiny llama the test builds (a BPE
//! tokenizer trained on the rendered dialogue turns, random weights): the loss falls,
//! checkpoints resume exactly after `kill -9`, and the trained model labels in
//! `self_label` as `"checkpoint": "group/job"`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Fleet, repo_root, wait_until};
use labelfleet_core::job::PromptMode;
use labelfleet_core::queue::Queue;
use labelfleet_dst::prompt::Example;
use labelfleet_dst::{Format, read_dataset};
use labelfleet_worker::runners::prompts::render;
use serde_json::{Value, json};

const SAMPLE: &str = "runs/sample-data/multiwoz21_val_sample.json";

/// A tiny llama whose tokenizer was trained on the sample's rendered turns.
fn tiny_model(dir: &Path) -> PathBuf {
    let dialogues = read_dataset(&repo_root().join(SAMPLE), Format::Multiwoz21).unwrap();
    let texts: Vec<String> = dialogues
        .iter()
        .flat_map(|d| &d.turns)
        .flat_map(|t| {
            let e = Example::of_gold_turn(t);
            [PromptMode::InContext, PromptMode::Compact].map(|mode| {
                let (prompt, completion) = render(&e, mode);
                format!("{prompt}{completion}")
            })
        })
        .collect();
    let path = dir.join("tiny-llama");
    labelfleet_models::tiny::write_tiny_model(&path, &texts, 1).unwrap();
    path
}

fn retrain_job(group: &str, model: &Path, steps: usize, checkpoint_every: usize) -> Value {
    json!({
        "kind": "retrain",
        "group_id": group,
        "retrain": {
            "model": {"path": model},
            "data": {"old": [{"gold": {"path": SAMPLE, "format": "multiwoz21"}}]},
            // Ten dialogues: resampling cuts them 6/2/2 exactly.
            "split": {"policy": "resample", "ratios": [0.6, 0.2, 0.2]},
            "training": {"steps": steps, "batch_size": 4, "learning_rate": 0.003,
                         "warmup_steps": 5, "eval_every": 10, "max_tokens": 160, "seed": 3},
            "checkpoint": {"every_steps": checkpoint_every}
        }
    })
}

/// The settings of an eval of `model` (a compact-prompt model: no retriever) on the
/// sample's first dialogue.
fn compact_eval(model: Value, max_new_tokens: usize) -> Value {
    json!({
        "gold": {"path": SAMPLE, "format": "multiwoz21"},
        "max_dialogues": 1,
        "predictions": {"model": {
            "model": model,
            "generation": {"max_new_tokens": max_new_tokens},
            "max_tokens": 160
        }}
    })
}

fn artifact(fleet: &Fleet, key: &str) -> Value {
    let path = fleet.home().join("artifacts").join(key);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn losses(curve: &Value) -> Vec<f64> {
    curve["curve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn a_retrained_model_learns_and_labels_in_self_label() {
    let fleet = Fleet::new();
    let model = tiny_model(fleet.dir.path());
    let dir = fleet.jobs_dir("tiny");
    common::write_job(&dir, "train.json", &retrain_job("tiny", &model, 60, 20));
    let minilm = repo_root().join(".models/all-MiniLM-L6-v2");
    common::write_job(
        &dir,
        "label.json",
        &json!({
            "kind": "self_label",
            "group_id": "tiny",
            "after": ["train"],
            "self_label": {
                "data": {"path": SAMPLE, "format": "multiwoz21"},
                "dialogues": {"count": 1, "max_turns": 2},
                "model": {"checkpoint": "tiny/train"},
                "retriever": {"model": {"path": minilm}, "k_examples": 1, "minimum_distinct": 1},
                "generation": {"max_new_tokens": 8}
            }
        }),
    );
    common::write_job(
        &dir,
        "eval.json",
        &json!({
            "kind": "eval",
            "group_id": "tiny",
            "after": ["train"],
            "eval": {
                "gold": {"path": SAMPLE, "format": "multiwoz21"},
                "max_dialogues": 2,
                "predictions": {"model": {
                    "model": {"checkpoint": "tiny/train"},
                    "retriever": {"model": {"path": minilm}, "k_examples": 1, "minimum_distinct": 1},
                    "generation": {"max_new_tokens": 8},
                    "max_tokens": 160
                }}
            }
        }),
    );
    // Retraining on the gold dialogues, twice an epoch, and the surer half of the
    // model's own labels.
    common::write_job(
        &dir,
        "again.json",
        &json!({
            "kind": "retrain",
            "group_id": "tiny",
            "after": ["label"],
            "retrain": {
                "model": {"checkpoint": "tiny/train"},
                "data": {"old": [{"gold": {"path": SAMPLE, "format": "multiwoz21", "repeat": 2}}],
                         "new": [{"group": "tiny"}],
                         "confident": {"keep": 0.5}},
                "split": {"policy": "keep_old", "ratios": [0.6, 0.2, 0.2]},
                "training": {"steps": 2, "batch_size": 4, "eval_every": 2, "max_tokens": 160}
            }
        }),
    );
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let mut worker = fleet.spawn_worker("w", &["--wait", "1", "--idle-exit", "5"]);
    assert!(worker.wait(Duration::from_secs(600)).success());

    let entries = fleet.entries("tiny");
    assert_eq!(entries.len(), 4, "{entries:?}");
    let train = entries.iter().find(|e| e.run_id == "train").unwrap();
    assert_eq!(train.kind, "retrain");
    assert_eq!(train.counts["steps"], 60);
    let curve = artifact(&fleet, &train.artifacts["curve"]);
    let losses = losses(&curve);
    let (first, last) = (
        losses[..5].iter().sum::<f64>() / 5.0,
        losses[55..].iter().sum::<f64>() / 5.0,
    );
    assert!(
        last < first * 0.6,
        "training loss went from {first} to {last}"
    );
    let valid = train.metrics["valid_loss"].as_f64().unwrap();
    assert!(valid.is_finite() && valid > 0.0);
    assert!(train.metrics["test_loss"].as_f64().unwrap().is_finite());
    assert_eq!(
        curve["valid"].as_array().unwrap().len(),
        6,
        "every 10 steps"
    );
    assert!(
        fleet
            .home()
            .join("artifacts")
            .join(&train.artifacts["model"])
            .exists()
    );
    assert!(
        fleet
            .home()
            .join("artifacts")
            .join(&train.artifacts["best"])
            .exists()
    );

    // Splits are by dialogue and disjoint.
    let splits = artifact(&fleet, &train.artifacts["splits"]);
    let set = |name: &str| -> std::collections::BTreeSet<String> {
        splits[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let (tr, va, te) = (set("train"), set("valid"), set("test"));
    assert!(!tr.is_empty() && !va.is_empty() && !te.is_empty());
    assert!(tr.is_disjoint(&va) && tr.is_disjoint(&te) && va.is_disjoint(&te));
    assert_eq!(
        train.counts["train_examples"]
            + train.counts["valid_examples"]
            + train.counts["test_examples"],
        train.counts["old_examples"]
    );

    // The checkpoint loads in self_label, which records how sure it was of each label.
    let label = entries.iter().find(|e| e.run_id == "label").unwrap();
    assert_eq!(label.counts["turns"], 2);
    let log = artifact(&fleet, &label.artifacts["labels"]);
    let mut surest: Vec<f64> = log["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let c = &t["confidence"];
            let (whole, least) = (
                c["logprob"].as_f64().unwrap(),
                c["min_logprob"].as_f64().unwrap(),
            );
            assert!(whole <= least && least <= 0.0, "{c}");
            least
        })
        .collect();
    surest.sort_by(|a, b| b.total_cmp(a));

    // The next retrain kept the surer of those two labels (both, should they tie).
    let again = entries.iter().find(|e| e.run_id == "again").unwrap();
    let kept = surest.iter().filter(|&&s| s >= surest[0]).count() as u64;
    assert_eq!(again.counts["self_labels_seen"], 2, "{:?}", again.counts);
    assert_eq!(again.counts["self_labels_kept"], kept);
    assert_eq!(again.counts["new_examples"], kept);
    let gold = read_dataset(&repo_root().join(SAMPLE), Format::Multiwoz21).unwrap();
    let listed = artifact(&fleet, &again.artifacts["splits"]);
    let gold_train_turns: u64 = listed["train"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|id| {
            id.as_str()
                .unwrap()
                .strip_prefix(&format!("gold:{SAMPLE}#"))
        })
        .map(|id| {
            let d = gold.iter().find(|d| d.dialogue_id == id).unwrap();
            d.turns.len() as u64
        })
        .sum();
    assert!(gold_train_turns > 0);
    assert_eq!(
        again.counts["train_examples"],
        2 * gold_train_turns + kept,
        "gold turns train twice an epoch"
    );

    // eval labels two gold dialogues with the checkpoint and measures its loss there.
    let eval = entries.iter().find(|e| e.run_id == "eval").unwrap();
    assert_eq!(eval.counts["dialogues"], 2);
    let loss = eval.metrics["loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0);
    let perplexity = eval.metrics["perplexity"].as_f64().unwrap();
    assert!((perplexity - loss.exp()).abs() < 1e-6 * perplexity);
    let jga = eval.metrics["joint_goal_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&jga));
    assert!(eval.counts["loss_tokens"] > 0);

    // Three jobs used the checkpoint; the worker fetched it once.
    let events = worker.events();
    assert_eq!(common::find(&events, "checkpoint fetched", None).len(), 1);
    assert_eq!(
        common::find(&events, "checkpoint already fetched", None).len(),
        2
    );
}

#[test]
fn a_compact_model_labels_without_examples_and_refuses_another_prompt() {
    let fleet = Fleet::new();
    let model = tiny_model(fleet.dir.path());
    let dir = fleet.jobs_dir("compact");
    let mut train = retrain_job("compact", &model, 20, 20);
    train["retrain"]["prompt"] = json!("compact");
    common::write_job(&dir, "train.json", &train);
    let label = |prompt: Option<&str>| {
        let mut job = json!({
            "kind": "self_label",
            "group_id": "compact",
            "after": ["train"],
            "self_label": {
                "data": {"path": SAMPLE, "format": "multiwoz21"},
                "dialogues": {"count": 1, "max_turns": 2},
                "model": {"checkpoint": "compact/train"},
                "generation": {"max_new_tokens": 8}
            }
        });
        if let Some(prompt) = prompt {
            job["self_label"]["prompt"] = json!(prompt);
            job["self_label"]["retriever"] =
                json!({"model": {"path": repo_root().join(".models/all-MiniLM-L6-v2")}});
        }
        job
    };
    common::write_job(&dir, "label.json", &label(None));
    common::write_job(&dir, "wrong.json", &label(Some("in_context")));
    common::write_job(
        &dir,
        "eval.json",
        &json!({
            "kind": "eval",
            "group_id": "compact",
            "after": ["train"],
            "eval": compact_eval(json!({"checkpoint": "compact/train"}), 8)
        }),
    );
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let mut worker = fleet.spawn_worker(
        "w",
        &[
            "--wait",
            "1",
            "--idle-exit",
            "5",
            "--max-receives",
            "2",
            "--retry-base",
            "0.3",
        ],
    );
    assert!(worker.wait(Duration::from_secs(600)).success());

    // The saved model says which prompt it was trained on.
    let entries = fleet.entries("compact");
    let train = entries.iter().find(|e| e.run_id == "train").unwrap();
    let metadata = fleet
        .home()
        .join("artifacts")
        .join(&train.artifacts["best"])
        .with_file_name("labelfleet.json");
    let metadata: Value = serde_json::from_slice(&std::fs::read(&metadata).unwrap()).unwrap();
    assert_eq!(metadata["prompt"], "compact");
    assert_eq!(metadata["trained_by"], "compact/train");

    // self_label and eval of it use that prompt, with no retriever.
    let label = entries.iter().find(|e| e.run_id == "label").unwrap();
    assert_eq!(label.counts["turns"], 2);
    let eval = entries.iter().find(|e| e.run_id == "eval").unwrap();
    assert_eq!(eval.counts["dialogues"], 1);
    let events = worker.events();
    let labelling = common::find(&events, "labelling", Some("compact/label"));
    assert_eq!(labelling[0]["fields"]["prompt"], "compact", "{labelling:?}");

    // Asking for another prompt than the model's fails, naming both.
    assert!(entries.iter().all(|e| e.run_id != "wrong"));
    let dead = common::block_on(fleet.embedded().queue(5).unwrap().dead_letters(5)).unwrap();
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let reason = &dead[0].reason;
    assert!(
        reason.contains("`self_label.prompt` is `in_context`")
            && reason.contains("trained by compact/train on the `compact` prompt"),
        "{reason}"
    );
}

#[test]
fn a_killed_retrain_job_resumes_and_matches_an_uninterrupted_run() {
    let fleet = Fleet::new();
    let model = tiny_model(fleet.dir.path());
    let steps = 150;
    let dir = fleet.jobs_dir("resume");
    common::write_job(&dir, "train.json", &retrain_job("resume", &model, steps, 5));
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
    let state = fleet
        .home()
        .join("artifacts/resume/train/checkpoint/state.json");
    // `status` shows the training's progress: step, loss, speed, ETA.
    let mut progress = String::new();
    wait_until(
        Duration::from_secs(300),
        "training progress in status",
        || {
            let status = fleet.status();
            progress = status["workers"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|w| w["progress"].as_str().map(str::to_string))
                .unwrap_or_default();
            progress.starts_with("step ")
        },
    );
    assert!(
        progress.contains(&format!("/{steps} · loss "))
            && progress.contains("steps/s")
            && progress.contains("ETA"),
        "{progress}"
    );
    wait_until(Duration::from_secs(300), "the first checkpoint", || {
        state.exists()
    });
    victim.signal("KILL");
    victim.wait(Duration::from_secs(10));
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let saved_step = saved["step"].as_u64().unwrap();
    assert!(
        saved_step >= 5 && saved_step < steps as u64,
        "killed at step {saved_step}"
    );

    // The same job in another group, never interrupted, for comparison.
    let straight = fleet.jobs_dir("straight");
    common::write_job(
        &straight,
        "train.json",
        &retrain_job("straight", &model, steps, 1000),
    );
    fleet.ok(&["enqueue", straight.to_str().unwrap(), "--allow-dirty"]);
    let mut rescuer = fleet.spawn_worker("rescuer", &[&args[..], &["--idle-exit", "10"]].concat());
    assert!(rescuer.wait(Duration::from_secs(600)).success());

    let resumed = &fleet.entries("resume")[0];
    assert_eq!(resumed.worker, "rescuer");
    let events = rescuer.events();
    let resuming = common::find(&events, "resuming from the checkpoint", None);
    assert_eq!(resuming.len(), 1);
    assert!(resuming[0]["fields"]["step"].as_u64().unwrap() >= saved_step);
    let a = losses(&artifact(&fleet, &resumed.artifacts["curve"]));
    let b = losses(&artifact(
        &fleet,
        &fleet.entries("straight")[0].artifacts["curve"],
    ));
    assert_eq!((a.len(), b.len()), (steps, steps));
    for (step, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() < 1e-4,
            "step {}: resumed {x} vs straight {y}",
            step + 1
        );
    }
    // The finished runs' resumable checkpoints are removed; their models stay.
    for group in ["resume", "straight"] {
        let run = fleet.home().join("artifacts").join(group).join("train");
        assert!(!run.join("checkpoint").exists(), "{group}");
        assert!(run.join("model/model.safetensors").exists(), "{group}");
    }
}

/// SmolLM2-135M (the real GGUF, dequantized) with LoRA adapters, a few steps on gold
/// IC-DST turns; the adapter then merges into the base when self_label loads it.
#[test]
fn smollm2_lora_fine_tune_loads_in_self_label() {
    let fleet = Fleet::new();
    let models = repo_root().join(".models");
    let data = std::env::var_os("LABELFLEET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data"))
        .join("icdst_train/train_1p_v1.json");
    let dir = fleet.jobs_dir("smol");
    common::write_job(
        &dir,
        "train.json",
        &json!({
            "kind": "retrain",
            "group_id": "smol",
            "retrain": {
                "model": {"path": models.join("SmolLM2-135M-Instruct")},
                "data": {"old": [{"gold": {"path": data, "format": "icdst", "max_dialogues": 3}}]},
                "split": {"policy": "resample", "ratios": [0.67, 0.33, 0.0]},
                "training": {"steps": 3, "batch_size": 2, "learning_rate": 0.001,
                             "max_tokens": 320, "eval_every": 3},
                "lora": {"rank": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]}
            }
        }),
    );
    common::write_job(
        &dir,
        "label.json",
        &json!({
            "kind": "self_label",
            "group_id": "smol",
            "after": ["train"],
            "self_label": {
                "data": {"path": SAMPLE, "format": "multiwoz21"},
                "dialogues": {"count": 1, "max_turns": 1},
                "model": {"checkpoint": "smol/train/best"},
                "retriever": {"model": {"path": models.join("all-MiniLM-L6-v2")}},
                "generation": {"max_new_tokens": 16}
            }
        }),
    );
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let mut worker = fleet.spawn_worker("w", &["--wait", "1", "--idle-exit", "5"]);
    assert!(worker.wait(Duration::from_secs(900)).success());
    let entries = fleet.entries("smol");
    assert_eq!(entries.len(), 2, "{entries:?}");
    let train = entries.iter().find(|e| e.run_id == "train").unwrap();
    assert_eq!(train.counts["steps"], 3);
    // Rank-4 adapters on q and v of 30 layers: (576·4 + 4·576) + (576·4 + 4·192) each.
    assert_eq!(
        train.counts["trainable_parameters"],
        30 * (2 * 576 * 4 + 576 * 4 + 4 * 192)
    );
    assert!(train.metrics["valid_loss"].as_f64().unwrap().is_finite());
    assert!(train.artifacts["model"].ends_with("model/adapter_model.safetensors"));
    let label = entries.iter().find(|e| e.run_id == "label").unwrap();
    assert_eq!(label.counts["turns"], 1);
    let events = worker.events();
    assert!(
        !common::find(&events, "checkpoint fetched", None).is_empty(),
        "self_label fetched the adapter"
    );
}

/// A 4-trial sweep runs through the queue on two workers and picks the trial with the
/// lowest validation loss; a second sweep builds on the first.
#[test]
fn a_sweep_runs_its_trials_on_two_workers_and_picks_the_best() {
    let fleet = Fleet::new();
    let model = tiny_model(fleet.dir.path());
    let dir = fleet.jobs_dir("sweep");
    let mut template = retrain_job("sweep", &model, 20, 1000)["retrain"].clone();
    template["split"] = json!({"policy": "resample", "ratios": [0.6, 0.2, 0.2]});
    common::write_job(
        &dir,
        "tune.json",
        &json!({
            "kind": "tune",
            "group_id": "sweep",
            "tune": {
                "retrain": template,
                "grid": {"training.learning_rate": [0.00003, 0.0003, 0.003, 0.03]},
                "parallel": 2,
                "metric": "valid_loss"
            }
        }),
    );
    common::write_job(
        &dir,
        "again.json",
        &json!({
            "kind": "tune",
            "group_id": "sweep",
            "tune": {
                "retrain": template,
                "grid": {"training.learning_rate": [0.001]},
                "metric": "valid_loss",
                "build_on": ["sweep/tune"]
            }
        }),
    );
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let mut workers: Vec<_> = (0..2)
        .map(|w| fleet.spawn_worker(&format!("w{w}"), &["--wait", "1", "--idle-exit", "5"]))
        .collect();
    for w in &mut workers {
        assert!(w.wait(Duration::from_secs(600)).success());
    }
    let entries = fleet.entries("sweep");
    assert_eq!(entries.len(), 4 + 1 + 1 + 1, "{entries:?}");
    let trials: Vec<_> = entries
        .iter()
        .filter(|e| e.run_id.starts_with("tune_t"))
        .collect();
    assert_eq!(trials.len(), 4);
    let workers_used: std::collections::BTreeSet<&str> =
        trials.iter().map(|e| e.worker.as_str()).collect();
    assert_eq!(workers_used.len(), 2, "both workers ran trials");
    // Two at a time: trial 2 started after trial 0 finished, so it finished later.
    let done = |run: &str| {
        entries
            .iter()
            .find(|e| e.run_id == run)
            .unwrap()
            .completed_at
            .clone()
    };
    assert!(done("tune_t02") > done("tune_t00"));
    assert!(done("tune_t03") > done("tune_t01"));

    let best = trials
        .iter()
        .min_by(|a, b| {
            let v = |e: &&&labelfleet_manifest::ManifestEntry| {
                e.metrics["valid_loss"].as_f64().unwrap()
            };
            v(a).total_cmp(&v(b))
        })
        .unwrap();
    let tune = entries.iter().find(|e| e.run_id == "tune").unwrap();
    assert_eq!(tune.kind, "tune");
    assert_eq!(tune.metrics["best_trial"], best.run_id.as_str());
    assert_eq!(tune.metrics["best_value"], best.metrics["valid_loss"]);
    assert_eq!(tune.counts["trials"], 4);
    let ranking = artifact(&fleet, &tune.artifacts["trials"]);
    assert_eq!(ranking.as_array().unwrap().len(), 4);

    // The second sweep ranks its one trial among the first sweep's four.
    let again = entries.iter().find(|e| e.run_id == "again").unwrap();
    assert_eq!(again.counts["earlier_trials"], 4);
    let own = entries.iter().find(|e| e.run_id == "again_t00").unwrap();
    let overall = own.metrics["valid_loss"]
        .as_f64()
        .unwrap()
        .min(best.metrics["valid_loss"].as_f64().unwrap());
    assert_eq!(again.metrics["best_value"].as_f64().unwrap(), overall);

    // report: a table with every trial's parameters, loss curves, metric by parameter.
    let out = fleet.dir.path().join("report");
    let table = fleet.ok(&["report", "sweep", "--out", out.to_str().unwrap()]);
    for t in 0..4 {
        let row = table
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("tune_t{t:02} ")))
            .unwrap_or_else(|| panic!("no row for trial {t}:\n{table}"));
        assert!(row.contains("training.learning_rate="), "{row}");
    }
    let curves = std::fs::read_to_string(out.join("loss_curves.svg")).unwrap();
    assert!(curves.starts_with("<svg") && curves.contains("tune_t03"));
    let by_lr = std::fs::read_to_string(out.join("tune_training_learning_rate.svg")).unwrap();
    assert!(by_lr.contains("valid_loss by training.learning_rate"));
    // One dot per trial (the best one drawn in red).
    assert_eq!(by_lr.matches("<circle").count(), 4);
}

/// SIGTERM (a spot machine's notice): the training job checkpoints at once and is
/// released for another worker, well inside a long grace period, and the next worker
/// resumes from that checkpoint.
#[test]
fn a_stopping_worker_checkpoints_its_training_and_hands_it_over() {
    let fleet = Fleet::new();
    let model = tiny_model(fleet.dir.path());
    let steps = 150;
    let dir = fleet.jobs_dir("spot");
    // No periodic checkpoints: the only one is the one the stop writes.
    common::write_job(
        &dir,
        "train.json",
        &retrain_job("spot", &model, steps, 100_000),
    );
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let args = ["--heartbeat", "1", "--wait", "1"];
    let mut first = fleet.spawn_worker("first", &[&args[..], &["--grace", "600"]].concat());
    wait_until(Duration::from_secs(300), "training progress", || {
        fleet.shows_progress(|p| p.starts_with("step "))
    });
    let asked = std::time::Instant::now();
    first.signal("TERM");
    assert!(first.wait(Duration::from_secs(60)).success());
    assert!(
        asked.elapsed() < Duration::from_secs(60),
        "the grace period was not needed"
    );
    let events = first.events();
    assert_eq!(
        common::find(
            &events,
            "job saved its progress; released for another worker",
            None
        )
        .len(),
        1
    );
    let state: Value = serde_json::from_slice(
        &std::fs::read(
            fleet
                .home()
                .join("artifacts/spot/train/checkpoint/state.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let saved = state["step"].as_u64().unwrap();
    assert!(
        saved > 0 && saved < steps as u64,
        "checkpoint at step {saved}"
    );

    let mut second = fleet.spawn_worker("second", &[&args[..], &["--idle-exit", "5"]].concat());
    assert!(second.wait(Duration::from_secs(600)).success());
    let entry = &fleet.entries("spot")[0];
    assert_eq!(entry.worker, "second");
    assert_eq!(entry.counts["steps"], steps as u64);
    let resumed = common::find(&second.events(), "resuming from the checkpoint", None)
        .first()
        .map(|e| e["fields"]["step"].as_u64().unwrap());
    assert_eq!(resumed, Some(saved));
}

/// One worker runs a 4-trial sweep whose trials are each evaluated (4 checkpoints to
/// load) with `--model-memory` room for two of them: the worker's one model cache never
/// holds more than two, lets the least recently used go, and every eval still scores.
#[test]
fn a_sweep_with_evals_keeps_its_models_within_the_memory_bound() {
    let fleet = Fleet::new();
    let model = tiny_model(fleet.dir.path());
    let one_model = labelfleet_models::load_causal_lm(
        &model,
        labelfleet_models::WeightFormat::Stored,
        &labelfleet_models::Device::Cpu,
    )
    .unwrap()
    .model
    .weight_bytes();
    let dir = fleet.jobs_dir("memory");
    let mut template = retrain_job("memory", &model, 4, 1000)["retrain"].clone();
    template["prompt"] = json!("compact");
    common::write_job(
        &dir,
        "tune.json",
        &json!({
            "kind": "tune",
            "group_id": "memory",
            "tune": {
                "retrain": template,
                "grid": {"training.learning_rate": [0.0001, 0.001, 0.003, 0.01]},
                "metric": "eval.joint_goal_accuracy",
                "goal": "maximize",
                "eval": compact_eval(json!({"path": "set by the sweep"}), 6)
            }
        }),
    );
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let bound_gb = (2.5 * one_model as f64 / 1e9).to_string();
    let mut worker = fleet.spawn_worker(
        "w",
        &[
            "--wait",
            "1",
            "--idle-exit",
            "5",
            "--model-memory",
            &bound_gb,
        ],
    );
    assert!(worker.wait(Duration::from_secs(600)).success());

    let entries = fleet.entries("memory");
    let evals: Vec<_> = entries.iter().filter(|e| e.kind == "eval").collect();
    assert_eq!(evals.len(), 4, "{entries:?}");
    assert!(evals.iter().all(|e| e.counts["turns"] > 0));
    let events = worker.events();
    let held: Vec<u64> = common::find(&events, "model cache", None)
        .iter()
        .map(|e| e["fields"]["held_models"].as_u64().unwrap())
        .collect();
    assert_eq!(held.len(), 4, "one load per trial's checkpoint: {held:?}");
    assert_eq!(held.iter().max(), Some(&2), "{held:?}");
    assert_eq!(
        common::find(
            &events,
            "model cache: let go of the least recently used model",
            None
        )
        .len(),
        2
    );
    // The worker says how much memory it held at most, for sizing machines.
    let stopped = common::find(&events, "worker stopped", None);
    assert!(stopped[0]["fields"]["peak_resident_mib"].as_u64().unwrap() > 0);
}
