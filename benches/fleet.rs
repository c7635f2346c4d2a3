//! Fleet throughput on the embedded default, measured against a baseline from the same
//! run: `cargo bench --bench fleet`.
//!
//! 1. No-op jobs per second through the embedded queue with 1 worker process and with
//!    4 worker processes.
//! 2. Scaling for 100 ms jobs: 4 workers versus 1 (the goal is at least 3.6×).
//!
//! Each scenario enqueues its jobs first, then starts the workers and times until the
//! manifest holds every job. Set `LABELFLEET_BENCH_NOOP_JOBS` / `LABELFLEET_BENCH_SLOW_JOBS`
//! to change the job counts.

mod common;

use std::time::Instant;

use common::{NoopHome, count, spawn_workers, stop};

/// Enqueues `jobs` noop jobs of `sleep_ms`, runs `workers` worker processes until all
/// are recorded, and returns the elapsed seconds.
fn scenario(jobs: usize, sleep_ms: u64, workers: usize) -> f64 {
    let home = NoopHome::enqueue(jobs, sleep_ms);
    let started = Instant::now();
    let mut children = spawn_workers(&home.home, workers);
    let elapsed = home.wait_for_all(started);
    stop(&mut children);
    elapsed
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects nothing here.
    let noop_jobs = count("LABELFLEET_BENCH_NOOP_JOBS", 600);
    let slow_jobs = count("LABELFLEET_BENCH_SLOW_JOBS", 48);
    println!(
        "labelfleet fleet benchmark (embedded default, {} CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let one = scenario(noop_jobs, 0, 1);
    let four = scenario(noop_jobs, 0, 4);
    println!(
        "\nno-op jobs through the embedded queue ({noop_jobs} jobs, time to the last manifest entry)"
    );
    println!(
        "  1 worker : {:8.1} jobs/s  ({one:.2} s)",
        noop_jobs as f64 / one
    );
    println!(
        "  4 workers: {:8.1} jobs/s  ({four:.2} s)",
        noop_jobs as f64 / four
    );
    println!("  ratio 4 vs 1: {:.2}x", one / four);

    let slow_one = scenario(slow_jobs, 100, 1);
    let slow_four = scenario(slow_jobs, 100, 4);
    let ratio = slow_one / slow_four;
    println!("\n100 ms jobs ({slow_jobs} jobs)");
    println!(
        "  1 worker : {:8.2} jobs/s  ({slow_one:.2} s)",
        slow_jobs as f64 / slow_one
    );
    println!(
        "  4 workers: {:8.2} jobs/s  ({slow_four:.2} s)",
        slow_jobs as f64 / slow_four
    );
    println!(
        "  scaling 4 vs 1: {ratio:.2}x  (goal >= 3.6x: {})",
        if ratio >= 3.6 { "met" } else { "NOT met" }
    );
}
