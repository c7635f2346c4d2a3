//! upload-dataset to the Hugging Face Hub (`--to hf://…`), against a Hub on 127.0.0.1
//! (`common/hub.rs`) that checks and records every request: a group labelled by the
//! fleet becomes a private dataset whose files are byte for byte the local export; a
//! second upload changes nothing; a different dataset of the same name needs --force,
//! which commits over it and deletes stale files; a missing or refused token says what
//! to do; a failing commit is retried.

mod common;
#[path = "common/hub.rs"]
mod hub;

use std::collections::BTreeMap;
use std::process::Output;

use common::{Fleet, files_under};
use hub::{GITATTRIBUTES, MiniHub, Request};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const TOKEN: &str = "hf_writer_token_for_tests";
const FINGERPRINT: &str = ".labelfleet-dataset.sha256";

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The commit's NDJSON lines.
fn commit_lines(request: &Request) -> Vec<Value> {
    String::from_utf8(request.body.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn lines(requests: &[Request]) -> Vec<String> {
    requests.iter().map(Request::line).collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn a_fleet_labelled_group_is_published_to_the_hub() {
    let fleet = Fleet::new();
    common::label_with_tiny_llama(&fleet, "hub-labels", 3);
    let hub = MiniHub::start(TOKEN);
    let hf_home = fleet.dir.path().join("hf-home");
    std::fs::create_dir_all(&hf_home).unwrap();
    let upload = |to: &str, extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["upload-dataset", "--group-id", "hub-labels", "--to", to];
        args.extend_from_slice(extra);
        let mut command = fleet.command(&args);
        command
            .env("HF_ENDPOINT", &hub.url)
            .env("HF_HOME", &hf_home)
            .env_remove("HF_TOKEN")
            .env_remove("HF_TOKEN_PATH");
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().unwrap()
    };
    // The same exports to folders, to compare the Hub's files with.
    let local = |extra: &[&str]| {
        let dir = fleet.dir.path().join(format!("local{}", extra.len()));
        let mut args = vec![
            "upload-dataset",
            "--group-id",
            "hub-labels",
            "--owner",
            "tester",
            "--to",
            dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = fleet.ok(&args);
        let name = common::exported_name(&out);
        (name.clone(), files_under(&dir.join(name)))
    };
    let (name, expected) = local(&[]);
    let (same_name, with_validation) = local(&["--validation-dialogues", "1"]);
    assert_eq!(
        name, same_name,
        "the name follows the entries, not the splits"
    );
    let repo_files = |id: &str| {
        let mut files = hub.repo(id).unwrap().files;
        assert_eq!(
            files.remove(".gitattributes").unwrap(),
            GITATTRIBUTES.as_bytes()
        );
        files
    };

    // No token: a clear message, and nothing is sent.
    let out = upload("hf://tester", &[], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("HF_TOKEN") && stderr(&out).contains("huggingface-cli login"),
        "{}",
        stderr(&out)
    );
    assert!(hub.take_requests().is_empty());

    // The token from the file `huggingface-cli login` writes.
    std::fs::write(hf_home.join("token"), format!("{TOKEN}\n")).unwrap();
    let out = upload("hf://tester", &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{name} → {}/datasets/{name}", hub.url)),
        "{stdout}"
    );
    let requests = hub.take_requests();
    let parquet = "data/train-00000-of-00001.parquet";
    let oid = sha256(&expected[parquet]);
    assert_eq!(
        lines(&requests),
        [
            "POST /api/repos/create".to_string(),
            format!("POST /api/datasets/{name}/preupload/main"),
            format!("POST /datasets/{name}.git/info/lfs/objects/batch"),
            format!("PUT /lfs-upload/{oid}"),
            format!("POST /lfs-verify/{oid}"),
            format!("POST /api/datasets/{name}/commit/main"),
        ]
    );
    let (owner, repo) = name.split_once('/').unwrap();
    assert_eq!(
        requests[0].json(),
        json!({"name": repo, "organization": owner, "private": true, "type": "dataset"})
    );
    for request in &requests {
        let auth = request.headers.get("authorization");
        if request.method == "PUT" {
            assert_eq!(auth, None, "the token never goes to the upload address");
        } else {
            assert_eq!(auth, Some(&format!("Bearer {TOKEN}")), "{}", request.line());
        }
    }
    let batch = requests[2].json();
    assert_eq!(
        batch["objects"],
        json!([{"oid": oid, "size": expected[parquet].len()}])
    );
    let commit = commit_lines(&requests[5]);
    assert_eq!(commit[0]["key"], "header");
    assert!(
        commit[0]["value"]["summary"]
            .as_str()
            .unwrap()
            .contains("hub-labels")
    );
    let by_path: BTreeMap<&str, &Value> = commit[1..]
        .iter()
        .map(|l| (l["value"]["path"].as_str().unwrap(), l))
        .collect();
    assert_eq!(by_path[parquet]["key"], "lfsFile");
    assert_eq!(by_path[parquet]["value"]["oid"], oid);
    assert_eq!(by_path["README.md"]["key"], "file");
    assert_eq!(by_path[FINGERPRINT]["key"], "file");
    assert_eq!(commit.len(), 1 + expected.len());
    // The Hub now holds the local export, byte for byte, privately.
    assert_eq!(repo_files(&name), expected);
    assert!(hub.repo(&name).unwrap().private);

    // The same dataset again: read, compared, left alone.
    let out = upload("hf://tester", &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("unchanged"));
    let requests = lines(&hub.take_requests());
    assert_eq!(requests[0], "POST /api/repos/create");
    assert!(
        requests.iter().all(|r| !r.contains("/commit/")),
        "{requests:?}"
    );
    assert!(requests.contains(&format!("GET /datasets/{name}/resolve/main/{FINGERPRINT}")));
    assert!(
        requests.iter().filter(|r| r.contains("/tree/main")).count() >= 2,
        "the listing is paged: {requests:?}"
    );

    // A different dataset under the same name is not overwritten without --force.
    let out = upload("hf://tester", &["--validation-dialogues", "1"], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Hub dataset") && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );
    assert!(
        lines(&hub.take_requests())
            .iter()
            .all(|r| !r.contains("/commit/"))
    );

    // With --force it is. HF_TOKEN wins over the token file (now a stale token), and a
    // commit that fails once with 503 is retried.
    std::fs::write(hf_home.join("token"), "hf_stale\n").unwrap();
    hub.fail_next("/commit/main", 503);
    let out = upload(
        "hf://tester",
        &["--validation-dialogues", "1", "--force"],
        &[("HF_TOKEN", TOKEN)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let requests = hub.take_requests();
    let commits: Vec<&Request> = requests
        .iter()
        .filter(|r| r.path().ends_with("/commit/main"))
        .collect();
    assert_eq!(commits.len(), 2, "one 503, one retry");
    // The train split's bytes are on the Hub already: only the new splits go up.
    let puts: Vec<&Request> = requests.iter().filter(|r| r.method == "PUT").collect();
    assert_eq!(puts.len(), 2, "{:?}", lines(&requests));
    assert!(puts.iter().all(|p| !p.target.contains(&oid)));
    assert_eq!(repo_files(&name), with_validation);

    // Back to no validation split: the split files that are no longer there are deleted.
    let out = upload("hf://tester", &["--force"], &[("HF_TOKEN", TOKEN)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let requests = hub.take_requests();
    let commit = requests
        .iter()
        .find(|r| r.path().ends_with("/commit/main"))
        .unwrap();
    let deleted: Vec<String> = commit_lines(commit)
        .into_iter()
        .filter(|l| l["key"] == "deletedFile")
        .map(|l| l["value"]["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    assert!(deleted.iter().all(|d| d.contains("_1")), "{deleted:?}");
    assert_eq!(repo_files(&name), expected);

    // A refused token: the status and what to do, never the token itself.
    let out = upload("hf://tester", &[], &[("HF_TOKEN", "hf_wrong_secret")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("401") && stderr(&out).contains("token was refused"));
    assert!(!stderr(&out).contains("hf_wrong_secret"));
    hub.take_requests();

    // A name of one's own, public on request.
    let out = upload(
        "hf://datasets/team/dst-labels",
        &["--public"],
        &[("HF_TOKEN", TOKEN)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let requests = hub.take_requests();
    assert_eq!(
        requests[0].json(),
        json!({"name": "dst-labels", "organization": "team", "private": false, "type": "dataset"})
    );
    let files = repo_files("team/dst-labels");
    assert_eq!(files[parquet], expected[parquet]);
    assert!(String::from_utf8_lossy(&files["README.md"]).contains("team/dst-labels"));
    assert!(!hub.repo("team/dst-labels").unwrap().private);

    // A name the Hub would refuse is refused before anything is sent.
    let out = upload("hf://team/bad name", &[], &[("HF_TOKEN", TOKEN)]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a valid Hub repository id"));
    assert!(hub.take_requests().is_empty());
}
