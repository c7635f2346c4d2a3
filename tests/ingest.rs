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

    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("stats.json")).unwrap()).unwrap();
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
    let file = std::fs::File::open(out.join("data/train-00000-of-00001.parquet")).unwrap();
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
