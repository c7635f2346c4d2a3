//! `labelfleet ingest DIR`: raw interaction logs (`logs.tar.gz` per session) into a
//! de-duplicated parquet dataset with a stats summary.

use std::path::PathBuf;

use crate::dataset::ingest::{ingest, write_parquet};

/// Arguments of `ingest`.
#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// The folder to search for `logs.tar.gz` archives (each session in its own folder).
    pub source: String,
    /// The pipe-delimited CSV to read inside each archive.
    #[arg(long, default_value = "interaction_loggings.csv")]
    pub csv: String,
    /// The column holding the command text, which rows are de-duplicated by.
    #[arg(long, default_value = "command")]
    pub text_column: String,
    /// Where to write `data/train-00000-of-00001.parquet` and `stats.json`.
    #[arg(long, default_value = "ingested")]
    pub out: PathBuf,
}

/// Runs `ingest`.
pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    if args.source.starts_with("s3://") {
        anyhow::bail!(
            "{}: this version ingests from a local folder only; copy the prefix down first (aws s3 sync)",
            args.source
        );
    }
    let root = PathBuf::from(&args.source);
    if !root.is_dir() {
        anyhow::bail!("{} is not a folder", root.display());
    }
    let (rows, stats) = ingest(&root, &args.csv, &args.text_column)?;
    write_parquet(&args.out.join("data/train-00000-of-00001.parquet"), &rows)?;
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
