//! ingest: session folders of `logs.tar.gz` built here (a good one with a case-only
//! duplicate, one with a malformed row, a corrupt one, one without the CSV) become one
//! de-duplicated parquet file and a stats summary; nothing bad is fatal. The same logs
//! give the same result from a folder and from an S3 prefix (moto).

mod common;

use std::path::Path;

use common::Fleet;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn tarball(path: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gz);
    for (name, text) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, text.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

/// Writes the four sessions' archives under `root`.
fn write_logs(root: &Path) {
    let csv = "interaction_loggings.csv";
    tarball(
        &root.join("batch1/session_a/logs.tar.gz"),
        &[
            ("agent.log", "not the csv"),
            (
                csv,
                "time|speaker|command\n1|u1|build a house\n2|u1|  Build a HOUSE \n3|u1|destroy the tower\n",
            ),
        ],
    );
    tarball(
        &root.join("batch1/session_b/logs.tar.gz"),
        &[(
            csv,
            "time|speaker|command\n1|u2|go to the lake\n2|u2|too|many|fields\n3|u2|\n4|u2|DESTROY the tower\n",
        )],
    );
    std::fs::create_dir_all(root.join("batch2/session_c")).unwrap();
    std::fs::write(
        root.join("batch2/session_c/logs.tar.gz"),
        b"\x1f\x8b not really gzip",
    )
    .unwrap();
    tarball(
        &root.join("batch2/session_d/logs.tar.gz"),
        &[("other.csv", "a|b\n1|2\n")],
    );
}

/// Runs `ingest SOURCE` and checks what it wrote.
fn ingest_and_check(fleet: &Fleet, source: &str) {
    let out = fleet.dir.path().join("ingested");
    let _ = std::fs::remove_dir_all(&out);
    let run = fleet
        .command(&["ingest", source, "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("session_c") && stderr.contains("session_d"),
        "{stderr}"
    );
    check_dataset(
        &out.join("stats.json"),
        &out.join("data/train-00000-of-00001.parquet"),
        &out.join("rows.jsonl"),
    );
}

/// Checks an ingested dataset of the four sessions' logs.
fn check_dataset(stats: &Path, parquet: &Path, jsonl: &Path) {
    let stats: serde_json::Value = serde_json::from_slice(&std::fs::read(stats).unwrap()).unwrap();
    assert_eq!(stats["archives"], 4);
    assert_eq!(stats["bad_archives"].as_array().unwrap().len(), 2);
    assert_eq!(stats["rows_read"], 7);
    assert_eq!(stats["bad_rows"].as_array().unwrap().len(), 2, "{stats}");
    assert_eq!(
        stats["duplicates"], 2,
        "case and spaces do not make a new command"
    );
    assert_eq!(stats["rows_kept"], 3);
    assert!((stats["duplicate_rate"].as_f64().unwrap() - 0.4).abs() < 1e-9);
    assert_eq!(stats["rows_per_session"]["batch1/session_a"], 2);
    assert_eq!(stats["rows_per_session"]["batch1/session_b"], 1);

    // The duplicates are really gone from the data.
    let file = std::fs::File::open(parquet).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut commands = Vec::new();
    let mut sessions = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<arrow_array::StringArray>()
                .unwrap()
                .iter()
                .map(|v| v.unwrap().to_string())
                .collect::<Vec<_>>()
        };
        commands.extend(column("command"));
        sessions.extend(column("session"));
    }
    assert_eq!(
        commands,
        ["build a house", "destroy the tower", "go to the lake"]
    );
    assert_eq!(
        sessions,
        ["batch1/session_a", "batch1/session_a", "batch1/session_b"]
    );
    // The same rows as JSON lines, for scripts without a parquet reader.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let texts: Vec<&str> = lines
        .iter()
        .map(|l| l["command"].as_str().unwrap())
        .collect();
    assert_eq!(texts, commands);
    assert_eq!(lines[2]["session"], "batch1/session_b");
}

#[test]
fn logs_become_a_deduplicated_dataset_and_bad_input_is_skipped() {
    let fleet = Fleet::new();
    let root = fleet.dir.path().join("logs");
    write_logs(&root);
    ingest_and_check(&fleet, root.to_str().unwrap());
}

#[test]
fn logs_under_an_s3_prefix_ingest_the_same() {
    use labelfleet_core::artifacts::{ArtifactKey, ArtifactStore};
    let server = labelfleet_aws::testing::MotoServer::shared();
    let fleet = Fleet::on_aws(server, 3);
    let bucket = fleet
        .env
        .iter()
        .find(|(k, _)| k == "LABELFLEET_QUEUE")
        .map(|(_, v)| v.clone())
        .unwrap();
    let root = fleet.dir.path().join("logs");
    write_logs(&root);
    let store = common::block_on(async {
        labelfleet_aws::S3ArtifactStore::new(&server.sdk_config().await, &bucket, "raw/logs")
    });
    for (key, bytes) in common::files_under(&root) {
        common::block_on(store.put(&ArtifactKey::new(&key).unwrap(), bytes)).unwrap();
    }
    // An object beside the sessions that is not an archive is not read.
    common::block_on(store.put(
        &ArtifactKey::new("batch1/notes.txt").unwrap(),
        b"not logs".to_vec(),
    ))
    .unwrap();
    ingest_and_check(&fleet, &format!("s3://{bucket}/raw/logs/"));
}

/// A worker runs `ingest` as a job: the archives are the outputs of an earlier
/// `command` job (a session per folder), and the dataset becomes the job's artifacts,
/// the same as the command line writes. A job that wrote no archives fails for good,
/// naming what it did write.
#[test]
fn an_ingest_job_reads_the_archives_an_earlier_job_wrote() {
    use std::os::unix::fs::PermissionsExt;
    let fleet = Fleet::new();
    let root = fleet.dir.path().join("logs");
    write_logs(&root);
    let collect = fleet.dir.path().join("collect.sh");
    std::fs::write(
        &collect,
        format!(
            "#!/bin/sh\ncp -r {}/. \"$LABELFLEET_OUTPUT_DIR\"\n",
            root.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&collect, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = fleet.jobs_dir("chain");
    let job = |name: &str, kind: &str, body: serde_json::Value| serde_json::json!({"kind": kind, "group_id": "chain", "name": name, kind: body});
    common::write_job(
        &dir,
        "collect.json",
        &job(
            "collect",
            "command",
            serde_json::json!({"program": "collect"}),
        ),
    );
    common::write_job(
        &dir,
        "nothing.json",
        &job("nothing", "noop", serde_json::json!({})),
    );
    common::write_job(
        &dir,
        "ingest.json",
        &job("ingest", "ingest", serde_json::json!({"from": "collect"})),
    );
    common::write_job(
        &dir,
        "wrong.json",
        &job("wrong", "ingest", serde_json::json!({"from": "nothing"})),
    );
    fleet.ok(&["enqueue", dir.to_str().unwrap(), "--allow-dirty"]);
    let allow = format!("collect={}", collect.display());
    let mut worker = fleet.spawn_worker(
        "w",
        &[
            "--wait",
            "0.2",
            "--idle-exit",
            "2",
            "--allow-command",
            &allow,
        ],
    );
    assert!(worker.wait(std::time::Duration::from_secs(120)).success());
    let entries = fleet.entries("chain");
    let ingest = entries.iter().find(|e| e.run_id == "ingest").unwrap();
    assert_eq!(ingest.counts["archives"], 4);
    assert_eq!(ingest.metrics["rows_kept"], 3);
    let artifact = |role: &str| fleet.home().join("artifacts").join(&ingest.artifacts[role]);
    check_dataset(&artifact("stats"), &artifact("dataset"), &artifact("rows"));
    assert!(ingest.artifacts["dataset"].ends_with("data/train-00000-of-00001.parquet"));
    assert!(!entries.iter().any(|e| e.run_id == "wrong"));
    use labelfleet_core::queue::Queue;
    let dead = common::block_on(fleet.embedded().queue(5).unwrap().dead_letters(10)).unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("failed on attempt 1")
            && dead[0]
                .reason
                .contains("chain/nothing wrote no artifact named …/logs.tar.gz"),
        "{}",
        dead[0].reason
    );
}
