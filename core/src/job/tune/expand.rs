//! Expanding a `tune` job into its trial jobs, its model-based round jobs and itself.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{PlannedTrial, TrialRun, TuneSpec, round_job_name};
use crate::job::self_label::CheckpointRef;
use crate::job::{Job, JobBody, JobError, PredictionSource, ProvenancePolicy};
use crate::overrides::set_at;

/// Expands a `tune` job into its trial jobs, the round jobs of a model-based search, and
/// itself (with `planned` filled in and `after` every trial); any other job comes back
/// alone. `file` names the source in errors.
pub fn expand(job: Job, file: &str) -> Result<Vec<Job>, JobError> {
    let JobBody::Tune(spec) = &job.body else {
        return Ok(vec![job]);
    };
    let mut spec = (**spec).clone();
    let error = |path: String, message: String| JobError {
        file: file.to_string(),
        path,
        message,
    };
    let (first, rounds) = spec.first_points().map_err(|m| error("tune".into(), m))?;
    let template = match (&spec.retrain, &spec.template) {
        (Some(retrain), _) => serde_json::json!({
            "kind": "retrain",
            "retrain": serde_json::to_value(retrain).expect("retrain settings serialise"),
        }),
        (None, Some(template)) => template.clone(),
        (None, None) => unreachable!("checked when parsed"),
    };
    let builder = TrialBuilder {
        spec: &spec,
        job: &job,
        template,
        file,
    };
    let mut jobs = Vec::new();
    let mut planned = Vec::new();
    // The last job of every trial run so far (its eval, if any), in order.
    let mut finals: Vec<String> = Vec::new();
    for (i, params) in first.into_iter().enumerate() {
        let runs = builder.trial(i, &params, None, &mut finals, &mut jobs)?;
        planned.push(PlannedTrial {
            trial: trial_name(&job.name, i),
            params,
            round: 0,
            runs,
        });
    }
    let mut round_waits: Vec<Vec<String>> = Vec::new();
    for (k, size) in rounds.iter().enumerate() {
        let round = k + 1;
        round_waits.push(finals.clone());
        let source = round_job_name(&job.name, round);
        for _ in 0..*size {
            let i = planned.len();
            let runs = builder.trial(i, &BTreeMap::new(), Some(&source), &mut finals, &mut jobs)?;
            planned.push(PlannedTrial {
                trial: trial_name(&job.name, i),
                params: BTreeMap::new(),
                round,
                runs,
            });
        }
    }
    spec.planned = planned;
    // A round job waits for every trial before it and proposes its round's points.
    for (k, waits) in round_waits.into_iter().enumerate() {
        let mut after = job.after.clone();
        after.extend(waits);
        jobs.push(Job {
            name: round_job_name(&job.name, k + 1),
            after,
            params_from: None,
            body: JobBody::Tune(Box::new(TuneSpec {
                round: Some(k + 1),
                ..spec.clone()
            })),
            ..job.clone()
        });
    }
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

fn trial_name(tune: &str, index: usize) -> String {
    format!("{tune}_t{index:02}")
}

/// Builds the jobs of one trial from the sweep's template.
struct TrialBuilder<'a> {
    spec: &'a TuneSpec,
    job: &'a Job,
    template: Value,
    file: &'a str,
}

impl TrialBuilder<'_> {
    /// Pushes trial `index`'s jobs (a run per replicate, each with its eval) onto
    /// `jobs`, and its runs' last jobs onto `finals`. A trial of a model-based round has
    /// no `params` yet: it takes them from `params_from`, its round job.
    fn trial(
        &self,
        index: usize,
        params: &BTreeMap<String, Value>,
        params_from: Option<&str>,
        finals: &mut Vec<String>,
        jobs: &mut Vec<Job>,
    ) -> Result<Vec<TrialRun>, JobError> {
        let (spec, job, file) = (self.spec, self.job, self.file);
        let trial = trial_name(&job.name, index);
        let mut runs = Vec::new();
        for r in 0..spec.replicates {
            let name = if spec.replicates == 1 {
                trial.clone()
            } else {
                format!("{trial}_s{r}")
            };
            let mut document = self.template.clone();
            for (path, value) in params {
                set_at(&mut document, &spec.param_path(path), value.clone()).map_err(|m| {
                    JobError {
                        file: file.to_string(),
                        path: format!("tune.{path}"),
                        message: m,
                    }
                })?;
            }
            let seed = self.set_seed(&mut document, r);
            let mut after = job.after.clone();
            match params_from {
                Some(source) => after.push(source.to_string()),
                // At most `parallel` trials at once: each waits for the one `parallel`
                // places before it. (A model-based round has `parallel` trials.)
                None if finals.len() >= spec.parallel => {
                    after.push(finals[finals.len() - spec.parallel].clone());
                }
                None => {}
            }
            let map = document.as_object_mut().expect("checked: an object");
            map.insert("name".into(), Value::from(name.clone()));
            map.insert("group_id".into(), Value::from(job.group_id.clone()));
            map.insert("after".into(), Value::from(after));
            if let Some(source) = params_from {
                map.insert("params_from".into(), Value::from(source));
            }
            let parsed =
                Job::parse(document, file, None, ProvenancePolicy::Reject).map_err(|e| {
                    JobError {
                        message: format!("trial {name} ({}): {}", describe(params), e.message),
                        path: match spec.retrain {
                            Some(_) => format!("tune.{}", e.path),
                            None => format!("tune.template.{}", e.path),
                        },
                        ..e
                    }
                })?;
            let mut last = name.clone();
            let mut eval_name = None;
            jobs.push(Job {
                mini: job.mini,
                ..parsed
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
                    params_from: None,
                    body: JobBody::Eval(eval),
                    provenance: None,
                });
                last = en.clone();
                eval_name = Some(en);
            }
            finals.push(last);
            runs.push(TrialRun {
                job: name,
                eval: eval_name,
                seed,
            });
        }
        Ok(runs)
    }

    /// Sets replicate `r`'s seed (the template's seed plus `r`) where the sweep keeps
    /// seeds, when the template has one there or the sweep has replicates.
    fn set_seed(&self, document: &mut Value, r: usize) -> Option<u64> {
        let path = self.spec.seed_path()?;
        let current = path.iter().try_fold(&*document, |node, key| node.get(key));
        if current.is_none() && self.spec.replicates == 1 {
            return None;
        }
        let seed = current.and_then(Value::as_u64).unwrap_or(0) + r as u64;
        set_at(document, &path, Value::from(seed)).ok()?;
        Some(seed)
    }
}

fn describe(params: &BTreeMap<String, Value>) -> String {
    if params.is_empty() {
        return "parameters proposed by its round".into();
    }
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
