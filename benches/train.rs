//! Training throughput with candle on this machine: `cargo bench --bench train`
//! (after `scripts/fetch-models.sh`).
//!
//! For each model, optimizer steps (forward, backward, clipping, AdamW) over batches of
//! rendered MultiWOZ turns, in tokens per second, against two baselines measured in the
//! same run over the same batches: the training model's forward pass alone, and, for
//! SmolLM2, the packed `f32` prefill that labelling runs (`load_causal_lm`: our
//! register-tile matmuls and fused attention). A training step costs about three
//! forward passes in theory (forward, and a backward twice its price; with LoRA about
//! two, as frozen weights need no gradient), so a ratio near 1/3 (1/2) means the
//! backward pass and the optimizer add nothing beyond that.
//!
//! 1. The tiny llama the tests train (2 layers, width 64), full fine-tune, batch 8.
//! 2. SmolLM2-135M from its GGUF, dequantized, full fine-tune, batch 4.
//! 3. SmolLM2-135M with rank-8 LoRA adapters on q/v, batch 4.
//!
//! Environment: `LABELFLEET_BENCH_DEVICE` (`cpu` by default; `cuda:0` with `--features
//! cuda`), `LABELFLEET_BENCH_PARTS` (default `1,2,3`), `LABELFLEET_BENCH_STEPS` (steps
//! per measurement, default 10 for the tiny model and 3 for SmolLM2),
//! `LABELFLEET_BENCH_PROMPT` (`in_context` by default, or `compact`: the prompt the
//! turns are rendered with).

use std::path::PathBuf;
use std::time::Instant;

use labelfleet_core::job::PromptMode;
use labelfleet_dst::prompt::Example;
use labelfleet_dst::{Format, read_dataset};
use labelfleet_models::train::{
    AdamW, AdamWConfig, completion_nll, optimizer_step, random_weights,
};
use labelfleet_models::{
    LoraConfig, TokenizedExample, TrainableLm, WeightFormat, load_causal_lm, parse_device,
};
use labelfleet_worker::runners::prompts::render;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn prompt_mode() -> PromptMode {
    match std::env::var("LABELFLEET_BENCH_PROMPT").as_deref() {
        Ok("compact") => PromptMode::Compact,
        Ok("in_context") | Err(_) => PromptMode::InContext,
        Ok(other) => {
            panic!("LABELFLEET_BENCH_PROMPT: expected in_context or compact, not {other:?}")
        }
    }
}

/// Prompt and completion of every turn of the bundled MultiWOZ sample.
fn pairs() -> Vec<(String, String)> {
    let path = repo().join("runs/sample-data/multiwoz21_val_sample.json");
    read_dataset(&path, Format::Multiwoz21)
        .unwrap()
        .iter()
        .flat_map(|d| d.turns.clone())
        .map(|t| render(&Example::of_gold_turn(&t), prompt_mode()))
        .collect()
}

fn batches(
    lm: &TrainableLm,
    batch: usize,
    max_tokens: usize,
    count: usize,
) -> Vec<Vec<TokenizedExample>> {
    let examples: Vec<TokenizedExample> = pairs()
        .iter()
        .map(|(p, c)| TokenizedExample::new(&lm.tokenizer, p, c, max_tokens).unwrap())
        .collect();
    (0..count)
        .map(|b| {
            (0..batch)
                .map(|i| examples[(b * batch + i) % examples.len()].clone())
                .collect()
        })
        .collect()
}

fn tokens(batches: &[Vec<TokenizedExample>]) -> usize {
    batches.iter().flatten().map(|e| e.tokens.len()).sum()
}

/// (training tokens/s, forward-only tokens/s) over `batches`, after one warm-up step.
fn measure(lm: &TrainableLm, batches: &[Vec<TokenizedExample>]) -> (f64, f64) {
    let mut optimizer = AdamW::new(lm.parameters(), AdamWConfig::default()).unwrap();
    let step = |batch: &[TokenizedExample], optimizer: &mut AdamW| {
        let refs: Vec<&TokenizedExample> = batch.iter().collect();
        optimizer_step(&lm.model, optimizer, &[refs], 1.0, 1e-5).unwrap();
    };
    step(&batches[0], &mut optimizer);
    let started = Instant::now();
    for batch in batches {
        step(batch, &mut optimizer);
    }
    let train = tokens(batches) as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for batch in batches {
        let refs: Vec<&TokenizedExample> = batch.iter().collect();
        let (nll, _) = completion_nll(&lm.model, &refs).unwrap();
        nll.to_scalar::<f32>().unwrap();
    }
    let forward = tokens(batches) as f64 / started.elapsed().as_secs_f64();
    (train, forward)
}

/// Tokens/s of the packed inference model's prefill over `batches` (each row's whole
/// prompt and completion, left-padded, from an empty cache), after one warm-up batch.
fn prefill(model: &std::path::Path, batches: &[Vec<TokenizedExample>]) -> f64 {
    let lm = load_causal_lm(model, WeightFormat::F32, &labelfleet_models::Device::Cpu).unwrap();
    let run = |batch: &[TokenizedExample]| {
        let len = batch.iter().map(|e| e.tokens.len()).max().unwrap();
        let (mut rows, mut padding) = (Vec::new(), Vec::new());
        for e in batch {
            let mut row = vec![0u32; len - e.tokens.len()];
            row.extend(&e.tokens);
            padding.push(len - e.tokens.len());
            rows.push(row);
        }
        let mut cache = lm.model.new_cache(rows.len());
        lm.model.forward(&rows, &padding, &mut cache).unwrap();
    };
    run(&batches[0]);
    let started = Instant::now();
    for batch in batches {
        run(batch);
    }
    tokens(batches) as f64 / started.elapsed().as_secs_f64()
}

fn report(
    name: &str,
    lm: &TrainableLm,
    batches: &[Vec<TokenizedExample>],
    packed: Option<&std::path::Path>,
) {
    let (train, forward) = measure(lm, batches);
    let per_batch = tokens(batches) / batches.len();
    let baseline = packed.map_or(String::new(), |model| {
        let prefill = prefill(model, batches);
        format!(
            "  packed prefill {prefill:>8.0} tok/s  train/prefill {:.2}",
            train / prefill
        )
    });
    println!(
        "{name:<34} {:>11} params  {per_batch:>5} tok/batch  train {train:>8.0} tok/s  forward {forward:>8.0} tok/s  ratio {:.2}{baseline}",
        lm.trainable_count(),
        train / forward
    );
}

fn main() {
    // SAFETY: nothing has started a thread yet.
    unsafe { labelfleet_models::pin_cpu_threads() };
    // SAFETY: as above.
    unsafe { labelfleet_models::keep_freed_memory() };
    let device =
        parse_device(&std::env::var("LABELFLEET_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into()))
            .unwrap();
    let parts = std::env::var("LABELFLEET_BENCH_PARTS").unwrap_or_else(|_| "1,2,3".into());
    let steps = |default: usize| {
        std::env::var("LABELFLEET_BENCH_STEPS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    println!(
        "training throughput on {device:?} (train = forward + backward + AdamW; ratio = train / forward alone)"
    );
    if parts.contains('1') {
        let texts: Vec<String> = pairs().into_iter().map(|(p, c)| p + &c).collect();
        let tokenizer = labelfleet_models::tiny::train_tokenizer(&texts, 512).unwrap();
        let config = labelfleet_models::tiny::tiny_config(tokenizer.inner.get_vocab_size(true));
        let weights = random_weights(config, true, 1, &device).unwrap();
        let lm = TrainableLm::new(weights, tokenizer, None, 1, &device).unwrap();
        let b = batches(&lm, 8, 256, steps(10));
        report("tiny llama, full", &lm, &b, None);
    }
    let smollm2 = repo().join(".models/SmolLM2-135M-Instruct");
    if parts.contains('2') {
        let lm = TrainableLm::load(&smollm2, None, 1, &device).unwrap();
        let b = batches(&lm, 4, 256, steps(3));
        report(
            "SmolLM2-135M, full",
            &lm,
            &b,
            device.is_cpu().then_some(&*smollm2),
        );
    }
    if parts.contains('3') {
        let lora = LoraConfig {
            rank: 8,
            alpha: 16.0,
            targets: vec!["q_proj".into(), "v_proj".into()],
        };
        let lm = TrainableLm::load(&smollm2, Some(lora), 1, &device).unwrap();
        let b = batches(&lm, 4, 256, steps(3));
        report(
            "SmolLM2-135M, LoRA r8 q/v",
            &lm,
            &b,
            device.is_cpu().then_some(&*smollm2),
        );
    }
}
