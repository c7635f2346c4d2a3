//! `labelfleet upload-dataset --group-id G`: a manifest group's self-labelled turns as
//! a Hugging Face dataset (parquet splits and a dataset card) in a local folder, in S3,
//! or on the Hugging Face Hub.

use std::path::{Path, PathBuf};

use anyhow::Context;
use labelfleet_core::artifacts::ArtifactKey;
use labelfleet_manifest::list_all;
use sha2::{Digest, Sha256};

use super::GlobalArgs;
use super::backends::{self, Access, DEFAULT_MAX_RECEIVES};
use crate::dataset::hub::{FileToAdd, Hub, check_repo_id};
use crate::dataset::write::{Card, splits};
use crate::dataset::{self, TurnRow, rows_of_log, write_dataset};

/// Arguments of `upload-dataset`.
#[derive(clap::Args, Debug)]
pub struct UploadDatasetArgs {
    /// The manifest group whose self_label entries to export.
    #[arg(long)]
    pub group_id: String,
    /// The owner part of the dataset's name (a Hub user or organisation).
    #[arg(long, env = "LABELFLEET_DATASET_OWNER", default_value = "local")]
    pub owner: String,
    /// Where to write: a local folder or `s3://bucket/prefix` (the dataset goes to
    /// `TO/OWNER/NAME/`), or the Hugging Face Hub: `hf://OWNER` (the generated name under
    /// OWNER) or `hf://OWNER/NAME`. The Hub needs a write token in `HF_TOKEN` or the
    /// file `huggingface-cli login` writes; `HF_ENDPOINT` picks another Hub.
    #[arg(long, default_value = "datasets")]
    pub to: String,
    /// Make a dataset that this upload creates on the Hub public (it is private
    /// otherwise; an existing dataset keeps its visibility).
    #[arg(long)]
    pub public: bool,
    /// Hold out this many dialogues: adds the splits `train_minus_N` and `valid_N`.
    #[arg(long, value_name = "N")]
    pub validation_dialogues: Option<usize>,
    /// Seed of the validation split's dialogue shuffle.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Export even though some of the group's jobs have not finished.
    #[arg(long)]
    pub allow_incomplete: bool,
    /// Replace a different dataset that has the same name (on the Hub: commit over it,
    /// deleting the files the new dataset does not have).
    #[arg(long)]
    pub force: bool,
}

/// Progress through a group's entries: a bar on a terminal, a log line every 50 entries
/// otherwise.
struct Progress {
    total: usize,
    terminal: bool,
}

impl Progress {
    fn new(total: usize) -> Progress {
        use std::io::IsTerminal;
        Progress {
            total,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn step(&self, done: usize) {
        if self.terminal {
            let width = 30;
            let filled = done * width / self.total.max(1);
            eprint!(
                "\rreading labels [{}{}] {done}/{}",
                "#".repeat(filled),
                " ".repeat(width - filled),
                self.total
            );
        } else if done.is_multiple_of(50) {
            tracing::info!(read = done, of = self.total, "reading labels");
        }
    }

    fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

/// Where `--to` points.
enum Destination {
    /// A local folder.
    Folder(PathBuf),
    /// An `s3://bucket/prefix` location.
    S3(String),
    /// A Hub owner, and the repository's name when given.
    Hub { owner: String, name: Option<String> },
}

impl Destination {
    fn parse(to: &str) -> anyhow::Result<Destination> {
        if to.starts_with("s3://") {
            return Ok(Destination::S3(to.to_string()));
        }
        let Some(hub) = to.strip_prefix("hf://") else {
            return Ok(Destination::Folder(PathBuf::from(to)));
        };
        // `hf://datasets/owner/name` is how the Hub's own file system spells it.
        let hub = hub
            .strip_prefix("datasets/")
            .unwrap_or(hub)
            .trim_end_matches('/');
        match hub.split_once('/') {
            None if !hub.is_empty() => Ok(Destination::Hub {
                owner: hub.to_string(),
                name: None,
            }),
            Some((owner, name)) => {
                check_repo_id(hub)?;
                Ok(Destination::Hub {
                    owner: owner.to_string(),
                    name: Some(name.to_string()),
                })
            }
            None => anyhow::bail!("--to {to}: expected hf://OWNER or hf://OWNER/NAME"),
        }
    }
}

/// The marker a written dataset carries: the SHA-256 of its files.
const FINGERPRINT: &str = ".labelfleet-dataset.sha256";

fn fingerprint(dir: &Path, files: &[PathBuf]) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    for file in files {
        hasher.update(file.display().to_string().as_bytes());
        hasher.update(std::fs::read(dir.join(file))?);
    }
    Ok(labelfleet_core::hash::hex(&hasher.finalize()))
}

/// Runs `upload-dataset`.
pub async fn run(global: &GlobalArgs, args: UploadDatasetArgs) -> anyhow::Result<()> {
    let destination = Destination::parse(&args.to)?;
    let b = backends::open(global, DEFAULT_MAX_RECEIVES, Access::ReadOnly)
        .await?
        .backends;
    let group = &args.group_id;
    let entries: Vec<_> = list_all(&*b.manifest, group)
        .await
        .with_context(|| format!("listing group {group}"))?
        .into_iter()
        .filter(|e| e.kind == "self_label")
        .collect();
    if entries.is_empty() {
        anyhow::bail!(
            "group `{group}` has no self_label entries; run its jobs first (`labelfleet status` shows what is pending)"
        );
    }
    let done: std::collections::BTreeSet<&str> =
        entries.iter().map(|e| e.run_id.as_str()).collect();
    let pending: Vec<String> = b
        .board
        .group_jobs(group)
        .await
        .context("reading the job board")?
        .into_iter()
        .map(|job| job.name)
        .filter(|name| !done.contains(name.as_str()))
        .collect();
    if !pending.is_empty() && !args.allow_incomplete {
        anyhow::bail!(
            "group `{group}` is incomplete: {} job(s) have no manifest entry yet ({}); wait for them, or pass --allow-incomplete",
            pending.len(),
            pending.join(", ")
        );
    }
    let mut rows: Vec<TurnRow> = Vec::new();
    let mut provenance = Vec::new();
    let progress = Progress::new(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let key = entry.artifacts.get("labels").with_context(|| {
            format!("{}/{} has no labels artifact", entry.group_id, entry.run_id)
        })?;
        let key = ArtifactKey::new(key)?;
        let bytes = b
            .artifacts
            .get(&key)
            .await?
            .with_context(|| format!("artifact {key} is missing"))?;
        let source = format!("{}/{}", entry.group_id, entry.run_id);
        rows.extend(rows_of_log(&bytes, &source).map_err(anyhow::Error::msg)?);
        let git = entry
            .provenance
            .as_ref()
            .and_then(|p| p.git_commit.clone())
            .unwrap_or_else(|| "-".into());
        provenance.push(format!(
            "`{source}`: {} turns, labelled by {} (attempt {}) at {}, git {git}",
            entry.counts.get("turns").copied().unwrap_or(0),
            entry.worker,
            entry.attempt,
            entry.completed_at
        ));
        progress.step(i + 1);
    }
    progress.finish();
    rows.sort_by(|a, b| (&a.dialogue_id, a.turn_id).cmp(&(&b.dialogue_id, b.turn_id)));
    let dialogues = dataset::dialogue_count(&rows);
    let name = match &destination {
        Destination::Hub {
            owner,
            name: Some(name),
        } => format!("{owner}/{name}"),
        Destination::Hub { owner, name: None } => {
            let name = dataset::name(owner, group, dialogues, &entries);
            check_repo_id(&name)?;
            name
        }
        _ => dataset::name(&args.owner, group, dialogues, &entries),
    };
    let card = Card {
        name: name.clone(),
        group: group.clone(),
        provenance,
        first_config: entries
            .first()
            .and_then(|e| e.provenance.as_ref())
            .map(|p| p.config.clone()),
    };
    let splits = splits(rows, args.validation_dialogues, args.seed)?;

    let scratch_root = match &destination {
        Destination::Folder(folder) => folder.clone(),
        _ => std::env::temp_dir(),
    };
    let scratch = scratch_root.join(format!(
        ".{}.{}.partial",
        name.replace('/', "_"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&scratch);
    let files = write_dataset(&scratch, &splits, &card)?;
    let print = fingerprint(&scratch, &files)?;
    let written = match &destination {
        Destination::S3(url) => to_s3(url, &name, &scratch, &files, &print, args.force).await,
        Destination::Folder(folder) => to_folder(&folder.join(&name), &scratch, &print, args.force),
        Destination::Hub { .. } => {
            let summary = format!(
                "labelfleet upload-dataset: group {group}, {} dialogues, {} entries",
                dialogues,
                entries.len()
            );
            to_hub(
                &name,
                &scratch,
                &files,
                &print,
                &summary,
                args.force,
                args.public,
            )
            .await
        }
    };
    // Gone already when the folder was moved into place.
    let _ = std::fs::remove_dir_all(&scratch);
    let written = written?;
    let Some(location) = written else {
        println!("{name}: already there, unchanged");
        return Ok(());
    };
    for split in &splits {
        println!(
            "{:<16} {:>6} turns  {:>5} dialogues",
            split.name,
            split.rows.len(),
            dataset::dialogue_count(&split.rows)
        );
    }
    println!("{name} → {location}");
    Ok(())
}

/// Whether to write over a dataset whose fingerprint is `existing`: not when it is
/// this one (`print`), and not a different one without `force`.
fn should_write(existing: &str, print: &str, force: bool, place: &str) -> anyhow::Result<bool> {
    if existing.trim() == print {
        return Ok(false);
    }
    if !force {
        anyhow::bail!(
            "{place} holds a different dataset of the same name; pass --force to replace it"
        );
    }
    Ok(true)
}

/// Moves the scratch folder to `target`; `None` when the same dataset is already there.
fn to_folder(
    target: &Path,
    scratch: &Path,
    print: &str,
    force: bool,
) -> anyhow::Result<Option<String>> {
    if target.exists() {
        // A folder without the marker is not ours to replace silently either.
        let existing = std::fs::read_to_string(target.join(FINGERPRINT)).unwrap_or_default();
        if !should_write(&existing, print, force, &target.display().to_string())? {
            return Ok(None);
        }
        std::fs::remove_dir_all(target)?;
    }
    std::fs::write(scratch.join(FINGERPRINT), format!("{print}\n"))?;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(scratch, target)
        .with_context(|| format!("moving the dataset to {}", target.display()))?;
    Ok(Some(target.display().to_string()))
}

/// Uploads the files under `{url}/{name}/` (`url` being `s3://bucket/prefix`), the
/// fingerprint last; `None` when the same dataset is already there.
async fn to_s3(
    url: &str,
    name: &str,
    scratch: &Path,
    files: &[PathBuf],
    print: &str,
    force: bool,
) -> anyhow::Result<Option<String>> {
    use labelfleet_core::artifacts::ArtifactStore;
    let store = labelfleet_aws::S3ArtifactStore::open(url)
        .await
        .context("--to")?;
    let place = format!("{}/{name}", url.trim_end_matches('/'));
    let key = |file: &str| ArtifactKey::new(&format!("{name}/{file}"));
    if let Some(existing) = store.get(&key(FINGERPRINT)?).await?
        && !should_write(&String::from_utf8_lossy(&existing), print, force, &place)?
    {
        return Ok(None);
    }
    for file in files {
        let bytes = std::fs::read(scratch.join(file))?;
        store.put(&key(&file.display().to_string())?, bytes).await?;
    }
    store
        .put(&key(FINGERPRINT)?, format!("{print}\n").into_bytes())
        .await?;
    Ok(Some(place))
}

/// Commits the files to the Hub dataset `repo_id` (created private unless `public`), the
/// fingerprint with them; `None` when the same dataset is already there.
async fn to_hub(
    repo_id: &str,
    scratch: &Path,
    files: &[PathBuf],
    print: &str,
    summary: &str,
    force: bool,
    public: bool,
) -> anyhow::Result<Option<String>> {
    let hub = Hub::from_env()?;
    let mut stale = Vec::new();
    if hub.create_dataset(repo_id, !public).await? {
        tracing::info!(repo_id, private = !public, "created the dataset on the Hub");
    } else {
        let present = hub.files(repo_id).await?;
        // The Hub puts a .gitattributes in every new repository; nothing else means empty.
        let empty = present.iter().all(|p| p == ".gitattributes");
        if !empty {
            let existing = match present.iter().any(|p| p == FINGERPRINT) {
                true => hub.file(repo_id, FINGERPRINT).await?.unwrap_or_default(),
                false => Vec::new(),
            };
            let place = format!("the Hub dataset {repo_id}");
            if !should_write(&String::from_utf8_lossy(&existing), print, force, &place)? {
                return Ok(None);
            }
        }
        let new: std::collections::BTreeSet<String> = files.iter().map(|f| hub_path(f)).collect();
        stale = present
            .into_iter()
            .filter(|p| p != ".gitattributes" && p != FINGERPRINT && !new.contains(p))
            .collect();
    }
    let mut adds = Vec::with_capacity(files.len() + 1);
    for file in files {
        adds.push(FileToAdd::new(
            hub_path(file),
            std::fs::read(scratch.join(file))?,
        ));
    }
    adds.push(FileToAdd::new(
        FINGERPRINT.into(),
        format!("{print}\n").into_bytes(),
    ));
    hub.commit(repo_id, summary, &adds, &stale).await?;
    Ok(Some(hub.page(repo_id)))
}

/// A file's path in a Hub repository: `/`-separated whatever the platform.
fn hub_path(file: &Path) -> String {
    file.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}
