//! Parameters handed to a job when it starts (`params_from`): a sweep's best point, or
//! the point a model-based round proposed for a trial.

use serde_json::{Map, Value};

use super::{Job, JobError, ProvenancePolicy};
use crate::overrides::set_at;

impl Job {
    /// The job with `params` set: each is a dotted path into the job document
    /// (`command.params.lr`) or, when it does not start with the job's kind, into the
    /// kind's settings (`training.learning_rate` of a retrain job, as sweeps of the
    /// older `"retrain"` form name them). The result is checked like a job file; an
    /// error names `source` and the parameter.
    pub fn with_params(&self, params: &Map<String, Value>, source: &str) -> Result<Job, JobError> {
        let mut document = self.to_value();
        let kind = self.kind().as_str();
        let file = format!("{} (parameters from {source})", self.key());
        for (name, value) in params {
            let mut path: Vec<String> = name.split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return Err(JobError::new(
                    &file,
                    name.clone(),
                    "the path has an empty part",
                ));
            }
            if path[0] != kind {
                path.insert(0, kind.to_string());
            }
            set_at(&mut document, &path, value.clone())
                .map_err(|m| JobError::new(&file, name.clone(), m))?;
        }
        Job::parse(document, &file, None, ProvenancePolicy::Accept)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn command() -> Job {
        Job::parse(
            json!({"kind": "command", "name": "best", "group_id": "g", "params_from": "sweep",
                   "command": {"program": "train", "params": {"lr": 0.1, "depth": 3}}}),
            "best.json",
            None,
            ProvenancePolicy::Reject,
        )
        .unwrap()
    }

    #[test]
    fn params_from_is_a_dependency_and_survives_a_round_trip() {
        let job = command();
        assert_eq!(job.after, ["sweep"]);
        let again = Job::parse(job.to_value(), "again", None, ProvenancePolicy::Accept).unwrap();
        assert_eq!(again, job);
    }

    #[test]
    fn params_are_set_by_path_from_the_document_or_the_settings() {
        let job = command();
        let params: Map<String, Value> =
            serde_json::from_value(json!({"command.params.lr": 0.01, "params.depth": 5})).unwrap();
        let tuned = job.with_params(&params, "g/sweep").unwrap();
        let super::super::JobBody::Command(spec) = &tuned.body else {
            panic!()
        };
        assert_eq!(spec.params["lr"], json!(0.01));
        assert_eq!(spec.params["depth"], json!(5));
        assert_eq!((tuned.name.as_str(), &tuned.after), ("best", &job.after));
    }

    #[test]
    fn a_parameter_the_schema_rejects_is_named_with_its_source() {
        let params: Map<String, Value> =
            serde_json::from_value(json!({"command.program": "../bin/sh"})).unwrap();
        let e = command().with_params(&params, "g/sweep").unwrap_err();
        assert_eq!(e.path, "command.program");
        assert!(e.file.contains("g/sweep"), "{e}");
    }
}
