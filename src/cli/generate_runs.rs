//! `labelfleet generate-runs`: split a dataset into chunks and write one `self_label`
//! job per chunk, as the seed pipeline's generator does: `job_0.json` labels the first
//! chunk from scratch; `dependents/job_N.json` run after it and draw their examples
//! from the group's labels, with warm-up off.

use std::path::PathBuf;

use anyhow::{Context, bail};
use labelfleet_core::job::{
    DatasetFormat, DatasetRef, DialogueSelection, GenerationSpec, Job, JobBody, ModelRef,
    RetrieverSpec, SelfLabelSpec,
};
use labelfleet_dst::{Format, read_dataset};

use super::GlobalArgs;

/// Arguments of `generate-runs`.
#[derive(clap::Args, Debug)]
pub struct GenerateRunsArgs {
    /// The dialogues to label (JSON, or a .zip holding one JSON file).
    #[arg(long)]
    pub data: String,
    /// The data's format.
    #[arg(long, value_enum, default_value = "multiwoz21")]
    pub format: FormatArg,
    /// Where to write the jobs (created; must be empty or absent).
    #[arg(long)]
    pub out: PathBuf,
    /// The experiment group of every job.
    #[arg(long)]
    pub group: String,
    /// Dialogues per job.
    #[arg(long, default_value_t = 50)]
    pub chunk: usize,
    /// Label only this many dialogues in all (default: every dialogue).
    #[arg(long)]
    pub dialogues: Option<usize>,
    /// Label only each dialogue's first N turns.
    #[arg(long)]
    pub max_turns: Option<usize>,
    /// Seed of the shuffle that assigns dialogues to chunks.
    #[arg(long, default_value_t = 42)]
    pub shuffle_seed: u64,
    /// The causal LM: a folder or .gguf file.
    #[arg(long, default_value = ".models/SmolLM2-135M-Instruct")]
    pub model: String,
    /// The retriever: a sentence-transformers folder.
    #[arg(long, default_value = ".models/all-MiniLM-L6-v2")]
    pub retriever: String,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// In-context examples per prompt.
    #[arg(long, default_value_t = 8)]
    pub k_examples: usize,
    /// Of those, how many with distinct slot signatures.
    #[arg(long, default_value_t = 4)]
    pub minimum_distinct: usize,
    /// job_0 labels without examples until its index holds this many turns.
    #[arg(long, default_value_t = 32)]
    pub example_warmup: usize,
    /// Dialogues per batch (default: the worker picks, from its GPU's free memory).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Gold dialogues that every job's example index starts with, so that job_0
    /// prompts with correct examples from its first turn instead of its own labels.
    #[arg(long, value_name = "FILE")]
    pub gold_examples: Option<String>,
    /// The format of `--gold-examples`.
    #[arg(long, value_enum, default_value = "multiwoz21")]
    pub gold_format: FormatArg,
}

/// Dataset formats, as the command line spells them.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum FormatArg {
    /// MultiWOZ 2.1 `data.json`.
    Multiwoz21,
    /// IC-DST turn lists.
    Icdst,
    /// Schema-Guided Dialogue.
    Sgd,
}

impl FormatArg {
    fn dataset(self) -> DatasetFormat {
        match self {
            FormatArg::Multiwoz21 => DatasetFormat::Multiwoz21,
            FormatArg::Icdst => DatasetFormat::Icdst,
            FormatArg::Sgd => DatasetFormat::Sgd,
        }
    }

    fn reader(self) -> Format {
        labelfleet_worker::runners::data::format_of(self.dataset())
    }
}

fn model(path: &str, device: &str) -> ModelRef {
    ModelRef {
        path: Some(path.to_string()),
        device: device.to_string(),
        ..ModelRef::default()
    }
}

/// Runs `generate-runs`.
pub async fn run(_global: &GlobalArgs, args: GenerateRunsArgs) -> anyhow::Result<()> {
    if args.chunk == 0 {
        bail!("--chunk must be at least 1");
    }
    let available = read_dataset(std::path::Path::new(&args.data), args.format.reader())
        .with_context(|| format!("reading {}", args.data))?
        .len();
    let total = args.dialogues.unwrap_or(available).min(available);
    if total == 0 {
        bail!("{} holds no dialogues", args.data);
    }
    if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() {
        bail!(
            "{} is not empty; choose a new folder so old jobs are not mixed with new ones",
            args.out.display()
        );
    }
    std::fs::create_dir_all(args.out.join("dependents"))?;
    let chunks = total.div_ceil(args.chunk);
    for i in 0..chunks {
        let start = i * args.chunk;
        let count = args.chunk.min(total - start);
        let seed_job = i == 0;
        let spec = SelfLabelSpec {
            data: DatasetRef {
                path: args.data.clone(),
                format: args.format.dataset(),
            },
            dialogues: DialogueSelection {
                exclude: None,
                shuffle_seed: Some(args.shuffle_seed),
                start,
                count: Some(count),
                max_turns: args.max_turns,
            },
            model: model(&args.model, &args.device),
            prompt: None,
            retriever: Some(RetrieverSpec {
                model: model(&args.retriever, &args.device),
                groups: (!seed_job).then(|| vec![args.group.clone()]),
                gold_examples: args.gold_examples.as_ref().map(|path| DatasetRef {
                    path: path.clone(),
                    format: args.gold_format.dataset(),
                }),
                k_examples: args.k_examples,
                minimum_distinct: args.minimum_distinct.min(args.k_examples),
                // With gold examples the index is never empty: no warm-up.
                example_warmup: if seed_job && args.gold_examples.is_none() {
                    args.example_warmup
                } else {
                    0
                },
                add_predictions: true,
            }),
            generation: GenerationSpec::default(),
            batch_size: args.batch_size,
            checkpoint_turns: 100,
        };
        spec.check()
            .map_err(|(field, message)| anyhow::anyhow!("{field}: {message}"))?;
        let job = Job {
            name: format!("job_{i}"),
            group_id: args.group.clone(),
            after: if seed_job {
                vec![]
            } else {
                vec!["job_0".to_string()]
            },
            mini: false,
            params_from: None,
            body: JobBody::SelfLabel(Box::new(spec)),
            provenance: None,
        };
        let path = if seed_job {
            args.out.join("job_0.json")
        } else {
            args.out.join("dependents").join(format!("job_{i}.json"))
        };
        let mut text = serde_json::to_string_pretty(&job.config_value())?;
        text.push('\n');
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "wrote {chunks} jobs ({total} dialogues, {} per job) to {}; next: labelfleet enqueue {}",
        args.chunk,
        args.out.display(),
        args.out.display()
    );
    Ok(())
}
