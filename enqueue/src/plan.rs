//! Resolving `after` entries and ordering jobs so that dependencies come first.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use labelfleet_core::board::{Dependency, JobBoard};
use labelfleet_core::error::BackendResult;
use labelfleet_core::job::{Job, JobError, JobKey};
use labelfleet_manifest::{Manifest, list_all};

use crate::folder::{FolderErrors, LoadedJob};

/// A validated job with its dependencies resolved.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    /// The job, as loaded.
    pub loaded: LoadedJob,
    /// Its resolved dependencies, in `after` order.
    pub after: Vec<Dependency>,
}

/// The jobs and groups a plan may refer to: the folder's own, plus those already on the
/// board or in the manifest.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// Jobs that exist somewhere.
    pub jobs: HashSet<JobKey>,
    /// Groups that exist somewhere.
    pub groups: HashSet<String>,
}

impl Known {
    /// Collects what the folder's jobs may refer to.
    pub async fn gather(
        jobs: &[LoadedJob],
        board: &dyn JobBoard,
        manifest: &dyn Manifest,
    ) -> BackendResult<Known> {
        let mut known = Known::default();
        for loaded in jobs {
            known.jobs.insert(loaded.job.key());
            known.groups.insert(loaded.job.group_id.clone());
        }
        known
            .groups
            .extend(board.groups().await?.into_iter().map(|g| g.group_id));
        known
            .groups
            .extend(manifest.groups().await?.into_iter().map(|g| g.group_id));
        let mut referenced: BTreeSet<String> = BTreeSet::new();
        for loaded in jobs {
            referenced.insert(loaded.job.group_id.clone());
            for entry in &loaded.job.after {
                if let Some((group, _)) = entry.split_once('/') {
                    referenced.insert(group.to_string());
                }
            }
        }
        for group in referenced {
            for (name, _) in board.group_jobs(&group).await? {
                known.jobs.insert(JobKey {
                    group_id: group.clone(),
                    name,
                });
            }
            for entry in list_all(manifest, &group).await? {
                known.jobs.insert(JobKey {
                    group_id: group.clone(),
                    name: entry.run_id,
                });
            }
        }
        Ok(known)
    }
}

/// Resolves one `after` entry of a job in `own_group`: `group/name` is a job; a plain
/// name is a job of the same group if there is one, else a group.
pub fn resolve(entry: &str, own_group: &str, known: &Known) -> Option<Dependency> {
    if let Some((group_id, name)) = entry.split_once('/') {
        let key = JobKey {
            group_id: group_id.into(),
            name: name.into(),
        };
        return known.jobs.contains(&key).then_some(Dependency::Job(key));
    }
    let key = JobKey {
        group_id: own_group.into(),
        name: entry.into(),
    };
    if known.jobs.contains(&key) {
        Some(Dependency::Job(key))
    } else if known.groups.contains(entry) {
        Some(Dependency::Group(entry.to_string()))
    } else {
        None
    }
}

/// Resolves every job's dependencies and orders the jobs so that each comes after the
/// jobs of this folder it depends on. Unknown names and cycles are errors.
pub fn plan(jobs: Vec<LoadedJob>, known: &Known) -> Result<Vec<PlannedJob>, FolderErrors> {
    let mut errors = Vec::new();
    let mut planned = Vec::with_capacity(jobs.len());
    for loaded in jobs {
        let job: &Job = &loaded.job;
        let mut after = Vec::new();
        for (i, entry) in job.after.iter().enumerate() {
            let problem = match resolve(entry, &job.group_id, known) {
                Some(Dependency::Job(key)) if key == job.key() => {
                    Some("a job cannot wait for itself".to_string())
                }
                Some(Dependency::Group(g)) if g == job.group_id => Some(format!(
                    "a job cannot wait for its own group `{g}` (it would wait for itself); name the jobs instead"
                )),
                Some(dep) => {
                    after.push(dep);
                    None
                }
                None => Some(format!(
                    "`{entry}` names no job of group `{}` and no known group, in this folder, on the job board or in the manifest",
                    job.group_id
                )),
            };
            if let Some(message) = problem {
                errors.push(JobError {
                    file: loaded.source.display().to_string(),
                    path: format!("after[{i}]"),
                    message,
                });
            }
        }
        planned.push(PlannedJob { loaded, after });
    }
    if !errors.is_empty() {
        return Err(FolderErrors { errors });
    }
    order(planned)
}

/// Kahn's algorithm over the dependencies among the folder's own jobs, keeping file
/// order among jobs that are ready together.
fn order(planned: Vec<PlannedJob>) -> Result<Vec<PlannedJob>, FolderErrors> {
    let index: HashMap<JobKey, usize> = planned
        .iter()
        .enumerate()
        .map(|(i, p)| (p.loaded.job.key(), i))
        .collect();
    let mut by_group: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, p) in planned.iter().enumerate() {
        by_group
            .entry(p.loaded.job.group_id.as_str())
            .or_default()
            .push(i);
    }
    let mut waits_on: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); planned.len()];
    for (i, p) in planned.iter().enumerate() {
        for dep in &p.after {
            match dep {
                Dependency::Job(key) => waits_on[i].extend(index.get(key)),
                Dependency::Group(g) => {
                    waits_on[i].extend(by_group.get(g.as_str()).into_iter().flatten())
                }
            }
        }
    }
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); planned.len()];
    for (i, deps) in waits_on.iter().enumerate() {
        for &d in deps {
            dependents[d].push(i);
        }
    }
    let mut remaining: Vec<usize> = waits_on.iter().map(BTreeSet::len).collect();
    let mut ready: VecDeque<usize> = (0..planned.len()).filter(|&i| remaining[i] == 0).collect();
    let mut sequence = Vec::with_capacity(planned.len());
    while let Some(i) = ready.pop_front() {
        sequence.push(i);
        for &d in &dependents[i] {
            remaining[d] -= 1;
            if remaining[d] == 0 {
                ready.push_back(d);
            }
        }
    }
    if sequence.len() < planned.len() {
        let stuck: Vec<String> = (0..planned.len())
            .filter(|i| remaining[*i] > 0)
            .map(|i| planned[i].loaded.job.key().to_string())
            .collect();
        let first = (0..planned.len())
            .find(|i| remaining[*i] > 0)
            .expect("some job is stuck");
        return Err(FolderErrors {
            errors: vec![JobError {
                file: planned[first].loaded.source.display().to_string(),
                path: "after".into(),
                message: format!("the dependencies form a cycle among {}", stuck.join(", ")),
            }],
        });
    }
    let mut slots: Vec<Option<PlannedJob>> = planned.into_iter().map(Some).collect();
    Ok(sequence
        .into_iter()
        .map(|i| slots[i].take().expect("each job once"))
        .collect())
}

/// Resolves an `after` entry against the live board and manifest (for jobs that did
/// not come through [`plan`], such as hand-sent messages): `group/name` is a job; a
/// plain name is a group only if a group of that name exists and no job of that name
/// does, and otherwise a job of the same group (which may not have been enqueued yet).
pub async fn resolve_live(
    entry: &str,
    own_group: &str,
    board: &dyn JobBoard,
    manifest: &dyn Manifest,
) -> BackendResult<Dependency> {
    if let Some((group_id, name)) = entry.split_once('/') {
        return Ok(Dependency::Job(JobKey {
            group_id: group_id.into(),
            name: name.into(),
        }));
    }
    let key = JobKey {
        group_id: own_group.into(),
        name: entry.into(),
    };
    let is_job = board
        .group_jobs(own_group)
        .await?
        .iter()
        .any(|(n, _)| n == entry)
        || manifest
            .get(&labelfleet_manifest::ManifestKey::from(&key))
            .await?
            .is_some();
    let is_group = !is_job
        && (board.groups().await?.iter().any(|g| g.group_id == entry)
            || manifest.groups().await?.iter().any(|g| g.group_id == entry));
    Ok(if is_group {
        Dependency::Group(entry.to_string())
    } else {
        Dependency::Job(key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use labelfleet_core::job::ProvenancePolicy;
    use serde_json::json;

    fn loaded(group: &str, name: &str, after: &[&str]) -> LoadedJob {
        let value =
            json!({"kind": "noop", "name": name, "group_id": group, "after": after, "noop": {}});
        LoadedJob {
            source: format!("{name}.json").into(),
            job: Job::parse(value, name, None, ProvenancePolicy::Reject).unwrap(),
        }
    }

    fn known_from(jobs: &[LoadedJob]) -> Known {
        let mut known = Known::default();
        for j in jobs {
            known.jobs.insert(j.job.key());
            known.groups.insert(j.job.group_id.clone());
        }
        known
    }

    fn names(planned: &[PlannedJob]) -> Vec<String> {
        planned
            .iter()
            .map(|p| p.loaded.job.key().to_string())
            .collect()
    }

    #[test]
    fn dependencies_come_first_and_file_order_is_kept_otherwise() {
        let jobs = vec![
            loaded("g", "dep_b", &["job_0"]),
            loaded("report", "summary", &["g"]),
            loaded("g", "dep_a", &["job_0"]),
            loaded("g", "job_0", &[]),
        ];
        let known = known_from(&jobs);
        let planned = plan(jobs, &known).unwrap();
        assert_eq!(
            names(&planned),
            ["g/job_0", "g/dep_b", "g/dep_a", "report/summary"]
        );
        assert_eq!(planned[3].after, [Dependency::Group("g".into())]);
        assert_eq!(
            planned[1].after,
            [Dependency::Job(JobKey {
                group_id: "g".into(),
                name: "job_0".into()
            })]
        );
    }

    #[test]
    fn a_plain_name_is_a_job_of_the_same_group_before_it_is_a_group() {
        let mut known = Known::default();
        known.jobs.insert(JobKey {
            group_id: "g".into(),
            name: "seed".into(),
        });
        known.groups.insert("seed".into());
        assert_eq!(
            resolve("seed", "g", &known),
            Some(Dependency::Job(JobKey {
                group_id: "g".into(),
                name: "seed".into()
            }))
        );
        assert_eq!(
            resolve("seed", "other", &known),
            Some(Dependency::Group("seed".into()))
        );
        assert_eq!(
            resolve("g/seed", "other", &known).map(|d| d.token()),
            Some("job:g/seed".into())
        );
        assert_eq!(resolve("g/nothing", "other", &known), None);
        assert_eq!(resolve("nothing", "g", &known), None);
    }

    #[test]
    fn self_and_own_group_dependencies_are_errors() {
        let jobs = vec![loaded("g", "a", &["a"]), loaded("g", "b", &["g"])];
        let known = known_from(&jobs);
        let errors = plan(jobs, &known).unwrap_err().errors;
        assert_eq!(errors.len(), 2);
        assert!(errors[0].message.contains("cannot wait for itself"));
        assert!(errors[1].message.contains("its own group"));
    }

    #[test]
    fn cycles_through_groups_are_found() {
        let jobs = vec![loaded("x", "a", &["y"]), loaded("y", "b", &["x"])];
        let known = known_from(&jobs);
        let errors = plan(jobs, &known).unwrap_err().errors;
        assert!(
            errors[0].message.contains("cycle among x/a, y/b"),
            "{}",
            errors[0]
        );
    }
}
