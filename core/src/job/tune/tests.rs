//! Tests of sweep settings and their expansion.

use serde_json::json;

use super::*;
use crate::job::{Job, JobBody, ProvenancePolicy};

fn tune(body: Value) -> Job {
    Job::parse(
        json!({"kind": "tune", "group_id": "g", "after": ["labels"], "tune": body}),
        "runs/sweep/tune.json",
        Some("tune"),
        ProvenancePolicy::Reject,
    )
    .unwrap()
}

fn retrain() -> Value {
    json!({
        "model": {"path": "m"},
        "data": {"old": [{"gold": {"path": "d.json", "format": "multiwoz21"}}]},
        "training": {"seed": 10}
    })
}

#[test]
fn a_grid_expands_into_chained_trials_and_the_tune_job_last() {
    let job = tune(json!({
        "retrain": retrain(),
        "grid": {"training.learning_rate": [0.001, 0.01], "lora.rank": [4, 8]},
        "parallel": 2,
        "replicates": 2,
        "metric": "valid_loss"
    }));
    let jobs = expand(job, "tune.json").unwrap();
    assert_eq!(jobs.len(), 4 * 2 + 1);
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(&names[..3], ["tune_t00_s0", "tune_t00_s1", "tune_t01_s0"]);
    // Two at a time: the third run waits for the first.
    assert_eq!(jobs[0].after, ["labels"]);
    assert_eq!(jobs[2].after, ["labels", "tune_t00_s0"]);
    let JobBody::Retrain(first) = &jobs[0].body else {
        panic!()
    };
    let JobBody::Retrain(second) = &jobs[1].body else {
        panic!()
    };
    assert_eq!((first.training.seed, second.training.seed), (10, 11));
    assert_eq!(first.lora.as_ref().unwrap().rank, 4);
    assert_eq!(first.training.learning_rate, 0.001);
    let tune = jobs.last().unwrap();
    assert_eq!(tune.after.len(), 1 + 8);
    let JobBody::Tune(spec) = &tune.body else {
        panic!()
    };
    assert_eq!(spec.planned.len(), 4);
    assert_eq!(spec.planned[3].params["lora.rank"], json!(8));
    assert_eq!(
        spec.planned[3].params["training.learning_rate"],
        json!(0.01)
    );
}

#[test]
fn random_search_is_seeded_and_stays_in_range() {
    let body = json!({
        "retrain": retrain(),
        "ranges": {"training.learning_rate": {"log_uniform": [1e-4, 1e-2]},
                   "training.warmup_steps": {"int_uniform": [0, 5]}},
        "trials": 5,
        "metric": "valid_loss"
    });
    let a = expand(tune(body.clone()), "t").unwrap();
    let b = expand(tune(body), "t").unwrap();
    assert_eq!(a.len(), 6);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.body, y.body);
    }
    for job in &a[..5] {
        let JobBody::Retrain(spec) = &job.body else {
            panic!()
        };
        assert!((1e-4..=1e-2).contains(&spec.training.learning_rate));
        assert!(spec.training.warmup_steps <= 5);
    }
}

#[test]
fn a_huge_grid_is_capped_by_trials_or_refused_before_it_is_built() {
    let values: Vec<Value> = (1..=10).map(|i| json!(i)).collect();
    let grid: serde_json::Map<String, Value> = [
        "training.learning_rate",
        "training.weight_decay",
        "training.warmup_steps",
        "training.batch_size",
        "training.steps",
        "training.max_grad_norm",
        "lora.rank",
        "lora.alpha",
    ]
    .iter()
    .map(|name| (name.to_string(), Value::from(values.clone())))
    .collect();
    // 10^8 points capped at 2: two trials, drawn without building the grid.
    let started = std::time::Instant::now();
    let job = tune(json!({"retrain": retrain(), "grid": grid.clone(), "trials": 2, "metric": "m"}));
    let jobs = expand(job, "tune.json").unwrap();
    assert_eq!(jobs.len(), 3);
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    // Uncapped, it is refused with the grid's size and what to do.
    let job = tune(json!({"retrain": retrain(), "grid": grid, "metric": "m"}));
    let e = expand(job, "tune.json").unwrap_err();
    assert_eq!(e.path, "tune");
    assert!(
        e.message.contains("8 parameters has 100000000 points")
            && e.message.contains("give `trials`"),
        "{e}"
    );
    // Random search with absurdly many trials is refused the same way.
    let job = tune(
        json!({"retrain": retrain(), "ranges": {"lora.rank": {"int_uniform": [1, 8]}},
                          "trials": 1_000_000_000_000u64, "metric": "m"}),
    );
    assert!(
        expand(job, "tune.json")
            .unwrap_err()
            .message
            .contains("at most 1000")
    );
}

#[test]
fn bad_sweeps_are_named() {
    let e = err(json!({"retrain": retrain(), "metric": "valid_loss"}));
    assert_eq!(e.path, "tune.grid");
    let e = err(
        json!({"retrain": retrain(), "grid": {"x": [1]}, "metric": "eval.joint_goal_accuracy"}),
    );
    assert_eq!(e.path, "tune.metric");
    let e = err(
        json!({"retrain": retrain(), "grid": {"x": [1]}, "metric": "m",
                       "planned": [{"trial": "a", "params": {}, "runs": []}]}),
    );
    assert_eq!(e.path, "tune.planned");
    // A parameter the retrain schema rejects names the trial and the field.
    let job = tune(json!({"retrain": retrain(), "grid": {"training.steps": [0]}, "metric": "m"}));
    let e = expand(job, "tune.json").unwrap_err();
    assert_eq!(e.path, "tune.retrain.training.steps");
    assert!(
        e.message.contains("trial tune_t00 (training.steps=0)"),
        "{e}"
    );
}

/// The error parsing a tune job with these settings gives.
fn err(body: Value) -> crate::job::JobError {
    Job::parse(
        json!({"kind": "tune", "group_id": "g", "tune": body}),
        "t.json",
        Some("t"),
        ProvenancePolicy::Reject,
    )
    .unwrap_err()
}

fn command_template() -> Value {
    json!({"kind": "command", "command": {"program": "branin", "params": {"x": 0.0}}})
}

#[test]
fn a_template_of_any_kind_is_swept_by_paths_into_the_job() {
    let job = tune(json!({
        "template": command_template(),
        "grid": {"command.params.x": [1.0, 2.0], "command.args": [["--fast"]]},
        "replicates": 2,
        "metric": "value"
    }));
    let jobs = expand(job, "tune.json").unwrap();
    assert_eq!(jobs.len(), 2 * 2 + 1);
    let JobBody::Command(first) = &jobs[0].body else {
        panic!("{:?}", jobs[0].body)
    };
    assert_eq!(first.params["x"], json!(1.0));
    assert_eq!(first.args, ["--fast"]);
    // Replicates of a command get their seed in its params.
    let JobBody::Command(second) = &jobs[1].body else {
        panic!()
    };
    assert_eq!(
        (&first.params["seed"], &second.params["seed"]),
        (&json!(0), &json!(1))
    );
    let JobBody::Tune(spec) = &jobs.last().unwrap().body else {
        panic!()
    };
    assert_eq!(spec.planned[1].runs[1].job, "tune_t01_s1");
    assert_eq!(spec.planned[1].runs[1].seed, Some(1));
}

#[test]
fn model_based_search_plans_rounds_whose_trials_wait_for_their_round_job() {
    let job = tune(json!({
        "template": command_template(),
        "ranges": {"command.params.x": {"uniform": [-5, 10]}},
        "search": "tpe",
        "trials": 9,
        "parallel": 2,
        "tpe": {"startup_trials": 4},
        "metric": "value"
    }));
    let jobs = expand(job, "tune.json").unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    // 4 random trials, rounds of 2, 2 and 1, a round job for each, and the tune job.
    assert_eq!(
        names,
        [
            "tune_t00",
            "tune_t01",
            "tune_t02",
            "tune_t03",
            "tune_t04",
            "tune_t05",
            "tune_t06",
            "tune_t07",
            "tune_t08",
            "tune_round1",
            "tune_round2",
            "tune_round3",
            "tune"
        ]
    );
    let by_name = |n: &str| jobs.iter().find(|j| j.name == n).unwrap();
    // Startup trials run two at a time, with their points drawn now.
    assert_eq!(by_name("tune_t02").after, ["labels", "tune_t00"]);
    assert_eq!(by_name("tune_t02").params_from, None);
    // A round's trials wait for the round job, which waits for every trial before it.
    assert_eq!(by_name("tune_t06").after, ["labels", "tune_round2"]);
    assert_eq!(
        by_name("tune_t06").params_from.as_deref(),
        Some("tune_round2")
    );
    assert_eq!(
        by_name("tune_round2").after,
        [
            "labels", "tune_t00", "tune_t01", "tune_t02", "tune_t03", "tune_t04", "tune_t05"
        ]
    );
    let JobBody::Tune(round) = &by_name("tune_round2").body else {
        panic!()
    };
    assert_eq!(round.round, Some(2));
    let JobBody::Tune(spec) = &by_name("tune").body else {
        panic!()
    };
    assert_eq!(spec.round, None);
    assert_eq!(spec.planned.len(), 9);
    assert_eq!(spec.planned[6].round, 2);
    assert!(spec.planned[6].params.is_empty() && !spec.planned[3].params.is_empty());
    assert_eq!(by_name("tune").after.len(), 1 + 9);
}

#[test]
fn bad_templates_are_named() {
    let e = err(
        json!({"template": {"kind": "command", "name": "x", "command": {}},
                       "grid": {"x": [1]}, "metric": "m"}),
    );
    assert_eq!(e.path, "tune.template");
    assert!(e.message.contains("`name` comes from the sweep"), "{e}");
    let e = err(json!({"template": command_template(), "retrain": retrain(),
                       "grid": {"x": [1]}, "metric": "m"}));
    assert_eq!(e.path, "tune.template");
    let e = err(json!({"template": command_template(), "search": "tpe",
                       "grid": {"command.params.x": [1]}, "metric": "m"}));
    assert_eq!(e.path, "tune.ranges");
    let e = err(
        json!({"template": {"kind": "noop", "noop": {}}, "replicates": 2,
                       "grid": {"noop.seconds": [1]}, "metric": "m"}),
    );
    assert_eq!(e.path, "tune.seed_path");
    // A template the kind's schema rejects is named inside the template.
    let job = tune(
        json!({"template": {"kind": "command", "command": {"program": "a b"}},
                          "grid": {"command.params.x": [1]}, "metric": "m"}),
    );
    let e = expand(job, "tune.json").unwrap_err();
    assert_eq!(e.path, "tune.template.command.program");
}
