//! `labelfleet launch`: one worker per GPU (here: per CPU slot), restarted when killed,
//! and a clear stop when the machine has no GPU to give.

mod common;

use std::time::Duration;

use common::{Fleet, wait_until};

#[test]
fn a_killed_worker_is_restarted_and_the_work_gets_done() {
    let fleet = Fleet::new();
    let dir = fleet.jobs_dir("launch");
    for i in 0..6 {
        common::write_job(
            &dir,
            &format!("n{i}.json"),
            &common::noop("launch", 2500, &[]),
        );
    }
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let mut launcher = fleet.spawn(
        "launcher",
        &[
            "launch",
            "--cpu-workers",
            "2",
            "--restart-delay",
            "0.5",
            "--",
            "--wait",
            "1",
            "--idle-exit",
            "4",
            "--visibility-timeout",
            "3",
            "--heartbeat",
            "1",
        ],
    );
    let mut victim = 0u64;
    wait_until(Duration::from_secs(120), "two workers running jobs", || {
        let status = fleet.status();
        let running: Vec<&serde_json::Value> = status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["state"] == "running")
            .collect();
        if running.len() == 2 {
            assert!(running.iter().all(|w| w["device"] == "cpu"), "{running:?}");
            victim = running[0]["pid"].as_u64().unwrap();
        }
        running.len() == 2
    });
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(launcher.wait(Duration::from_secs(180)).success());
    assert_eq!(fleet.entries("launch").len(), 6, "every job done");
    let events = launcher.events();
    let died = common::find(&events, "worker died; restarting it", None);
    assert_eq!(died.len(), 1, "{events:?}");
    assert_eq!(died[0]["fields"]["status"], "signal 9");
    assert_eq!(common::find(&events, "worker restarted", None).len(), 1);
    assert_eq!(
        common::find(&events, "every worker has exited", None).len(),
        1
    );
}

#[test]
fn without_a_gpu_launch_says_so() {
    let fleet = Fleet::new();
    let out = fleet
        .command(&["launch"])
        .env("CUDA_VISIBLE_DEVICES", "")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no GPU is visible") && err.contains("--cpu-workers"),
        "{err}"
    );
}

/// A machine that shows a GPU to a build without CUDA: the worker refuses to start, and
/// the launcher stops with that reason instead of restarting it forever.
#[cfg(not(feature = "cuda"))]
#[test]
fn a_worker_that_cannot_open_its_gpu_stops_the_launch() {
    let fleet = Fleet::new();
    let started = std::time::Instant::now();
    let out = fleet
        .command(&["launch", "--require-gpu", "--", "--idle-exit", "1"])
        .env("CUDA_VISIBLE_DEVICES", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed at start-up"), "{err}");
    assert!(err.contains("no CUDA support"), "{err}");
}
