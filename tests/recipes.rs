//! The deployment recipes under `scripts/deploy/`: they parse, ask for a GPU, give
//! workers more time to stop than their grace period, hold no secret, and every
//! labelfleet command line in them is one the CLI accepts.

mod common;

use std::path::PathBuf;

use common::repo_root;
use serde_json::Value;

fn deploy(path: &str) -> PathBuf {
    repo_root().join("scripts/deploy").join(path)
}

fn text(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap()
}

fn json(path: &str) -> Value {
    serde_json::from_str(&text(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Checks `labelfleet ARGS` against the CLI: the launch part and the worker arguments
/// after `--` must both parse (`--help` after them exits 0 only if they do).
fn accepted(args: &[String]) {
    let (launch, worker) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    for (what, mut line) in [
        ("launch", launch.to_vec()),
        (
            "worker",
            [vec!["worker".to_string()], worker.to_vec()].concat(),
        ),
    ] {
        line.push("--help".into());
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_labelfleet"))
            .args(&line)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{what} arguments {line:?} rejected: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn grace(args: &[String]) -> f64 {
    args.iter()
        .position(|a| a == "--grace")
        .map(|i| args[i + 1].parse().unwrap())
        .unwrap_or(30.0)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn no_recipe_holds_a_secret() {
    for path in [
        "Dockerfile",
        "aws-batch/compute-environment.json",
        "aws-batch/job-queue.json",
        "aws-batch/job-definition.json",
        "kubernetes/worker-deployment.yaml",
        "systemd/labelfleet-worker.service",
    ] {
        let t = text(path);
        for secret in [
            "AWS_SECRET_ACCESS_KEY",
            "aws_secret_access_key",
            "HF_TOKEN=",
            "kind: Secret",
        ] {
            assert!(!t.contains(secret), "{path} holds `{secret}`");
        }
    }
}

#[test]
fn the_dockerfile_builds_with_cuda_and_runs_the_binary() {
    let d = text("Dockerfile");
    assert!(
        d.contains("-devel-${UBUNTU} AS build"),
        "a build stage on the CUDA devel image"
    );
    assert!(
        d.contains("-runtime-${UBUNTU} AS runtime"),
        "a runtime stage on the runtime image"
    );
    assert!(d.contains("cargo build --release --locked --features cuda --bin labelfleet"));
    assert!(d.contains("COPY --from=build /usr/local/bin/labelfleet /usr/local/bin/labelfleet"));
    assert!(d.contains("STOPSIGNAL SIGTERM"));
    let entrypoint = d.lines().find(|l| l.starts_with("ENTRYPOINT")).unwrap();
    assert!(entrypoint.contains("\"labelfleet\""));
    let cmd: Vec<String> =
        serde_json::from_str(d.lines().find(|l| l.starts_with("CMD")).unwrap()[3..].trim())
            .unwrap();
    assert_eq!(cmd[0], "launch");
    accepted(&cmd);
}

#[test]
fn the_aws_batch_recipe_asks_for_a_gpu_and_retries_spot_reclaims() {
    let env = json("aws-batch/compute-environment.json");
    assert_eq!(
        env["computeResources"]["ec2Configuration"][0]["imageType"],
        "ECS_AL2_NVIDIA"
    );
    let queue = json("aws-batch/job-queue.json");
    assert_eq!(
        queue["computeEnvironmentOrder"][0]["computeEnvironment"],
        env["computeEnvironmentName"]
    );
    let job = json("aws-batch/job-definition.json");
    let props = &job["containerProperties"];
    let gpu = props["resourceRequirements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "GPU")
        .expect("a GPU requirement");
    assert!(gpu["value"].as_str().unwrap().parse::<u32>().unwrap() >= 1);
    let command = strings(&props["command"]);
    accepted(&command);
    let names: Vec<&str> = props["environment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for needed in [
        "LABELFLEET_QUEUE",
        "LABELFLEET_MANIFEST",
        "LABELFLEET_ARTIFACTS",
    ] {
        assert!(names.contains(&needed), "{needed}");
    }
    let retry = job["retryStrategy"]["evaluateOnExit"].as_array().unwrap();
    assert!(
        retry
            .iter()
            .any(|r| r["onStatusReason"] == "Host EC2*" && r["action"] == "RETRY")
    );
    // ECS gives a container 30 s between SIGTERM and SIGKILL unless the agent is told
    // otherwise; the worker's grace must fit, or its job is released only by timeout.
    assert!(grace(&command) <= 120.0);
}

#[test]
fn the_kubernetes_deployment_requests_a_gpu_and_time_to_stop() {
    let docs: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(&text("kubernetes/worker-deployment.yaml"))
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    for part in ["requests", "limits"] {
        let gpus = &container["resources"][part]["nvidia.com/gpu"];
        assert!(gpus.as_u64().unwrap() >= 1, "{part}: {gpus:?}");
    }
    let args: Vec<String> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    accepted(&args);
    let stop = pod["terminationGracePeriodSeconds"].as_f64().unwrap();
    assert!(
        stop > grace(&args),
        "{stop} s to stop, {} s of grace",
        grace(&args)
    );
    assert!(docs.iter().any(|d| d["kind"] == "ConfigMap"));
}

#[test]
fn the_systemd_unit_runs_the_launcher_and_waits_for_it() {
    let unit = text("systemd/labelfleet-worker.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let mut parts: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    assert!(parts.remove(0).ends_with("/labelfleet"));
    accepted(&parts);
    let stop: f64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(stop > grace(&parts));
    assert!(unit.contains("KillSignal=SIGTERM"));
}
