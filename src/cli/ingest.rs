//! `labelfleet ingest SOURCE`: raw interaction logs (`logs.tar.gz` per session, in a
//! folder or under an S3 prefix) into a de-duplicated parquet dataset with a stats
//! summary.

use std::path::PathBuf;

use anyhow::Context;
use labelfleet_core::artifacts::ArtifactStore;

use labelfleet_ingest::{
    ARCHIVE, Ingester, LogRow, Stats, ingest_folder, write_jsonl, write_parquet,
};

/// Arguments of `ingest`.
#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// Where to search for `logs.tar.gz` archives, each session in its own folder: a
    /// local folder or `s3://bucket/prefix` (AWS credentials and region as for the AWS
    /// backend).
    pub source: String,
    /// The pipe-delimited CSV to read inside each archive.
    #[arg(long, default_value = "interaction_loggings.csv")]
    pub csv: String,
    /// The column holding the command text, which rows are de-duplicated by.
    #[arg(long, default_value = "command")]
    pub text_column: String,
    /// Where to write `data/train-00000-of-00001.parquet`, the same rows as
    /// `rows.jsonl`, and `stats.json`.
    #[arg(long, default_value = "ingested")]
    pub out: PathBuf,
}

/// Runs `ingest`.
pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let (rows, stats) = match args.source.starts_with("s3://") {
        true => ingest_s3(&args.source, &args.csv, &args.text_column).await?,
        false => {
            let root = PathBuf::from(&args.source);
            if !root.is_dir() {
                anyhow::bail!("{} is not a folder", root.display());
            }
            ingest_folder(&root, &args.csv, &args.text_column)?
        }
    };
    write_parquet(&args.out.join("data/train-00000-of-00001.parquet"), &rows)?;
    write_jsonl(&args.out.join("rows.jsonl"), &rows)?;
    std::fs::write(
        args.out.join("stats.json"),
        serde_json::to_vec_pretty(&stats).expect("stats serialise"),
    )?;
    for bad in &stats.bad_archives {
        eprintln!("skipped archive {bad}");
    }
    for bad in &stats.bad_rows {
        eprintln!("skipped row {bad}");
    }
    println!(
        "{} archives ({} skipped), {} rows read, {} malformed, {} duplicates dropped ({:.1} %), {} kept, average text length {:.1}",
        stats.archives,
        stats.bad_archives.len(),
        stats.rows_read,
        stats.bad_rows.len(),
        stats.duplicates,
        stats.duplicate_rate * 100.0,
        stats.rows_kept,
        stats.average_text_length
    );
    println!("wrote {}", args.out.display());
    Ok(())
}

/// Reads every `logs.tar.gz` under the S3 location `url`, one object at a time; a
/// session is an archive's folder relative to the prefix.
async fn ingest_s3(
    url: &str,
    csv: &str,
    text_column: &str,
) -> anyhow::Result<(Vec<LogRow>, Stats)> {
    let store = labelfleet_aws::S3ArtifactStore::open(url).await?;
    let archives: Vec<_> = store
        .list("")
        .await
        .with_context(|| format!("listing {url}"))?
        .into_iter()
        .filter(|key| key.as_str() == ARCHIVE || key.as_str().ends_with(&format!("/{ARCHIVE}")))
        .collect();
    tracing::info!(archives = archives.len(), "found under {url}");
    let mut ingester = Ingester::new(csv, text_column);
    for (i, key) in archives.iter().enumerate() {
        let session = key
            .as_str()
            .strip_suffix(ARCHIVE)
            .unwrap_or_default()
            .trim_end_matches('/');
        let place = store.locate(key);
        // A missing object is skipped like a corrupt archive; a failing S3 is an
        // error: skipping it would silently shrink the dataset.
        match store
            .get(key)
            .await
            .with_context(|| format!("reading {place}"))?
        {
            Some(bytes) => ingester.add_archive(session, &place, &bytes),
            None => ingester.skip_archive(&place, "deleted since it was listed"),
        }
        if (i + 1) % 50 == 0 {
            tracing::info!(read = i + 1, of = archives.len(), "reading archives");
        }
    }
    Ok(ingester.finish())
}
