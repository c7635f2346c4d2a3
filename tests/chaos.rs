//! Chaos: short jobs with dependencies (600 on the embedded default, 300 on moto) on 4
//! workers × 2 slots, while a worker is `kill -9`ed and restarted every 2 seconds and
//! another is frozen (SIGSTOP) past its visibility timeout and resumed; on AWS the
//! emulator itself is frozen for 20 seconds in the middle. Exactly one manifest entry per job, nothing dead-lettered, nothing
//! left held or queued.
//!
//! Every kill costs the messages its worker held (and any that moto handed to its long
//! poll as it died) one receive each, and a message that comes back is first in line
//! again: at one kill every 2 seconds the same job can be hit five times. The fleets
//! here dead-letter after 10 receives instead of the default 5, which is there to stop
//! a job that kills every worker that runs it.

mod common;

use std::time::{Duration, Instant};

use common::{Fleet, Worker, block_on, noop, write_job};
use labelfleet_aws::SqsQueue;
use labelfleet_aws::testing::MotoServer;
use labelfleet_core::queue::Queue;

const PER_GROUP: usize = 10;

/// `groups` groups of a seed job and 9 dependents.
fn write_jobs(fleet: &Fleet, groups: usize) -> std::path::PathBuf {
    let dir = fleet.jobs_dir("chaos");
    for g in 0..groups {
        let group = format!("chaos{g:02}");
        write_job(&dir, &format!("{group}/j0.json"), &noop(&group, 150, &[]));
        for j in 1..PER_GROUP {
            write_job(
                &dir,
                &format!("{group}/j{j}.json"),
                &noop(&group, 150, &["j0"]),
            );
        }
    }
    dir
}

/// Jobs recorded so far, from `status`.
fn done(fleet: &Fleet) -> u64 {
    fleet.status()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["done"].as_u64().unwrap())
        .sum()
}

/// Whether the queue holds no message (visible, in flight or delayed): two calls, where
/// `status` reads every group of the manifest and board (on AWS, about 125 calls to an
/// emulator that serves about a hundred a second).
fn drained(queue: &dyn Queue) -> bool {
    block_on(queue.depth()).is_ok_and(|d| d.visible + d.in_flight == 0)
}

/// A tiny deterministic generator, for which worker to kill.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// Runs the fleet through the chaos until every job is recorded; `freeze` is called
/// once, after the first minute (the moto test freezes the emulator there).
fn run_chaos(
    fleet: &Fleet,
    queue: &dyn Queue,
    groups: usize,
    visibility: &str,
    limit: Duration,
    freeze: impl FnOnce(),
) {
    let jobs = groups * PER_GROUP;
    let dir = write_jobs(fleet, groups);
    let out = fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    assert!(out.contains(&format!("validated {jobs} jobs")), "{out}");
    let args = [
        "--max-receives",
        "10",
        "--concurrency",
        "2",
        "--visibility-timeout",
        visibility,
        "--wait",
        "2",
    ];
    let mut generation = [0usize; 4];
    let spawn = |i: usize, generation: usize| -> Worker {
        fleet.spawn_worker(&format!("w{i}-{generation}"), &args)
    };
    let mut workers: Vec<Worker> = (0..4).map(|i| spawn(i, 0)).collect();
    let started = Instant::now();
    let mut rng = Lcg(42);
    let mut kills = 0;
    let mut froze_worker = false;
    let mut freeze = Some(freeze);
    let stop_visibility = Duration::from_secs_f64(visibility.parse::<f64>().unwrap() * 2.0 + 1.0);
    loop {
        if drained(queue) && done(fleet) == jobs as u64 {
            break;
        }
        assert!(
            started.elapsed() < limit,
            "only {} of {jobs} jobs recorded after {limit:?}",
            done(fleet)
        );
        if started.elapsed() > Duration::from_secs(40)
            && let Some(f) = freeze.take()
        {
            f();
        }
        if !froze_worker && started.elapsed() > Duration::from_secs(15) {
            // Worker 3 sleeps past its visibility timeout: its messages go to others.
            froze_worker = true;
            workers[3].signal("STOP");
            std::thread::sleep(stop_visibility);
            workers[3].signal("CONT");
        }
        // kill -9 one of workers 0..=2, and start it again.
        let victim = rng.below(3);
        workers[victim].signal("KILL");
        workers[victim].wait(Duration::from_secs(10));
        generation[victim] += 1;
        workers[victim] = spawn(victim, generation[victim]);
        kills += 1;
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(kills >= 3, "the chaos ran ({kills} kills)");
    for w in &workers {
        w.signal("TERM");
    }
    for w in &mut workers {
        assert!(
            w.wait(Duration::from_secs(60)).success(),
            "{}",
            w.log_text()
        );
    }
    let status = fleet.status();
    for g in status["groups"].as_array().unwrap() {
        assert_eq!(g["done"], PER_GROUP, "{g}");
    }
    let queue = &status["queue"];
    assert_eq!(queue["dead_lettered"], 0, "{status:#}");
    assert_eq!(queue["waiting_on_dependencies"], 0, "{status:#}");
    assert_eq!(queue["visible"], 0, "{status:#}");
    assert_eq!(queue["in_flight"], 0, "{status:#}");
    // One entry per job: each group lists its ten names once.
    for g in 0..groups {
        let group = format!("chaos{g:02}");
        let mut names: Vec<String> = fleet
            .entries(&group)
            .into_iter()
            .map(|e| e.run_id)
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), PER_GROUP, "{group}");
    }
}

#[test]
fn six_hundred_jobs_survive_kills_and_freezes_on_the_embedded_default() {
    let fleet = Fleet::new();
    let queue = fleet.embedded().queue(10).unwrap();
    run_chaos(&fleet, &queue, 60, "3", Duration::from_secs(150), || {});
}

/// The same on moto, with 300 jobs: moto serves about 60 calls a second on a 2-core
/// machine (its FIFO queue scans every message, reading the clock for each, on every
/// send, receive and long-poll wake-up), and a job takes about 12 calls, so 600 jobs
/// took six minutes here.
#[test]
fn three_hundred_jobs_survive_kills_freezes_and_a_20_second_emulator_freeze_on_aws() {
    // Its own server: the freeze must not stall the other tests.
    let server = MotoServer::start();
    let fleet = Fleet::on_aws(&server, 10);
    let name = fleet
        .env
        .iter()
        .find(|(k, _)| k == "LABELFLEET_QUEUE")
        .unwrap()
        .1
        .clone();
    let queue =
        block_on(async { SqsQueue::connect(&server.sdk_config().await, &name, None).await })
            .unwrap();
    run_chaos(&fleet, &queue, 30, "5", Duration::from_secs(400), || {
        server.pause();
        std::thread::sleep(Duration::from_secs(20));
        server.resume();
    });
}
