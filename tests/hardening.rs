//! A misconfigured or failing backend never empties the queue or ends the fleet
//! "successfully"; edited jobs, dependency cycles, stop signals, lost leases and
//! removed homes are handled. Each test runs real worker processes on a real SQLite
//! home, and failed before the behaviour it checks was built (the AWS sides are in
//! tests/aws.rs).

mod common;

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::{Fleet, block_on, data_dir, find, noop, repo_root, wait_until, write_job};
use labelfleet_core::board::JobBoard;
use labelfleet_core::queue::Queue;
use labelfleet_manifest::{Manifest, ManifestKey};
use serde_json::{Value, json};

fn enqueue(fleet: &Fleet, dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["enqueue", dir.to_str().unwrap(), "--allow-dirty"];
    args.extend_from_slice(extra);
    fleet.run(&args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// Item 2: a full disk is backend trouble, not idle time. The worker (whose writes past
/// its files' sizes fail, as on a full disk) exits with status 75 and the reason; the
/// job stays queued, nothing is dead-lettered.
#[test]
fn a_worker_on_a_full_disk_exits_with_status_75_and_leaves_the_job_queued() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("disk");
    write_job(&dir, "first.json", &noop("disk", 10, &[]));
    assert!(enqueue(&fleet, &dir, &[]).status.success());
    let mut command = fleet.command(&[
        "worker",
        "--worker-id",
        "w",
        "--wait",
        "0.5",
        "--idle-exit",
        "3",
    ]);
    // SIGXFSZ ignored (and inherited as ignored through exec): a write past the file
    // size limit fails with EFBIG instead of killing the process.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    // The log goes through a pipe to a file the test writes: the limit below is on
    // the worker's own files.
    let log = fleet.dir.path().join("w.log");
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stderr.take().unwrap();
    let mut file = std::fs::File::create(&log).unwrap();
    std::thread::spawn(move || std::io::copy(&mut pipe, &mut file));
    let mut worker = common::Worker { child, log };
    wait_until(Duration::from_secs(30), "the first job ran", || {
        fleet.entries("disk").len() == 1
    });
    // The disk fills up: no file of the worker's may grow any more.
    let limit = libc::rlimit {
        rlim_cur: 1,
        rlim_max: libc::RLIM_INFINITY,
    };
    let pid = worker.child.id() as libc::pid_t;
    assert_eq!(
        unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) },
        0
    );
    write_job(&dir, "second.json", &noop("disk", 10, &[]));
    assert!(enqueue(&fleet, &dir, &[]).status.success());
    let status = worker.wait(Duration::from_secs(60));
    let log = worker.log_text();
    assert_eq!(status.code(), Some(75), "{log}");
    assert!(log.contains("longer than --idle-exit"), "{log}");
    assert!(
        find(&worker.events(), "worker stopped", None).is_empty(),
        "{log}"
    );
    let depth = block_on(fleet.embedded().queue(5).unwrap().depth()).unwrap();
    assert_eq!(
        (depth.visible + depth.in_flight, depth.dead_lettered),
        (1, 0),
        "the second job is still queued, not dead-lettered"
    );
    assert_eq!(fleet.entries("disk").len(), 1);
}

/// Item 2: an idle worker does not leave while another worker holds a message that
/// comes back if its holder dies; it runs it when it does.
#[test]
fn an_idle_worker_waits_for_a_message_in_flight_on_a_worker_that_dies() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("inflight");
    write_job(&dir, "slow.json", &noop("inflight", 4000, &[]));
    assert!(enqueue(&fleet, &dir, &[]).status.success());
    let args = [
        "--visibility-timeout",
        "3",
        "--heartbeat",
        "1",
        "--wait",
        "0.5",
    ];
    let mut holder = fleet.spawn_worker("holder", &args);
    fleet.wait_for_running("holder");
    let mut idle = fleet.spawn_worker("idle", &[&args[..], &["--idle-exit", "1"]].concat());
    std::thread::sleep(Duration::from_secs(2));
    holder.signal("KILL");
    holder.wait(Duration::from_secs(5));
    assert!(idle.wait(Duration::from_secs(60)).success());
    let done = fleet.entries("inflight");
    assert_eq!(done.len(), 1, "{}", idle.log_text());
    assert_eq!(done[0].worker, "idle");
    let events = idle.events();
    let stays = find(
        &events,
        "queue empty, but work may still come; staying",
        None,
    );
    assert!(!stays.is_empty(), "{}", idle.log_text());
}

/// Item 3: an edited job enqueued while the old version is queued is refused with both
/// versions, unless `--replace`; the worker then runs only the newest.
#[test]
fn an_edited_queued_job_is_refused_then_replaced_and_only_the_newest_runs() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("edit");
    write_job(&dir, "job.json", &noop("edit", 1, &[]));
    assert!(enqueue(&fleet, &dir, &[]).status.success());
    write_job(&dir, "job.json", &noop("edit", 999, &[]));
    let refused = enqueue(&fleet, &dir, &[]);
    assert!(!refused.status.success());
    let err = text(&refused.stderr);
    assert!(
        err.contains("`edit/job` is already queued") && err.contains("--replace"),
        "{err}"
    );
    let versions: Vec<&str> = err
        .split("version ")
        .skip(1)
        .map(|s| s.split([',', ' ', ':']).next().unwrap())
        .collect();
    assert_eq!(versions.len(), 2, "both versions named: {err}");
    assert_ne!(versions[0], versions[1]);
    let replaced = enqueue(&fleet, &dir, &["--replace"]);
    assert!(replaced.status.success(), "{}", text(&replaced.stderr));
    assert!(text(&replaced.stdout).contains("replaces the queued version"));
    let mut worker = fleet.spawn_worker("w", &["--wait", "0.5", "--idle-exit", "2"]);
    assert!(worker.wait(Duration::from_secs(60)).success());
    let done = fleet.entries("edit");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].counts["slept_ms"], 999, "the newest version ran");
    let events = worker.events();
    assert_eq!(find(&events, "job started", None).len(), 1);
    assert_eq!(
        find(
            &events,
            "superseded by a newer version of the job (enqueue --replace); acknowledging without running",
            None
        )
        .len(),
        1
    );
}

/// Item 3: a completed job is never run again without `--rerun`; with it, the run is
/// recorded as a new run and the completed entry stays in the manifest's history.
#[test]
fn a_completed_job_runs_again_only_with_rerun_and_keeps_its_history() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("again");
    let job = |sleep_ms: u64| json!({"kind": "noop", "group_id": "again", "noop": {"sleep_ms": sleep_ms, "write_bytes": 64}});
    write_job(&dir, "job.json", &job(5));
    assert!(enqueue(&fleet, &dir, &[]).status.success());
    let run = |name: &str| {
        let mut w = fleet.spawn_worker(name, &["--wait", "0.5", "--idle-exit", "2"]);
        assert!(w.wait(Duration::from_secs(60)).success());
    };
    run("first");
    // The same file again: skipped.
    let same = enqueue(&fleet, &dir, &[]);
    assert!(text(&same.stdout).contains("skipped 1 already in the manifest"));
    // Edited: refused.
    write_job(&dir, "job.json", &job(6));
    let refused = enqueue(&fleet, &dir, &[]);
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("already completed"));
    assert!(text(&refused.stderr).contains("--rerun"));
    let rerun = enqueue(&fleet, &dir, &["--rerun"]);
    assert!(rerun.status.success(), "{}", text(&rerun.stderr));
    assert!(text(&rerun.stdout).contains("runs again as rerun 1"));
    run("second");
    let done = fleet.entries("again");
    assert_eq!(done.len(), 1);
    assert_eq!(
        (done[0].worker.as_str(), done[0].counts["slept_ms"]),
        ("second", 6)
    );
    assert_eq!(done[0].artifacts["noop"], "again/job/rerun-1/noop.txt");
    let manifest = fleet.embedded().manifest().unwrap();
    let history = block_on(manifest.history(&ManifestKey {
        group_id: "again".into(),
        run_id: "job".into(),
    }))
    .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].worker.as_str(), history[0].counts["slept_ms"]),
        ("first", 5)
    );
    // The first run's artifact is as it was.
    let first = fleet.home().join("artifacts/again/job/noop.txt");
    assert!(
        std::fs::read_to_string(first)
            .unwrap()
            .starts_with("written by attempt 1")
    );
}

/// Item 3: a version replaced while it runs is not recorded; the newest is.
#[test]
fn a_job_replaced_while_it_runs_is_discarded_and_the_newest_recorded() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("race");
    write_job(&dir, "job.json", &noop("race", 2500, &[]));
    assert!(enqueue(&fleet, &dir, &[]).status.success());
    let mut old = fleet.spawn_worker("old", &["--wait", "0.5", "--idle-exit", "2"]);
    fleet.wait_for_running("old");
    write_job(&dir, "job.json", &noop("race", 100, &[]));
    assert!(enqueue(&fleet, &dir, &["--replace"]).status.success());
    let mut new = fleet.spawn_worker("new", &["--wait", "0.5", "--idle-exit", "4"]);
    assert!(old.wait(Duration::from_secs(60)).success());
    assert!(new.wait(Duration::from_secs(60)).success());
    let done = fleet.entries("race");
    assert_eq!(done.len(), 1);
    assert_eq!(
        done[0].counts["slept_ms"], 100,
        "the newest version is recorded"
    );
    assert!(
        old.log_text()
            .contains("a newer version of the job was enqueued (--replace) while it ran"),
        "{}",
        old.log_text()
    );
}

/// Item 4: a cycle closed across two enqueues is refused, and named.
#[test]
fn a_dependency_cycle_across_enqueues_is_refused_and_named() {
    let fleet = Fleet::new();
    let step = |name: &str, job: Value| {
        let dir = fleet.jobs_dir(name);
        write_job(&dir, &format!("{name}.json"), &job);
        enqueue(&fleet, &dir, &[])
    };
    assert!(step("a", noop("g", 10, &[])).status.success());
    assert!(step("x", noop("h", 10, &["g"])).status.success());
    let refused = step("b", noop("g", 10, &["h/x"]));
    assert!(!refused.status.success());
    let err = text(&refused.stderr);
    assert!(err.contains("cycle: g/b → h/x → g/b"), "{err}");
    assert!(err.contains("nothing was enqueued"), "{err}");
    // Nothing of it reached the board.
    let board = fleet.embedded().board().unwrap();
    assert!(
        block_on(board.group_jobs("g"))
            .unwrap()
            .iter()
            .all(|j| j.name != "b")
    );
}

/// Item 5: removing the home under a running worker stops it with an error, instead of
/// it writing on into deleted files.
#[test]
fn a_worker_whose_home_is_removed_stops_with_an_error() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("gone");
    write_job(&dir, "job.json", &noop("gone", 10, &[]));
    assert!(enqueue(&fleet, &dir, &[]).status.success());
    let mut worker = fleet.spawn_worker("w", &["--wait", "0.5", "--idle-exit", "60"]);
    wait_until(Duration::from_secs(30), "the job ran", || {
        fleet.entries("gone").len() == 1
    });
    std::fs::remove_dir_all(fleet.home()).unwrap();
    let started = Instant::now();
    let status = worker.wait(Duration::from_secs(30));
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(!status.success());
    let log = worker.log_text();
    assert!(
        log.contains("was deleted while this process had it open"),
        "{log}"
    );
}

/// A self_label job of many short batch steps on a tiny model, with its running log
/// due only at the end.
fn long_self_label(fleet: &Fleet, group: &str) -> std::path::PathBuf {
    let model = common::tiny_llama(fleet);
    let dir = fleet.jobs_dir(group);
    write_job(
        &dir,
        "job.json",
        &json!({
            "kind": "self_label",
            "group_id": group,
            "self_label": {
                "data": {"path": data_dir().join("multiwoz21/val.json.zip"), "format": "multiwoz21"},
                "dialogues": {"count": 100, "max_turns": 2},
                "model": {"path": model},
                // No retrieved examples: short prompts, many quick batch steps.
                "retriever": {"model": {"path": repo_root().join(".models/all-MiniLM-L6-v2")},
                              "example_warmup": 1000000, "add_predictions": false},
                "generation": {"max_new_tokens": 8},
                "batch_size": 2,
                "checkpoint_turns": 100000
            }
        }),
    );
    assert!(enqueue(fleet, &dir, &[]).status.success());
    dir
}

/// Item 6: SIGTERM stops a self_label job between batch steps, even with its running
/// log not due: it saves the turns done, the worker exits within its grace period, and
/// the next attempt resumes from them.
#[test]
fn sigterm_saves_a_self_label_job_between_batches_and_the_next_attempt_resumes() {
    let fleet = Fleet::new();
    long_self_label(&fleet, "term");
    let mut first = fleet.spawn_worker("first", &["--wait", "0.5", "--grace", "20"]);
    let running_log = fleet.home().join("artifacts/term/job/running_log.json");
    // Some batch steps done (progress moves after every one).
    wait_until(Duration::from_secs(120), "the job labels turns", || {
        fleet.shows_progress(|p| !p.starts_with("turns 0/"))
    });
    assert!(!running_log.exists(), "the log was not due yet");
    let signalled = Instant::now();
    first.signal("TERM");
    assert!(first.wait(Duration::from_secs(20)).success());
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "the worker exits well within its 20 s grace"
    );
    assert!(
        first
            .log_text()
            .contains("job saved its progress; released for another worker")
    );
    let saved: Value = serde_json::from_slice(&std::fs::read(&running_log).unwrap()).unwrap();
    let saved_turns = saved["turns"].as_array().unwrap().len();
    assert!(
        saved_turns > 0 && saved["complete"] == false,
        "{saved_turns}"
    );
    // The process is gone, and nothing more was written for the job.
    let before = std::fs::read(&running_log).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(std::fs::read(&running_log).unwrap(), before);
    assert!(fleet.entries("term").is_empty());
    // The next attempt resumes from the saved turns.
    let mut second = fleet.spawn_worker("second", &["--wait", "0.5", "--idle-exit", "2"]);
    assert!(second.wait(Duration::from_secs(600)).success());
    let events = second.events();
    let resumed = find(&events, "resuming from the running log", None);
    assert_eq!(resumed.len(), 1, "{}", second.log_text());
    assert_eq!(resumed[0]["fields"]["turns"], saved_turns as u64);
    let expected: usize = labelfleet_dst::read_dataset(
        &data_dir().join("multiwoz21/val.json.zip"),
        labelfleet_dst::Format::Multiwoz21,
    )
    .unwrap()
    .iter()
    .take(100)
    .map(|d| d.turns.len().min(2))
    .sum();
    let done = fleet.entries("term");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].counts["turns"], expected as u64);
}

/// Item 7: a tune grid of 10^8 points is refused by `enqueue` at once (it used to build
/// every point and run out of memory), and capped by `trials` it expands quickly.
#[test]
fn a_huge_tune_grid_is_refused_at_once_and_trials_cap_it() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("sweep");
    let values: Vec<u64> = (1..=10).collect();
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
    .map(|p| (p.to_string(), json!(values)))
    .collect();
    let tune = |trials: Option<u64>| {
        let mut spec = json!({
            "retrain": {"model": {"path": "m"}, "data": {"old": [{"gold": {"path": "d.json", "format": "multiwoz21"}}]}},
            "grid": grid, "metric": "valid_loss"
        });
        if let Some(t) = trials {
            spec["trials"] = json!(t);
        }
        json!({"kind": "tune", "group_id": "sweep", "tune": spec})
    };
    write_job(&dir, "tune.json", &tune(None));
    let started = Instant::now();
    let refused = fleet.run(&[
        "enqueue",
        dir.to_str().unwrap(),
        "--allow-dirty",
        "--dry-run",
    ]);
    assert!(!refused.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        text(&refused.stderr).contains("has 100000000 points"),
        "{}",
        text(&refused.stderr)
    );
    write_job(&dir, "tune.json", &tune(Some(2)));
    let planned = fleet.ok(&[
        "enqueue",
        dir.to_str().unwrap(),
        "--allow-dirty",
        "--dry-run",
    ]);
    assert!(planned.contains("validated 3 jobs"), "{planned}");
}

/// Item 8: a job's error never shows a data file's values, and is bounded in length.
#[test]
fn errors_name_file_path_and_type_but_never_the_values_and_stay_short() {
    let fleet = Fleet::new();
    let secret = "AKIAIOSFODNN7EXAMPLE";
    let credentials = fleet.dir.path().join("credentials.json");
    std::fs::write(
        &credentials,
        json!({"aws_access_key_id": secret, "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG"})
            .to_string(),
    )
    .unwrap();
    let dir = fleet.jobs_dir("leak");
    write_job(
        &dir,
        "eval.json",
        &json!({"kind": "eval", "group_id": "leak", "eval": {
            "gold": {"path": credentials, "format": "multiwoz21"},
            "predictions": {"baseline": "empty"}}}),
    );
    assert!(enqueue(&fleet, &dir, &[]).status.success());
    let mut worker = fleet.spawn_worker(
        "w",
        &["--max-receives", "1", "--wait", "0.5", "--idle-exit", "2"],
    );
    assert!(worker.wait(Duration::from_secs(60)).success());
    let status = fleet.ok(&["status"]);
    let reason = fleet.status()["dead_letters"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("credentials.json"), "{reason}");
    assert!(reason.contains("expected"), "{reason}");
    for shown in [&status, &reason, &worker.log_text()] {
        assert!(
            !shown.contains(secret) && !shown.contains("wJalrXUtnFEMI"),
            "{shown}"
        );
    }
    // A 5 MB group id and a 5 MB unknown key: the errors quote a few dozen characters.
    let huge = "g".repeat(5_000_000);
    let dir = fleet.jobs_dir("huge");
    let mut job = noop(&huge, 1, &[]);
    job[&"k".repeat(5_000_000)] = json!(1);
    write_job(&dir, "job.json", &job);
    let out = enqueue(&fleet, &dir, &[]);
    assert!(!out.status.success());
    assert!(
        out.stderr.len() < 3_000,
        "{} bytes of error",
        out.stderr.len()
    );
    assert!(
        text(&out.stderr).contains("bytes in all"),
        "{}",
        text(&out.stderr)
    );
}

/// Item 10: numeric flags out of range are refused with the range, before any work.
#[test]
fn numeric_flags_out_of_range_are_refused_with_their_range() {
    let fleet = Fleet::new();
    for (args, says) in [
        (
            vec!["--visibility-timeout", "10000000000000000"],
            "between 1 and 43200",
        ),
        (vec!["--visibility-timeout", "0"], "between 1 and 43200"),
        (vec!["--heartbeat", "0"], "between 0.05 and 43200"),
        (vec!["--max-receives", "0"], "1..=1000"),
        (vec!["--concurrency", "0"], "1..=256"),
        (vec!["--idle-exit", "nan"], "between 0"),
        (
            vec!["--heartbeat", "30", "--visibility-timeout", "10"],
            "shorter than --visibility-timeout",
        ),
    ] {
        let mut all = vec!["worker", "--once"];
        all.extend_from_slice(&args);
        let out = fleet.run(&all);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(!fleet.home().exists(), "nothing was opened");
}

/// Item 11: a worker frozen past its visibility timeout, whose job another worker took
/// over, writes nothing and records nothing when it wakes.
#[test]
fn a_worker_that_lost_its_lease_writes_and_records_nothing() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("lease");
    write_job(
        &dir,
        "job.json",
        &json!({"kind": "noop", "group_id": "lease", "noop": {"sleep_ms": 2500, "write_bytes": 100}}),
    );
    assert!(enqueue(&fleet, &dir, &[]).status.success());
    let args = [
        "--visibility-timeout",
        "2",
        "--heartbeat",
        "0.5",
        "--wait",
        "0.5",
    ];
    let mut frozen = fleet.spawn_worker("frozen", &[&args[..], &["--idle-exit", "3"]].concat());
    fleet.wait_for_running("frozen");
    frozen.signal("STOP");
    let mut rescuer = fleet.spawn_worker("rescuer", &[&args[..], &["--idle-exit", "3"]].concat());
    wait_until(Duration::from_secs(60), "the rescuer completes it", || {
        fleet.entries("lease").len() == 1
    });
    frozen.signal("CONT");
    assert!(frozen.wait(Duration::from_secs(60)).success());
    assert!(rescuer.wait(Duration::from_secs(60)).success());
    let done = fleet.entries("lease");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].worker, "rescuer");
    let artifact = fleet.home().join("artifacts/lease/job/noop.txt");
    assert!(
        std::fs::read_to_string(artifact)
            .unwrap()
            .starts_with("written by attempt 2"),
        "only the rescuer's delivery wrote the artifact"
    );
    let events = frozen.events();
    assert!(find(&events, "job completed", None).is_empty());
    assert!(
        frozen.log_text().contains("lost the lease"),
        "{}",
        frozen.log_text()
    );
}

/// Item 12: `status`'s worker table has a header per column, and a closed pipe ends
/// `status` and `results` quietly.
#[test]
fn status_columns_line_up_and_a_closed_pipe_ends_quietly() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("cols");
    write_job(&dir, "job.json", &noop("cols", 10, &[]));
    assert!(enqueue(&fleet, &dir, &[]).status.success());
    let mut w = fleet.spawn_worker("w", &["--wait", "0.5", "--idle-exit", "1"]);
    assert!(w.wait(Duration::from_secs(30)).success());
    let out = fleet.ok(&["status"]);
    let lines: Vec<&str> = out.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.trim_start().starts_with("WORKER"))
        .unwrap();
    let header_cells = lines[header].split_whitespace().count();
    let row_cells = lines[header + 1].split_whitespace().count();
    assert_eq!(header_cells, 9, "{out}");
    // "3s ago" is one column in two words.
    assert_eq!(row_cells, header_cells + 1, "{out}");
    assert!(lines[header + 1].contains("stopped"), "{out}");
    for command in ["status", "results"] {
        let mut child = fleet
            .command(&[command])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_ne!(out.status.code(), Some(101), "{command} panicked");
        assert!(
            !text(&out.stderr).contains("panicked"),
            "{}",
            text(&out.stderr)
        );
    }
}

/// Item 14: read-only commands refuse a home that does not exist, and create nothing.
#[test]
fn read_only_commands_refuse_a_missing_home_and_create_none() {
    let fleet = Fleet::new();
    for args in [
        vec!["status"],
        vec!["results"],
        vec!["report", "g"],
        vec!["redrive"],
        vec!["upload-dataset", "--group-id", "g"],
    ] {
        let out = fleet.run(&args);
        assert_eq!(
            out.status.code(),
            Some(78),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("there is no labelfleet home at"),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!fleet.home().exists(), "{args:?} created the home");
    }
}

/// Item 15: a job held behind a dead-lettered job shows as blocked, with the dead job;
/// `redrive` sends the dead job back once its cause is fixed, and both then run.
#[test]
fn a_job_blocked_by_a_dead_letter_shows_and_runs_after_redrive() {
    let fleet = Fleet::new();
    let gold = fleet.dir.path().join("gold.json");
    let dir = fleet.jobs_dir("blocked");
    write_job(
        &dir,
        "first.json",
        &json!({"kind": "eval", "group_id": "blocked", "eval": {
            "gold": {"path": gold, "format": "multiwoz21"}, "predictions": {"baseline": "empty"}}}),
    );
    write_job(&dir, "second.json", &noop("blocked", 10, &["first"]));
    write_job(&dir, "report.json", &noop("after", 10, &["blocked"]));
    assert!(enqueue(&fleet, &dir, &[]).status.success());
    let args = [
        "--max-receives",
        "2",
        "--retry-base",
        "0.1",
        "--wait",
        "0.5",
        "--idle-exit",
        "2",
    ];
    let mut w = fleet.spawn_worker("w1", &args);
    assert!(w.wait(Duration::from_secs(60)).success());
    let status = fleet.status();
    let blocked: Vec<(String, String)> = status["blocked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["job"].as_str().unwrap().into(),
                b["dead_lettered"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        blocked,
        [
            ("after/report".to_string(), "blocked/first".to_string()),
            ("blocked/second".to_string(), "blocked/first".to_string()),
        ]
    );
    assert!(fleet.ok(&["status"]).contains("labelfleet redrive"));
    // Fix the cause, send it back, and the chain runs.
    std::fs::copy(
        repo_root().join("runs/sample-data/multiwoz21_val_sample.json"),
        &gold,
    )
    .unwrap();
    let dry = fleet.ok(&["redrive", "--job", "blocked/first", "--dry-run"]);
    assert!(dry.contains("would send back 1"), "{dry}");
    assert!(
        fleet
            .ok(&["redrive", "--group", "nothing"])
            .contains("sent back 0")
    );
    let sent = fleet.ok(&["redrive", "--job", "blocked/first"]);
    assert!(
        sent.contains("sent back 1") && sent.contains("blocked/first"),
        "{sent}"
    );
    let mut w = fleet.spawn_worker("w2", &args);
    assert!(w.wait(Duration::from_secs(60)).success());
    assert_eq!(fleet.entries("blocked").len(), 2);
    assert_eq!(fleet.entries("after").len(), 1);
    let status = fleet.status();
    assert_eq!(status["queue"]["dead_lettered"], 0);
    assert_eq!(status["blocked"], json!([]));
}

/// Item 15 with the queue backend directly: what is redriven is received again from
/// zero receives, on the embedded queue (the conformance suite covers both backends).
#[test]
fn redriven_messages_start_their_receive_count_again() {
    let fleet = Fleet::new();
    let queue = fleet.embedded().queue(1).unwrap();
    common::send_raw(&queue, &[("m", common::envelope(noop("r", 1, &[])))]);
    let m = block_on(queue.receive(1, Duration::from_secs(30), Duration::ZERO)).unwrap();
    block_on(queue.dead_letter(&m[0], "test")).unwrap();
    let moved = block_on(queue.redrive(&|_| true)).unwrap();
    assert_eq!(moved.len(), 1);
    let again = block_on(queue.receive(1, Duration::from_secs(30), Duration::ZERO)).unwrap();
    assert_eq!(again[0].receive_count, 1);
    let board = fleet.embedded().board().unwrap();
    assert!(block_on(board.held()).unwrap().is_empty());
}
