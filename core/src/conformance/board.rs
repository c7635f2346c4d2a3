//! The [`JobBoard`] conformance suite.

use crate::board::{
    BoardJob, BoardState, Dependency, GroupJob, JobBoard, WorkerReport, WorkerState,
};
use crate::job::JobKey;
use crate::queue::OutgoingMessage;

fn job(group: &str, name: &str, after: Vec<Dependency>, state: BoardState) -> BoardJob {
    BoardJob {
        key: JobKey {
            group_id: group.into(),
            name: name.into(),
        },
        after,
        message: OutgoingMessage {
            body: format!("body of {name}"),
            dedup_id: format!("{group}-{name}"),
            group: format!("{group}.{name}"),
        },
        state,
        version: Some(format!("v1-{name}")),
    }
}

fn listed(name: &str, state: BoardState, version: Option<&str>) -> GroupJob {
    GroupJob {
        name: name.into(),
        state,
        version: version.map(str::to_string),
    }
}

/// Held jobs are found by what they wait on, and leave the held set once queued.
pub async fn held_jobs_wait_on_dependencies(b: &dyn JobBoard) {
    let g = super::unique("grp");
    let seed = Dependency::Job(JobKey {
        group_id: g.clone(),
        name: "job_0".into(),
    });
    let other = Dependency::Group(super::unique("other"));
    b.register(&[
        job(&g, "job_0", vec![], BoardState::Queued),
        job(&g, "dep_1", vec![seed.clone()], BoardState::Held),
        job(
            &g,
            "dep_2",
            vec![seed.clone(), other.clone()],
            BoardState::Held,
        ),
    ])
    .await
    .unwrap();
    let mut waiting: Vec<String> = b
        .held_waiting_on(&seed)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.key.name)
        .collect();
    waiting.sort();
    assert_eq!(waiting, ["dep_1", "dep_2"]);
    let on_other = b.held_waiting_on(&other).await.unwrap();
    assert_eq!(on_other.len(), 1);
    assert_eq!(
        on_other[0],
        job(&g, "dep_2", vec![seed.clone(), other], BoardState::Held)
    );
    b.mark_queued(&on_other[0].key).await.unwrap();
    let still: Vec<String> = b
        .held_waiting_on(&seed)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.key.name)
        .collect();
    assert_eq!(still, ["dep_1"]);
    assert_eq!(
        b.group_jobs(&g).await.unwrap(),
        [
            listed("dep_1", BoardState::Held, Some("v1-dep_1")),
            listed("dep_2", BoardState::Queued, Some("v1-dep_2")),
            listed("job_0", BoardState::Queued, Some("v1-job_0")),
        ]
    );
    let counts = b.groups().await.unwrap();
    let mine = counts.iter().find(|c| c.group_id == g).unwrap();
    assert_eq!((mine.held, mine.queued), (1, 2));
    assert!(
        b.held()
            .await
            .unwrap()
            .iter()
            .any(|j| j.key.name == "dep_1")
    );
}

/// Registering a job again replaces it.
pub async fn register_replaces(b: &dyn JobBoard) {
    let g = super::unique("again");
    b.register(&[job(
        &g,
        "j",
        vec![Dependency::Group("x".into())],
        BoardState::Held,
    )])
    .await
    .unwrap();
    let mut newer = job(&g, "j", vec![], BoardState::Queued);
    newer.version = Some("v2".into());
    b.register(std::slice::from_ref(&newer)).await.unwrap();
    assert_eq!(
        b.group_jobs(&g).await.unwrap(),
        [listed("j", BoardState::Queued, Some("v2"))]
    );
    // Looked up by key, in the order asked, with `None` for keys never registered.
    let missing = JobKey {
        group_id: g.clone(),
        name: "missing".into(),
    };
    assert_eq!(
        b.jobs(&[missing.clone(), newer.key.clone(), newer.key.clone()])
            .await
            .unwrap(),
        [None, Some(newer.clone()), Some(newer.clone())]
    );
    // A registration without a version forgets the old one.
    let mut unversioned = newer.clone();
    unversioned.version = None;
    b.register(std::slice::from_ref(&unversioned))
        .await
        .unwrap();
    assert_eq!(b.jobs(&[newer.key]).await.unwrap(), [Some(unversioned)]);
    assert!(
        b.held_waiting_on(&Dependency::Group("x".into()))
            .await
            .unwrap()
            .iter()
            .all(|j| j.key.group_id != g)
    );
}

/// One sweep per interval is claimed, whoever asks; after the interval, the next.
pub async fn sweeps_are_claimed_once_per_interval(b: &dyn JobBoard) {
    let now = 4_000_000_000;
    assert!(b.claim_sweep(now, 60).await.unwrap());
    assert!(!b.claim_sweep(now + 1, 60).await.unwrap());
    assert!(!b.claim_sweep(now + 59, 60).await.unwrap());
    assert!(b.claim_sweep(now + 60, 60).await.unwrap());
    assert!(!b.claim_sweep(now + 61, 60).await.unwrap());
    // An interval of zero always claims.
    assert!(b.claim_sweep(now + 61, 0).await.unwrap());
}

/// Worker reports replace each other per worker and are listed by recency.
pub async fn worker_reports(b: &dyn JobBoard) {
    let id = super::unique("worker");
    let mut report = WorkerReport {
        worker_id: id.clone(),
        host: "host-a".into(),
        pid: 42,
        state: WorkerState::Idle,
        job: None,
        jobs_done: 0,
        jobs_failed: 0,
        last_error: None,
        progress: None,
        device: Some("cuda:1".into()),
        commands: vec!["evaluate".into(), "train".into()],
        started_at: 1_000,
        last_seen: 2_000_000_000,
    };
    b.report_worker(&report).await.unwrap();
    report.state = WorkerState::Running;
    report.job = Some("g/job_1".into());
    report.jobs_done = 3;
    report.progress = Some("step 3/10 · loss 1.234".into());
    report.last_seen += 5;
    b.report_worker(&report).await.unwrap();
    let mine: Vec<WorkerReport> = b
        .workers(2_000_000_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|w| w.worker_id == id)
        .collect();
    assert_eq!(mine, [report.clone()]);
    // Progress goes when the job does.
    report.progress = None;
    report.job = None;
    report.last_seen += 5;
    b.report_worker(&report).await.unwrap();
    let now: Vec<WorkerReport> = b.workers(2_000_000_000).await.unwrap();
    assert_eq!(now.iter().find(|w| w.worker_id == id), Some(&report));
    assert!(
        b.workers(report.last_seen + 1)
            .await
            .unwrap()
            .iter()
            .all(|w| w.worker_id != id)
    );
}

/// Generates one `#[tokio::test]` per job board conformance case. `$factory` is an
/// async function `() -> Fixture<dyn JobBoard>`.
#[macro_export]
macro_rules! job_board_conformance {
    ($factory:ident) => {
        mod job_board_conformance {
            use $crate::conformance::board as cases;

            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let fixture = super::$factory().await;
                        cases::$name(&*fixture.backend).await;
                    }
                };
            }
            case!(held_jobs_wait_on_dependencies);
            case!(register_replaces);
            case!(worker_reports);
            case!(sweeps_are_claimed_once_per_interval);
        }
    };
}
