//! What a dashboard costs a working fleet: `cargo bench --bench serve`.
//!
//! 4 worker processes run 400 no-op jobs of 200 ms each (about 20 s of work, so that
//! a page loaded every second is loaded about 20 times; 400 jobs that do nothing take
//! under a second), timed on the embedded default from the workers' start to the last
//! manifest entry, with no dashboard (the baseline) and
//! with `labelfleet serve` beside them while a client loads the fleet page and the
//! group's page every second (`--cache 1`: the backends are read on every load). The
//! two alternate, `LABELFLEET_BENCH_SERVE_ROUNDS` times each (default 5), and the
//! median of each is compared: the goal is under 5 % more wall time.
//! `LABELFLEET_BENCH_SERVE_JOBS` and `LABELFLEET_BENCH_SERVE_SLEEP_MS` change the job
//! count and length.

mod common;
#[path = "../tests/common/served.rs"]
mod served;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{NoopHome, count, labelfleet, spawn_workers, stop};

/// One GET over plain HTTP/1.0 (the server closes the connection after the body):
/// whether it answered 200.
fn load(port: u16, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    response.starts_with(b"HTTP/1.0 200") || response.starts_with(b"HTTP/1.1 200")
}

/// Runs `jobs` no-op jobs through 4 workers, with a dashboard loaded every second when
/// `dashboard` is set; returns the seconds to the last entry and the pages loaded.
fn scenario(jobs: usize, sleep_ms: usize, dashboard: bool) -> (f64, usize) {
    let home = NoopHome::enqueue(jobs, sleep_ms as u64);
    let mut server: Option<Child> = None;
    let done = Arc::new(AtomicBool::new(false));
    let loaded = Arc::new(AtomicUsize::new(0));
    let mut client = None;
    if dashboard {
        let mut child = labelfleet(
            &home.home,
            &[
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--cache",
                "1",
                "--refresh",
                "1",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        let port = served::served_port(&mut child);
        server = Some(child);
        let (done, loaded) = (done.clone(), loaded.clone());
        client = Some(std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let tick = Instant::now();
                for path in ["/", "/groups/bench"] {
                    if load(port, path) {
                        loaded.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
            }
        }));
    }

    let started = Instant::now();
    let mut workers = spawn_workers(&home.home, 4);
    let elapsed = home.wait_for_all(started);
    done.store(true, Ordering::Relaxed);
    if let Some(client) = client {
        client.join().unwrap();
    }
    workers.extend(server);
    stop(&mut workers);
    (elapsed, loaded.load(Ordering::Relaxed))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn main() {
    let jobs = count("LABELFLEET_BENCH_SERVE_JOBS", 400);
    let rounds = count("LABELFLEET_BENCH_SERVE_ROUNDS", 5).max(1);
    let sleep_ms = count("LABELFLEET_BENCH_SERVE_SLEEP_MS", 200);
    println!(
        "labelfleet serve benchmark: {jobs} no-op jobs of {sleep_ms} ms, 4 workers, embedded default, {} CPUs, {rounds} rounds",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let (mut without, mut with, mut pages) = (Vec::new(), Vec::new(), 0);
    for round in 0..rounds {
        // Alternate which goes first, so that a drift in the machine's load falls on both.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for dashboard in order {
            let (seconds, loaded) = scenario(jobs, sleep_ms, dashboard);
            if dashboard {
                with.push(seconds);
                pages += loaded;
            } else {
                without.push(seconds);
            }
            println!(
                "  round {}: {:<28} {seconds:6.2} s{}",
                round + 1,
                if dashboard {
                    "with serve, loaded each 1 s"
                } else {
                    "without serve"
                },
                if dashboard {
                    format!("  ({loaded} pages loaded)")
                } else {
                    String::new()
                }
            );
        }
    }
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:.2}–{hi:.2}")
    };
    let (base, dash) = (median(&mut without.clone()), median(&mut with.clone()));
    println!("\nwall time to the last manifest entry (median, range over {rounds} rounds)");
    println!("  without serve: {base:6.2} s  ({} s)", range(&without));
    println!(
        "  with serve   : {dash:6.2} s  ({} s), {pages} pages loaded",
        range(&with)
    );
    println!(
        "  overhead: {:+.1} % (goal: under 5 %)",
        (dash / base - 1.0) * 100.0
    );
}
