//! Jobs through SQS on the moto emulator: our worker against the seed pipeline's poller
//! in the same run: `cargo bench --bench sqs`.
//!
//! The emulator is CPU-bound (about 300 API calls/s on a 2-core machine), so API calls
//! per job decide throughput. For each contender, N no-op jobs are sent and consumed:
//!
//! - the baseline (`scripts/bench/seed_poller.py`, boto3): one `SendMessage` per job,
//!   then receive 1, delete, run, until a receive comes back empty;
//! - labelfleet: `enqueue` (batches of 10), then one worker with 10 job slots (receives
//!   up to its free slots, deletes in batches), and again with 1 slot.
//!
//! Printed: jobs/s while consuming, SQS calls per job (sending and consuming), and the
//! ratios against the baseline. Our worker also writes every job's manifest entry to
//! DynamoDB on the same emulator; the baseline records nothing.
//! `LABELFLEET_BENCH_SQS_JOBS` sets N (default 400).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use labelfleet_aws::testing::MotoServer;
use labelfleet_aws::{AwsTarget, SqsQueue, setup};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_labelfleet");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fresh_target(server: &MotoServer, runtime: &tokio::runtime::Runtime) -> (AwsTarget, String) {
    let name = labelfleet_core::conformance::unique("bench").to_lowercase();
    let target = AwsTarget::parse(
        &name,
        &format!("dynamodb://{name}"),
        &format!("s3://{name}/bench"),
    )
    .unwrap();
    let url = runtime.block_on(async {
        let sdk = server.sdk_config().await;
        setup(&sdk, &target, 5, 60).await.unwrap();
        SqsQueue::connect(&sdk, &target.queue, None)
            .await
            .unwrap()
            .url()
            .to_string()
    });
    (target, url)
}

fn json_events(stderr: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn event<'a>(events: &'a [Value], message: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["fields"]["message"] == message)
        .collect()
}

fn seconds_between(from: &Value, to: &Value) -> f64 {
    let t =
        |e: &Value| chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
    (t(to) - t(from)).num_microseconds().unwrap() as f64 / 1e6
}

struct Figures {
    jobs_per_second: f64,
    send_calls: f64,
    consume_calls: f64,
}

fn baseline(server: &MotoServer, runtime: &tokio::runtime::Runtime, jobs: usize) -> Figures {
    let (_, url) = fresh_target(server, runtime);
    let out = Command::new(repo().join(".venv/bin/python"))
        .arg(repo().join("scripts/bench/seed_poller.py"))
        .arg(&url)
        .arg(jobs.to_string())
        .envs(server.env())
        .output()
        .expect("run scripts/test.sh first: it installs the Python environment with boto3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["jobs"], jobs);
    Figures {
        jobs_per_second: jobs as f64 / r["seconds"].as_f64().unwrap(),
        send_calls: r["send_calls"].as_f64().unwrap() / jobs as f64,
        consume_calls: r["consume_calls"].as_f64().unwrap() / jobs as f64,
    }
}

fn labelfleet(
    server: &MotoServer,
    runtime: &tokio::runtime::Runtime,
    jobs: usize,
    slots: usize,
) -> Figures {
    let (target, _) = fresh_target(server, runtime);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..jobs {
        let job = serde_json::json!({"kind": "noop", "group_id": "bench", "noop": {}});
        std::fs::write(dir.path().join(format!("job_{i:05}.json")), job.to_string()).unwrap();
    }
    let command = |args: &[&str], dir: &Path| {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(dir)
            .envs(server.env())
            .env("LABELFLEET_QUEUE", &target.queue)
            .env(
                "LABELFLEET_MANIFEST",
                format!("dynamodb://{}", target.table),
            )
            .env(
                "LABELFLEET_ARTIFACTS",
                format!("s3://{}/{}", target.bucket, target.prefix),
            )
            .env("LABELFLEET_LOG_JSON", "true")
            .stdin(Stdio::null());
        cmd
    };
    let enqueue = command(
        &["enqueue", dir.path().to_str().unwrap(), "--allow-dirty"],
        dir.path(),
    )
    .output()
    .unwrap();
    assert!(
        enqueue.status.success(),
        "{}",
        String::from_utf8_lossy(&enqueue.stderr)
    );
    let enqueued = json_events(&enqueue.stderr);
    let send_calls = event(&enqueued, "enqueue finished")[0]["fields"]["queue_calls"]
        .as_f64()
        .unwrap();
    let worker = command(
        &[
            "worker",
            "--concurrency",
            &slots.to_string(),
            "--wait",
            "1",
            "--idle-exit",
            "1",
            "--worker-id",
            "bench",
        ],
        dir.path(),
    )
    .output()
    .unwrap();
    assert!(
        worker.status.success(),
        "{}",
        String::from_utf8_lossy(&worker.stderr)
    );
    let events = json_events(&worker.stderr);
    let completed = event(&events, "job completed");
    assert_eq!(completed.len(), jobs, "every job completed once");
    let started = event(&events, "worker started")[0];
    let stopped = event(&events, "worker stopped")[0];
    Figures {
        jobs_per_second: jobs as f64 / seconds_between(started, completed[completed.len() - 1]),
        send_calls: send_calls / jobs as f64,
        consume_calls: stopped["fields"]["queue_calls"].as_f64().unwrap() / jobs as f64,
    }
}

fn main() {
    let jobs: usize = std::env::var("LABELFLEET_BENCH_SQS_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let server = MotoServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "no-op jobs through SQS FIFO on the moto emulator ({jobs} jobs each; one moto server, CPU-bound)"
    );
    let base = baseline(&server, &runtime, jobs);
    let ten = labelfleet(&server, &runtime, jobs, 10);
    let one = labelfleet(&server, &runtime, jobs, 1);
    println!(
        "\n  {:<36} {:>8} {:>12} {:>12} {:>10} {:>9}",
        "contender", "jobs/s", "send/job", "consume/job", "calls/job", "vs seed"
    );
    for (name, f) in [
        ("seed poller (boto3: receive 1, delete)", &base),
        ("labelfleet worker, 10 slots", &ten),
        ("labelfleet worker, 1 slot", &one),
    ] {
        println!(
            "  {:<36} {:>8.1} {:>12.2} {:>12.2} {:>10.2} {:>8.2}x",
            name,
            f.jobs_per_second,
            f.send_calls,
            f.consume_calls,
            f.send_calls + f.consume_calls,
            f.jobs_per_second / base.jobs_per_second
        );
    }
    let calls = ten.send_calls + ten.consume_calls;
    let ratio = ten.jobs_per_second / base.jobs_per_second;
    println!(
        "\n  goals with 10 slots: <= 0.4 SQS calls per job: {:.2} ({}); >= 3x the seed's jobs/s: {:.2}x ({})",
        calls,
        if calls <= 0.4 { "met" } else { "NOT met" },
        ratio,
        if ratio >= 3.0 { "met" } else { "NOT met" }
    );
}
