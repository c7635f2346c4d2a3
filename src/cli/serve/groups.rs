//! The groups list, a group's jobs, a job's page (config, provenance, artifacts,
//! attempts) and artifact downloads, which cannot leave the job's own prefix.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, State as Extract};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use labelfleet_core::artifacts::ArtifactKey;
use labelfleet_core::board::BoardState;
use labelfleet_core::job::{JobKey, is_valid_id};
use labelfleet_manifest::ManifestEntry;
use maud::{Markup, html};
use serde_json::Value;

use super::State;
use super::layout::{Page, PageError, bar, duration, encode, job_href, number, shell, text};
use crate::cli::redact::redact;

/// Metrics shown as a group's columns when any of its jobs has them, in this order.
const KEY_METRICS: [(&str, &str); 9] = [
    ("joint_goal_accuracy", "JGA"),
    ("turn_accuracy", "turn acc"),
    ("slot_f1", "slot F1"),
    ("train_loss", "train loss"),
    ("valid_loss", "valid loss"),
    ("loss", "loss"),
    ("tokens_per_second", "tok/s"),
    ("turns_per_second", "turns/s"),
    ("best_value", "best"),
];

/// A group or job name from the path, valid as enqueue requires: one segment that
/// cannot be `.` or `..`.
pub fn name(segment: &str, what: &str) -> Result<String, PageError> {
    is_valid_id(segment)
        .then(|| segment.to_string())
        .ok_or_else(|| PageError::bad_request(format!("`{segment}` is not a {what} name")))
}

/// The item of the fleet snapshot's `list` (`dead_letters`, `workers`) about job `key`.
fn listed<'a>(fleet: &'a Value, list: &str, key: &str) -> Option<&'a Value> {
    fleet[list]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["job"].as_str() == Some(key))
}

/// A job's state as its group shows it.
fn state_of(
    key: &str,
    entry: Option<&ManifestEntry>,
    board: Option<BoardState>,
    fleet: &Value,
) -> &'static str {
    if entry.is_some() {
        "done"
    } else if listed(fleet, "dead_letters", key).is_some() {
        "dead"
    } else if listed(fleet, "workers", key).is_some() {
        "running"
    } else if board == Some(BoardState::Held) {
        "held"
    } else if board.is_some() {
        "queued"
    } else {
        "unknown"
    }
}

fn state_badge(state: &str) -> Markup {
    html! { span.state.(state) { (state) } }
}

/// Every group's progress as the fleet snapshot counts it (the fleet page and
/// `/groups` both show it), each linked to its page and its runs.
pub fn progress_table(fleet: &Value) -> Markup {
    let groups = fleet["groups"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    html! {
        @if groups.is_empty() {
            p.muted { "No jobs yet: " code { "labelfleet enqueue runs/<folder>" } "." }
        } @else {
            table {
                tr { th { "group" } th { "done" } th { "submitted" } th { "held" } th {} th {} }
                @for g in groups {
                    @let name = g["group_id"].as_str().unwrap_or_default();
                    @let (d, s) = (g["done"].as_u64().unwrap_or(0), g["submitted"].as_u64().unwrap_or(0));
                    tr {
                        td { a href=(format!("/groups/{}", encode(name))) { (name) } }
                        td.num { (d) } td.num { (s) } td.num { (number(&g["waiting_on_dependencies"])) }
                        td { (bar(&format!("{d}/{s}"))) }
                        td { a href=(format!("/runs?group={}", encode(name))) { "runs" } }
                    }
                }
            }
        }
    }
}

/// `/groups`.
pub async fn list(Extract(state): State) -> Page {
    let fleet = state.snapshots.fleet().await?;
    let body = html! {
        h1 { "Groups" }
        (progress_table(&fleet))
    };
    Ok(shell("Groups", "Groups", None, body))
}

/// `/groups/{group}`.
pub async fn group(Extract(state): State, Path(group): Path<String>) -> Page {
    let group = name(&group, "group")?;
    let (view, fleet) = (
        state.snapshots.group(&group).await?,
        state.snapshots.fleet().await?,
    );
    if view.jobs.is_empty() && view.entries.is_empty() {
        return Err(PageError::not_found(format!(
            "there is no group `{group}`: the Groups page lists them"
        )));
    }
    let entries: BTreeMap<&str, &ManifestEntry> = view
        .entries
        .iter()
        .map(|e| (e.run_id.as_str(), e))
        .collect();
    let mut names: Vec<&str> = view.jobs.iter().map(|j| j.name.as_str()).collect();
    names.extend(entries.keys());
    names.sort_unstable();
    names.dedup();
    let board: BTreeMap<&str, BoardState> = view
        .jobs
        .iter()
        .map(|j| (j.name.as_str(), j.state))
        .collect();
    let columns: Vec<(&str, &str)> = KEY_METRICS
        .into_iter()
        .filter(|(m, _)| {
            view.entries
                .iter()
                .any(|e| e.metrics.get(m).is_some_and(|v| !v.is_null()))
        })
        .collect();
    let labelled = |e: &ManifestEntry| e.artifacts.contains_key("labels");
    let body = html! {
        h1 { "Group " (group) }
        p { a href=(format!("/runs?group={}", encode(&group))) { "loss curves and sweeps of this group" } }
        table {
            tr {
                th { "job" } th { "kind" } th { "state" } th { "attempt" } th { "duration" }
                @for (_, h) in &columns { th { (h) } }
                th { "completed" } th {}
            }
            @for n in &names {
                @let entry = entries.get(n).copied();
                @let key = format!("{group}/{n}");
                tr {
                    td { a href=(job_href(&group, n)) { (n) } }
                    td { (entry.map_or("–", |e| e.kind.as_str())) }
                    td { (state_badge(state_of(&key, entry, board.get(n).copied(), &fleet))) }
                    td.num { (entry.map_or("–".to_string(), |e| e.attempt.to_string())) }
                    td.num { (entry.and_then(|e| e.metrics.get("seconds")?.as_f64()).map_or("–".to_string(), duration)) }
                    @for (m, _) in &columns {
                        td.num { (entry.and_then(|e| e.metrics.get(*m)).map_or("–".to_string(), number)) }
                    }
                    td.muted { (entry.map_or("", |e| e.completed_at.as_str())) }
                    td { @if entry.is_some_and(labelled) { a href=(format!("{}/labels", job_href(&group, n))) { "labels" } } }
                }
            }
        }
    };
    Ok(shell(&format!("Group {group}"), "Groups", None, body))
}

/// A JSON value as indented text, credentials blanked.
fn pretty(v: &Value) -> String {
    redact(&serde_json::to_string_pretty(v).unwrap_or_default())
}

/// `/groups/{group}/jobs/{name}`.
pub async fn job(Extract(state): State, Path((group, job)): Path<(String, String)>) -> Page {
    let (group, job) = (name(&group, "group")?, name(&job, "job")?);
    let key = JobKey {
        group_id: group.clone(),
        name: job.clone(),
    };
    let (view, fleet) = (
        state.snapshots.job(&key).await?,
        state.snapshots.fleet().await?,
    );
    let entry = view.entry.as_ref();
    if entry.is_none() && view.registration.is_none() && view.files.is_empty() {
        return Err(PageError::not_found(format!(
            "there is no job `{key}`: its group's page lists its jobs"
        )));
    }
    let key_text = key.to_string();
    let job_state = state_of(
        &key_text,
        entry,
        view.registration.as_ref().map(|r| r.state),
        &fleet,
    );
    // From the entry once the job finished, else from its message.
    let provenance = entry
        .and_then(|e| e.provenance.as_ref())
        .or_else(|| view.job.as_ref()?.provenance.as_ref());
    let dead_reason = listed(&fleet, "dead_letters", &key_text).map(|d| text(&d["reason"]));
    let progress = listed(&fleet, "workers", &key_text).map(|w| {
        (
            text(&w["worker_id"]),
            w["progress"].as_str().unwrap_or("").to_string(),
        )
    });
    let prefix = format!("{group}/{job}/");
    let roles: BTreeMap<&str, &str> = entry
        .map(|e| {
            e.artifacts
                .iter()
                .map(|(r, k)| (k.as_str(), r.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let has_labels = view.labels_key().is_some();
    let after: Vec<String> = view
        .registration
        .as_ref()
        .map(|r| r.after.iter().map(|d| d.token()).collect())
        .unwrap_or_default();
    let body = html! {
        h1 { "Job " a href=(format!("/groups/{}", encode(&group))) { (group) } " / " (job) " " (state_badge(job_state)) }
        @if let Some(reason) = &dead_reason {
            p.error { "Dead-lettered: " (reason) }
            p.muted { "Fix the cause, then " code { "labelfleet redrive --job " (key) } "." }
        }
        @if let Some((worker, progress)) = &progress {
            p { "Running on " b { (worker) } ": " (bar(progress)) " " (redact(progress)) }
        }
        @if has_labels {
            p { a href=(format!("{}/labels", job_href(&group, &job))) { "browse its labels, turn by turn" } }
        }
        @if let Some(e) = entry {
            h2 { "Result" }
            table {
                tr { th { "kind" } td { (e.kind) } }
                tr { th { "worker" } td { (e.worker) } }
                tr { th { "attempt" } td { (e.attempt) } }
                tr { th { "completed" } td { (e.completed_at) } }
                @for (k, v) in &e.counts { tr { th { (k) } td.num { (v) } } }
            }
            @if let Some(metrics) = e.metrics.as_object().filter(|m| !m.is_empty()) {
                h2 { "Metrics" }
                table {
                    @for (k, v) in metrics {
                        tr { th { (k) } td.num { @if v.is_object() || v.is_array() { pre { (pretty(v)) } } @else { (number(v)) } } }
                    }
                }
            }
        }
        h2 { "Attempts" }
        @if view.attempts.is_empty() && entry.is_none() {
            p.muted { "No attempt has ended yet." }
        } @else {
            table {
                tr { th { "attempt" } th { "worker" } th { "at" } th { "outcome" } th { "then" } th { "error" } }
                @for a in &view.attempts {
                    tr {
                        td.num { (number(&a["attempt"])) } td { (text(&a["worker"])) } td { (text(&a["at"])) }
                        td.error { (text(&a["outcome"])) } td { (text(&a["then"])) } td.error { (text(&a["error"])) }
                    }
                }
                @if let Some(e) = entry {
                    tr { td.num { (e.attempt) } td { (e.worker) } td { (e.completed_at) } td.ok { "done" } td { "recorded" } td {} }
                }
            }
        }
        @if !view.history.is_empty() {
            h2 { "Earlier runs (superseded by a rerun)" }
            table {
                tr { th { "completed" } th { "worker" } th { "attempt" } th { "JGA" } th { "loss" } }
                @for h in &view.history {
                    tr {
                        td { (h.completed_at) } td { (h.worker) } td.num { (h.attempt) }
                        td.num { (h.metrics.get("joint_goal_accuracy").map_or("–".into(), number)) }
                        td.num { (h.metrics.get("loss").map_or("–".into(), number)) }
                    }
                }
            }
        }
        h2 { "Artifacts" }
        @if view.files.is_empty() {
            p.muted { "None yet." }
        } @else {
            table {
                tr { th { "file" } th { "role" } }
                @for f in &view.files {
                    @let file = f.as_str().strip_prefix(&prefix).unwrap_or(f.as_str());
                    tr {
                        td { a href=(format!("{}/artifacts/{}", job_href(&group, &job), file)) { (file) } }
                        td.muted { (roles.get(f.as_str()).copied().unwrap_or("")) }
                    }
                }
            }
        }
        h2 { "Provenance" }
        @if let Some(p) = &provenance {
            table {
                tr { th { "source file" } td { (p.source_file) } }
                tr { th { "git commit" } td { (p.git_commit.as_deref().unwrap_or("–")) } }
                tr { th { "dirty" } td { (if p.git_dirty { "yes: uncommitted changes" } else { "no" }) } }
                tr { th { "reproducible" } td { (if p.reproducible { "yes" } else { "no" }) } }
                tr { th { "overrides" } td { @if p.overrides.is_empty() { "none" } @else { code { (redact(&p.overrides.join(" "))) } } } }
                tr { th { "enqueued" } td { (p.enqueued_at) @if let Some(by) = &p.enqueued_by { " by " (by) } } }
                tr { th { "labelfleet" } td { (p.labelfleet_version) } }
                @if p.rerun > 0 { tr { th { "rerun" } td { (p.rerun) } } }
                @if !after.is_empty() { tr { th { "after" } td { (after.join(", ")) } } }
            }
            h2 { "Config" }
            pre { (pretty(&p.config)) }
        } @else {
            p.muted { "Not recorded." }
        }
    };
    Ok(shell(&format!("{key}"), "Groups", None, body))
}

/// How a download is served: text inline as plain text, anything else as a file to
/// save, so that no artifact (an SVG, an HTML report) runs as part of this site.
fn content_type(file: &str) -> (&'static str, bool) {
    let text = [
        ".json", ".jsonl", ".txt", ".log", ".csv", ".tsv", ".md", ".yaml", ".yml",
    ];
    if text.iter().any(|ext| file.ends_with(ext)) {
        ("text/plain; charset=utf-8", true)
    } else {
        ("application/octet-stream", false)
    }
}

/// `/groups/{group}/jobs/{name}/artifacts/{*file}`: a file under the job's own prefix,
/// streamed from the store.
pub async fn artifact(
    Extract(state): State,
    Path((group, job, file)): Path<(String, String, String)>,
) -> Result<Response, PageError> {
    let (group, job) = (name(&group, "group")?, name(&job, "job")?);
    // A validated key has no `.`, `..` or empty segment, so it stays under the prefix.
    let key = ArtifactKey::new(&format!("{group}/{job}/{file}"))
        .map_err(|_| PageError::bad_request(format!("`{file}` is not an artifact path")))?;
    let temp = tempfile::NamedTempFile::new()
        .map_err(|e| anyhow::anyhow!("creating a temporary file: {e}"))?;
    let found = state
        .snapshots
        .backends()
        .artifacts
        .get_file(&key, temp.path())
        .await
        .map_err(anyhow::Error::from)?;
    if !found {
        return Err(PageError::not_found(format!(
            "job {group}/{job} has no artifact `{file}`"
        )));
    }
    // The open file outlives its name: the stream reads it after the path is gone.
    let opened = tokio::fs::File::open(temp.path())
        .await
        .map_err(|e| anyhow::anyhow!("reading the downloaded artifact: {e}"))?;
    let length = opened.metadata().await.map(|m| m.len()).ok();
    drop(temp);
    let (kind, inline) = content_type(&file);
    let mut response = Body::from_stream(tokio_util::io::ReaderStream::new(opened)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    if !inline {
        let base = file.rsplit('/').next().unwrap_or("artifact");
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{base}\"")) {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_path_are_single_plain_segments() {
        assert!(name("labels-demo", "group").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "%2e%2e"] {
            assert!(name(bad, "group").is_err(), "{bad}");
        }
        assert_eq!(
            content_type("x/running_log.json"),
            ("text/plain; charset=utf-8", true)
        );
        assert!(!content_type("plot.svg").1 && !content_type("model.safetensors").1);
    }
}
