//! The fleet on AWS — SQS FIFO, DynamoDB, S3 — against a real moto server on
//! 127.0.0.1: the demo end to end, a killed worker, a 30-second backend outage, poison
//! messages, a 1 MB body through S3, and credentials kept out of every output.

mod common;

use std::sync::Arc;
use std::time::Duration;

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
