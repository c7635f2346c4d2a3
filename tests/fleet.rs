//! The fleet under failure, on the embedded default: many workers, killed workers, long
//! jobs, poison messages, stop signals and dependencies. Every test runs real worker
//! processes against a real SQLite home.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Fleet, block_on, envelope, find, kill_a_worker_mid_job, noop, send_raw, write_job};
use labelfleet_core::board::{JobBoard, WorkerState};
use labelfleet_core::job::{Job, ProvenancePolicy};
use labelfleet_core::queue::{Envelope, OutgoingMessage, Queue};
use serde_json::json;

/// Sends a job straight to the queue, bypassing `enqueue` (no board, no provenance).
fn send_by_hand(queue: &dyn Queue, job: serde_json::Value, name: &str) {
    let job = Job::parse(job, "sent by hand", Some(name), ProvenancePolicy::Reject).unwrap();
    let message = OutgoingMessage {
        body: Envelope::wrap(&job),
        dedup_id: format!("by-hand-{name}-{}", job.content_hash()),
        group: name.into(),
    };
    block_on(queue.send(&[message])).unwrap();
}

#[test]
fn four_workers_run_200_jobs_exactly_once() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("many");
    for i in 0..200 {
        write_job(
            &dir,
            &format!("job_{i:03}.json"),
            &noop("many", (i % 7) as u64 * 3, &[]),
        );
    }
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let mut workers: Vec<_> = (0..4)
        .map(|w| fleet.spawn_worker(&format!("w{w}"), &["--idle-exit", "2", "--wait", "1"]))
        .collect();
    for w in &mut workers {
        let status = w.wait(Duration::from_secs(120));
        assert!(status.success(), "{status}: {}", w.log_text());
    }
    let done = fleet.entries("many");
    assert_eq!(done.len(), 200, "one manifest entry per job");
    let mut names: Vec<&str> = done.iter().map(|e| e.run_id.as_str()).collect();
    names.dedup();
    assert_eq!(names.len(), 200);
    // Every job ran once: 200 "job started" events across the four logs.
    let started: usize = workers
        .iter()
        .map(|w| find(&w.events(), "job started", None).len())
        .sum();
    assert_eq!(started, 200);
    // The work was shared: no worker did everything.
    let mut by_worker: HashMap<&str, usize> = HashMap::new();
    for e in &done {
        *by_worker.entry(e.worker.as_str()).or_default() += 1;
    }
    assert!(by_worker.len() >= 2, "{by_worker:?}");
    let depth = block_on(fleet.embedded().queue(5).unwrap().depth()).unwrap();
    assert_eq!(
        (depth.visible, depth.in_flight, depth.dead_lettered),
        (0, 0, 0)
    );
}

#[test]
fn a_killed_worker_s_job_is_redelivered_and_completes_once() {
    let entry = kill_a_worker_mid_job(&Fleet::new(), 3000, "2", "0.5", Duration::from_secs(60));
    assert_eq!(entry.attempt, 2, "the second delivery completed it");
}

#[test]
fn a_job_three_times_longer_than_its_visibility_timeout_runs_once() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("long");
    write_job(&dir, "long.json", &noop("long", 3500, &[]));
    for i in 0..4 {
        write_job(&dir, &format!("short_{i}.json"), &noop("long", 100, &[]));
    }
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let args = [
        "--visibility-timeout",
        "1",
        "--heartbeat",
        "0.25",
        "--wait",
        "0.5",
        "--idle-exit",
        "3",
    ];
    let mut workers: Vec<_> = (0..3)
        .map(|w| fleet.spawn_worker(&format!("w{w}"), &args))
        .collect();
    for w in &mut workers {
        assert!(w.wait(Duration::from_secs(60)).success());
    }
    let started: usize = workers
        .iter()
        .map(|w| find(&w.events(), "job started", Some("long/long")).len())
        .sum();
    assert_eq!(started, 1, "the long job started more than once");
    let done = fleet.entries("long");
    assert_eq!(done.len(), 5);
    assert_eq!(done.iter().find(|e| e.run_id == "long").unwrap().attempt, 1);
}

#[test]
fn poison_messages_are_dead_lettered_with_reasons_and_the_worker_keeps_serving() {
    let fleet = Fleet::new();
    let queue = fleet.embedded().queue(5).unwrap();
    let bodies = [
        ("bad-json", "{not json".to_string()),
        (
            "unknown-kind",
            envelope(json!({"kind": "paint", "name": "p", "group_id": "poison", "paint": {}})),
        ),
        (
            "schema",
            envelope(
                json!({"kind": "noop", "name": "s", "group_id": "poison", "noop": {"sleep": 1}}),
            ),
        ),
        (
            "missing-input",
            envelope(
                json!({"kind": "eval", "name": "m", "group_id": "poison", "eval": {
                "gold": {"path": "/nonexistent/gold.json", "format": "multiwoz21"},
                "predictions": {"baseline": "empty"}}}),
            ),
        ),
        (
            "good",
            envelope(
                json!({"kind": "noop", "name": "good", "group_id": "poison", "noop": {"sleep_ms": 10}}),
            ),
        ),
    ];
    send_raw(&queue, &bodies);
    let mut worker = fleet.spawn_worker(
        "w",
        &[
            "--max-receives",
            "2",
            "--retry-base",
            "0.2",
            "--wait",
            "0.5",
            "--idle-exit",
            "3",
        ],
    );
    assert!(
        worker.wait(Duration::from_secs(60)).success(),
        "the worker must survive poison"
    );
    let dead = block_on(queue.dead_letters(10)).unwrap();
    let reason = |needle: &str| {
        dead.iter()
            .find(|d| d.body.contains(needle))
            .unwrap_or_else(|| panic!("no dead letter for {needle}: {dead:#?}"))
            .reason
            .clone()
    };
    assert!(reason("{not json").contains("not valid JSON"));
    assert!(reason("paint").contains("unknown job kind `paint`"));
    let schema = reason("\"sleep\"");
    assert!(
        schema.contains("noop.sleep") && schema.contains("unknown field"),
        "{schema}"
    );
    let missing = reason("/nonexistent/gold.json");
    assert!(
        missing.contains("failed on all 2 attempts")
            && missing.contains("cannot read the gold dataset"),
        "{missing}"
    );
    assert_eq!(dead.len(), 4);
    let done = fleet.entries("poison");
    assert_eq!(
        done.iter().map(|e| e.run_id.as_str()).collect::<Vec<_>>(),
        ["good"]
    );
    // `status` shows the reasons.
    let status = fleet.ok(&["status"]);
    assert!(status.contains("dead-lettered 4"), "{status}");
    assert!(status.contains("unknown job kind"), "{status}");
}

#[test]
fn sigterm_lets_a_short_job_finish_within_the_grace_period() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("term");
    write_job(&dir, "job.json", &noop("term", 1500, &[]));
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let mut worker = fleet.spawn_worker("w", &["--grace", "10", "--wait", "0.5"]);
    fleet.wait_for_running("w");
    worker.signal("TERM");
    assert!(worker.wait(Duration::from_secs(20)).success());
    assert_eq!(
        fleet.entries("term").len(),
        1,
        "the job finished before the exit"
    );
    let depth = block_on(fleet.embedded().queue(5).unwrap().depth()).unwrap();
    assert_eq!((depth.visible, depth.in_flight), (0, 0));
}

#[test]
fn sigterm_releases_a_long_job_at_once_when_the_grace_period_is_over() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("term");
    write_job(&dir, "job.json", &noop("term", 60_000, &[]));
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let mut worker = fleet.spawn_worker(
        "w",
        &[
            "--grace",
            "0.5",
            "--wait",
            "0.5",
            "--visibility-timeout",
            "600",
        ],
    );
    fleet.wait_for_running("w");
    worker.signal("TERM");
    assert!(
        worker.wait(Duration::from_secs(10)).success(),
        "exit 0 after releasing"
    );
    assert!(fleet.entries("term").is_empty());
    // Released, not left invisible for the 600 s visibility timeout.
    let depth = block_on(fleet.embedded().queue(5).unwrap().depth()).unwrap();
    assert_eq!((depth.visible, depth.in_flight), (1, 0));
    let stopped = block_on(fleet.embedded().board().unwrap().workers(0)).unwrap();
    assert_eq!(stopped[0].state, WorkerState::Stopped);
}

#[test]
fn dependents_wait_for_their_job_and_for_whole_groups() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("deps");
    write_job(&dir, "job_0.json", &noop("seed", 1200, &[]));
    for i in 0..3 {
        write_job(
            &dir,
            &format!("dependents/dep_{i}.json"),
            &noop("seed", 50, &["job_0"]),
        );
    }
    write_job(&dir, "report.json", &noop("report", 10, &["seed"]));
    let out = fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    assert!(out.contains("sent 1 job"), "{out}");
    assert!(out.contains("held 4"), "{out}");
    let status: serde_json::Value = serde_json::from_str(&fleet.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["queue"]["waiting_on_dependencies"], 4);
    let args = ["--wait", "0.5", "--idle-exit", "3"];
    let mut workers: Vec<_> = (0..3)
        .map(|w| fleet.spawn_worker(&format!("w{w}"), &args))
        .collect();
    for w in &mut workers {
        assert!(w.wait(Duration::from_secs(60)).success());
    }
    let events: Vec<serde_json::Value> = workers.iter().flat_map(|w| w.events()).collect();
    let at = |message: &str, job: &str| -> Vec<String> {
        find(&events, message, Some(job))
            .iter()
            .map(|e| e["timestamp"].as_str().unwrap().to_string())
            .collect()
    };
    let seed_done = at("job completed", "seed/job_0");
    assert_eq!(seed_done.len(), 1);
    for i in 0..3 {
        let started = at("job started", &format!("seed/dep_{i}"));
        assert_eq!(started.len(), 1);
        assert!(
            started[0] >= seed_done[0],
            "dep_{i} started before job_0 completed"
        );
    }
    let last_seed = (0..3)
        .flat_map(|i| at("job completed", &format!("seed/dep_{i}")))
        .max()
        .unwrap();
    let report_started = at("job started", "report/report");
    assert_eq!(report_started.len(), 1);
    assert!(
        report_started[0] >= last_seed,
        "the group dependency started before its group completed"
    );
    assert_eq!(fleet.entries("seed").len(), 4);
    assert_eq!(fleet.entries("report").len(), 1);
}

#[test]
fn a_hand_sent_dependent_is_held_until_its_dependency_completes() {
    let fleet = Fleet::new();
    let home = fleet.embedded();
    let queue = home.queue(5).unwrap();
    // Registered seed (not complete), and a dependent sent straight to the queue.
    let dir = fleet.jobs_dir("hand");
    write_job(&dir, "job_0.json", &noop("hand", 10, &[]));
    fleet.ok(&[
        "enqueue",
        dir.to_str().unwrap(),
        "--allow-dirty",
        "--dry-run",
    ]);
    send_by_hand(&queue, noop("hand", 10, &["job_0"]), "dep");
    let mut first = fleet.spawn_worker("first", &["--once", "--wait", "1"]);
    assert!(first.wait(Duration::from_secs(20)).success());
    assert!(
        fleet.entries("hand").is_empty(),
        "the dependent ran before its dependency"
    );
    let board = home.board().unwrap();
    assert_eq!(block_on(board.held()).unwrap().len(), 1);
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let mut second = fleet.spawn_worker("second", &["--idle-exit", "2", "--wait", "0.5"]);
    assert!(second.wait(Duration::from_secs(30)).success());
    let names: Vec<String> = fleet
        .entries("hand")
        .into_iter()
        .map(|e| e.run_id)
        .collect();
    assert_eq!(names, ["dep", "job_0"]);
}

#[test]
fn a_duplicate_delivery_of_a_completed_job_is_acknowledged_without_running() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("dup");
    write_job(&dir, "job.json", &noop("dup", 10, &[]));
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let mut w = fleet.spawn_worker("w1", &["--once", "--wait", "1"]);
    assert!(w.wait(Duration::from_secs(20)).success());
    // The same job arrives again (a second enqueue: new provenance, new dedup id).
    let queue = fleet.embedded().queue(5).unwrap();
    send_by_hand(&queue, noop("dup", 10, &[]), "job");
    let mut again = fleet.spawn_worker("w2", &["--once", "--wait", "1"]);
    assert!(again.wait(Duration::from_secs(20)).success());
    assert!(find(&again.events(), "job started", None).is_empty());
    assert_eq!(
        find(
            &again.events(),
            "already complete (a duplicate delivery); acknowledging without running",
            None
        )
        .len(),
        1
    );
    let done = fleet.entries("dup");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].worker, "w1");
    assert_eq!(block_on(queue.depth()).unwrap().visible, 0);
}

#[test]
fn a_failing_job_is_retried_with_backoff_before_it_is_dead_lettered() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("retry");
    write_job(
        &dir,
        "broken.json",
        &json!({"kind": "eval", "group_id": "retry", "eval": {
            "gold": {"path": "/nonexistent/gold.json", "format": "icdst"},
            "predictions": {"baseline": "empty"}}}),
    );
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let mut worker = fleet.spawn_worker(
        "w",
        &[
            "--max-receives",
            "3",
            "--retry-base",
            "0.3",
            "--wait",
            "0.3",
            "--idle-exit",
            "3",
        ],
    );
    assert!(worker.wait(Duration::from_secs(60)).success());
    let events = worker.events();
    let retries = find(
        &events,
        "job failed; it will be retried",
        Some("retry/broken"),
    );
    assert_eq!(retries.len(), 2);
    assert_eq!(retries[0]["fields"]["retry_in_s"], 0.3);
    assert_eq!(retries[1]["fields"]["retry_in_s"], 0.6);
    let dead = block_on(fleet.embedded().queue(5).unwrap().dead_letters(5)).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].receive_count, 3);
}

#[test]
fn job_slots_bound_how_many_messages_a_worker_holds() {
    for (slots, jobs) in [(3usize, 6usize), (1, 3)] {
        let fleet = Fleet::new();
        let dir = fleet.jobs_dir("slots");
        for i in 0..jobs {
            write_job(&dir, &format!("job_{i}.json"), &noop("slots", 700, &[]));
        }
        fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
        let queue = fleet.embedded().queue(5).unwrap();
        let concurrency = slots.to_string();
        let mut worker = fleet.spawn_worker(
            "w",
            &[
                "--concurrency",
                &concurrency,
                "--wait",
                "0.5",
                "--idle-exit",
                "2",
            ],
        );
        let mut most_in_flight = 0;
        while worker.child.try_wait().unwrap().is_none() {
            most_in_flight = most_in_flight.max(block_on(queue.depth()).unwrap().in_flight);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(worker.wait(Duration::from_secs(5)).success());
        assert_eq!(
            most_in_flight, slots as u64,
            "{slots} slot(s) must hold {slots} message(s) at most, and fill them"
        );
        assert_eq!(fleet.entries("slots").len(), jobs);
        // With several slots the jobs overlapped: more started than finished at some point.
        let events = worker.events();
        let mut running = 0i32;
        let mut most_running = 0;
        for e in &events {
            match e["fields"]["message"].as_str() {
                Some("job started") => running += 1,
                Some("job completed") => running -= 1,
                _ => {}
            }
            most_running = most_running.max(running);
        }
        assert_eq!(most_running, slots as i32);
    }
}
