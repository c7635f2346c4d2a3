//! Settings of a `tune` job: a hyper-parameter sweep over `retrain` (and optionally
//! `eval`) trial jobs.
//!
//! ```json
//! "tune": {
//!   "retrain": { …a retrain job's settings, the template of every trial… },
//!   "grid": {"training.learning_rate": [0.001, 0.003], "lora.rank": [4, 8]},
//!   "parallel": 2,
//!   "replicates": 1,
//!   "metric": "valid_loss",
//!   "goal": "minimize"
//! }
//! ```
//!
//! `enqueue` expands a tune file with [`expand`]: every trial becomes a `retrain` job
//! (`{tune}_t00`, `{tune}_t01`, …, one per replicate seed), followed by an `eval` job
//! (`…_eval`) when `eval` is given, and at most `parallel` trials run at once (each
//! trial waits for the one `parallel` places before it). The tune job itself runs
//! after every trial and picks the best by `metric`, the mean over replicates.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::retrain::RetrainSpec;
use super::self_label::CheckpointRef;
use crate::job::{EvalSpec, Job, JobBody, JobError, PredictionSource, ProvenancePolicy};
use crate::rng::SplitMix64;

/// The most trial jobs one sweep may create.
pub const MAX_TRIALS: usize = 1000;

/// Settings of a `tune` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneSpec {
    /// The retrain settings every trial starts from.
    pub retrain: RetrainSpec,
    /// An eval every trial's model gets; its `predictions` must be a `model`, which is
    /// replaced by the trial's checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalSpec>,
    /// Every combination of these values (dotted paths into the retrain settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grid: BTreeMap<String, Vec<Value>>,
    /// Random search: each trial draws every parameter from its range.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ranges: BTreeMap<String, Range>,
    /// How many random trials (with `ranges`), or the most grid points to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trials: Option<usize>,
    /// Trials that may run at the same time.
    #[serde(default = "one")]
    pub parallel: usize,
    /// Runs of every trial with seeds `training.seed`, `+1`, …; the metric is their mean.
    #[serde(default = "one")]
    pub replicates: usize,
    /// What to optimise: a metric of the trial's retrain entry (`valid_loss`,
    /// `test_loss`, …) or, prefixed `eval.`, of its eval entry (`eval.joint_goal_accuracy`).
    pub metric: String,
    /// Whether lower or higher is better.
    #[serde(default)]
    pub goal: Goal,
    /// Seed of random search.
    #[serde(default)]
    pub seed: u64,
    /// Earlier tune jobs (`group/name`) whose trials compete for best as well.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub build_on: Vec<String>,
    /// The trials, written by `enqueue` when it expands the sweep; not for job files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<PlannedTrial>,
}

fn one() -> usize {
    1
}

/// A parameter's range in random search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Range {
    /// Uniform between two numbers.
    Uniform([f64; 2]),
    /// Log-uniform between two positive numbers (learning rates).
    LogUniform([f64; 2]),
    /// A uniform integer in an inclusive range.
    IntUniform([i64; 2]),
    /// One of these values.
    Choice(Vec<Value>),
}

/// Which direction of the metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// Lower is better (losses).
    #[default]
    Minimize,
    /// Higher is better (accuracies).
    Maximize,
}

/// One trial of an expanded sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedTrial {
    /// The trial's name (`{tune}_t03`).
    pub trial: String,
    /// Its parameter values.
    pub params: BTreeMap<String, Value>,
    /// Its replicates' retrain jobs, and eval jobs when the sweep has `eval`.
    pub runs: Vec<TrialRun>,
}

/// One replicate of a trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialRun {
    /// The retrain job.
    pub retrain: String,
    /// The eval job of its model, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<String>,
    /// The training seed.
    pub seed: u64,
}

impl TuneSpec {
    /// Checks what serde cannot. The error names the field.
    pub fn check(&self) -> Result<(), (String, String)> {
        let fail = |f: &str, m: String| Err((format!("tune.{f}"), m));
        self.retrain
            .check()
            .map_err(|(p, m)| (format!("tune.{p}"), m))?;
        if self.grid.is_empty() == self.ranges.is_empty() {
            return fail("grid", "give exactly one of `grid` and `ranges`".into());
        }
        for (name, values) in &self.grid {
            if values.is_empty() {
                return fail(
                    &format!("grid.{name}"),
                    "expected at least one value".into(),
                );
            }
        }
        if !self.ranges.is_empty() && self.trials.is_none() {
            return fail(
                "trials",
                "random search (`ranges`) needs a number of `trials`".into(),
            );
        }
        for (name, range) in &self.ranges {
            let bad = match range {
                Range::Uniform([a, b]) => !a.is_finite() || !b.is_finite() || a > b,
                Range::LogUniform([a, b]) => !b.is_finite() || a.is_nan() || *a <= 0.0 || a > b,
                Range::IntUniform([a, b]) => a > b,
                Range::Choice(values) => values.is_empty(),
            };
            if bad {
                return fail(
                    &format!("ranges.{name}"),
                    "expected [low, high] with low ≤ high (positive for log_uniform), or a non-empty choice".into(),
                );
            }
        }
        if self.trials == Some(0) || self.parallel == 0 || self.replicates == 0 {
            return fail(
                "trials",
                "`trials`, `parallel` and `replicates` must be at least 1".into(),
            );
        }
        if self.metric.trim().is_empty() {
            return fail(
                "metric",
                "name the metric to optimise, e.g. `valid_loss`".into(),
            );
        }
        if self.metric.starts_with("eval.") && self.eval.is_none() {
            return fail(
                "metric",
                format!(
                    "`{}` is an eval metric, but the sweep has no `eval`",
                    self.metric
                ),
            );
        }
        if let Some(eval) = &self.eval
            && !matches!(eval.predictions, PredictionSource::Model(_))
        {
            return fail(
                "eval.predictions",
                "a sweep's eval labels with each trial's model: use {\"model\": {…}}".into(),
            );
        }
        for (i, earlier) in self.build_on.iter().enumerate() {
            if earlier.split('/').filter(|p| !p.is_empty()).count() != 2 {
                return fail(
                    &format!("build_on[{i}]"),
                    "expected `group/tune_job`".into(),
                );
            }
        }
        Ok(())
    }

    /// How many points the sweep runs, checked against [`MAX_TRIALS`] (with its
    /// replicates) before any point is built: 8 parameters of 10 values make 10^8 grid
    /// points, which `trials` may cap.
    fn point_count(&self) -> Result<usize, String> {
        let count = if self.grid.is_empty() {
            self.trials.unwrap_or(0)
        } else {
            let size = self
                .grid
                .values()
                .try_fold(1usize, |n, values| n.checked_mul(values.len()));
            match (size, self.trials) {
                (Some(size), Some(trials)) => size.min(trials),
                (Some(size), None) => size,
                (None, Some(trials)) => trials,
                (None, None) => usize::MAX,
            }
        };
        let runs = count.saturating_mul(self.replicates);
        if runs <= MAX_TRIALS {
            return Ok(count);
        }
        let what = if self.grid.is_empty() {
            format!("{count} trials")
        } else {
            let size = self
                .grid
                .values()
                .try_fold(1usize, |n, values| n.checked_mul(values.len()))
                .map_or_else(|| "more than 2^64".to_string(), |s| s.to_string());
            format!(
                "the grid of {} parameters has {size} points{}",
                self.grid.len(),
                if self.trials.is_some() {
                    ""
                } else {
                    " and `trials` does not cap it"
                }
            )
        };
        Err(format!(
            "{what}, × {} replicate(s): a sweep may run at most {MAX_TRIALS} trial runs; give \
             `trials` to run the first N grid points, use `ranges` for random search, or fewer values",
            self.replicates
        ))
    }

    /// The grid point at `index`, the last parameter varying fastest.
    fn grid_point(&self, mut index: usize) -> BTreeMap<String, Value> {
        let mut point = BTreeMap::new();
        for (name, values) in self.grid.iter().rev() {
            point.insert(name.clone(), values[index % values.len()].clone());
            index /= values.len();
        }
        point
    }

    fn points(&self) -> Result<Vec<BTreeMap<String, Value>>, String> {
        let count = self.point_count()?;
        if !self.grid.is_empty() {
            return Ok((0..count).map(|i| self.grid_point(i)).collect());
        }
        let mut rng = SplitMix64::new(self.seed);
        Ok((0..count)
            .map(|_| {
                self.ranges
                    .iter()
                    .map(|(name, range)| (name.clone(), draw(&mut rng, range)))
                    .collect()
            })
            .collect())
    }
}

/// A value drawn from a sweep's range.
fn draw(rng: &mut SplitMix64, range: &Range) -> Value {
    match range {
        Range::Uniform([a, b]) => Value::from(a + (b - a) * rng.unit()),
        Range::LogUniform([a, b]) => Value::from((a.ln() + (b.ln() - a.ln()) * rng.unit()).exp()),
        Range::IntUniform([a, b]) => {
            let span = (b - a) as u64 + 1;
            Value::from(a + (rng.next_u64() % span) as i64)
        }
        Range::Choice(values) => values[(rng.next_u64() % values.len() as u64) as usize].clone(),
    }
}

/// Expands a `tune` job into its trial jobs and itself (with `planned` filled in and
/// `after` every trial); any other job comes back alone. `file` names the source in
/// errors.
pub fn expand(job: Job, file: &str) -> Result<Vec<Job>, JobError> {
    let JobBody::Tune(spec) = &job.body else {
        return Ok(vec![job]);
    };
    let mut spec = (**spec).clone();
    let points = spec.points().map_err(|message| JobError {
        file: file.to_string(),
        path: "tune".into(),
        message,
    })?;
    let template = serde_json::to_value(&spec.retrain).expect("retrain settings serialise");
    let mut jobs = Vec::new();
    let mut planned = Vec::new();
    let mut finals: Vec<String> = Vec::new();
    for (i, params) in points.into_iter().enumerate() {
        let trial = format!("{}_t{i:02}", job.name);
        let mut trial_runs = Vec::new();
        for r in 0..spec.replicates {
            let name = if spec.replicates == 1 {
                trial.clone()
            } else {
                format!("{trial}_s{r}")
            };
            let mut body = template.clone();
            for (path, value) in &params {
                let parts: Vec<String> = path.split('.').map(str::to_string).collect();
                crate::overrides::set_at(&mut body, &parts, value.clone()).map_err(|m| {
                    JobError {
                        file: file.to_string(),
                        path: format!("tune.{path}"),
                        message: m,
                    }
                })?;
            }
            let seed = spec.retrain.training.seed + r as u64;
            body["training"]["seed"] = Value::from(seed);
            let mut after = job.after.clone();
            // At most `parallel` trials at once: each waits for the one `parallel` before.
            if finals.len() >= spec.parallel {
                after.push(finals[finals.len() - spec.parallel].clone());
            }
            let document = serde_json::json!({
                "kind": "retrain", "name": name, "group_id": job.group_id,
                "after": after, "retrain": body,
            });
            let retrain =
                Job::parse(document, file, None, ProvenancePolicy::Reject).map_err(|e| {
                    JobError {
                        message: format!("trial {name} ({}): {}", describe(&params), e.message),
                        path: format!("tune.{}", e.path),
                        ..e
                    }
                })?;
            let mut last = name.clone();
            let mut eval_name = None;
            jobs.push(Job {
                mini: job.mini,
                ..retrain
            });
            if let Some(eval) = &spec.eval {
                let mut eval = eval.clone();
                if let PredictionSource::Model(m) = &mut eval.predictions {
                    m.model.path = None;
                    m.model.id = None;
                    m.model.checkpoint = Some(CheckpointRef::final_of(&job.group_id, &name));
                }
                let en = format!("{name}_eval");
                jobs.push(Job {
                    name: en.clone(),
                    group_id: job.group_id.clone(),
                    after: vec![name.clone()],
                    mini: job.mini,
                    body: JobBody::Eval(eval),
                    provenance: None,
                });
                last = en.clone();
                eval_name = Some(en);
            }
            finals.push(last);
            trial_runs.push(TrialRun {
                retrain: name,
                eval: eval_name,
                seed,
            });
        }
        planned.push(PlannedTrial {
            trial,
            params,
            runs: trial_runs,
        });
    }
    spec.planned = planned;
    let mut after = job.after.clone();
    after.extend(finals);
    after.extend(spec.build_on.iter().cloned());
    jobs.push(Job {
        after,
        body: JobBody::Tune(Box::new(spec)),
        ..job
    });
    Ok(jobs)
}

fn describe(params: &BTreeMap<String, Value>) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
        let job =
            tune(json!({"retrain": retrain(), "grid": grid.clone(), "trials": 2, "metric": "m"}));
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
        let err = |body: Value| {
            Job::parse(
                json!({"kind": "tune", "group_id": "g", "tune": body}),
                "t.json",
                Some("t"),
                ProvenancePolicy::Reject,
            )
            .unwrap_err()
        };
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
        let job =
            tune(json!({"retrain": retrain(), "grid": {"training.steps": [0]}, "metric": "m"}));
        let e = expand(job, "tune.json").unwrap_err();
        assert_eq!(e.path, "tune.retrain.training.steps");
        assert!(
            e.message.contains("trial tune_t00 (training.steps=0)"),
            "{e}"
        );
    }
}
