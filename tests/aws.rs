//! The fleet on AWS — SQS FIFO, DynamoDB, S3 — against a real moto server on
//! 127.0.0.1: the demo end to end, a killed worker, a 30-second backend outage, poison
//! messages, a 1 MB body through S3, and credentials kept out of every output.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::proxy::Proxy;
use common::{
    Fleet, block_on, envelope, find, kill_a_worker_mid_job, noop, send_raw, wait_until, write_job,
};
use labelfleet_aws::testing::MotoServer;
use labelfleet_aws::{AwsTarget, S3ArtifactStore, Spill, SqsQueue, setup};
use labelfleet_core::artifacts::ArtifactStore;
use labelfleet_core::queue::{OutgoingMessage, Queue};
use serde_json::json;

#[test]
fn the_demo_runs_through_sqs_dynamodb_and_s3_with_two_workers() {
    let fleet = Fleet::on_aws(MotoServer::shared(), 3);
    let out = fleet.ok(&["enqueue", "runs/demo", "--allow-dirty"]);
    assert!(
        out.contains("sent 1 job") && out.contains("held 2"),
        "{out}"
    );
    assert_eq!(fleet.status()["queue"]["waiting_on_dependencies"], 2);
    let mut workers: Vec<_> = (0..2)
        .map(|w| fleet.spawn_worker(&format!("w{w}"), &["--idle-exit", "4", "--wait", "1"]))
        .collect();
    for w in &mut workers {
        assert!(w.wait(Duration::from_secs(120)).success());
    }
    let done = fleet.entries("demo");
    assert_eq!(done.len(), 3);
    let last_turn = done.iter().find(|e| e.run_id == "last_turn").unwrap();
    assert!(
        (last_turn.metrics["joint_goal_accuracy"].as_f64().unwrap() - 0.2631578947368421).abs()
            < 1e-12
    );
    assert!(last_turn.artifacts["metrics"].starts_with("demo/last_turn/"));
    let status = fleet.status();
    assert!(
        status["queue"]["backend"]
            .as_str()
            .unwrap()
            .starts_with("SQS queue")
    );
    assert_eq!(status["groups"][0]["done"], 3);
    assert_eq!(status["queue"]["visible"], 0);
    assert_eq!(status["workers"].as_array().unwrap().len(), 2);
    let table = fleet.ok(&["status"]);
    assert!(table.contains("demo") && table.contains("w0"), "{table}");
}

#[test]
fn a_killed_worker_s_job_is_redelivered_by_sqs_and_recorded_once() {
    let fleet = Fleet::on_aws(MotoServer::shared(), 5);
    let entry = kill_a_worker_mid_job(&fleet, 4000, "3", "1", Duration::from_secs(90));
    assert!(entry.attempt >= 2, "redelivered, attempt {}", entry.attempt);
}

#[test]
fn workers_ride_out_a_30_second_backend_outage() {
    // Its own server: the outage must not freeze the other tests.
    let server = MotoServer::start();
    let fleet = Fleet::on_aws(&server, 5);
    let dir = fleet.jobs_dir("outage");
    for i in 0..6 {
        write_job(&dir, &format!("job_{i}.json"), &noop("outage", 1500, &[]));
    }
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let args = ["--wait", "1", "--idle-exit", "10"];
    let mut workers: Vec<_> = (0..2)
        .map(|w| fleet.spawn_worker(&format!("w{w}"), &args))
        .collect();
    wait_until(Duration::from_secs(30), "a job is running", || {
        fleet.is_running("w0") || fleet.is_running("w1")
    });
    server.pause();
    std::thread::sleep(Duration::from_secs(30));
    server.resume();
    let resumed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for w in &mut workers {
        assert!(
            w.wait(Duration::from_secs(180)).success(),
            "a worker died in the outage"
        );
    }
    let done = fleet.entries("outage");
    let mut names: Vec<&str> = done.iter().map(|e| e.run_id.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["job_0", "job_1", "job_2", "job_3", "job_4", "job_5"],
        "nothing lost, nothing twice"
    );
    let status = fleet.status();
    assert_eq!(status["queue"]["dead_lettered"], 0);
    assert_eq!(status["queue"]["visible"], 0);
    // The run spanned the outage: a job was running when it began (checked above), and
    // work went on after it ended.
    assert!(
        done.iter().any(|e| e.completed_at > resumed_at),
        "no job completed after the backend came back"
    );
}

#[test]
fn poison_messages_end_in_the_dead_letter_queue_with_their_reasons() {
    let server = MotoServer::shared();
    let fleet = Fleet::on_aws(server, 2);
    let queue_name = fleet
        .env
        .iter()
        .find(|(k, _)| k == "LABELFLEET_QUEUE")
        .unwrap()
        .1
        .clone();
    let queue = block_on(async {
        let sdk = server.sdk_config().await;
        SqsQueue::connect(&sdk, &queue_name, None).await.unwrap()
    });
    let bodies = [
        ("bad-json", "{not json".to_string()),
        (
            "unknown-kind",
            envelope(json!({"kind": "paint", "name": "p", "group_id": "poison", "paint": {}})),
        ),
        (
            "missing-input",
            envelope(
                json!({"kind": "eval", "name": "m", "group_id": "poison", "eval": {
                "gold": {"path": "/nonexistent/gold.json", "format": "sgd"},
                "predictions": {"baseline": "empty"}}}),
            ),
        ),
        (
            "good",
            envelope(json!({"kind": "noop", "name": "good", "group_id": "poison", "noop": {}})),
        ),
    ];
    send_raw(&queue, &bodies);
    let mut worker = fleet.spawn_worker(
        "w",
        &["--retry-base", "1", "--wait", "1", "--idle-exit", "6"],
    );
    assert!(worker.wait(Duration::from_secs(90)).success());
    let status = fleet.status();
    assert_eq!(status["queue"]["dead_lettered"], 3, "{status:#}");
    let reasons: Vec<String> = status["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("not valid JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("unknown job kind `paint`")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("failed on all 2 attempts")
                && r.contains("cannot read the gold dataset")),
        "{reasons:?}"
    );
    assert_eq!(fleet.entries("poison").len(), 1);
}

#[test]
fn a_one_megabyte_body_round_trips_through_an_s3_pointer() {
    let server = MotoServer::shared();
    block_on(async {
        let sdk = server.sdk_config().await;
        let name = labelfleet_core::conformance::unique("big").to_lowercase();
        let target = AwsTarget::parse(
            &name,
            &format!("dynamodb://{name}"),
            &format!("s3://{name}/p"),
        )
        .unwrap();
        setup(&sdk, &target, 3, 30).await.unwrap();
        let store = Arc::new(S3ArtifactStore::new(&sdk, &target.bucket, &target.prefix));
        let queue = SqsQueue::connect(&sdk, &target.queue, Some(Spill::new(store.clone())))
            .await
            .unwrap();
        let body: String = (0..1_048_576u32)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        queue
            .send(&[OutgoingMessage {
                body: body.clone(),
                dedup_id: "big".into(),
                group: "big".into(),
            }])
            .await
            .unwrap();
        let got = queue
            .receive(1, Duration::from_secs(30), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].body == body, "the body changed on the way");
        assert_eq!(
            store.list("_spill/messages").await.unwrap().len(),
            1,
            "it travelled through S3"
        );
        queue.ack(&got[0].receipt).await.unwrap();
    });
}

#[test]
fn credentials_never_appear_in_logs_results_or_status() {
    let server = MotoServer::shared();
    let mut fleet = Fleet::on_aws(server, 3);
    let secret = "s3cr3t-Do-Not-Print-9f8e7d";
    for (k, v) in fleet.env.iter_mut() {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = secret.to_string();
        }
    }
    let dir = fleet.jobs_dir("creds");
    write_job(&dir, "job.json", &noop("creds", 10, &[]));
    let mut outputs = vec![fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"])];
    let mut worker = fleet.spawn_worker("w", &["--once", "--wait", "2", "--log", "debug"]);
    assert!(worker.wait(Duration::from_secs(60)).success());
    outputs.push(std::fs::read_to_string(&worker.log).unwrap());
    outputs.push(fleet.ok(&["results", "--json"]));
    outputs.push(fleet.ok(&["status", "--json"]));
    assert_eq!(fleet.entries("creds").len(), 1);
    assert!(!find(&worker.events(), "job completed", None).is_empty());
    for out in outputs {
        assert!(!out.contains(secret), "the secret key leaked");
        assert!(
            !out.contains("AWS_SECRET_ACCESS_KEY"),
            "an environment dump leaked"
        );
    }
}

#[test]
fn a_missing_resource_is_named_with_the_command_that_creates_it() {
    let server = MotoServer::shared();
    let mut fleet = Fleet::new();
    fleet.env = server
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    fleet
        .env
        .push(("LABELFLEET_QUEUE".into(), "never-created".into()));
    fleet.env.push((
        "LABELFLEET_MANIFEST".into(),
        "dynamodb://never-created".into(),
    ));
    fleet
        .env
        .push(("LABELFLEET_ARTIFACTS".into(), "s3://never-created/x".into()));
    for command in [&["status"][..], &["worker", "--once"]] {
        let out = fleet.run(command);
        assert!(
            !out.status.success(),
            "{command:?} succeeded without a queue"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("never-created.fifo"),
            "{command:?}: {stderr}"
        );
        assert!(stderr.contains("labelfleet setup"), "{command:?}: {stderr}");
    }
    // No region, then no credentials: say which, before any call is retried.
    let mut lonely = Fleet::new();
    lonely.env.push(("LABELFLEET_QUEUE".into(), "q".into()));
    lonely
        .env
        .push(("LABELFLEET_MANIFEST".into(), "dynamodb://q".into()));
    lonely
        .env
        .push(("LABELFLEET_ARTIFACTS".into(), "s3://qqq/x".into()));
    let bare = |fleet: &Fleet| {
        let mut cmd = fleet.command(&["status"]);
        for var in [
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_PROFILE",
        ] {
            if !fleet.env.iter().any(|(k, _)| k == var) {
                cmd.env_remove(var);
            }
        }
        cmd.env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let stderr = bare(&lonely);
    assert!(
        stderr.contains("no AWS region is configured: set AWS_REGION"),
        "{stderr}"
    );
    lonely.env.push(("AWS_REGION".into(), "us-east-1".into()));
    let stderr = bare(&lonely);
    assert!(stderr.contains("no AWS credentials were found"), "{stderr}");
    // Only some of the three AWS settings: say which are needed.
    let mut partial = Fleet::new();
    partial.env.push(("LABELFLEET_QUEUE".into(), "q".into()));
    let out = partial.run(&["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give all three of --queue"));
}

/// The moto server's `host:port`.
fn address(server: &MotoServer) -> String {
    server.endpoint.trim_start_matches("http://").to_string()
}

/// A value of the fleet's environment.
fn env_of(fleet: &Fleet, name: &str) -> String {
    fleet
        .env
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("{name} is not set"))
        .1
        .clone()
}

/// Hardening item 1: a worker given a misnamed table or bucket refuses to start,
/// naming it and `labelfleet setup`, and receives nothing: the job waits, whole, for a
/// worker with the right settings.
#[test]
fn a_worker_with_a_misnamed_table_or_bucket_refuses_to_start_and_takes_nothing() {
    let fleet = Fleet::on_aws(MotoServer::shared(), 3);
    let dir = fleet.jobs_dir("names");
    write_job(&dir, "job.json", &noop("names", 10, &[]));
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    for (var, wrong, named) in [
        (
            "LABELFLEET_MANIFEST",
            "dynamodb://nosuch-table",
            "nosuch-table",
        ),
        (
            "LABELFLEET_ARTIFACTS",
            "s3://nosuch-bucket/x",
            "nosuch-bucket",
        ),
    ] {
        let out = fleet
            .command(&[
                "worker",
                "--worker-id",
                "wrong",
                "--wait",
                "1",
                "--idle-exit",
                "3",
            ])
            .env(var, wrong)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{var}: {stderr}");
        assert!(
            stderr.contains(named) && stderr.contains("labelfleet setup"),
            "{var}: {stderr}"
        );
        assert!(!stderr.contains("giving the message back"), "{stderr}");
    }
    let mut good = fleet.spawn_worker("good", &["--wait", "1", "--idle-exit", "3"]);
    assert!(good.wait(Duration::from_secs(60)).success());
    let done = fleet.entries("names");
    assert_eq!(done.len(), 1);
    assert_eq!(
        done[0].attempt, 1,
        "no receive was spent on the wrong workers"
    );
    assert_eq!(fleet.status()["queue"]["dead_lettered"], 0);
}

/// Hardening item 1: a table deleted under a running worker is the worker's trouble:
/// it gives the message back once and receives nothing more until the table is back,
/// so the job is not dead-lettered while it waits.
#[test]
fn a_table_deleted_under_a_worker_costs_one_receive_not_the_job() {
    let server = MotoServer::shared();
    let fleet = Fleet::on_aws(server, 3);
    let table = env_of(&fleet, "LABELFLEET_MANIFEST")
        .trim_start_matches("dynamodb://")
        .to_string();
    let queue_name = env_of(&fleet, "LABELFLEET_QUEUE");
    let mut worker = fleet.spawn_worker("w", &["--wait", "1"]);
    wait_until(Duration::from_secs(30), "the worker reports", || {
        fleet.worker_state("w").is_some()
    });
    let queue = block_on(async {
        let sdk = server.sdk_config().await;
        labelfleet_aws::testing::delete_table(&sdk, &table).await;
        SqsQueue::connect(&sdk, &queue_name, None).await.unwrap()
    });
    send_raw(
        &queue,
        &[(
            "deleted",
            envelope(json!({"kind": "noop", "name": "job", "group_id": "deleted", "noop": {}})),
        )],
    );
    // Long enough for three receives at the old give-back pace of one every 5 s.
    std::thread::sleep(Duration::from_secs(25));
    assert_eq!(block_on(queue.depth()).unwrap().dead_lettered, 0);
    fleet.ok(&["setup", "--max-receives", "3"]);
    wait_until(
        Duration::from_secs(90),
        "the job completes once the table is back",
        || {
            fleet
                .run(&["results", "--json", "--group", "deleted"])
                .stdout
                .len()
                > 4
        },
    );
    let done = fleet.entries("deleted");
    assert_eq!(done.len(), 1);
    assert!(done[0].attempt <= 2, "attempt {}", done[0].attempt);
    worker.signal("TERM");
    assert!(worker.wait(Duration::from_secs(30)).success());
    let log = worker.log_text();
    assert!(
        log.contains("receiving nothing more until every backend answers again"),
        "{log}"
    );
    assert!(
        log.contains("every backend answers again; receiving again"),
        "{log}"
    );
}

/// Hardening item 2: with SQS unreachable, `--idle-exit` does not end the worker as
/// idle (status 0, the fleet "done"): it exits with status 75 and the reason, and the
/// job waits in the queue.
#[test]
fn a_worker_that_cannot_reach_sqs_exits_75_instead_of_idling_out() {
    let server = MotoServer::shared();
    let fleet = Fleet::on_aws(server, 3);
    let proxy = Proxy::start(&address(server), true);
    let dir = fleet.jobs_dir("reach");
    write_job(&dir, "first.json", &noop("reach", 10, &[]));
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let mut command = fleet.command(&[
        "worker",
        "--worker-id",
        "w",
        "--wait",
        "1",
        "--idle-exit",
        "3",
    ]);
    command.env("AWS_ENDPOINT_URL", proxy.endpoint());
    let mut worker = fleet.spawn_command("w", command);
    wait_until(
        Duration::from_secs(60),
        "the first job runs through the proxy",
        || fleet.entries("reach").len() == 1,
    );
    proxy.cut();
    write_job(&dir, "second.json", &noop("reach", 10, &[]));
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let status = worker.wait(Duration::from_secs(120));
    let log = worker.log_text();
    assert_eq!(status.code(), Some(75), "{log}");
    assert!(log.contains("longer than --idle-exit"), "{log}");
    // The second job waits on the queue (the first may be back too: the cut can come
    // between its record and its acknowledgement, and a duplicate is acked unrun).
    let queue_name = env_of(&fleet, "LABELFLEET_QUEUE");
    let bodies = block_on(async {
        let queue = SqsQueue::connect(&server.sdk_config().await, &queue_name, None)
            .await
            .unwrap();
        let mut bodies = Vec::new();
        // Messages taken by a long poll under way at the cut return after their
        // visibility timeout (60 s).
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while std::time::Instant::now() < deadline
            && !bodies.iter().any(|b: &String| b.contains("\"second\""))
        {
            for m in queue
                .receive(10, Duration::from_secs(1), Duration::from_secs(2))
                .await
                .unwrap()
            {
                bodies.push(m.body);
            }
        }
        bodies
    });
    assert!(
        bodies.iter().any(|b| b.contains("\"second\"")),
        "the second job is on the queue"
    );
    assert_eq!(fleet.status()["queue"]["dead_lettered"], 0);
    assert_eq!(fleet.entries("reach").len(), 1);
}

/// Hardening item 9: even at `trace`, no log line carries a credential: not the secret
/// key, not the session token, not the access key id or a signature.
#[test]
fn trace_logs_carry_no_credentials() {
    let mut fleet = Fleet::on_aws(MotoServer::shared(), 3);
    let (id, secret, token) = (
        "AKIAREDACTIONTEST001",
        "redaction-secret-key-0123456789",
        "FwoGZXIvYXdzEXAMPLESESSIONTOKEN0123456789",
    );
    for (k, v) in fleet.env.iter_mut() {
        match k.as_str() {
            "AWS_ACCESS_KEY_ID" => *v = id.into(),
            "AWS_SECRET_ACCESS_KEY" => *v = secret.into(),
            _ => {}
        }
    }
    fleet.env.push(("AWS_SESSION_TOKEN".into(), token.into()));
    for json_logs in ["true", "false"] {
        let out = fleet
            .command(&["status"])
            .env("LABELFLEET_LOG", "trace")
            .env("LABELFLEET_LOG_JSON", json_logs)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.len() > 10_000, "trace logging is on");
        assert!(
            stderr.contains("[redacted]"),
            "signed requests were logged and blanked"
        );
        for leak in [id, secret, token] {
            assert!(
                !stderr.contains(leak),
                "{leak} leaked (JSON logs: {json_logs})"
            );
        }
    }
}

/// Hardening item 15 on SQS: a job held behind a dead-lettered job is shown blocked;
/// `redrive` brings the dead job back from the dead-letter queue once fixed.
#[test]
fn a_dead_lettered_job_is_redriven_from_the_dlq_and_its_dependent_runs() {
    let fleet = Fleet::on_aws(MotoServer::shared(), 2);
    let gold = fleet.dir.path().join("gold.json");
    let dir = fleet.jobs_dir("dlq");
    write_job(
        &dir,
        "first.json",
        &json!({"kind": "eval", "group_id": "dlq", "eval": {
            "gold": {"path": gold, "format": "multiwoz21"}, "predictions": {"baseline": "empty"}}}),
    );
    write_job(&dir, "second.json", &noop("dlq", 10, &["first"]));
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let args = ["--retry-base", "0.5", "--wait", "1", "--idle-exit", "3"];
    let mut w = fleet.spawn_worker("w1", &args);
    assert!(w.wait(Duration::from_secs(90)).success());
    let status = fleet.status();
    assert_eq!(status["blocked"][0]["job"], "dlq/second", "{status:#}");
    assert_eq!(status["blocked"][0]["dead_lettered"], "dlq/first");
    std::fs::copy(
        common::repo_root().join("runs/sample-data/multiwoz21_val_sample.json"),
        &gold,
    )
    .unwrap();
    // Right after a listing (status hides nothing: redrive finds the letter at once).
    let sent = fleet.ok(&["redrive", "--group", "dlq"]);
    assert!(sent.contains("sent back 1"), "{sent}");
    let mut w = fleet.spawn_worker("w2", &args);
    assert!(w.wait(Duration::from_secs(90)).success());
    assert_eq!(fleet.entries("dlq").len(), 2);
    let status = fleet.status();
    assert_eq!(status["queue"]["dead_lettered"], 0, "{status:#}");
    assert_eq!(status["blocked"], json!([]));
}

/// Hardening item 17: a fleet launched while its backend is briefly unreachable waits
/// it out instead of giving up.
#[test]
fn launch_rides_out_a_backend_unreachable_at_start() {
    let server = MotoServer::shared();
    let fleet = Fleet::on_aws(server, 3);
    let dir = fleet.jobs_dir("late");
    write_job(&dir, "job.json", &noop("late", 10, &[]));
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let proxy = Proxy::start(&address(server), false);
    let mut command = fleet.command(&[
        "launch",
        "--cpu-workers",
        "1",
        "--",
        "--wait",
        "1",
        "--idle-exit",
        "3",
    ]);
    command.env("AWS_ENDPOINT_URL", proxy.endpoint());
    let mut launch = fleet.spawn_command("launch", command);
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        launch.child.try_wait().unwrap().is_none(),
        "launch gave up: {}",
        launch.log_text()
    );
    proxy.restore();
    assert!(
        launch.wait(Duration::from_secs(120)).success(),
        "{}",
        launch.log_text()
    );
    assert_eq!(fleet.entries("late").len(), 1);
}
