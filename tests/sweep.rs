//! Sweeps over any kind, with real worker processes: a model-based (TPE) sweep of
//! `command` trials that evaluate the shifted Branin function (`examples/branin.py`)
//! finds a better optimum than random search with the same budget, averaged over
//! seeds, and proposes exactly what the sampler proposes in one process.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Fleet, repo_root, write_job};
use labelfleet_core::job::tune::tpe::run_in_rounds;
use labelfleet_core::job::{Range, TpeSettings};
use serde_json::{Value, json};

const TRIALS: usize = 100;
const PARALLEL: usize = 4;
const SEEDS: [u64; 2] = [0, 1];

fn shifted_branin(x: f64, y: f64) -> f64 {
    let (x, y) = (x - 1.3, y + 0.7);
    let pi = std::f64::consts::PI;
    let (b, c, t) = (5.1 / (4.0 * pi * pi), 5.0 / pi, 1.0 / (8.0 * pi));
    (y - b * x * x + c * x - 6.0).powi(2) + 10.0 * (1.0 - t) * x.cos() + 10.0
}

fn ranges() -> BTreeMap<String, Range> {
    [
        ("command.params.x".to_string(), Range::Uniform([-5.0, 10.0])),
        ("command.params.y".to_string(), Range::Uniform([0.0, 15.0])),
    ]
    .into()
}

fn evaluate(point: &BTreeMap<String, Value>) -> f64 {
    shifted_branin(
        point["command.params.x"].as_f64().unwrap(),
        point["command.params.y"].as_f64().unwrap(),
    )
}

/// What the fleet should find: the same sweep, run in this process.
fn simulated_best_of_tpe(seed: u64) -> f64 {
    run_in_rounds(
        &ranges(),
        &TpeSettings::default(),
        seed,
        TRIALS,
        PARALLEL,
        evaluate,
    )
    .iter()
    .map(|o| o.value)
    .fold(f64::INFINITY, f64::min)
}

fn sweep(name: &str, search: &str, seed: u64) -> Value {
    json!({
        "kind": "tune",
        "group_id": "branin",
        "name": name,
        "tune": {
            "template": {"kind": "command", "command": {"program": "branin"}},
            "ranges": {
                "command.params.x": {"uniform": [-5.0, 10.0]},
                "command.params.y": {"uniform": [0.0, 15.0]}
            },
            "search": search,
            "trials": TRIALS,
            "parallel": PARALLEL,
            "metric": "value",
            "goal": "minimize",
            "seed": seed
        }
    })
}

#[test]
fn tpe_beats_random_search_on_shifted_branin_through_the_fleet() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("sweeps");
    for seed in SEEDS {
        write_job(
            &dir,
            &format!("tpe_{seed}.json"),
            &sweep(&format!("tpe_{seed}"), "tpe", seed),
        );
        write_job(
            &dir,
            &format!("random_{seed}.json"),
            &sweep(&format!("random_{seed}"), "random", seed),
        );
    }
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let branin = repo_root().join("examples/branin.py");
    let allow = format!("branin={}", branin.display());
    let started = Instant::now();
    fleet.run_workers(
        2,
        &[
            "--wait",
            "0.2",
            "--idle-exit",
            "3",
            "--allow-command",
            &allow,
        ],
        Duration::from_secs(900),
    );
    let elapsed = started.elapsed();
    let entries = fleet.entries("branin");
    let jobs = SEEDS.len() * 2 * TRIALS + SEEDS.len() * (TRIALS - 10).div_ceil(PARALLEL);
    assert_eq!(entries.len(), jobs + SEEDS.len() * 2, "one entry per job");
    let best = |name: &str| {
        let entry = entries.iter().find(|e| e.run_id == name).unwrap();
        entry.metrics["best_value"].as_f64().unwrap()
    };
    let mut tpe = Vec::new();
    let mut random = Vec::new();
    for seed in SEEDS {
        let found = best(&format!("tpe_{seed}"));
        let expected = simulated_best_of_tpe(seed);
        assert!(
            (found - expected).abs() < 1e-9,
            "seed {seed}: the fleet's TPE found {found}, the sampler alone {expected}"
        );
        tpe.push(found);
        random.push(best(&format!("random_{seed}")));
    }
    // A trial of a model-based round records the parameters it ran with.
    let trial = entries.iter().find(|e| e.run_id == "tpe_0_t50").unwrap();
    assert!(
        trial.metrics["params"]["command.params.x"].is_f64(),
        "{:?}",
        trial.metrics
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    eprintln!(
        "{jobs} jobs on 2 workers in {:.0} s; best value, TPE {tpe:?} (mean {:.3}), random {random:?} (mean {:.3}); minimum 0.397887",
        elapsed.as_secs_f64(),
        mean(&tpe),
        mean(&random)
    );
    assert!(mean(&tpe) < mean(&random));
}
