//! Helpers for the end-to-end tests: a temporary fleet home, the `labelfleet` binary,
//! worker processes with their JSON logs, and direct access to the embedded backends.

#![allow(dead_code)]

pub mod proxy;
pub mod served;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use labelfleet_embedded::EmbeddedHome;
use serde_json::Value;

/// A temporary fleet: its home folder and a folder for job files and logs; on the
/// embedded default, or on AWS (a moto server) when built with [`Fleet::on_aws`].
pub struct Fleet {
    pub dir: tempfile::TempDir,
    /// Extra environment for every command (the AWS selection and endpoint).
    pub env: Vec<(String, String)>,
}

impl Fleet {
    pub fn new() -> Fleet {
        Fleet {
            dir: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    /// A fleet on fresh AWS resources (queue, table, bucket) of a moto server, set up
    /// with `labelfleet setup --max-receives <max_receives>`.
    pub fn on_aws(server: &labelfleet_aws::testing::MotoServer, max_receives: u32) -> Fleet {
        let mut fleet = Fleet::new();
        let name = labelfleet_core::conformance::unique("fleet").to_lowercase();
        fleet.env = server
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        fleet.env.push(("LABELFLEET_QUEUE".into(), name.clone()));
        fleet
            .env
            .push(("LABELFLEET_MANIFEST".into(), format!("dynamodb://{name}")));
        fleet
            .env
            .push(("LABELFLEET_ARTIFACTS".into(), format!("s3://{name}/fleet")));
        fleet.ok(&["setup", "--max-receives", &max_receives.to_string()]);
        fleet
    }

    /// The manifest entries of a group, read through `labelfleet results --json`.
    pub fn entries(&self, group: &str) -> Vec<labelfleet_manifest::ManifestEntry> {
        serde_json::from_str(&self.ok(&["results", "--json", "--group", group])).unwrap()
    }

    /// Whether `status` shows worker `worker` running a job.
    pub fn is_running(&self, worker: &str) -> bool {
        self.status()["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["worker_id"] == worker && w["state"] == "running")
    }

    /// Waits until `status` shows worker `worker` running a job.
    pub fn wait_for_running(&self, worker: &str) {
        wait_until(
            Duration::from_secs(30),
            &format!("worker {worker} runs a job"),
            || self.is_running(worker),
        );
    }

    /// `labelfleet status --json`.
    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json", "--dead-letters", "50"])).unwrap()
    }

    /// Whether some worker's progress line in `status` satisfies `check`.
    pub fn shows_progress(&self, check: impl Fn(&str) -> bool) -> bool {
        self.status()["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["progress"].as_str().is_some_and(&check))
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn embedded(&self) -> EmbeddedHome {
        EmbeddedHome::new(&self.home())
    }

    /// A `labelfleet` command against this fleet's home, logging JSON, run from the
    /// repository root (job files name paths relative to it).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_labelfleet"));
        cmd.args(args)
            .current_dir(repo_root())
            .env("LABELFLEET_HOME", self.home())
            .env("LABELFLEET_LOG_JSON", "true")
            // Fetched checkpoints go with the fleet's folder, not the system's
            // temporary directory, where every test run's would stay.
            .env("LABELFLEET_CACHE_DIR", self.dir.path().join("cache"))
            .env_remove("LABELFLEET_CACHE_MAX_GB")
            .env_remove("LABELFLEET_MAX_RECEIVES")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a command to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "labelfleet {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A folder for job files.
    pub fn jobs_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Starts a worker process whose JSON log goes to `logs/<name>.log`.
    pub fn spawn_worker(&self, name: &str, args: &[&str]) -> Worker {
        let mut all = vec!["worker", "--worker-id", name];
        all.extend_from_slice(args);
        self.spawn(name, &all)
    }

    /// Runs `count` workers (`w0`, `w1`, …) with `args` side by side and waits up to
    /// `limit` for each to exit successfully (its log shown if one does not).
    pub fn run_workers(&self, count: usize, args: &[&str], limit: Duration) {
        let mut workers: Vec<Worker> = (0..count)
            .map(|i| self.spawn_worker(&format!("w{i}"), args))
            .collect();
        for worker in &mut workers {
            assert!(worker.wait(limit).success(), "{}", worker.log_text());
        }
    }

    /// Starts `labelfleet ARGS` in the background, its JSON log (stderr) going to
    /// `logs/<name>.log`.
    pub fn spawn(&self, name: &str, all: &[&str]) -> Worker {
        self.spawn_command(name, self.command(all))
    }

    /// Starts a command built with [`Fleet::command`] (and adjusted by the caller) in
    /// the background, its JSON log going to `logs/<name>.log`.
    pub fn spawn_command(&self, name: &str, mut command: Command) -> Worker {
        let logs = self.dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join(format!("{name}.log"));
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Worker { child, log }
    }

    /// The worker's state as `status` shows it (`idle`, `running`, …), if it reported.
    pub fn worker_state(&self, worker: &str) -> Option<String> {
        self.status()["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["worker_id"] == worker)
            .and_then(|w| w["state"].as_str().map(str::to_string))
    }
}

/// A worker process and its log.
pub struct Worker {
    pub child: Child,
    pub log: PathBuf,
}

impl Worker {
    /// The log's JSON events.
    pub fn events(&self) -> Vec<Value> {
        events(&self.log)
    }

    /// Waits for the process to exit; panics after `limit`.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "worker did not exit within {limit:?}; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log's text.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal (`TERM`, `KILL`, …) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads JSON log events from a file, skipping lines that are not JSON.
pub fn events(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Events whose message is `message`, for job `job` (from the span) when given.
pub fn find<'a>(events: &'a [Value], message: &str, job: Option<&str>) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["fields"]["message"] == message)
        .filter(|e| job.is_none_or(|j| e["span"]["job"] == j))
        .collect()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes a job file.
pub fn write_job(dir: &Path, file: &str, job: &Value) {
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec_pretty(job).unwrap()).unwrap();
}

/// A tiny llama (random weights, 2 layers) whose tokenizer was trained on the bundled
/// sample's user turns, in the fleet's folder: a model that labels in milliseconds.
pub fn tiny_llama(fleet: &Fleet) -> PathBuf {
    let texts: Vec<String> = labelfleet_dst::read_dataset(
        &repo_root().join("runs/sample-data/multiwoz21_val_sample.json"),
        labelfleet_dst::Format::Multiwoz21,
    )
    .unwrap()
    .iter()
    .flat_map(|d| d.turns.iter().map(|t| t.user_utterance.clone()))
    .collect();
    let model = fleet.dir.path().join("tiny");
    labelfleet_models::tiny::write_tiny_model(&model, &texts, 2).unwrap();
    model
}

/// Labels `dialogues` sample dialogues (2 turns each) as the self_label job
/// `{group}/job_0` with a tiny llama built here and the MiniLM retriever, through one
/// worker: a real group to export, in seconds.
pub fn label_with_tiny_llama(fleet: &Fleet, group: &str, dialogues: usize) {
    let model = tiny_llama(fleet);
    let dir = fleet.jobs_dir(group);
    write_job(
        &dir,
        "job_0.json",
        &serde_json::json!({
            "kind": "self_label",
            "group_id": group,
            "self_label": {
                "data": {"path": "runs/sample-data/multiwoz21_val_sample.json", "format": "multiwoz21"},
                "dialogues": {"count": dialogues, "max_turns": 2},
                "model": {"path": model},
                "retriever": {"model": {"path": repo_root().join(".models/all-MiniLM-L6-v2")}},
                "generation": {"max_new_tokens": 4}
            }
        }),
    );
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let mut worker = fleet.spawn_worker("labeller", &["--wait", "1", "--idle-exit", "3"]);
    assert!(worker.wait(Duration::from_secs(300)).success());
    assert_eq!(fleet.entries(group).len(), 1);
}

/// Every file under `dir`, by `/`-separated relative path.
pub fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().to_str().unwrap();
                files.insert(relative.replace('\\', "/"), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// The dataset name `upload-dataset` printed (its `NAME → WHERE` line).
pub fn exported_name(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.split_once(" → ").map(|(name, _)| name.trim().to_string()))
        .unwrap_or_else(|| panic!("no `NAME → WHERE` line in:\n{stdout}"))
}

/// A noop job.
pub fn noop(group: &str, sleep_ms: u64, after: &[&str]) -> Value {
    serde_json::json!({"kind": "noop", "group_id": group, "after": after, "noop": {"sleep_ms": sleep_ms}})
}

/// The shared test data folder (`$LABELFLEET_DATA`, or `../shared/data`).
pub fn data_dir() -> PathBuf {
    std::env::var_os("LABELFLEET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data"))
}

/// Polls `check` until it holds; panics with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a future on a small runtime (tests drive the embedded backends directly).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// A labelfleet envelope around a raw job document (no validation, no provenance).
pub fn envelope(job: Value) -> String {
    serde_json::json!({"labelfleet": 1, "job": job}).to_string()
}

/// Sends raw bodies straight to a queue, each `(id, body)` as its own group and
/// deduplication id: how poison reaches a queue without `enqueue`.
pub fn send_raw(queue: &dyn labelfleet_core::queue::Queue, bodies: &[(&str, String)]) {
    let messages: Vec<labelfleet_core::queue::OutgoingMessage> = bodies
        .iter()
        .map(|(id, body)| labelfleet_core::queue::OutgoingMessage {
            body: body.clone(),
            dedup_id: id.to_string(),
            group: id.to_string(),
        })
        .collect();
    block_on(queue.send(&messages)).unwrap();
}

/// The kill -9 scenario, on any backend: a worker is killed while it runs a job of
/// `sleep_ms`, another worker starts, and the job must be recorded once, by the second
/// worker, never by the first. Returns the manifest entry for the caller's own checks.
/// `visibility` and `heartbeat` are the workers' settings; `patience` bounds the rescue.
pub fn kill_a_worker_mid_job(
    fleet: &Fleet,
    sleep_ms: u64,
    visibility: &str,
    heartbeat: &str,
    patience: Duration,
) -> labelfleet_manifest::ManifestEntry {
    let dir = fleet.jobs_dir("kill");
    write_job(&dir, "slow.json", &noop("kill", sleep_ms, &[]));
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let args = [
        "--visibility-timeout",
        visibility,
        "--heartbeat",
        heartbeat,
        "--wait",
        "1",
    ];
    let mut victim = fleet.spawn_worker("victim", &args);
    fleet.wait_for_running("victim");
    victim.signal("KILL");
    victim.wait(Duration::from_secs(5));
    // Idle long enough to see the message come back after its visibility timeout.
    let idle = (visibility.parse::<f64>().unwrap() * 2.0 + 2.0).to_string();
    let mut rescuer = fleet.spawn_worker("rescuer", &[&args[..], &["--idle-exit", &idle]].concat());
    assert!(rescuer.wait(patience).success());
    assert!(find(&victim.events(), "job completed", None).is_empty());
    let mut done = fleet.entries("kill");
    assert_eq!(done.len(), 1, "one manifest entry for the job");
    let entry = done.remove(0);
    assert_eq!(entry.worker, "rescuer");
    entry
}
