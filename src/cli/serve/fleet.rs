//! The fleet page: queue depth, in flight, held, dead letters with their reasons and
//! what they block, and every worker with its job, progress and last heartbeat.

use axum::extract::State as Extract;
use maud::html;
use serde_json::Value;

use super::State;
use super::groups::progress_table;
use super::layout::{Page, bar, job_href, number, shell, text};

/// `/`.
pub async fn page(Extract(state): State) -> Page {
    let fleet = state.snapshots.fleet().await?;
    let q = &fleet["queue"];
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let (workers, dead, blocked, groups) = (
        list(&fleet["workers"]),
        list(&fleet["dead_letters"]),
        list(&fleet["blocked"]),
        list(&fleet["groups"]),
    );
    let done: u64 = groups.iter().filter_map(|g| g["done"].as_u64()).sum();
    let submitted: u64 = groups.iter().filter_map(|g| g["submitted"].as_u64()).sum();
    let job_link = |job: &Value| {
        let job = job.as_str().unwrap_or_default().to_string();
        let href = job
            .split_once('/')
            .map(|(g, n)| job_href(g, n))
            .unwrap_or_default();
        html! { a href=(href) { (job) } }
    };
    let body = html! {
        h1 { "Fleet" }
        p.muted { (text(&q["backend"])) }
        div.cards {
            div.card { b { (number(&q["visible"])) } span { "queued" } }
            div.card { b { (number(&q["in_flight"])) } span { "in flight" } }
            div.card { b { (number(&q["waiting_on_dependencies"])) } span { "held (waiting on dependencies)" } }
            div.card { b.error[q["dead_lettered"].as_u64().unwrap_or(0) > 0] { (number(&q["dead_lettered"])) } span { "dead-lettered" } }
            div.card { b { (done) " / " (submitted) } span { "jobs done / submitted" } }
        }
        h2 { "Workers" }
        @if workers.is_empty() {
            p.muted { "No worker reported in the last 5 minutes: start one with " code { "labelfleet worker" } "." }
        } @else {
            table {
                tr { th { "worker" } th { "host" } th { "device" } th { "state" } th { "job" } th { "progress" } th { "done" } th { "failed" } th { "heartbeat" } }
                @for w in &workers {
                    @let progress = w["progress"].as_str().unwrap_or("");
                    tr {
                        td { (text(&w["worker_id"])) }
                        td { (text(&w["host"])) }
                        td { (text(&w["device"])) }
                        td { span.state.running[w["state"] == "running"] { (text(&w["state"])) } }
                        td { @if w["job"].is_string() { (job_link(&w["job"])) } @else { span.muted { "–" } } }
                        td { (bar(progress)) " " span.muted { (text(&w["progress"])) } }
                        td.num { (number(&w["jobs_done"])) }
                        td.num { (number(&w["jobs_failed"])) }
                        td.num { (number(&w["last_seen_secs_ago"])) " s ago" }
                    }
                    @if let Some(error) = w["last_error"].as_str() {
                        tr { td {} td colspan="8" .error { "last error: " (text(&Value::from(error))) } }
                    }
                }
            }
        }
        h2 { "Groups" }
        (progress_table(&fleet))
        @if !dead.is_empty() {
            h2 { "Dead letters" }
            p.muted { "Fix the cause, then " code { "labelfleet redrive --job GROUP/NAME" } "." }
            table {
                tr { th { "job" } th { "receives" } th { "when" } th { "reason" } }
                @for d in &dead {
                    tr {
                        td { @if d["job"].is_string() { (job_link(&d["job"])) } @else { "message " (text(&d["id"])) } }
                        td.num { (number(&d["receive_count"])) }
                        td { (text(&d["dead_at"])) }
                        td.error { (text(&d["reason"])) }
                    }
                }
            }
        }
        @if !blocked.is_empty() {
            h2 { "Blocked" }
            table {
                tr { th { "held job" } th { "waits on dead-lettered" } }
                @for b in &blocked {
                    tr { td { (job_link(&b["job"])) } td { (job_link(&b["dead_lettered"])) } }
                }
            }
        }
    };
    Ok(shell("Fleet", "Fleet", Some(state.refresh), body))
}
