//! Settings of a `tune` job: a hyper-parameter sweep whose trials are jobs of any kind.
//!
//! ```json
//! "tune": {
//!   "template": {"kind": "command", "command": {"program": "train", "params": {"lr": 0.01}}},
//!   "ranges": {"command.params.lr": {"log_uniform": [1e-4, 1e-1]}},
//!   "search": "tpe",
//!   "trials": 40,
//!   "parallel": 4,
//!   "replicates": 2,
//!   "metric": "valid_loss",
//!   "goal": "minimize"
//! }
//! ```
//!
//! A sweep's trials are built from a `template` (a job's `kind` and its settings, any
//! kind), its parameters being dotted paths into that job document
//! (`command.params.lr`, `retrain.training.learning_rate`). The older form `"retrain":
//! {…}` is the same as a retrain template, with paths relative to the retrain settings
//! (`training.learning_rate`).
//!
//! Three searches:
//! - **grid**: every combination of `grid`'s values (the first `trials` of them);
//! - **random**: `trials` points drawn from `ranges` with `seed`;
//! - **tpe**: model-based search in rounds ([`tpe`], as Optuna's default sampler). The
//!   first `tpe.startup_trials` points are random; after that, each round of
//!   `parallel` trials is proposed from every trial finished before it, by a round job
//!   (`{tune}_round{k}`) that runs once the round before has completed.
//!
//! `enqueue` expands a tune file with [`expand`]: every trial becomes a job (`{tune}_t00`,
//! `{tune}_t01`, …, one per replicate seed: `_s0`, `_s1`), followed by an `eval` job
//! (`…_eval`) when `eval` is given, and at most `parallel` trials run at once. Every job
//! exists from the start, so `status` shows the whole sweep: a model-based round's
//! trials wait for their round job and take their parameters from its manifest entry
//! (`params_from`). The tune job itself runs after every trial and picks the best by
//! `metric`, the mean over replicates.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::retrain::RetrainSpec;
use crate::job::{EvalSpec, JobKind, PredictionSource};

mod expand;
pub mod tpe;

pub use self::expand::expand;

/// The most trial jobs one sweep may create.
pub const MAX_TRIALS: usize = 1000;

/// Settings of a `tune` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneSpec {
    /// The retrain settings every trial starts from (parameters are paths into them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrain: Option<RetrainSpec>,
    /// The job every trial starts from, of any kind: `{"kind": K, K: {…}}` (parameters
    /// are paths into this document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Value>,
    /// An eval every trial's model gets (retrain trials only); its `predictions` must
    /// be a `model`, which is replaced by the trial's checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalSpec>,
    /// How points are chosen; by default `grid` with a grid and `random` with ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<Search>,
    /// Every combination of these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grid: BTreeMap<String, Vec<Value>>,
    /// Random and model-based search: where each parameter lies.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ranges: BTreeMap<String, Range>,
    /// How many trials (random and model-based search), or the most grid points to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trials: Option<usize>,
    /// Trials that may run at the same time; a model-based round proposes this many.
    #[serde(default = "one")]
    pub parallel: usize,
    /// Runs of every trial with seeds `s`, `s+1`, … at `seed_path`; the metric is their
    /// mean.
    #[serde(default = "one")]
    pub replicates: usize,
    /// Where a replicate's seed goes in the trial job (a dotted path). By default
    /// `training.seed` of retrain trials and `command.params.seed` of command trials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_path: Option<String>,
    /// What to optimise: a metric of the trial's manifest entry (`valid_loss`, or any
    /// key of a command's `metrics.json`) or, prefixed `eval.`, of its eval entry
    /// (`eval.joint_goal_accuracy`).
    pub metric: String,
    /// Whether lower or higher is better.
    #[serde(default)]
    pub goal: Goal,
    /// Seed of random and model-based search.
    #[serde(default)]
    pub seed: u64,
    /// Settings of model-based search.
    #[serde(default, skip_serializing_if = "TpeSettings::is_default")]
    pub tpe: TpeSettings,
    /// Earlier tune jobs (`group/name`) whose trials compete for best as well (and,
    /// in model-based search, inform its proposals).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub build_on: Vec<String>,
    /// The trials, written by `enqueue` when it expands the sweep; not for job files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<PlannedTrial>,
    /// Set by `enqueue` on a model-based sweep's round jobs: the round this job proposes
    /// the trials of; not for job files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<usize>,
}

fn one() -> usize {
    1
}

/// How a sweep chooses its points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Search {
    /// Every combination of `grid`.
    Grid,
    /// Independent draws from `ranges`.
    Random,
    /// Tree-structured Parzen estimators, in rounds.
    Tpe,
}

/// Settings of model-based search (Optuna's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TpeSettings {
    /// Random trials before the model takes over.
    pub startup_trials: usize,
    /// Candidates drawn from the good trials' density for each proposal.
    pub candidates: usize,
}

impl Default for TpeSettings {
    fn default() -> Self {
        TpeSettings {
            startup_trials: 10,
            candidates: 24,
        }
    }
}

impl TpeSettings {
    fn is_default(&self) -> bool {
        *self == TpeSettings::default()
    }
}

/// A parameter's range in random and model-based search.
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
    /// Its parameter values; empty for a model-based round's trials, whose values its
    /// round job proposes.
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    /// The model-based round it belongs to (0: chosen when the sweep was enqueued).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub round: usize,
    /// Its replicates' jobs, and eval jobs when the sweep has `eval`.
    pub runs: Vec<TrialRun>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One replicate of a trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialRun {
    /// The trial's job.
    #[serde(alias = "retrain")]
    pub job: String,
    /// The eval job of its model, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<String>,
    /// The replicate's seed, when the trial has a seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// A sweep's point: a value for each parameter.
pub type Point = BTreeMap<String, Value>;

/// The name of a model-based sweep's round job.
pub fn round_job_name(tune: &str, round: usize) -> String {
    format!("{tune}_round{round}")
}

impl TuneSpec {
    /// The search this sweep runs.
    pub fn search(&self) -> Search {
        self.search.unwrap_or(if self.grid.is_empty() {
            Search::Random
        } else {
            Search::Grid
        })
    }

    /// The kind of the trial jobs.
    pub fn trial_kind(&self) -> Option<JobKind> {
        if self.retrain.is_some() {
            return Some(JobKind::Retrain);
        }
        JobKind::from_name(self.template.as_ref()?.get("kind")?.as_str()?)
    }

    /// Where a replicate's seed goes, as a path into the trial job document.
    pub fn seed_path(&self) -> Option<Vec<String>> {
        let dotted = match (&self.seed_path, self.trial_kind()?) {
            (Some(path), _) if self.retrain.is_some() => format!("retrain.{path}"),
            (Some(path), _) => path.clone(),
            (None, JobKind::Retrain) => "retrain.training.seed".into(),
            (None, JobKind::Command) => "command.params.seed".into(),
            (None, _) => return None,
        };
        Some(dotted.split('.').map(str::to_string).collect())
    }

    /// A parameter's path into the trial job document.
    pub fn param_path(&self, name: &str) -> Vec<String> {
        let prefix = self.retrain.is_some().then_some("retrain");
        prefix
            .into_iter()
            .chain(name.split('.'))
            .map(str::to_string)
            .collect()
    }

    /// Checks what serde cannot. The error names the field.
    pub fn check(&self) -> Result<(), (String, String)> {
        let fail = |f: &str, m: String| Err((format!("tune.{f}"), m));
        match (&self.retrain, &self.template) {
            (Some(retrain), None) => retrain.check().map_err(|(p, m)| (format!("tune.{p}"), m))?,
            (None, Some(template)) => check_template(template)?,
            _ => {
                return fail(
                    "template",
                    "give exactly one of `template` (a job of any kind: {\"kind\": …, …}) and \
                     `retrain`"
                        .into(),
                );
            }
        }
        if self.grid.is_empty() && self.ranges.is_empty() {
            return fail(
                "grid",
                "give `grid` (grid search) or `ranges` (random or model-based search)".into(),
            );
        }
        let search = self.search();
        match search {
            Search::Grid if self.grid.is_empty() || !self.ranges.is_empty() => {
                return fail("grid", "grid search takes `grid` (and no `ranges`)".into());
            }
            Search::Random | Search::Tpe if self.ranges.is_empty() || !self.grid.is_empty() => {
                return fail(
                    "ranges",
                    "random and model-based search take `ranges` (and no `grid`)".into(),
                );
            }
            _ => {}
        }
        for (name, values) in &self.grid {
            if values.is_empty() {
                return fail(
                    &format!("grid.{name}"),
                    "expected at least one value".into(),
                );
            }
        }
        if search != Search::Grid && self.trials.is_none() {
            return fail(
                "trials",
                "random and model-based search need a number of `trials`".into(),
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
        if self.tpe.candidates == 0 {
            return fail("tpe.candidates", "must be at least 1".into());
        }
        if self.replicates > 1 && self.seed_path().is_none() {
            return fail(
                "seed_path",
                "replicates of this kind need `seed_path`: where each replicate's seed goes \
                 (a dotted path into the trial job)"
                    .into(),
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
        if let Some(eval) = &self.eval {
            if self.trial_kind() != Some(JobKind::Retrain) {
                return fail(
                    "eval",
                    "`eval` scores each trial's model: the trials must be retrain jobs".into(),
                );
            }
            if !matches!(eval.predictions, PredictionSource::Model(_)) {
                return fail(
                    "eval.predictions",
                    "a sweep's eval labels with each trial's model: use {\"model\": {…}}".into(),
                );
            }
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

    /// How many trials the sweep runs, checked against [`MAX_TRIALS`] (with its
    /// replicates) before any point is built: 8 parameters of 10 values make 10^8 grid
    /// points, which `trials` may cap.
    fn trial_count(&self) -> Result<usize, String> {
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

    /// The points chosen when the sweep is enqueued, and the sizes of the model-based
    /// rounds that follow them.
    fn first_points(&self) -> Result<(Vec<Point>, Vec<usize>), String> {
        let count = self.trial_count()?;
        match self.search() {
            Search::Grid => Ok(((0..count).map(|i| self.grid_point(i)).collect(), vec![])),
            Search::Random => Ok((tpe::random_points(&self.ranges, self.seed, count), vec![])),
            Search::Tpe => {
                let startup = self.tpe.startup_trials.clamp(1, count);
                let mut rounds = Vec::new();
                let mut left = count - startup;
                while left > 0 {
                    let size = left.min(self.parallel);
                    rounds.push(size);
                    left -= size;
                }
                Ok((tpe::random_points(&self.ranges, self.seed, startup), rounds))
            }
        }
    }
}

/// A template is a job document with a kind and its settings only: the trials' names,
/// group and dependencies come from the sweep.
fn check_template(template: &Value) -> Result<(), (String, String)> {
    let fail = |m: String| Err(("tune.template".to_string(), m));
    let Value::Object(map) = template else {
        return fail("expected a job: {\"kind\": …, \"<kind>\": {…}}".into());
    };
    let Some(kind) = map.get("kind").and_then(Value::as_str) else {
        return fail("the template names its `kind`".into());
    };
    match JobKind::from_name(kind) {
        None | Some(JobKind::Tune) => {
            return fail(format!(
                "`{kind}` cannot be a trial; use one of retrain, command, self_label, eval, noop"
            ));
        }
        Some(_) => {}
    }
    if let Some(key) = map.keys().find(|k| *k != "kind" && *k != kind) {
        return fail(format!(
            "a template holds `kind` and `{kind}` only; `{key}` comes from the sweep"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
