//! `labelfleet status`.

use std::collections::BTreeMap;

use anyhow::Context;
use labelfleet_core::board::{BoardJob, Dependency};
use labelfleet_core::job::JobKey;
use labelfleet_core::queue::Envelope;
use labelfleet_worker::Backends;
use serde_json::{Value, json};

use super::GlobalArgs;
use super::backends::{self, Access, DEFAULT_MAX_RECEIVES};
use super::table::Table;

/// Arguments of `status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Print JSON for scripts instead of tables.
    #[arg(long)]
    pub json: bool,
    /// How many dead letters to list.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub dead_letters: usize,
    /// List workers seen within this many seconds.
    #[arg(long, default_value_t = 300, value_name = "SECS", value_parser = clap::value_parser!(i64).range(0..=31_536_000))]
    pub workers_seen: i64,
}

/// Dead letters read to find the jobs they block.
const DEAD_LETTERS_FOR_BLOCKING: usize = 1_000;

/// The held jobs that cannot run until a dead-lettered job is sent back: those that
/// wait on one (as a job, or through its group), and those that wait on such a held
/// job. Each comes with the dead-lettered job it waits on, sorted by job.
pub fn blocked_by_dead_letters(held: &[BoardJob], dead: &[JobKey]) -> Vec<(JobKey, JobKey)> {
    let mut blocked: BTreeMap<JobKey, JobKey> = BTreeMap::new();
    let blocker = |dep: &Dependency, blocked: &BTreeMap<JobKey, JobKey>| -> Option<JobKey> {
        let known = dead.iter().map(|k| (k, k)).chain(blocked.iter());
        let mut candidates = known.filter(|(key, _)| match dep {
            Dependency::Job(k) => k == *key,
            Dependency::Group(g) => &key.group_id == g,
        });
        candidates.next().map(|(_, root)| root.clone())
    };
    // Until nothing changes: a chain of held jobs is found one link per pass.
    loop {
        let mut changed = false;
        for job in held {
            if blocked.contains_key(&job.key) {
                continue;
            }
            if let Some(root) = job.after.iter().find_map(|d| blocker(d, &blocked)) {
                blocked.insert(job.key.clone(), root);
                changed = true;
            }
        }
        if !changed {
            return blocked.into_iter().collect();
        }
    }
}

/// Gathers the fleet's state as JSON (the `--json` output; the tables render it, and
/// `serve`'s fleet page): a queue depth, the board's and manifest's group counts, up to
/// [`DEAD_LETTERS_FOR_BLOCKING`] dead letters, the held jobs when some may be blocked,
/// and the worker reports.
pub async fn gather(b: &Backends, args: &StatusArgs) -> anyhow::Result<Value> {
    let depth = b.queue.depth().await.context("reading the queue")?;
    let board_groups = b.board.groups().await.context("reading the job board")?;
    let manifest_groups = b.manifest.groups().await.context("reading the manifest")?;
    let waiting: u64 = board_groups.iter().map(|g| g.held).sum();
    let mut groups: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for g in &board_groups {
        let e = groups.entry(g.group_id.clone()).or_default();
        e.0 = g.held + g.queued;
        e.1 = g.held;
    }
    for g in &manifest_groups {
        groups.entry(g.group_id.clone()).or_default().2 = g.entries;
    }
    let letters = b
        .queue
        .dead_letters(args.dead_letters.max(DEAD_LETTERS_FOR_BLOCKING))
        .await
        .context("reading the dead-letter queue")?;
    let dead_keys: Vec<JobKey> = letters
        .iter()
        .filter_map(|d| Envelope::open(&d.body, &d.id).ok().map(|j| j.key()))
        .collect();
    let blocked: Vec<Value> = if waiting > 0 && !dead_keys.is_empty() {
        let held = b.board.held().await.context("reading the job board")?;
        blocked_by_dead_letters(&held, &dead_keys)
            .into_iter()
            .map(|(job, dead)| json!({"job": job.to_string(), "dead_lettered": dead.to_string()}))
            .collect()
    } else {
        Vec::new()
    };
    let dead: Vec<Value> = letters
        .into_iter()
        .take(args.dead_letters)
        .map(|d| {
            let job = Envelope::open(&d.body, &d.id).map(|j| j.key().to_string()).ok();
            json!({"id": d.id, "job": job, "receive_count": d.receive_count, "reason": d.reason,
                   "dead_at": chrono::DateTime::from_timestamp(d.dead_at, 0).map(|t| t.to_rfc3339())})
        })
        .collect();
    let since = chrono::Utc::now().timestamp() - args.workers_seen;
    let workers: Vec<Value> = b
        .board
        .workers(since)
        .await
        .context("reading worker reports")?
        .into_iter()
        .map(|w| {
            json!({"worker_id": w.worker_id, "host": w.host, "pid": w.pid, "state": w.state.as_str(),
                   "job": w.job, "jobs_done": w.jobs_done, "jobs_failed": w.jobs_failed,
                   "last_error": w.last_error, "progress": w.progress, "device": w.device,
                   "last_seen_secs_ago": chrono::Utc::now().timestamp() - w.last_seen})
        })
        .collect();
    Ok(json!({
        "queue": {
            "backend": b.queue.describe(),
            "visible": depth.visible,
            "in_flight": depth.in_flight,
            "waiting_on_dependencies": waiting,
            "dead_lettered": depth.dead_lettered,
        },
        "dead_letters": dead,
        "blocked": blocked,
        "groups": groups.into_iter().map(|(group, (submitted, held, done))| json!({
            "group_id": group, "submitted": submitted, "done": done, "waiting_on_dependencies": held,
        })).collect::<Vec<_>>(),
        "workers": workers,
    }))
}

/// Runs `status`.
pub async fn run(global: &GlobalArgs, args: StatusArgs) -> anyhow::Result<()> {
    let b = backends::open(global, DEFAULT_MAX_RECEIVES, Access::ReadOnly)
        .await?
        .backends;
    let state = gather(&b, &args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&state)?);
        return Ok(());
    }
    let q = &state["queue"];
    println!("{}", q["backend"].as_str().unwrap_or("queue"));
    println!(
        "  visible {}   in flight {}   waiting on dependencies {}   dead-lettered {}",
        q["visible"], q["in_flight"], q["waiting_on_dependencies"], q["dead_lettered"]
    );
    let text = |v: &Value| {
        v.as_str().map(str::to_string).unwrap_or_else(|| {
            if v.is_null() {
                "-".into()
            } else {
                v.to_string()
            }
        })
    };
    let mut groups = Table::new(&["GROUP", "DONE", "SUBMITTED", "WAITING"]);
    for g in state["groups"].as_array().into_iter().flatten() {
        groups.row(vec![
            text(&g["group_id"]),
            text(&g["done"]),
            text(&g["submitted"]),
            text(&g["waiting_on_dependencies"]),
        ]);
    }
    println!("\ngroups");
    print!(
        "{}",
        if groups.is_empty() {
            "  none yet: enqueue a runs folder\n".to_string()
        } else {
            groups.render()
        }
    );
    let mut workers = Table::new(&[
        "WORKER", "HOST", "DEVICE", "STATE", "JOB", "PROGRESS", "DONE", "FAILED", "SEEN",
    ]);
    for w in state["workers"].as_array().into_iter().flatten() {
        workers.row(vec![
            text(&w["worker_id"]),
            text(&w["host"]),
            text(&w["device"]),
            text(&w["state"]),
            text(&w["job"]),
            text(&w["progress"]),
            text(&w["jobs_done"]),
            text(&w["jobs_failed"]),
            format!("{}s ago", w["last_seen_secs_ago"]),
        ]);
    }
    println!("\nworkers seen in the last {}s", args.workers_seen);
    print!(
        "{}",
        if workers.is_empty() {
            "  none: start one with `labelfleet worker`\n".to_string()
        } else {
            workers.render()
        }
    );
    let dead = state["dead_letters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let blocked = state["blocked"].as_array().cloned().unwrap_or_default();
    if !blocked.is_empty() {
        println!(
            "\nblocked: {} held job(s) wait on dead-lettered jobs; fix the cause, then `labelfleet redrive --job GROUP/NAME`",
            blocked.len()
        );
        let mut table = Table::new(&["JOB", "WAITS ON DEAD-LETTERED"]);
        for b in &blocked {
            table.row(vec![text(&b["job"]), text(&b["dead_lettered"])]);
        }
        print!("{}", table.render());
    }
    if !dead.is_empty() {
        println!("\ndead letters (oldest first)");
        for d in dead {
            println!(
                "  {} after {} receive(s): {}",
                d["job"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("message {}", text(&d["id"]))),
                d["receive_count"],
                text(&d["reason"])
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use labelfleet_core::board::BoardState;
    use labelfleet_core::queue::OutgoingMessage;

    fn key(text: &str) -> JobKey {
        let (group_id, name) = text.split_once('/').unwrap();
        JobKey {
            group_id: group_id.into(),
            name: name.into(),
        }
    }

    fn held(name: &str, after: Vec<Dependency>) -> BoardJob {
        BoardJob {
            key: key(name),
            after,
            message: OutgoingMessage {
                body: String::new(),
                dedup_id: String::new(),
                group: String::new(),
            },
            state: BoardState::Held,
            version: None,
        }
    }

    #[test]
    fn jobs_waiting_on_a_dead_letter_directly_through_groups_and_chains_are_blocked() {
        let jobs = [
            held("g/b", vec![Dependency::Job(key("g/a"))]),
            held("h/x", vec![Dependency::Group("g".into())]),
            held("i/y", vec![Dependency::Job(key("h/x"))]),
            held("j/free", vec![Dependency::Job(key("k/running"))]),
        ];
        let found = blocked_by_dead_letters(&jobs, &[key("g/a")]);
        assert_eq!(
            found,
            [
                (key("g/b"), key("g/a")),
                (key("h/x"), key("g/a")),
                (key("i/y"), key("g/a")),
            ]
        );
        assert!(blocked_by_dead_letters(&jobs, &[]).is_empty());
    }
}
