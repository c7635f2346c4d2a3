//! What to do with a job that the board or the manifest already knows: send it, skip
//! it, replace a queued version of it, run a completed one again, or refuse.
//!
//! A job's *version* is the hash of its config ([`Job::config_hash`]). Enqueueing a
//! folder again with the same files changes nothing that matters: a completed job is
//! skipped, a queued one is sent again (the manifest keeps one entry however many
//! copies run). An *edited* job is another version of the same `group/name`, and
//! silently running either one would be wrong, so it is refused unless the user says
//! which they want: `--replace` supersedes a queued or held version (workers then run
//! only the newest), `--rerun` runs a completed job again as a new run, keeping the
//! completed entry in the manifest's history.

use labelfleet_core::board::BoardState;
use labelfleet_core::job::{Job, JobError, JobKey};

use crate::folder::FolderErrors;
use crate::plan::{Known, PlannedJob};

/// What the user allowed on the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VersionPolicy {
    /// `--replace`: a queued or held job of another version is superseded.
    pub replace: bool,
    /// `--rerun`: a completed job runs again, as a new run.
    pub rerun: bool,
}

/// What `submit` does with one planned job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Register and send it (held until its dependencies complete).
    Send,
    /// The manifest has it, in this version: nothing to do.
    AlreadyComplete,
    /// Another version is queued or held: this one supersedes it.
    Replace {
        /// The version it supersedes.
        previous: Option<String>,
    },
    /// It completed: move its entry into the manifest's history and run it again.
    Rerun {
        /// Which rerun this will be (1 for the first).
        rerun: u32,
    },
}

/// The short form of a version in messages.
pub fn short(version: Option<&str>) -> String {
    version.map_or_else(
        || "unrecorded".to_string(),
        |v| v[..v.len().min(12)].to_string(),
    )
}

/// Decides for every planned job, collecting every refusal before anything is sent.
/// A rerun also stamps the job's provenance with its rerun number.
pub fn reconcile(
    planned: &mut [PlannedJob],
    known: &Known,
    policy: VersionPolicy,
) -> Result<Vec<Decision>, FolderErrors> {
    let mut decisions = Vec::with_capacity(planned.len());
    let mut errors = Vec::new();
    for p in planned.iter_mut() {
        let job = &mut p.loaded.job;
        match decide(job, known, policy) {
            Ok(decision) => {
                if let (Decision::Rerun { rerun }, Some(provenance)) =
                    (&decision, job.provenance.as_mut())
                {
                    provenance.rerun = *rerun;
                }
                decisions.push(decision);
            }
            Err(message) => errors.push(JobError {
                file: p.loaded.source.display().to_string(),
                path: "(top level)".into(),
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(decisions)
    } else {
        Err(FolderErrors { errors })
    }
}

fn decide(job: &Job, known: &Known, policy: VersionPolicy) -> Result<Decision, String> {
    let key: JobKey = job.key();
    let version = job.version();
    if let Some((done, reruns)) = known.completed.get(&key) {
        if policy.rerun {
            return Ok(Decision::Rerun { rerun: reruns + 1 });
        }
        if done.is_none() || done.as_deref() == version {
            return Ok(Decision::AlreadyComplete);
        }
        return Err(format!(
            "`{key}` already completed as version {}, and this file is version {}: give --rerun \
             to run it again as a new run (the completed entry is kept in the manifest's history), \
             or give the job a new name",
            short(done.as_deref()),
            short(version)
        ));
    }
    if let Some((state, registered)) = known.registered.get(&key)
        && registered.is_some()
        && registered.as_deref() != version
    {
        if policy.replace {
            return Ok(Decision::Replace {
                previous: registered.clone(),
            });
        }
        let state = match state {
            BoardState::Held => "held until its dependencies complete",
            BoardState::Queued => "queued (or running)",
        };
        return Err(format!(
            "`{key}` is already {state} as version {}, and this file is version {}: give \
             --replace to supersede it (workers then run only the newest), or give the job a \
             new name",
            short(registered.as_deref()),
            short(version)
        ));
    }
    Ok(Decision::Send)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::LoadedJob;
    use labelfleet_core::job::ProvenancePolicy;
    use labelfleet_core::provenance::Provenance;
    use serde_json::json;

    fn planned(sleep_ms: u64) -> PlannedJob {
        let mut job = Job::parse(
            json!({"kind": "noop", "name": "j", "group_id": "g", "noop": {"sleep_ms": sleep_ms}}),
            "j.json",
            None,
            ProvenancePolicy::Reject,
        )
        .unwrap();
        job.provenance = Some(Provenance {
            source_file: "j.json".into(),
            git_commit: None,
            git_dirty: false,
            reproducible: false,
            overrides: vec![],
            config: job.config_value(),
            labelfleet_version: "test".into(),
            enqueued_at: "now".into(),
            enqueued_by: None,
            config_hash: Some(job.config_hash()),
            rerun: 0,
        });
        PlannedJob {
            loaded: LoadedJob {
                source: "j.json".into(),
                job,
            },
            after: vec![],
        }
    }

    fn key() -> JobKey {
        JobKey {
            group_id: "g".into(),
            name: "j".into(),
        }
    }

    fn version(sleep_ms: u64) -> Option<String> {
        planned(sleep_ms).loaded.job.version().map(str::to_string)
    }

    fn run(known: &Known, policy: VersionPolicy) -> Result<Decision, String> {
        let mut jobs = vec![planned(999)];
        reconcile(&mut jobs, known, policy)
            .map(|mut d| d.remove(0))
            .map_err(|e| e.errors[0].message.clone())
    }

    #[test]
    fn a_new_job_is_sent_and_the_same_version_again_changes_nothing() {
        let mut known = Known::default();
        assert_eq!(run(&known, VersionPolicy::default()), Ok(Decision::Send));
        known
            .registered
            .insert(key(), (BoardState::Queued, version(999)));
        assert_eq!(run(&known, VersionPolicy::default()), Ok(Decision::Send));
        known.completed.insert(key(), (version(999), 0));
        assert_eq!(
            run(&known, VersionPolicy::default()),
            Ok(Decision::AlreadyComplete)
        );
    }

    #[test]
    fn an_edited_queued_job_is_refused_with_both_versions_unless_replaced() {
        let mut known = Known::default();
        known
            .registered
            .insert(key(), (BoardState::Queued, version(1)));
        let refusal = run(&known, VersionPolicy::default()).unwrap_err();
        assert!(refusal.contains("`g/j` is already queued"), "{refusal}");
        assert!(refusal.contains(&short(version(1).as_deref())), "{refusal}");
        assert!(
            refusal.contains(&short(version(999).as_deref())),
            "{refusal}"
        );
        assert!(refusal.contains("--replace"), "{refusal}");
        let replace = VersionPolicy {
            replace: true,
            rerun: false,
        };
        assert_eq!(
            run(&known, replace),
            Ok(Decision::Replace {
                previous: version(1)
            })
        );
    }

    #[test]
    fn a_completed_job_runs_again_only_with_rerun_as_the_next_rerun() {
        let mut known = Known::default();
        known.completed.insert(key(), (version(1), 2));
        let refusal = run(&known, VersionPolicy::default()).unwrap_err();
        assert!(refusal.contains("already completed"), "{refusal}");
        assert!(refusal.contains("--rerun"), "{refusal}");
        // --replace is for queued jobs, not completed ones.
        let replace = VersionPolicy {
            replace: true,
            rerun: false,
        };
        assert!(run(&known, replace).is_err());
        let rerun = VersionPolicy {
            replace: false,
            rerun: true,
        };
        let mut jobs = vec![planned(999)];
        assert_eq!(
            reconcile(&mut jobs, &known, rerun).unwrap(),
            [Decision::Rerun { rerun: 3 }]
        );
        assert_eq!(jobs[0].loaded.job.rerun(), 3);
        // The same version completed: --rerun still runs it again.
        known.completed.insert(key(), (version(999), 0));
        assert_eq!(run(&known, rerun), Ok(Decision::Rerun { rerun: 1 }));
    }
}
