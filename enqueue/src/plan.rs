//! Resolving `after` entries and ordering jobs so that dependencies come first.

use std::collections::{BTreeSet, HashMap, HashSet};

use labelfleet_core::board::{BoardJob, BoardState, Dependency, JobBoard};
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
/// board or in the manifest; and what the board and manifest hold of the folder's jobs'
/// groups (their versions), and the jobs held on the board (for cycle checks).
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// Jobs that exist somewhere.
    pub jobs: HashSet<JobKey>,
    /// Groups that exist somewhere.
    pub groups: HashSet<String>,
    /// Jobs registered on the board (of the groups the folder names): their state and
    /// version.
    pub registered: HashMap<JobKey, (BoardState, Option<String>)>,
    /// Jobs with a manifest entry (of the groups the folder names): the version it
    /// recorded, and how many deliberate reruns came before it.
    pub completed: HashMap<JobKey, (Option<String>, u32)>,
    /// Every job held on the board, waiting for its dependencies.
    pub held: Vec<BoardJob>,
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
            for job in board.group_jobs(&group).await? {
                let key = JobKey {
                    group_id: group.clone(),
                    name: job.name,
                };
                known
                    .registered
                    .insert(key.clone(), (job.state, job.version));
                known.jobs.insert(key);
            }
            for entry in list_all(manifest, &group).await? {
                let key = JobKey {
                    group_id: group.clone(),
                    name: entry.run_id,
                };
                let provenance = entry.provenance.as_ref();
                known.completed.insert(
                    key.clone(),
                    (
                        provenance.and_then(|p| p.config_hash.clone()),
                        provenance.map_or(0, |p| p.rerun),
                    ),
                );
                known.jobs.insert(key);
            }
        }
        known.held = board.held().await?;
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
                None => Some(match entry.split_once('/') {
                    Some((group, name)) => format!(
                        "`{entry}` names no job `{name}` of group `{group}`, in this folder, on the job board or in the manifest"
                    ),
                    None => format!(
                        "`{entry}` names no job of group `{}` and no known group, in this folder, on the job board or in the manifest",
                        job.group_id
                    ),
                }),
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
    order(planned, &known.held)
}

/// Orders the folder's jobs so that dependencies come first (see
/// [`labelfleet_schedule::order`]), over a graph that also holds the
/// jobs already held on the board: a folder job that waits, through them, on itself
/// would never run, whichever enqueue made the loop. A held job that the folder
/// registers again is the folder's.
fn order(planned: Vec<PlannedJob>, held: &[BoardJob]) -> Result<Vec<PlannedJob>, FolderErrors> {
    let mut nodes: Vec<(JobKey, &[Dependency])> = planned
        .iter()
        .map(|p| (p.loaded.job.key(), p.after.as_slice()))
        .collect();
    let ours: HashSet<JobKey> = nodes.iter().map(|(k, _)| k.clone()).collect();
    nodes.extend(
        held.iter()
            .filter(|h| !ours.contains(&h.key))
            .map(|h| (h.key.clone(), h.after.as_slice())),
    );
    let sequence = match labelfleet_schedule::order::order(&nodes) {
        Ok(sequence) => sequence,
        Err(cycle) => {
            let names: Vec<String> = cycle.path.iter().map(|&i| nodes[i].0.to_string()).collect();
            let from_board: Vec<String> = cycle
                .path
                .iter()
                .filter(|&&i| i >= planned.len())
                .map(|&i| nodes[i].0.to_string())
                .collect();
            let loop_text = format!("{} → {}", names.join(" → "), names[0]);
            let (first, message) = match cycle.path.iter().find(|&&i| i < planned.len()) {
                Some(&first) if from_board.is_empty() => {
                    (first, format!("the dependencies form a cycle: {loop_text}"))
                }
                Some(&first) => (
                    first,
                    format!(
                        "the dependencies form a cycle: {loop_text} ({} already held on the job board from an earlier enqueue)",
                        from_board.join(", ")
                    ),
                ),
                // A loop among held jobs alone predates this enqueue: name the folder's
                // job that waits on it.
                None => (
                    *cycle
                        .stuck
                        .iter()
                        .find(|&&i| i < planned.len())
                        .expect("a folder job waits on the loop"),
                    format!(
                        "waits, through held jobs, on a dependency cycle already on the job board: {loop_text}"
                    ),
                ),
            };
            return Err(FolderErrors {
                errors: vec![JobError {
                    file: planned[first].loaded.source.display().to_string(),
                    path: "after".into(),
                    message,
                }],
            });
        }
    };
    let mut slots: Vec<Option<PlannedJob>> = planned.into_iter().map(Some).collect();
    Ok(sequence
        .into_iter()
        .filter_map(|i| slots.get_mut(i).and_then(Option::take))
        .collect())
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
            errors[0].message.contains("cycle: x/a → y/b → x/a"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn a_cycle_through_jobs_held_by_an_earlier_enqueue_is_found_and_named() {
        // Enqueued before: g/a (queued), then h/x after group g (held).
        let mut known = Known::default();
        known.jobs.insert(JobKey {
            group_id: "g".into(),
            name: "a".into(),
        });
        known.groups.extend(["g".to_string(), "h".to_string()]);
        let held_x = loaded("h", "x", &["g"]);
        known.jobs.insert(held_x.job.key());
        known.held.push(BoardJob {
            key: held_x.job.key(),
            after: vec![Dependency::Group("g".into())],
            message: crate::submit::message_for(&held_x.job),
            state: BoardState::Held,
            version: None,
        });
        // Now g/b after h/x: g/b waits on h/x, which waits on group g, which holds g/b.
        let jobs = vec![loaded("g", "b", &["h/x"])];
        let errors = plan(jobs, &known).unwrap_err().errors;
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "after");
        assert!(
            errors[0].message.contains("cycle: g/b → h/x → g/b")
                && errors[0]
                    .message
                    .contains("h/x already held on the job board"),
            "{}",
            errors[0]
        );
        // Without the held job, the same folder is fine.
        known.held.clear();
        let jobs = vec![loaded("g", "b", &["h/x"])];
        assert_eq!(names(&plan(jobs, &known).unwrap()), ["g/b"]);
    }

    #[test]
    fn an_unknown_job_of_another_group_names_that_group() {
        let jobs = vec![loaded("g3", "j", &["g1/a"])];
        let known = known_from(&jobs);
        let errors = plan(jobs, &known).unwrap_err().errors;
        assert!(
            errors[0].message.contains("no job `a` of group `g1`"),
            "{}",
            errors[0]
        );
    }
}
