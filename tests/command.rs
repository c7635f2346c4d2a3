//! `command` jobs with real worker processes: the allow-list, the scrubbed
//! environment, inputs and outputs, exit statuses, timeouts, a stop that checkpoints
//! and resumes, and a worker killed with SIGKILL that leaves no orphan.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Fleet, block_on, find, wait_until, write_job};
use labelfleet_core::queue::Queue;
use serde_json::{Value, json};

/// Writes an executable shell script into the fleet's folder.
fn script(fleet: &Fleet, name: &str, body: &str) -> PathBuf {
    let path = fleet.dir.path().join("programs").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn command_job(group: &str, name: &str, command: Value, after: &[&str]) -> Value {
    json!({"kind": "command", "group_id": group, "name": name, "after": after, "command": command})
}

fn enqueue(fleet: &Fleet, dir: &Path) {
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
}

fn allow(name: &str, path: &Path) -> String {
    format!("{name}={}", path.display())
}

fn dead_letter_reasons(fleet: &Fleet) -> Vec<String> {
    block_on(fleet.embedded().queue(5).unwrap().dead_letters(20))
        .unwrap()
        .into_iter()
        .map(|d| d.reason)
        .collect()
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn a_program_the_worker_does_not_allow_is_dead_lettered_at_once() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("jobs");
    write_job(
        &dir,
        "j.json",
        &command_job("refuse", "j", json!({"program": "rm-everything"}), &[]),
    );
    // No worker has said it allows the program: enqueue warns, and sends the job.
    let out = fleet.run(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "j.json: no worker seen in the last 10 minutes allows the program `rm-everything`"
        ),
        "{stderr}"
    );
    let tool = script(&fleet, "tool", "exit 0\n");
    let mut worker = fleet.spawn_worker(
        "w",
        &[
            "--wait",
            "0.2",
            "--idle-exit",
            "2",
            "--allow-command",
            &allow("tool", &tool),
        ],
    );
    assert!(worker.wait(Duration::from_secs(60)).success());
    let reasons = dead_letter_reasons(&fleet);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains("failed on attempt 1")
            && reasons[0].contains("does not allow the program `rm-everything`")
            && reasons[0].contains("it allows tool")
            && reasons[0].contains("--allow-command rm-everything="),
        "{}",
        reasons[0]
    );
    assert!(fleet.entries("refuse").is_empty());
}

#[test]
fn a_program_sees_only_its_environment_and_its_outputs_become_artifacts() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("jobs");
    let produce = script(
        &fleet,
        "produce",
        r#"env | sort > "$LABELFLEET_OUTPUT_DIR/env.txt"
mkdir -p "$LABELFLEET_OUTPUT_DIR/model"
printf 'weights of %s\n' "$1" > "$LABELFLEET_OUTPUT_DIR/model/weights.bin"
echo 'LABELFLEET_PROGRESS almost there'
echo '{"accuracy": 0.75}' > "$LABELFLEET_OUTPUT_DIR/metrics.json"
"#,
    );
    let consume = script(
        &fleet,
        "consume",
        r#"cat "$LABELFLEET_INPUT_DIR/produce/model/weights.bin" > "$LABELFLEET_OUTPUT_DIR/seen.txt"
"#,
    );
    write_job(
        &dir,
        "produce.json",
        &command_job(
            "env",
            "produce",
            json!({"program": "produce", "args": ["run-7"], "params": {"lr": 0.1}}),
            &[],
        ),
    );
    write_job(
        &dir,
        "consume.json",
        &command_job(
            "env",
            "consume",
            json!({"program": "consume", "inputs": [{"from": "produce", "path": "model/weights.bin"}]}),
            &["produce"],
        ),
    );
    enqueue(&fleet, &dir);
    let mut command = fleet.command(&[
        "worker",
        "--worker-id",
        "w",
        "--wait",
        "0.2",
        "--idle-exit",
        "2",
        "--allow-command",
        &allow("produce", &produce),
        "--allow-command",
        &allow("consume", &consume),
        "--pass-env",
        "LABELFLEET_TEST_PASSED",
    ]);
    command
        .env("AWS_SECRET_ACCESS_KEY", "do-not-leak-this")
        .env("LABELFLEET_TEST_PASSED", "passed-on");
    let mut worker = fleet.spawn_command("w", command);
    assert!(worker.wait(Duration::from_secs(60)).success());
    let entries = fleet.entries("env");
    assert_eq!(entries.len(), 2, "{}", worker.log_text());
    let produced = entries.iter().find(|e| e.run_id == "produce").unwrap();
    assert_eq!(produced.metrics["accuracy"], 0.75);
    assert_eq!(produced.counts["output_files"], 3);
    let artifacts = fleet.home().join("artifacts/env/produce");
    let env = std::fs::read_to_string(artifacts.join("output/env.txt")).unwrap();
    assert!(!env.contains("do-not-leak-this"), "{env}");
    assert!(!env.contains("LABELFLEET_HOME"), "{env}");
    for expected in [
        "LABELFLEET_TEST_PASSED=passed-on",
        "LABELFLEET_PARAMS={\"lr\":0.1}",
        "LABELFLEET_GROUP=env",
        "LABELFLEET_JOB=produce",
        "LABELFLEET_ATTEMPT=1",
    ] {
        assert!(env.contains(expected), "{expected} missing from\n{env}");
    }
    assert!(!env.contains("LABELFLEET_RESUME_DIR"), "{env}");
    assert_eq!(
        produced.artifacts["model/weights.bin"],
        "env/produce/output/model/weights.bin"
    );
    let log = std::fs::read_to_string(artifacts.join("command.log")).unwrap();
    assert!(log.contains("LABELFLEET_PROGRESS almost there"), "{log}");
    let seen = std::fs::read_to_string(fleet.home().join("artifacts/env/consume/output/seen.txt"))
        .unwrap();
    assert_eq!(seen, "weights of run-7\n");
    // The worker reported what it allows: enqueue has nothing to warn about.
    let more = fleet.jobs_dir("more");
    write_job(
        &more,
        "again.json",
        &command_job("env2", "again", json!({"program": "produce"}), &[]),
    );
    let out = fleet.run(&["enqueue", more.to_str().unwrap(), "--allow-dirty"]);
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn failures_timeouts_and_temporary_failures_end_as_they_should() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("jobs");
    let fail = script(&fleet, "fail", "echo 'cannot open data.csv' >&2\nexit 3\n");
    let later = script(&fleet, "later", "echo 'the GPU is busy' >&2\nexit 75\n");
    let slow = script(&fleet, "slow", "sleep 60\n");
    let ok = script(&fleet, "ok", "exit 0\n");
    for (name, program, timeout) in [
        ("fail", "fail", None),
        ("later", "later", None),
        ("slow", "slow", Some(1)),
        ("ok", "ok", None),
    ] {
        let mut command = json!({ "program": program });
        if let Some(t) = timeout {
            command["timeout_s"] = json!(t);
        }
        write_job(
            &dir,
            &format!("{name}.json"),
            &command_job("ends", name, command, &[]),
        );
    }
    enqueue(&fleet, &dir);
    let mut args = vec![
        "--wait",
        "0.2",
        "--idle-exit",
        "3",
        "--max-receives",
        "2",
        "--retry-base",
        "0.1",
    ];
    let allowed: Vec<String> = [
        ("fail", &fail),
        ("later", &later),
        ("slow", &slow),
        ("ok", &ok),
    ]
    .iter()
    .map(|(n, p)| allow(n, p))
    .collect();
    for a in &allowed {
        args.extend(["--allow-command", a]);
    }
    let mut worker = fleet.spawn_worker("w", &args);
    assert!(worker.wait(Duration::from_secs(120)).success());
    let done: Vec<String> = fleet
        .entries("ends")
        .into_iter()
        .map(|e| e.run_id)
        .collect();
    assert_eq!(done, ["ok"]);
    let mut reasons = dead_letter_reasons(&fleet);
    reasons.sort();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].contains("failed on all 2 attempts")
            && reasons[0].contains("`fail` exited with status 3")
            && reasons[0].contains("cannot open data.csv"),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].contains("status 75 (temporary failure)")
            && reasons[1].contains("the GPU is busy"),
        "{}",
        reasons[1]
    );
    assert!(
        reasons[2].contains("`slow` ran past its timeout of 1 s"),
        "{}",
        reasons[2]
    );
    // A temporary failure is not counted against the job in the worker's figures.
    let events = worker.events();
    let stopped = find(&events, "worker stopped", None);
    assert_eq!(stopped[0]["fields"]["failed"], 4, "{}", worker.log_text());
}

/// A program that checkpoints when told to stop: it counts to 40, a step every 0.1 s,
/// saving its count on SIGTERM (exit 75); an attempt that finds a checkpoint resumes
/// from its count.
const COUNTER: &str = r#"n=0
if [ -n "$LABELFLEET_RESUME_DIR" ]; then n=$(cat "$LABELFLEET_RESUME_DIR/count"); echo "$n" > "$LABELFLEET_OUTPUT_DIR/resumed_from"; fi
echo $$ > "$1"
trap 'echo "$n" > "$LABELFLEET_OUTPUT_DIR/count"; exit 75' TERM
while [ "$n" -lt 40 ]; do
  n=$((n+1)); echo "LABELFLEET_PROGRESS step $n"; sleep 0.1
done
echo "$n" > "$LABELFLEET_OUTPUT_DIR/count"
"#;

/// Enqueues group `group`'s job `count`, which runs [`COUNTER`] writing its pid to the
/// file returned; returns the `--allow-command` value and that file.
fn enqueue_counter(fleet: &Fleet, group: &str) -> (String, PathBuf) {
    let dir = fleet.jobs_dir("jobs");
    let counter = script(fleet, "counter", COUNTER);
    let pid_file = fleet.dir.path().join("pid");
    write_job(
        &dir,
        "count.json",
        &command_job(
            group,
            "count",
            json!({"program": "counter", "args": [pid_file.to_str().unwrap()]}),
            &[],
        ),
    );
    enqueue(fleet, &dir);
    (allow("counter", &counter), pid_file)
}

/// Waits until [`COUNTER`] has written its pid.
fn wait_for_pid(pid_file: &Path) -> i32 {
    wait_until(Duration::from_secs(30), "the program starts", || {
        std::fs::read_to_string(pid_file).is_ok_and(|p| p.ends_with('\n'))
    });
    std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_stopped_worker_s_program_checkpoints_and_the_next_attempt_resumes() {
    let fleet = Fleet::new();
    let (allowed, pid_file) = enqueue_counter(&fleet, "stop");
    let mut first = fleet.spawn_worker("first", &["--wait", "0.2", "--allow-command", &allowed]);
    wait_for_pid(&pid_file);
    std::thread::sleep(Duration::from_secs(1));
    first.signal("TERM");
    assert!(first.wait(Duration::from_secs(20)).success());
    assert!(
        first.log_text().contains("job saved its progress"),
        "{}",
        first.log_text()
    );
    assert!(fleet.entries("stop").is_empty());
    let mut second = fleet.spawn_worker(
        "second",
        &[
            "--wait",
            "0.2",
            "--idle-exit",
            "2",
            "--allow-command",
            &allowed,
        ],
    );
    assert!(second.wait(Duration::from_secs(60)).success());
    let entries = fleet.entries("stop");
    assert_eq!(entries.len(), 1, "{}", second.log_text());
    let out = fleet.home().join("artifacts/stop/count/output");
    let resumed: u32 = std::fs::read_to_string(out.join("resumed_from"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((1..40).contains(&resumed), "resumed from {resumed}");
    assert_eq!(std::fs::read_to_string(out.join("count")).unwrap(), "40\n");
}

#[test]
fn a_killed_worker_leaves_no_orphan_and_its_job_runs_again() {
    let fleet = Fleet::new();
    let (allowed, pid_file) = enqueue_counter(&fleet, "kill");
    let common = [
        "--wait",
        "0.2",
        "--visibility-timeout",
        "2",
        "--allow-command",
        &allowed,
    ];
    let mut first = fleet.spawn_worker("first", &common);
    let pid = wait_for_pid(&pid_file);
    assert!(pid_alive(pid));
    first.signal("KILL");
    first.wait(Duration::from_secs(10));
    wait_until(Duration::from_secs(5), "the orphan goes", || {
        // A zombie still answers kill(pid, 0) until reaped: read its state.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |s| s.split_whitespace().nth(2) == Some("Z"))
    });
    let mut args = common.to_vec();
    args.extend(["--idle-exit", "3"]);
    let mut second = fleet.spawn_worker("second", &args);
    assert!(second.wait(Duration::from_secs(60)).success());
    let entries = fleet.entries("kill");
    assert_eq!(entries.len(), 1, "{}", second.log_text());
    let out = fleet.home().join("artifacts/kill/count/output");
    assert_eq!(std::fs::read_to_string(out.join("count")).unwrap(), "40\n");
    assert!(
        !out.join("resumed_from").exists(),
        "a kill leaves no checkpoint"
    );
}

#[test]
fn a_bad_allow_list_stops_the_worker_before_it_receives() {
    let fleet = Fleet::new();
    fleet.ok(&["setup"]);
    for (flag, value, says) in [
        ("--allow-command", "train", "expected NAME=PATH"),
        (
            "--allow-command",
            "train=relative/train.py",
            "not an absolute path",
        ),
        ("--pass-env", "A=B", "not an environment variable's name"),
        ("--commands", "/no/such/file", "--commands /no/such/file"),
    ] {
        let out = fleet.run(&["worker", "--once", flag, value]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{stderr}");
        assert!(stderr.contains(flag) && stderr.contains(says), "{stderr}");
    }
}

/// A program's 300 MB output goes to S3 (moto) in parts, read from its file one part
/// at a time, and comes back as the next job's input a chunk at a time: the worker's
/// peak resident memory stays far below the file's size.
#[test]
fn a_large_output_streams_to_s3_in_parts() {
    let fleet = Fleet::on_aws(labelfleet_aws::testing::MotoServer::shared(), 3);
    let dir = fleet.jobs_dir("jobs");
    let big = script(
        &fleet,
        "big",
        "head -c 300000000 /dev/zero > \"$LABELFLEET_OUTPUT_DIR/big.bin\"\n",
    );
    let measure = script(
        &fleet,
        "measure",
        "printf '{\"bytes\": %s}' $(stat -c %s \"$LABELFLEET_INPUT_DIR/big/big.bin\") > \"$LABELFLEET_OUTPUT_DIR/metrics.json\"\n",
    );
    write_job(
        &dir,
        "big.json",
        &command_job("big", "big", json!({"program": "big"}), &[]),
    );
    write_job(
        &dir,
        "measure.json",
        &command_job(
            "big",
            "measure",
            json!({"program": "measure", "inputs": [{"from": "big", "path": "big.bin"}]}),
            &[],
        ),
    );
    enqueue(&fleet, &dir);
    let mut worker = fleet.spawn_worker(
        "w",
        &[
            "--wait",
            "1",
            "--idle-exit",
            "3",
            "--allow-command",
            &allow("big", &big),
            "--allow-command",
            &allow("measure", &measure),
        ],
    );
    assert!(worker.wait(Duration::from_secs(300)).success());
    let entries = fleet.entries("big");
    assert_eq!(entries.len(), 2, "{}", worker.log_text());
    let big = entries.iter().find(|e| e.run_id == "big").unwrap();
    assert_eq!(big.counts["output_bytes"], 300_000_000);
    assert_eq!(big.artifacts["big.bin"], "big/big/output/big.bin");
    let measured = entries.iter().find(|e| e.run_id == "measure").unwrap();
    assert_eq!(measured.metrics["bytes"], 300_000_000);
    let events = worker.events();
    let stopped = find(&events, "worker stopped", None);
    let peak = stopped[0]["fields"]["peak_resident_mib"].as_u64().unwrap();
    eprintln!("worker peak resident memory: {peak} MiB");
    assert!(
        peak < 150,
        "the worker peaked at {peak} MiB for a 286 MiB output and input"
    );
}
