//! What the fleet benchmarks share: the binary, an embedded home holding no-op jobs,
//! waiting until the manifest records them all, and stopping worker processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use labelfleet_embedded::{EmbeddedHome, SqliteManifest};
use labelfleet_manifest::Manifest;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_labelfleet");

/// A count from the environment variable `name`, or `default`.
pub fn count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `labelfleet ARGS` on `home`, logging warnings only, its stdout discarded.
pub fn labelfleet(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("LABELFLEET_HOME", home)
        .env("LABELFLEET_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

/// A temporary embedded home with no-op jobs enqueued in group `bench`.
pub struct NoopHome {
    _dir: tempfile::TempDir,
    /// The home folder.
    pub home: PathBuf,
    jobs: u64,
    manifest: SqliteManifest,
    runtime: tokio::runtime::Runtime,
}

impl NoopHome {
    /// Writes `jobs` no-op jobs of `sleep_ms` and enqueues them.
    pub fn enqueue(jobs: usize, sleep_ms: u64) -> NoopHome {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        std::fs::create_dir_all(&runs).unwrap();
        for i in 0..jobs {
            let job = serde_json::json!({"kind": "noop", "group_id": "bench", "noop": {"sleep_ms": sleep_ms}});
            std::fs::write(runs.join(format!("job_{i:05}.json")), job.to_string()).unwrap();
        }
        let home = dir.path().join("home");
        let status = labelfleet(&home, &["enqueue", runs.to_str().unwrap(), "--allow-dirty"])
            .status()
            .unwrap();
        assert!(status.success(), "enqueue failed");
        let manifest = EmbeddedHome::new(&home).manifest().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        NoopHome {
            _dir: dir,
            home,
            jobs: jobs as u64,
            manifest,
            runtime,
        }
    }

    fn recorded(&self) -> u64 {
        self.runtime
            .block_on(self.manifest.groups())
            .unwrap()
            .iter()
            .map(|g| g.entries)
            .sum()
    }

    /// Waits until the manifest holds every job; the seconds since `started`.
    pub fn wait_for_all(&self, started: Instant) -> f64 {
        while self.recorded() < self.jobs {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "the benchmark stalled"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        started.elapsed().as_secs_f64()
    }
}

/// Starts `count` worker processes on `home` (`bench-0`, …), their logs discarded.
pub fn spawn_workers(home: &Path, count: usize) -> Vec<Child> {
    (0..count)
        .map(|w| {
            labelfleet(
                home,
                &[
                    "worker",
                    "--wait",
                    "1",
                    "--worker-id",
                    &format!("bench-{w}"),
                ],
            )
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
        })
        .collect()
}

/// Sends SIGTERM to every process, then waits for each.
pub fn stop(children: &mut [Child]) {
    for child in children.iter() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
    }
    for child in children.iter_mut() {
        let _ = child.wait();
    }
}
