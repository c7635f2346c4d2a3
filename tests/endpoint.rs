//! A causal LM behind an OpenAI-compatible endpoint, against a stub server written
//! here (the retry path, the key's handling, token counts and cost) and against
//! llama.cpp's real server (`tests/endpoint_llama_cpp.rs`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Fleet, write_job};
use labelfleet_core::queue::Queue;
use serde_json::{Value, json};

const KEY: &str = "sk-test-0123456789-SECRET";

/// One request the stub saw: its header lines and its body.
#[derive(Debug, Clone)]
struct Seen {
    headers: Vec<String>,
    body: String,
}

/// What the stub answers the n-th request (from 0): a status, extra headers, a body.
type Script = Box<dyn Fn(usize) -> (u16, Vec<String>, String) + Send>;

/// A minimal HTTP/1.1 server on 127.0.0.1: one request per connection.
fn stub(script: Script) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end().to_string();
                if line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                headers.push(line);
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let n = {
                let mut seen = record.lock().unwrap();
                seen.push(Seen {
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                seen.len() - 1
            };
            let (status, extra, body) = script(n);
            let mut response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for h in extra {
                response.push_str(&format!("{h}\r\n"));
            }
            response.push_str("\r\n");
            response.push_str(&body);
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (url, seen)
}

fn completion(text: &str) -> String {
    json!({
        "id": "cmpl-1", "object": "text_completion", "model": "stub",
        "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105}
    })
    .to_string()
}

fn label_job(name: &str, url: &str, dialogues: usize) -> Value {
    json!({
        "kind": "self_label", "group_id": "endpoint", "name": name,
        "self_label": {
            "data": {"path": "runs/sample-data/multiwoz21_val_sample.json", "format": "multiwoz21"},
            "dialogues": {"count": dialogues, "max_turns": 2},
            "prompt": "compact",
            "model": {"endpoint": url, "name": "smol", "api_key_env": "LABELFLEET_TEST_KEY",
                      "max_concurrency": 4,
                      "price_per_million": {"prompt": 0.5, "completion": 2.0}},
            "generation": {"max_new_tokens": 8}
        }
    })
}

/// Every file under `dir`, as bytes, with its path.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The stub answers 429 (with `Retry-After`), then 500, then succeeds: the job
/// completes with every turn labelled, the tokens counted and the cost reported; the
/// key went out only as the `Authorization` header, and is in no log, artifact,
/// database or `status`.
#[test]
fn an_endpoint_model_retries_counts_tokens_and_keeps_its_key_to_the_header() {
    let (url, seen) = stub(Box::new(|n| match n {
        0 => (
            429,
            vec!["retry-after: 1".into()],
            r#"{"error": "slow down"}"#.into(),
        ),
        1 => (500, vec![], r#"{"error": "overloaded"}"#.into()),
        _ => (200, vec![], completion(" []")),
    }));
    let mut fleet = Fleet::new();
    fleet.env.push(("LABELFLEET_TEST_KEY".into(), KEY.into()));
    let dir = fleet.jobs_dir("jobs");
    write_job(&dir, "label.json", &label_job("label", &url, 2));
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let mut worker = fleet.spawn_worker("w", &["--wait", "0.5", "--idle-exit", "3"]);
    assert!(
        worker.wait(Duration::from_secs(120)).success(),
        "{}",
        worker.log_text()
    );
    let entries = fleet.entries("endpoint");
    assert_eq!(entries.len(), 1, "{}", worker.log_text());
    let entry = &entries[0];
    assert_eq!(entry.counts["turns"], 4);
    assert_eq!(entry.metrics["prompt_tokens"], 400);
    assert_eq!(entry.metrics["new_tokens"], 20);
    let cost = entry.metrics["cost"].as_f64().unwrap();
    assert!(
        (cost - (400.0 * 0.5 + 20.0 * 2.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 6, "4 turns, one 429 and one 500 retried");
    assert_eq!(
        entry.counts["endpoint_retries"], 2,
        "the entry counts the retries"
    );
    for request in &seen {
        let auth: Vec<&String> = request
            .headers
            .iter()
            .filter(|h| h.to_ascii_lowercase().starts_with("authorization:"))
            .collect();
        assert_eq!(auth.len(), 1);
        assert_eq!(
            auth[0].split_once(':').unwrap().1.trim(),
            format!("Bearer {KEY}")
        );
        let elsewhere = request
            .headers
            .iter()
            .filter(|h| !h.to_ascii_lowercase().starts_with("authorization:"))
            .any(|h| h.contains(KEY));
        assert!(!elsewhere && !request.body.contains(KEY));
        let body: Value = serde_json::from_str(&request.body).unwrap();
        assert_eq!(body["model"], "smol");
        assert_eq!(body["max_tokens"], 8);
        assert_eq!(body["temperature"], 0.0);
        assert!(
            body["prompt"].as_str().unwrap().contains("User:"),
            "{}",
            body["prompt"]
        );
    }
    let log = worker.log_text();
    assert!(log.contains("retrying"), "the retries are logged");
    assert!(!log.contains(KEY), "the key is in the worker's log");
    let status = fleet.ok(&["status", "--json"]);
    assert!(!status.contains(KEY));
    for (path, bytes) in files(&fleet.home()) {
        assert!(!contains(&bytes, KEY), "the key is in {}", path.display());
    }
}

/// An endpoint that keeps failing fails the job with its own message (never the key),
/// after the retries; one that refuses the request (401) fails it at once, for good.
#[test]
fn an_endpoint_that_keeps_failing_or_refuses_fails_the_job_with_its_message() {
    let (failing, _) = stub(Box::new(|_| {
        (
            503,
            vec![],
            r#"{"error": "model overloaded, try later"}"#.into(),
        )
    }));
    let (refusing, _) = stub(Box::new(|_| {
        (401, vec![], r#"{"error": "invalid api key"}"#.into())
    }));
    let mut fleet = Fleet::new();
    fleet.env.push(("LABELFLEET_TEST_KEY".into(), KEY.into()));
    let dir = fleet.jobs_dir("jobs");
    write_job(&dir, "failing.json", &label_job("failing", &failing, 1));
    write_job(&dir, "refused.json", &label_job("refused", &refusing, 1));
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let mut worker = fleet.spawn_worker(
        "w",
        &["--wait", "0.5", "--idle-exit", "3", "--max-receives", "1"],
    );
    assert!(
        worker.wait(Duration::from_secs(180)).success(),
        "{}",
        worker.log_text()
    );
    assert!(fleet.entries("endpoint").is_empty());
    let dead = common::block_on(fleet.embedded().queue(1).unwrap().dead_letters(10)).unwrap();
    assert_eq!(dead.len(), 2);
    let reason = |job: &str| {
        dead.iter()
            .find(|d| d.reason.contains(&format!("endpoint/{job}")) || d.body.contains(job))
            .map(|d| d.reason.clone())
            .unwrap()
    };
    let failed = reason("failing");
    assert!(
        failed.contains("failed 6 times") && failed.contains("model overloaded, try later"),
        "{failed}"
    );
    let refused = reason("refused");
    assert!(
        refused.contains("refused the request: HTTP 401") && refused.contains("invalid api key"),
        "{refused}"
    );
    for r in [&failed, &refused] {
        assert!(!r.contains(KEY));
    }
    assert!(!worker.log_text().contains(KEY));
}
