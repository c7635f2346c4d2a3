//! Models on this machine's CPU against their Python peers, in one run:
//! `cargo bench --bench models` (after `scripts/fetch-models.sh` and
//! `scripts/bench/setup-peers.sh`, which builds llama.cpp's Python binding).
//!
//! 1. MiniLM sentence embeddings, batch 32: our encoder (on a CPU `models/src/bert/cpu.rs`,
//!    candle tensor operations on a GPU) vs onnxruntime over a graph
//!    built from the same safetensors (`scripts/bench/minilm_onnxruntime.py`); both
//!    tokenise. The two outputs are also compared (they must agree to 1e-4).
//! 2. SmolLM2-135M GGUF decode, single stream, greedy: ours (each weight format; on a
//!    GPU `q8_0`, `f32` and `bf16`) vs
//!    llama.cpp (`scripts/bench/smollm2_llama_cpp.py`), prefill excluded on both sides.
//! 3. Our aggregate decode tokens/s with 16 prompts batched, vs llama.cpp single-stream.
//! 4. self_label turns/s over 50 dialogues (first turns of each), end to end through
//!    `labelfleet run`.
//! 5. The other families (qwen3, starcoder2), random weights in a small shape written
//!    here: our batched generation of 16 prompts vs candle-transformers' own
//!    implementation of the family, one prompt at a time (it has no padding mask, so
//!    it cannot batch uneven prompts), greedy, the same tokens in and out.
//!
//! Environment: `LABELFLEET_BENCH_DEVICE` (`cpu` by default; `cuda:0` with
//! `--features cuda`), `LABELFLEET_BENCH_TURNS` (turns per dialogue in part 4, default 2),
//! `LABELFLEET_BENCH_PEERS` (the venv with the peers, default `.venv-bench`),
//! `LABELFLEET_BENCH_PARTS` (which parts to run, default `1,2,3,4,5`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use labelfleet_dst::prompt::{TurnContext, retrieval_text};
use labelfleet_dst::{Format, read_dataset};
use labelfleet_models::{
    GenerationParams, SentenceEmbedder, WeightFormat, load_causal_lm, parse_device,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_labelfleet");
const NEW_TOKENS: usize = 128;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn models() -> PathBuf {
    std::env::var_os("LABELFLEET_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".models"))
}

fn data() -> PathBuf {
    std::env::var_os("LABELFLEET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/data"))
        .join("multiwoz21/val.json.zip")
}

fn peers_python() -> Option<PathBuf> {
    let venv = std::env::var_os("LABELFLEET_BENCH_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv-bench"));
    let python = venv.join("bin/python");
    python.exists().then_some(python)
}

fn peer(script: &str, args: &[&str], stdin: &str) -> Option<Value> {
    let Some(python) = peers_python() else {
        println!("  (peer skipped: run scripts/bench/setup-peers.sh to install it)");
        return None;
    };
    let mut child = Command::new(python)
        .arg(repo().join("scripts/bench").join(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python starts");
    // A peer that dies early closes its stdin; its exit status says so below.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        println!("  ({script} failed)");
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn sentences() -> Vec<String> {
    let dialogues = read_dataset(&data(), Format::Multiwoz21).expect("the MultiWOZ val set");
    dialogues
        .iter()
        .flat_map(|d| &d.turns)
        .take(512)
        .map(|t| {
            retrieval_text(&TurnContext {
                last_slot_values: t.last_slot_values.clone(),
                system_utterance: t.system_utterance.clone(),
                user_utterance: t.user_utterance.clone(),
            })
        })
        .collect()
}

fn embeddings(device: &labelfleet_models::Device) {
    println!("\n1. MiniLM sentence embeddings, batch 32, 512 retrieval texts from MultiWOZ val");
    let dir = models().join("all-MiniLM-L6-v2");
    let embedder = SentenceEmbedder::load(&dir, device).unwrap();
    let texts = sentences();
    embedder.embed(&texts[..32], 32).unwrap();
    let started = Instant::now();
    let ours = embedder.embed(&texts, 32).unwrap();
    let rate = texts.len() as f64 / started.elapsed().as_secs_f64();
    println!("  labelfleet               {rate:>8.1} sentences/s");
    let input = serde_json::to_string(&texts).unwrap();
    if let Some(peer) = peer(
        "minilm_onnxruntime.py",
        &[dir.to_str().unwrap(), "32"],
        &input,
    ) {
        let theirs = peer["sentences_per_second"].as_f64().unwrap();
        let worst = peer["embeddings"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&ours)
            .flat_map(|(a, b)| {
                a.as_array()
                    .unwrap()
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x.as_f64().unwrap() as f32 - y).abs())
            })
            .fold(0f32, f32::max);
        println!("  onnxruntime              {theirs:>8.1} sentences/s");
        println!(
            "  ratio {:.2}x (goal >= 1.0x); largest difference between the two: {worst:.1e}",
            rate / theirs
        );
        assert!(worst < 1e-4, "the embeddings disagree with onnxruntime's");
    }
}

/// The peak GPU memory a piece of work takes: free memory is sampled with nvidia-smi
/// every 100 ms while it runs, against what was free before it started.
struct GpuMemoryWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<u64>,
    free_before: u64,
}

impl GpuMemoryWatch {
    /// Starts watching `device` when it is a GPU.
    fn start(device_name: &str) -> Option<GpuMemoryWatch> {
        let ordinal = labelfleet_worker::gpu::cuda_ordinal(device_name)?;
        let free_before = labelfleet_worker::gpu::free_memory(ordinal).ok()?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut least = free_before;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(free) = labelfleet_worker::gpu::free_memory(ordinal) {
                    least = least.min(free);
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            least
        });
        Some(GpuMemoryWatch {
            stop,
            sampler,
            free_before,
        })
    }

    /// The peak, in MiB, as text for a result line.
    fn finish(self) -> String {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let least = self.sampler.join().unwrap_or(self.free_before);
        format!(
            "  (GPU memory peak {} MiB)",
            (self.free_before - least) >> 20
        )
    }
}

fn chat(question: &str) -> String {
    format!("<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
}

fn decode(device: &labelfleet_models::Device, device_name: &str, single: bool, batched: bool) {
    let gguf = models().join("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    let prompt = chat("Write a long story about a train journey to Cambridge.");
    let params = GenerationParams {
        max_new_tokens: NEW_TOKENS,
        ..Default::default()
    };
    println!(
        "\n2. SmolLM2-135M Q4_1 GGUF, greedy, {NEW_TOKENS} new tokens, single stream (prefill excluded)"
    );
    // On a GPU the dense half-precision formats are the ones worth timing.
    let formats: &[WeightFormat] = if device_name == "cpu" {
        &[WeightFormat::Stored, WeightFormat::Q8_0, WeightFormat::F32]
    } else {
        &[WeightFormat::Q8_0, WeightFormat::F32, WeightFormat::Bf16]
    };
    let mut best_single = 0f64;
    let mut best_format = WeightFormat::Stored;
    for &format in formats {
        let watch = GpuMemoryWatch::start(device_name);
        let lm = load_causal_lm(&gguf, format, device).unwrap();
        lm.generate(
            std::slice::from_ref(&prompt),
            &GenerationParams {
                max_new_tokens: 4,
                ..params.clone()
            },
        )
        .unwrap();
        let (_, timing) = lm.generate(std::slice::from_ref(&prompt), &params).unwrap();
        let rate = timing.new_tokens as f64 / timing.decode_seconds;
        let memory = watch.map(GpuMemoryWatch::finish).unwrap_or_default();
        println!("  labelfleet, weights {format:<8?}  {rate:>8.1} tokens/s{memory}");
        if rate > best_single {
            best_single = rate;
            best_format = format;
        }
    }
    let llama_cpp = if device_name == "cpu" && single {
        peer(
            "smollm2_llama_cpp.py",
            &[gguf.to_str().unwrap(), &prompt, &NEW_TOKENS.to_string()],
            "",
        )
        .and_then(|v| v["tokens_per_second"].as_f64())
    } else {
        None
    };
    if let Some(theirs) = llama_cpp {
        println!("  llama.cpp (2 threads)     {theirs:>8.1} tokens/s");
        println!(
            "  ratio {:.2}x with weights {best_format:?} (goal >= 0.8x)",
            best_single / theirs
        );
    }

    if !batched {
        return;
    }
    println!("\n3. Batched decode: 16 prompts together, {NEW_TOKENS} new tokens each");
    let questions = [
        "Write a long story about a train journey to Cambridge.",
        "Describe a hotel in the city centre in detail.",
        "List ten things to do in a museum.",
        "Explain how to book a taxi.",
    ];
    let prompts: Vec<String> = (0..16)
        .map(|i| chat(&format!("{} (version {i})", questions[i % questions.len()])))
        .collect();
    let formats: &[WeightFormat] = if device_name == "cpu" {
        &[WeightFormat::Stored, WeightFormat::Q8_0, WeightFormat::F32]
    } else {
        &[WeightFormat::F32, WeightFormat::Bf16]
    };
    for &format in formats {
        let watch = GpuMemoryWatch::start(device_name);
        let lm = load_causal_lm(&gguf, format, device).unwrap();
        let (_, timing) = lm.generate(&prompts, &params).unwrap();
        let rate = timing.new_tokens as f64 / timing.decode_seconds;
        let memory = watch.map(GpuMemoryWatch::finish).unwrap_or_default();
        print!("  labelfleet, weights {format:<8?}  {rate:>8.1} tokens/s aggregate{memory}");
        match llama_cpp {
            Some(theirs) => println!(
                "  = {:.2}x llama.cpp single-stream (goal >= 2x)",
                rate / theirs
            ),
            None => println!(),
        }
    }
}

fn self_label(device_name: &str) {
    let turns: usize = std::env::var("LABELFLEET_BENCH_TURNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    println!("\n4. self_label: 50 dialogues (first {turns} turns each), batch 16, k=4 examples");
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(repo())
            .env("LABELFLEET_HOME", dir.path().join("home"))
            .stderr(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "labelfleet {args:?} failed");
        String::from_utf8(out.stdout).unwrap()
    };
    run(&[
        "generate-runs",
        "--data",
        data().to_str().unwrap(),
        "--out",
        runs.to_str().unwrap(),
        "--group",
        "bench",
        "--chunk",
        "50",
        "--dialogues",
        "50",
        "--max-turns",
        &turns.to_string(),
        "--k-examples",
        "4",
        "--minimum-distinct",
        "2",
        "--example-warmup",
        "8",
        "--batch-size",
        "16",
        "--device",
        device_name,
        "--model",
        models().join("SmolLM2-135M-Instruct").to_str().unwrap(),
        "--retriever",
        models().join("all-MiniLM-L6-v2").to_str().unwrap(),
    ]);
    let started = Instant::now();
    let out = run(&[
        "run",
        runs.join("job_0.json").to_str().unwrap(),
        "--allow-dirty",
    ]);
    let seconds = started.elapsed().as_secs_f64();
    let metrics: Value = out
        .find('{')
        .and_then(|start| {
            let end = out.rfind('}')?;
            serde_json::from_str(&out[start..=end]).ok()
        })
        .unwrap_or(Value::Null);
    println!(
        "  {:.2} turns/s inside the job ({} new tokens, JGA {:.3}); {seconds:.1} s for the whole command",
        metrics["turns_per_second"].as_f64().unwrap_or(f64::NAN),
        metrics["new_tokens"],
        metrics["joint_goal_accuracy"].as_f64().unwrap_or(f64::NAN),
    );
}

fn main() {
    // SAFETY: nothing has started a thread yet.
    unsafe { labelfleet_models::pin_cpu_threads() };
    // SAFETY: as above.
    unsafe { labelfleet_models::keep_freed_memory() };
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let device_name = std::env::var("LABELFLEET_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device = parse_device(&device_name).unwrap();
    assert!(
        Path::new(&models().join("all-MiniLM-L6-v2")).exists(),
        "run scripts/fetch-models.sh first"
    );
    println!(
        "models on {device_name} ({} CPU threads)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let parts = std::env::var("LABELFLEET_BENCH_PARTS").unwrap_or_else(|_| "1,2,3,4,5".into());
    let wanted = |part: &str| parts.split(',').any(|p| p.trim() == part);
    if wanted("1") {
        embeddings(&device);
    }
    if wanted("2") || wanted("3") {
        decode(&device, &device_name, wanted("2"), wanted("3"));
    }
    if wanted("4") {
        self_label(&device_name);
    }
    if wanted("5") {
        families(&device);
    }
}

/// One greedy token from (tokens, offset); offset 0 starts a new prompt.
type Step<'a> = Box<dyn FnMut(&[u32], usize) -> u32 + 'a>;

/// A candle-transformers model as a [`Step`]: its cache cleared at offset 0.
fn greedy_step<'a, M: 'a>(
    mut model: M,
    clear: fn(&mut M),
    forward: fn(&mut M, &candle_core::Tensor, usize) -> candle_core::Result<candle_core::Tensor>,
    device: &'a candle_core::Device,
) -> Step<'a> {
    Box::new(move |ids, offset| {
        if offset == 0 {
            clear(&mut model);
        }
        let input = candle_core::Tensor::new(ids, device)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = forward(&mut model, &input, offset)
            .unwrap()
            .flatten_all()
            .unwrap();
        logits.argmax(0).unwrap().to_scalar::<u32>().unwrap()
    })
}

/// Part 5: each other family, ours batched against candle-transformers' one prompt at
/// a time; three runs each, median and range of tokens/s.
fn families(device: &candle_core::Device) {
    use candle_core::DType;
    use candle_transformers::models::{qwen3, starcoder2};
    use labelfleet_models::llama::argmax_rows;
    use labelfleet_models::tiny::{FamilyShape, write_random_family};
    use labelfleet_models::{Llama, families};

    const PROMPTS: usize = 16;
    const STEPS: usize = 32;
    let shape = FamilyShape {
        vocab: 8_192,
        hidden: 512,
        ffn: 1_536,
        layers: 6,
        heads: 8,
        kv_heads: 2,
    };
    println!(
        "5. other families, random weights (hidden {}, {} layers, {} heads / {} KV heads, vocabulary {}): {PROMPTS} prompts of 40-100 tokens, {STEPS} new tokens each, greedy",
        shape.hidden, shape.layers, shape.heads, shape.kv_heads, shape.vocab
    );
    // Deterministic prompts of uneven lengths.
    let prompts: Vec<Vec<u32>> = (0..PROMPTS)
        .map(|i| {
            (0..40 + (i * 37) % 61)
                .map(|j| ((i * 131 + j * 17) % shape.vocab) as u32)
                .collect()
        })
        .collect();
    let tokens = (PROMPTS * STEPS) as f64;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    for model_type in ["qwen3", "starcoder2"] {
        let dir = tempfile::tempdir().unwrap();
        write_random_family(dir.path(), model_type, shape, 7).unwrap();
        let json: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        let weights = dir.path().join("model.safetensors");
        let (config, tie) = families::by_model_type(model_type)
            .unwrap()
            .config(&json)
            .unwrap();
        let mut ours = Llama::from_safetensors(
            std::slice::from_ref(&weights),
            config,
            tie,
            DType::F32,
            device,
        )
        .unwrap();
        ours.use_kernels(labelfleet_models::Kernels::Native)
            .unwrap();
        // Ours: one left-padded batch, then a step per new token for every row.
        let run_ours = || -> Vec<Vec<u32>> {
            let longest = prompts.iter().map(Vec::len).max().unwrap();
            let padding: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
            let rows: Vec<Vec<u32>> = prompts
                .iter()
                .zip(&padding)
                .map(|(p, &pad)| std::iter::repeat_n(0, pad).chain(p.clone()).collect())
                .collect();
            let mut cache = ours.new_cache(PROMPTS);
            let mut next =
                argmax_rows(&ours.forward(&rows, &padding, &mut cache).unwrap()).unwrap();
            let mut out: Vec<Vec<u32>> = next.iter().map(|&t| vec![t]).collect();
            for _ in 1..STEPS {
                let step: Vec<Vec<u32>> = next.iter().map(|&t| vec![t]).collect();
                let logits = ours.forward(&step, &[0; PROMPTS], &mut cache).unwrap();
                next = argmax_rows(&logits).unwrap();
                for (o, &t) in out.iter_mut().zip(&next) {
                    o.push(t);
                }
            }
            out
        };
        // Theirs: each prompt alone, its cache cleared between prompts.
        // SAFETY: the file is not modified while mapped.
        let vb = || unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(
                std::slice::from_ref(&weights),
                DType::F32,
                device,
            )
            .unwrap()
        };
        let mut step_theirs: Step = match model_type {
            "qwen3" => {
                let cfg: qwen3::Config = serde_json::from_value(json.clone()).unwrap();
                greedy_step(
                    qwen3::ModelForCausalLM::new(&cfg, vb()).unwrap(),
                    qwen3::ModelForCausalLM::clear_kv_cache,
                    qwen3::ModelForCausalLM::forward,
                    device,
                )
            }
            _ => {
                let cfg: starcoder2::Config = serde_json::from_value(json.clone()).unwrap();
                greedy_step(
                    starcoder2::Model::new(&cfg, vb()).unwrap(),
                    starcoder2::Model::clear_kv_cache,
                    starcoder2::Model::forward,
                    device,
                )
            }
        };
        let mut run_theirs = || -> Vec<Vec<u32>> {
            prompts
                .iter()
                .map(|p| {
                    let mut out = vec![step_theirs(p, 0)];
                    for s in 1..STEPS {
                        let last = *out.last().unwrap();
                        out.push(step_theirs(&[last], p.len() + s - 1));
                    }
                    out
                })
                .collect()
        };
        let (mut ours_rates, mut theirs_rates) = (Vec::new(), Vec::new());
        let (mut ours_out, mut theirs_out) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let t = Instant::now();
            ours_out = run_ours();
            ours_rates.push(tokens / t.elapsed().as_secs_f64());
            let t = Instant::now();
            theirs_out = run_theirs();
            theirs_rates.push(tokens / t.elapsed().as_secs_f64());
        }
        let same = ours_out
            .iter()
            .zip(&theirs_out)
            .filter(|(a, b)| a == b)
            .count();
        let (o, o_lo, o_hi) = median(ours_rates);
        let (t, t_lo, t_hi) = median(theirs_rates);
        println!(
            "  {model_type:<10} ours batched {o:>7.1} tok/s ({o_lo:.1}-{o_hi:.1})  candle-transformers one at a time {t:>7.1} tok/s ({t_lo:.1}-{t_hi:.1})  ratio {:.2}x  same greedy tokens for {same}/{PROMPTS} prompts",
            o / t
        );
    }
}
