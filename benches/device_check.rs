//! Our side of `scripts/device-check.sh`: one request as JSON on stdin, one JSON
//! result on stdout. The script's Python side (`scripts/device/check.py`) writes the
//! models with transformers, runs each request in a process of its own (so that its
//! peak GPU memory is the process's), does the same work with transformers, peft and
//! sentence-transformers, and compares.
//!
//! Requests (`op`):
//! - `generate`: loads `model` (`weights`, `device`, `generic`) and completes the
//!   first `b` of `prompts` (token ids, greedy, `new_tokens` each) for each `b` in
//!   `batches`, after one warm-up; prefill and decode tokens/s, the better of
//!   `repeats` runs.
//! - `logits`: a padded batch of `rows` (left-padded to the longest), then one cached
//!   decoding step with `next`; both steps' logits go to `out` as f32.
//! - `embed`: `sentences` through the sentence embedder; embeddings to `out` as f32.
//! - `train`: `steps` optimizer steps (AdamW, f32, full or LoRA) over batches of
//!   `batch` rows from `rows`, after one warm-up; tokens/s.
//!
//! Not a benchmark that runs on its own: `cargo bench --bench device_check` with no
//! request on stdin says so and exits.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use labelfleet_models::train::{AdamW, AdamWConfig, optimizer_step};
use labelfleet_models::{
    GenerationParams, Kernels, LoraConfig, SentenceEmbedder, TokenizedExample, TrainableLm,
    WeightFormat, load_causal_lm_with_kernels, parse_device,
};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Generate(Generate),
    Logits(Logits),
    Embed(Embed),
    Train(Train),
}

#[derive(Deserialize)]
struct Generate {
    model: PathBuf,
    device: String,
    weights: WeightFormat,
    #[serde(default)]
    generic: bool,
    prompts: Vec<Vec<u32>>,
    batches: Vec<usize>,
    new_tokens: usize,
    repeats: usize,
}

#[derive(Deserialize)]
struct Logits {
    model: PathBuf,
    device: String,
    weights: WeightFormat,
    #[serde(default)]
    generic: bool,
    rows: Vec<Vec<u32>>,
    next: Vec<u32>,
    out: PathBuf,
}

#[derive(Deserialize)]
struct Embed {
    model: PathBuf,
    device: String,
    #[serde(default)]
    generic: bool,
    sentences: Vec<String>,
    out: PathBuf,
}

#[derive(Deserialize)]
struct Train {
    model: PathBuf,
    device: String,
    lora_rank: Option<usize>,
    rows: Vec<Vec<u32>>,
    batch: usize,
    steps: usize,
}

fn kernels(generic: bool) -> Kernels {
    if generic {
        Kernels::Generic
    } else {
        Kernels::Native
    }
}

fn write_f32(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn generate(r: &Generate) -> Value {
    let (prompts, batches, new_tokens, repeats) = (&r.prompts, &r.batches, r.new_tokens, r.repeats);
    let device = parse_device(&r.device).unwrap();
    let started = Instant::now();
    let lm = load_causal_lm_with_kernels(&r.model, r.weights, &device, kernels(r.generic)).unwrap();
    let load_seconds = started.elapsed().as_secs_f64();
    let params = GenerationParams {
        max_new_tokens: new_tokens,
        ..GenerationParams::default()
    };
    // One warm-up at the largest batch: the allocator's pools and the kernels'
    // first loads are not what is measured.
    let largest = batches
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .min(prompts.len());
    lm.generate_tokens(&prompts[..largest], &params).unwrap();
    let mut results = Vec::new();
    for &batch in batches {
        let rows = &prompts[..batch.min(prompts.len())];
        let prompt_tokens: usize = rows.iter().map(Vec::len).sum();
        let (mut prefill, mut decode, mut generated) = (0f64, 0f64, 0usize);
        for _ in 0..repeats.max(1) {
            let (_, timing) = lm.generate_tokens(rows, &params).unwrap();
            prefill = prefill.max(prompt_tokens as f64 / timing.prefill_seconds);
            // The first new token comes from the prefill's logits: decode steps make
            // the rest.
            let stepped = timing.new_tokens.saturating_sub(rows.len());
            decode = decode.max(stepped as f64 / timing.decode_seconds.max(1e-9));
            generated = timing.new_tokens;
        }
        results.push(json!({
            "batch": rows.len(),
            "prompt_tokens": prompt_tokens,
            "new_tokens": generated,
            "prefill_tokens_per_s": prefill,
            "decode_tokens_per_s": decode,
        }));
    }
    json!({
        "load_seconds": load_seconds,
        "weight_bytes": lm.model.weight_bytes(),
        "dtype": format!("{:?}", lm.model.dtype()),
        "runs": results,
    })
}

fn logits(r: &Logits) -> Value {
    let (rows, next) = (&r.rows, &r.next);
    let device = parse_device(&r.device).unwrap();
    let lm = load_causal_lm_with_kernels(&r.model, r.weights, &device, kernels(r.generic)).unwrap();
    let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
    let padding: Vec<usize> = rows.iter().map(|r| longest - r.len()).collect();
    let padded: Vec<Vec<u32>> = rows
        .iter()
        .zip(&padding)
        .map(|(r, &pad)| {
            std::iter::repeat_n(0, pad)
                .chain(r.iter().copied())
                .collect()
        })
        .collect();
    let mut cache = lm.model.new_cache(rows.len());
    let to_f32 = |t: candle_core::Tensor| -> Vec<f32> {
        t.to_dtype(candle_core::DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let mut values = to_f32(lm.model.forward(&padded, &padding, &mut cache).unwrap());
    let step: Vec<Vec<u32>> = next.iter().map(|&t| vec![t]).collect();
    let no_padding = vec![0; rows.len()];
    values.extend(to_f32(
        lm.model.forward(&step, &no_padding, &mut cache).unwrap(),
    ));
    write_f32(&r.out, &values);
    json!({"values": values.len(), "vocab": lm.model.config().vocab_size})
}

fn embed(r: &Embed) -> Value {
    let (sentences, out) = (&r.sentences, &r.out);
    let device = parse_device(&r.device).unwrap();
    let embedder =
        SentenceEmbedder::load_with_kernels(&r.model, &device, kernels(r.generic)).unwrap();
    let started = Instant::now();
    let embeddings = embedder.embed(sentences, 32).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let flat: Vec<f32> = embeddings.into_iter().flatten().collect();
    write_f32(out, &flat);
    json!({"dimension": embedder.dimension(), "sentences_per_s": sentences.len() as f64 / seconds})
}

fn train(r: &Train) -> Value {
    let (rows, batch, steps) = (&r.rows, r.batch, r.steps);
    let device = parse_device(&r.device).unwrap();
    let lora = r.lora_rank.map(|rank| LoraConfig {
        rank,
        alpha: 2.0 * rank as f64,
        targets: vec!["q_proj".into(), "v_proj".into()],
    });
    let lm = TrainableLm::load(&r.model, lora, 1, &device).unwrap();
    // The second half of each row is its completion, the part the loss scores.
    let examples: Vec<TokenizedExample> = rows
        .iter()
        .map(|r| TokenizedExample {
            tokens: r.clone(),
            completion_start: r.len() / 2,
        })
        .collect();
    let batches: Vec<Vec<&TokenizedExample>> = (0..steps + 1)
        .map(|s| {
            (0..batch)
                .map(|i| &examples[(s * batch + i) % examples.len()])
                .collect()
        })
        .collect();
    let mut optimizer = AdamW::new(lm.parameters(), AdamWConfig::default()).unwrap();
    optimizer_step(&lm.model, &mut optimizer, &batches[..1], 1.0, 1e-5).unwrap();
    let started = Instant::now();
    for b in &batches[1..] {
        optimizer_step(
            &lm.model,
            &mut optimizer,
            std::slice::from_ref(b),
            1.0,
            1e-5,
        )
        .unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    let tokens: usize = batches[1..].iter().flatten().map(|e| e.tokens.len()).sum();
    json!({
        "trainable": lm.trainable_count(),
        "tokens_per_s": tokens as f64 / seconds,
        "steps": steps,
    })
}

/// This process's resident-memory high-water mark (Linux), for the CPU dry run: the
/// driver reads GPU memory from nvidia-smi, but a CPU run is over before a poll.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn main() {
    // SAFETY: nothing has started a thread yet.
    unsafe { labelfleet_models::pin_cpu_threads() };
    // SAFETY: as above.
    unsafe { labelfleet_models::keep_freed_memory() };
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).unwrap();
    if input.trim().is_empty() {
        println!(
            "device_check runs requests from scripts/device-check.sh (JSON on stdin); see that script"
        );
        return;
    }
    let request: Request = serde_json::from_str(&input).expect("a device_check request");
    let result = match &request {
        Request::Generate(r) => generate(r),
        Request::Logits(r) => logits(r),
        Request::Embed(r) => embed(r),
        Request::Train(r) => train(r),
    };
    let mut result = result;
    result["peak_rss_mib"] = json!(peak_rss_mib());
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{result}").unwrap();
}
