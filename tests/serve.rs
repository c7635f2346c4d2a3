//! `labelfleet serve`: every page fetched over HTTP from a home where the demo's jobs
//! ran (`--mini`), checked for what it must show; the bind and token policy; and every
//! page rendered by Debian's headless Chromium, saved as a PNG and checked not to be
//! empty (the README's screenshots: `LABELFLEET_SCREENSHOTS=docs/screenshots`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fleet, block_on, repo_root, write_job};
use serde_json::{Value, json};

/// A running `labelfleet serve` and the address it printed.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    /// Starts `serve --bind BIND ARGS` with `env`; requests go to its port on loopback.
    fn start(fleet: &Fleet, bind: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut all = vec!["serve", "--bind", bind];
        all.extend_from_slice(args);
        let mut child = fleet
            .command(&all)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let port = common::served::served_port(&mut child);
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response: status, headers, body.
struct Fetched {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

fn fetch(url: &str, bearer: Option<&str>) -> Fetched {
    block_on(async {
        let client = reqwest::Client::new();
        let mut request = client.get(url);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        Fetched {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    })
}

/// A page that must load: its body.
fn page(server: &Server, path: &str) -> String {
    let got = fetch(&format!("{}{path}", server.base), None);
    assert_eq!(got.status, 200, "{path}: {}", got.body);
    assert!(
        got.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"),
        "{path}: no content security policy"
    );
    got.body
}

/// Text as the pages escape it.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A value that must never appear on a page: the server's own environment holds it.
const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY";

/// The demo's jobs, `--mini`, through 2 workers; a random sweep of 8 `command` trials
/// of the Branin function (a sweep that takes seconds); and one job that cannot run
/// (its model is missing), dead-lettered after 2 attempts.
fn demo_home() -> Fleet {
    let fleet = Fleet::new();
    for folder in ["runs/self-label", "runs/retrain"] {
        fleet.ok(&["enqueue", folder, "--mini", "--allow-dirty"]);
    }
    let sweep = fleet.jobs_dir("sweep");
    write_job(
        &sweep,
        "branin.json",
        &json!({"kind": "tune", "group_id": "sweep-demo", "tune": {
            "template": {"kind": "command", "command": {"program": "branin"}},
            "ranges": {"command.params.x": {"uniform": [-5.0, 10.0]}, "command.params.y": {"uniform": [0.0, 15.0]}},
            "search": "random", "trials": 8, "parallel": 2, "metric": "value", "goal": "minimize", "seed": 0}}),
    );
    fleet.ok(&["enqueue", sweep.to_str().unwrap(), "--allow-dirty"]);
    let broken = fleet.jobs_dir("broken");
    write_job(
        &broken,
        "no_model.json",
        &json!({"kind": "eval", "group_id": "broken", "eval": {
            "gold": {"path": "runs/sample-data/multiwoz21_val_sample.json", "format": "multiwoz21"},
            "predictions": {"model": {"model": {"path": "no/such/model"}, "prompt": "compact"}}}}),
    );
    fleet.ok(&["enqueue", broken.to_str().unwrap(), "--allow-dirty"]);
    let allow = format!(
        "branin={}",
        repo_root().join("examples/branin.py").display()
    );
    fleet.run_workers(
        2,
        &[
            "--idle-exit",
            "3",
            "--wait",
            "0.5",
            "--max-receives",
            "2",
            "--retry-base",
            "0.2",
            "--allow-command",
            &allow,
        ],
        Duration::from_secs(1200),
    );
    fleet
}

/// The first labelled turn of `labels-demo/job_0` whose prediction differs from gold,
/// and one slot that differs, as the labels page must show it.
fn a_wrong_turn(home: &Path) -> (Value, String) {
    let log: Value = serde_json::from_slice(
        &std::fs::read(home.join("artifacts/labels-demo/job_0/running_log.json")).unwrap(),
    )
    .unwrap();
    for turn in log["turns"].as_array().unwrap() {
        let gold = turn["gold_slot_values"]
            .as_object()
            .expect("gold kept in the log");
        let predicted = turn["slot_values"].as_object().unwrap();
        if let Some((slot, value)) = gold.iter().find(|(s, _)| !predicted.contains_key(*s)) {
            let chip = format!("{slot}=<s>{}</s>", escaped(value.as_str().unwrap()));
            return (turn.clone(), chip);
        }
    }
    panic!("every turn of job_0 was labelled as gold says: no diff to check");
}

fn chromium() -> PathBuf {
    let candidates = [
        std::env::var("LABELFLEET_CHROMIUM").unwrap_or_default(),
        "/usr/bin/chromium".into(),
        "/usr/bin/chromium-browser".into(),
    ];
    candidates
        .iter()
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("Debian's chromium is needed for the browser test: scripts/test.sh installs it (apt-get install chromium)")
}

/// Runs headless Chromium with `args` on `url`; panics after a minute. Its output
/// goes to files, not pipes: a page's DOM is larger than a pipe holds.
fn run_chromium(args: &[String], url: &str, profile: &Path) -> (String, String) {
    let (out, err) = (
        profile.with_extension("stdout"),
        profile.with_extension("stderr"),
    );
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish {url} within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (dom, log) = (
        std::fs::read_to_string(&out).unwrap_or_default(),
        std::fs::read_to_string(&err).unwrap_or_default(),
    );
    assert!(status.success(), "chromium failed on {url}: {log}");
    (dom, log)
}

/// The share of pixels below the header that differ from the page's background: 0 for
/// a page that rendered nothing.
fn ink(png_path: &Path) -> f64 {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    let (width, height) = (info.width as usize, info.height as usize);
    let background = [0xf6, 0xf7, 0xf9];
    let mut inked = 0usize;
    let mut total = 0usize;
    for y in 80..height {
        for x in 0..width {
            let at = (y * width + x) * channels;
            total += 1;
            inked += usize::from(pixels[at..at + 3] != background);
        }
    }
    inked as f64 / total.max(1) as f64
}

#[test]
fn serve_shows_the_fleet_groups_jobs_runs_and_labels_over_http_and_in_chromium() {
    let fleet = demo_home();
    let server = Server::start(
        &fleet,
        "127.0.0.1:0",
        &["--refresh", "2"],
        &[("AWS_SECRET_ACCESS_KEY", SECRET)],
    );
    let entries = fleet.entries("labels-demo");
    let artifacts_before = common::files_under(&fleet.home().join("artifacts"));
    let status_before = fleet.status();
    assert_eq!(entries.len(), 3, "the demo's labelling ran");

    let fleet_page = page(&server, "/");
    for needed in [
        "w0",
        "w1",
        "labels-demo",
        "retrain-demo",
        "sweep-demo",
        "broken/no_model",
        "Dead letters",
        "http-equiv=\"refresh\" content=\"2\"",
    ] {
        assert!(fleet_page.contains(needed), "fleet page lacks {needed}");
    }
    let groups = page(&server, "/groups");
    assert!(groups.contains("href=\"/groups/retrain-demo\""), "{groups}");

    let group = page(&server, "/groups/labels-demo");
    let jga = format!(
        "{:.3}",
        entries[0].metrics["joint_goal_accuracy"].as_f64().unwrap()
    );
    for needed in [
        "job_0",
        "job_1",
        "job_2",
        "JGA",
        "state done",
        jga.as_str(),
        "/groups/labels-demo/jobs/job_0/labels",
    ] {
        assert!(group.contains(needed), "group page lacks {needed}");
    }

    let job = page(&server, "/groups/retrain-demo/jobs/train");
    let git = entries[0].provenance.as_ref().unwrap().git_commit.clone();
    for needed in [
        "runs/retrain/train.json",
        "--mini",
        "Config",
        "curve.json",
        "/groups/retrain-demo/jobs/train/artifacts/curve.json",
        "valid_loss",
    ] {
        assert!(job.contains(needed), "job page lacks {needed}");
    }
    if let Some(commit) = git {
        assert!(job.contains(&commit), "job page lacks the git commit");
    }
    let broken = page(&server, "/groups/broken/jobs/no_model");
    assert!(broken.contains("Dead-lettered"), "{broken}");
    assert!(
        broken.contains("retried after"),
        "the first attempt's record: {broken}"
    );
    assert!(
        broken.contains("no/such/model"),
        "the attempts' error: {broken}"
    );

    // Downloads: a job's own files, and nothing outside its prefix.
    let curve = fetch(
        &format!(
            "{}/groups/retrain-demo/jobs/train/artifacts/curve.json",
            server.base
        ),
        None,
    );
    assert_eq!(curve.status, 200);
    assert!(serde_json::from_str::<Value>(&curve.body).unwrap()["curve"].is_array());
    for escape in [
        "/groups/retrain-demo/jobs/train/artifacts/../../../labels-demo/job_0/running_log.json",
        "/groups/retrain-demo/jobs/train/artifacts/%2e%2e/%2e%2e/labels-demo/job_0/running_log.json",
        "/groups/retrain-demo/jobs/train/artifacts/..%2F..%2Flabels-demo%2Fjob_0%2Frunning_log.json",
        "/groups/..%2F..%2Fetc/jobs/passwd/artifacts/x",
        "/groups/retrain-demo/jobs/train/artifacts/%2Fetc%2Fpasswd",
    ] {
        let got = fetch(&format!("{}{escape}", server.base), None);
        assert!(matches!(got.status, 400 | 404), "{escape}: {}", got.status);
        assert!(
            !got.body.contains("\"turns\"") && !got.body.contains("root:"),
            "{escape} escaped its prefix"
        );
    }

    let runs = page(&server, "/runs?group=retrain-demo&group=sweep-demo");
    assert!(
        runs.matches("<svg").count() >= 2,
        "a loss chart and a sweep plot"
    );
    assert!(
        runs.contains("retrain-demo/train") && runs.contains("Loss by step"),
        "{runs}"
    );
    assert!(runs.contains("command.params.x"), "the sweep's parameter");
    let compared = page(&server, "/runs?run=retrain-demo%2Ftrain");
    assert!(
        compared.contains("<svg") && compared.contains("checked"),
        "the ticked run's curves"
    );

    let (turn, chip) = a_wrong_turn(&fleet.home());
    let dialogue = turn["dialogue_id"].as_str().unwrap();
    let labels = page(
        &server,
        &format!("/groups/labels-demo/jobs/job_0/labels?dialogue={dialogue}"),
    );
    for needed in [
        escaped(turn["user_utterance"].as_str().unwrap()),
        escaped(turn["system_utterance"].as_str().unwrap()),
        chip.clone(),
        "Errors by slot".to_string(),
        "retrieved examples".to_string(),
    ] {
        assert!(labels.contains(&needed), "labels page lacks {needed}");
    }
    let wrong_only = page(&server, "/groups/labels-demo/jobs/job_0/labels?wrong=1");
    assert!(
        !wrong_only.contains("state done\">right"),
        "wrong turns only"
    );
    let missing = fetch(
        &format!("{}/groups/labels-demo/jobs/nope/labels", server.base),
        None,
    );
    assert_eq!(missing.status, 404);

    let pages = [
        ("fleet", "/".to_string(), "Workers"),
        ("groups", "/groups".to_string(), "labels-demo"),
        ("group", "/groups/labels-demo".to_string(), "job_0"),
        (
            "job",
            "/groups/retrain-demo/jobs/train".to_string(),
            "Provenance",
        ),
        (
            "runs",
            "/runs?group=retrain-demo&group=sweep-demo".to_string(),
            "Loss curves",
        ),
        (
            "labels",
            format!("/groups/labels-demo/jobs/job_0/labels?dialogue={dialogue}"),
            "Errors by slot",
        ),
    ];
    for (_, path, _) in &pages {
        let body = page(&server, path);
        assert!(!body.contains(SECRET), "{path} shows a credential");
    }

    // Serving wrote nothing: the artifacts are byte for byte as they were, and the
    // queue, board and manifest say what they said.
    assert_eq!(
        common::files_under(&fleet.home().join("artifacts")),
        artifacts_before,
        "serve wrote an artifact"
    );
    let status_after = fleet.status();
    for part in ["queue", "groups", "dead_letters", "blocked"] {
        assert_eq!(
            status_after[part], status_before[part],
            "serve changed {part}"
        );
    }

    // The same pages in a real browser.
    let shots = std::env::var_os("LABELFLEET_SCREENSHOTS")
        .map(|d| repo_root().join(d))
        .unwrap_or_else(|| fleet.dir.path().join("screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    let profile = fleet.dir.path().join("chromium-profile");
    for (name, path, marker) in &pages {
        let url = format!("{}{path}", server.base);
        let (dom, log) = run_chromium(&["--dump-dom".into()], &url, &profile);
        assert!(
            dom.contains(marker),
            "chromium's DOM of {path} lacks {marker}"
        );
        for error in ["Refused to", "Uncaught"] {
            assert!(
                !log.contains(error),
                "chromium reported {error} on {path}:\n{log}"
            );
        }
        let png = shots.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&png);
        run_chromium(
            &[
                "--window-size=1280,900".into(),
                format!("--screenshot={}", png.display()),
            ],
            &url,
            &profile,
        );
        let ink = ink(&png);
        assert!(
            ink > 0.02,
            "{path} rendered (almost) empty: {:.1} % of pixels",
            ink * 100.0
        );
    }
}

#[test]
fn a_public_bind_needs_a_token_and_every_request_must_carry_it() {
    let fleet = Fleet::new();
    let jobs = fleet.jobs_dir("jobs");
    write_job(&jobs, "a.json", &common::noop("g", 0, &[]));
    fleet.ok(&["enqueue", jobs.to_str().unwrap(), "--allow-dirty"]);

    let refused = fleet.run(&["serve", "--bind", "0.0.0.0:0"]);
    assert_eq!(refused.status.code(), Some(78));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("--token") && message.contains("127.0.0.1"),
        "{message}"
    );
    let short = fleet.run(&["serve", "--bind", "0.0.0.0:0", "--token", "hunter2"]);
    assert_eq!(short.status.code(), Some(78));
    assert!(!String::from_utf8_lossy(&short.stderr).contains("hunter2"));

    let token = "0123456789abcdef0123456789abcdef";
    for bind in ["127.0.0.1:0", "0.0.0.0:0"] {
        // On loopback too, a token given is required of every request.
        let server = Server::start(&fleet, bind, &[], &[("LABELFLEET_SERVE_TOKEN", token)]);
        for path in [
            "/",
            "/groups",
            "/groups/g",
            "/runs",
            "/groups/g/jobs/a/artifacts/job.json",
            "/nope",
        ] {
            let url = format!("{}{path}", server.base);
            let none = fetch(&url, None);
            assert_eq!(none.status, 401, "{bind} {path} without a token");
            assert!(
                !none.body.contains("<table"),
                "{path}: nothing shown without a token"
            );
            let wrong = fetch(&url, Some("0123456789abcdef0123456789abcdeX"));
            assert_eq!(wrong.status, 401, "{path} with a wrong token");
        }
        assert_eq!(fetch(&format!("{}/", server.base), Some(token)).status, 200);
        let job = fetch(&format!("{}/groups/g/jobs/a", server.base), Some(token));
        assert_eq!(job.status, 200);
        assert!(!job.body.contains(token), "no page shows the token");
        // A browser: the token once in the query, then a cookie.
        let first = fetch(&format!("{}/groups?token={token}", server.base), None);
        assert_eq!(first.status, 200);
        let cookie = first.headers["set-cookie"].to_str().unwrap();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        let with_cookie = block_on(async {
            reqwest::Client::new()
                .get(format!("{}/groups/g", server.base))
                .header("cookie", cookie.split(';').next().unwrap())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
        assert_eq!(with_cookie, 200);
    }
}

#[test]
fn serve_reads_an_aws_fleet_through_the_same_backend_options() {
    let server = labelfleet_aws::testing::MotoServer::shared();
    let fleet = Fleet::on_aws(server, 3);
    fleet.ok(&["enqueue", "runs/demo", "--allow-dirty"]);
    fleet.run_workers(
        1,
        &["--idle-exit", "3", "--wait", "1"],
        Duration::from_secs(120),
    );
    // moto checks no signature: the server may sign with a secret of its own.
    let serve = Server::start(
        &fleet,
        "127.0.0.1:0",
        &[],
        &[("AWS_SECRET_ACCESS_KEY", SECRET)],
    );
    let fleet_page = page(&serve, "/");
    assert!(
        fleet_page.contains("SQS queue") && fleet_page.contains("w0"),
        "{fleet_page}"
    );
    let group = page(&serve, "/groups/demo");
    assert!(
        group.contains("last_turn") && group.contains("0.263"),
        "{group}"
    );
    let job = page(&serve, "/groups/demo/jobs/last_turn");
    assert!(
        job.contains("/groups/demo/jobs/last_turn/artifacts/metrics.json"),
        "{job}"
    );
    let metrics = fetch(
        &format!(
            "{}/groups/demo/jobs/last_turn/artifacts/metrics.json",
            serve.base
        ),
        None,
    );
    assert_eq!(metrics.status, 200);
    let scores: Value = serde_json::from_str(&metrics.body).unwrap();
    assert!((scores["joint_goal_accuracy"].as_f64().unwrap() - 0.2631578947368421).abs() < 1e-12);
    let no_labels = fetch(
        &format!("{}/groups/demo/jobs/last_turn/labels", serve.base),
        None,
    );
    assert_eq!(
        no_labels.status, 404,
        "an eval of predictions has no labelled turns"
    );
    for body in [fleet_page, group, job, metrics.body, no_labels.body] {
        assert!(!body.contains(SECRET), "a page shows the AWS secret key");
    }
}
