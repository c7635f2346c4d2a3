//! The batched llama on safetensors in the Hugging Face layout (non-interleaved rotary
//! pairs, grouped-query attention), against candle-transformers' llama on the same
//! random weights; padded rows must give what each prompt gives alone. Each check runs
//! both code paths: this crate's CPU kernels and the tensor operations a GPU runs
//! ([`Kernels::Generic`]).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::llama as reference;
use labelfleet_models::{Kernels, Llama, LlamaConfig};

use common::Seeded;

const VOCAB: usize = 64;
const HIDDEN: usize = 32;
const FFN: usize = 64;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;

fn random_weights(dir: &std::path::Path) -> std::path::PathBuf {
    let device = Device::Cpu;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut rng = Seeded::new(0x001a_be1f_1ee7);
    let mut put = |name: String, shape: (usize, usize)| {
        let values: Vec<f32> = (0..shape.0 * shape.1).map(|_| rng.normal() * 0.2).collect();
        let t = Tensor::from_vec(values, shape, &device).unwrap();
        tensors.insert(name, t);
    };
    let kv = HIDDEN / HEADS * KV_HEADS;
    put("model.embed_tokens.weight".into(), (VOCAB, HIDDEN));
    put("lm_head.weight".into(), (VOCAB, HIDDEN));
    for i in 0..LAYERS {
        let p = format!("model.layers.{i}");
        put(format!("{p}.self_attn.q_proj.weight"), (HIDDEN, HIDDEN));
        put(format!("{p}.self_attn.k_proj.weight"), (kv, HIDDEN));
        put(format!("{p}.self_attn.v_proj.weight"), (kv, HIDDEN));
        put(format!("{p}.self_attn.o_proj.weight"), (HIDDEN, HIDDEN));
        put(format!("{p}.mlp.gate_proj.weight"), (FFN, HIDDEN));
        put(format!("{p}.mlp.up_proj.weight"), (FFN, HIDDEN));
        put(format!("{p}.mlp.down_proj.weight"), (HIDDEN, FFN));
    }
    let mut norms: Vec<String> = (0..LAYERS)
        .flat_map(|i| {
            [
                format!("model.layers.{i}.input_layernorm.weight"),
                format!("model.layers.{i}.post_attention_layernorm.weight"),
            ]
        })
        .collect();
    norms.push("model.norm.weight".into());
    for name in norms {
        let values: Vec<f32> = (0..HIDDEN).map(|_| 0.5 + rng.uniform()).collect();
        let t = Tensor::from_vec(values, HIDDEN, &device).unwrap();
        tensors.insert(name, t);
    }
    let path = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    path
}

/// The shape of the weights `random_weights` writes.
fn test_config() -> LlamaConfig {
    LlamaConfig::llama(
        VOCAB, HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, 1e-5, 10_000.0, 128,
    )
}

/// The model in `weights` as a worker runs it: loaded in `dtype`, then readied for
/// inference with `kernels`.
fn load(weights: &std::path::Path, dtype: DType, kernels: Kernels) -> Llama {
    let mut model = Llama::from_safetensors(
        &[weights.to_path_buf()],
        test_config(),
        false,
        dtype,
        &Device::Cpu,
    )
    .unwrap();
    model.use_kernels(kernels).unwrap();
    model
}

#[test]
fn padded_batches_match_candle_transformers_llama() {
    for kernels in [Kernels::Native, Kernels::Generic] {
        padded_batch_matches_candle_transformers_llama(kernels);
    }
}

fn padded_batch_matches_candle_transformers_llama(kernels: Kernels) {
    let dir = tempfile::tempdir().unwrap();
    let weights = random_weights(dir.path());
    let ours = load(&weights, DType::F32, kernels);
    assert_eq!(ours.kernels(), kernels);

    let hf: reference::LlamaConfig = serde_json::from_value(serde_json::json!({
        "hidden_size": HIDDEN, "intermediate_size": FFN, "vocab_size": VOCAB,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 128, "tie_word_embeddings": false
    }))
    .unwrap();
    let hf = hf.into_config(false);
    // SAFETY: the file is not modified while mapped.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu)
            .unwrap()
    };
    let theirs = reference::Llama::load(vb, &hf).unwrap();
    let alone = |ids: &[u32]| -> Vec<f32> {
        let mut cache = reference::Cache::new(true, DType::F32, &hf, &Device::Cpu).unwrap();
        let input = Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        theirs
            .forward(&input, 0, &mut cache)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap()
    };

    let short: Vec<u32> = vec![3, 14, 15, 9, 2];
    let long: Vec<u32> = vec![6, 5, 35, 8, 9, 7, 9, 3];
    let padded_short: Vec<u32> = std::iter::repeat_n(0, 3)
        .chain(short.iter().copied())
        .collect();
    let mut cache = ours.new_cache(2);
    let logits: Vec<Vec<f32>> = ours
        .forward(&[padded_short, long.clone()], &[3, 0], &mut cache)
        .unwrap()
        .to_vec2()
        .unwrap();
    // A row of the batch against the reference run over that row's sequence alone.
    let check = |row: &[f32], ids: &[u32], what: &str| {
        let expected = alone(ids);
        let worst = row
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-4,
            "{kernels:?}, {what}: largest logit difference {worst} for {ids:?}"
        );
    };
    for (row, ids) in logits.iter().zip([&short, &long]) {
        check(row, ids, "prompt");
    }
    // Two decoding steps from the cache (the fused attention, or the masked tensor
    // operations), with row 0 still hiding its padding, against the reference run
    // over each whole sequence.
    let mut sequences = [short, long];
    for next in [[11u32, 12], [13, 4]] {
        let step: Vec<Vec<f32>> = ours
            .forward(&[vec![next[0]], vec![next[1]]], &[0, 0], &mut cache)
            .unwrap()
            .to_vec2()
            .unwrap();
        for ((row, ids), token) in step.iter().zip(sequences.iter_mut()).zip(next) {
            ids.push(token);
            check(row, ids, "decoding");
        }
    }
}

/// The same model in f16 and bf16 (weights, activations, KV cache) gives the f32
/// model's logits to within half precision, through a padded prefill and two cached
/// decoding steps.
#[test]
fn half_precision_tracks_f32() {
    for kernels in [Kernels::Native, Kernels::Generic] {
        half_precision_tracks_f32_with(kernels);
    }
}

fn half_precision_tracks_f32_with(kernels: Kernels) {
    let dir = tempfile::tempdir().unwrap();
    let weights = random_weights(dir.path());
    let run = |dtype: DType| -> Vec<Vec<Vec<f32>>> {
        let model = load(&weights, dtype, kernels);
        let mut cache = model.new_cache(2);
        let mut steps = vec![
            model
                .forward(
                    &[vec![0, 0, 3, 14, 15], vec![6, 5, 35, 8, 9]],
                    &[2, 0],
                    &mut cache,
                )
                .unwrap()
                .to_vec2()
                .unwrap(),
        ];
        for next in [[7u32, 9], [2, 4]] {
            let tokens = [vec![next[0]], vec![next[1]]];
            steps.push(
                model
                    .forward(&tokens, &[0, 0], &mut cache)
                    .unwrap()
                    .to_vec2()
                    .unwrap(),
            );
        }
        steps
    };
    let reference = run(DType::F32);
    let scale = reference
        .iter()
        .flatten()
        .flatten()
        .fold(0f32, |m, v| m.max(v.abs()));
    for (dtype, tolerance) in [(DType::F16, 1e-2), (DType::BF16, 5e-2)] {
        let half = run(dtype);
        let worst = half
            .iter()
            .flatten()
            .flatten()
            .zip(reference.iter().flatten().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!(
            "{kernels:?}, {dtype:?}: largest logit difference {worst} (logits up to {scale})"
        );
        assert!(
            worst / scale < tolerance,
            "{kernels:?}, {dtype:?}: largest difference {worst} against logits up to {scale}"
        );
        // And it is really held in that precision: it differs from f32 at all.
        assert!(worst > 0.0, "{dtype:?} gave f32's logits exactly");
    }
}

/// The memory a decoding row needs follows the activations' precision: half the cache
/// and activations in bf16, the f32 scores and logits unchanged (SmolLM2-135M's shape).
#[test]
fn a_row_in_half_precision_needs_less_memory() {
    let smol = LlamaConfig {
        rope_interleaved: true,
        ..LlamaConfig::llama(49_152, 576, 1_536, 30, 9, 3, 1e-5, 10_000.0, 8_192)
    };
    let kv = 2 * 30 * 3 * 64 * 1024;
    let scores = 9 * 1024 * 1024 * 4;
    let activations = 1024 * (4 * 576 + 2 * 1536);
    let logits = 49_152 * 4;
    assert_eq!(
        smol.bytes_per_row(1024, DType::F32),
        (kv * 4 + scores + activations * 4 + logits) as u64
    );
    assert_eq!(
        smol.bytes_per_row(1024, DType::BF16),
        (kv * 2 + scores + activations * 2 + logits) as u64
    );
}

/// A loaded model weighs what its weights hold: two bytes a parameter in f16, at least
/// four in f32 (packed for the CPU kernel, padded to whole panels), a tied output
/// projection counted once.
#[test]
fn a_model_weighs_what_its_weights_hold() {
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<String> = (0..50)
        .map(|i| format!("a train to cambridge at {i}:15 for {i} people"))
        .collect();
    labelfleet_models::tiny::write_tiny_model(dir.path(), &texts, 1).unwrap();
    let stored =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    let parameters: usize = stored.values().map(Tensor::elem_count).sum();
    let weigh = |format| {
        labelfleet_models::load_causal_lm(dir.path(), format, &Device::Cpu)
            .unwrap()
            .model
            .weight_bytes() as usize
    };
    assert_eq!(weigh(labelfleet_models::WeightFormat::F16), 2 * parameters);
    let f32_bytes = weigh(labelfleet_models::WeightFormat::F32);
    assert!(
        f32_bytes >= 4 * parameters && f32_bytes < 5 * parameters,
        "{f32_bytes} bytes for {parameters} parameters"
    );
}
