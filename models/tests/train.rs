//! Training with candle: a tiny llama learns, a resumed run repeats an uninterrupted
//! one, the training forward pass equals the inference one, LoRA adapters train and
//! merge, and a GGUF model converts to a trainable one without changing its outputs.
//! The backward pass matches finite differences, and AdamW's in-place CPU update
//! matches its tensor form.
//! Training runs candle's tensor operations on a GPU and two CPU kernels of this crate
//! (attention's forward value, AdamW); the finite-difference check runs both paths, and
//! what training saves is checked on both inference paths.

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use labelfleet_dst::{Format, read_dataset};
use labelfleet_models::tiny::{tiny_config, train_tokenizer};
use labelfleet_models::train::{
    AdamW, AdamWConfig, Schedule, completion_nll, learning_rate, mean_completion_loss,
    optimizer_step, random_weights,
};
use labelfleet_models::{
    HfWeights, Kernels, Llama, LoraConfig, TokenizedExample, TrainableLm, WeightFormat,
    load_causal_lm, load_causal_lm_with_kernels,
};

/// (prompt, completion) pairs from the bundled MultiWOZ sample: the user's words, then
/// the domains the dialogue's state touches after that turn.
fn pairs() -> Vec<(String, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../runs/sample-data/multiwoz21_val_sample.json");
    let dialogues = read_dataset(&path, Format::Multiwoz21).unwrap();
    dialogues
        .iter()
        .flat_map(|d| d.turns.iter())
        .take(24)
        .map(|t| {
            let mut domains: Vec<&str> = t
                .slot_values
                .keys()
                .filter_map(|k| k.split('-').next())
                .collect();
            domains.dedup();
            (
                format!("# User: {}\n# Domains:", t.user_utterance),
                format!(" {}]", domains.join(", ")),
            )
        })
        .collect()
}

fn tiny(seed: u64, lora: Option<LoraConfig>) -> (TrainableLm, Vec<TokenizedExample>) {
    let pairs = pairs();
    let texts: Vec<String> = pairs.iter().map(|(p, c)| format!("{p}{c}")).collect();
    let tokenizer = train_tokenizer(&texts, 400).unwrap();
    let config = tiny_config(tokenizer.inner.get_vocab_size(true));
    let weights = random_weights(config, true, seed, &Device::Cpu).unwrap();
    let lm = TrainableLm::new(weights, tokenizer, lora, seed, &Device::Cpu).unwrap();
    let examples = pairs
        .iter()
        .map(|(p, c)| TokenizedExample::new(&lm.tokenizer, p, c, 96).unwrap())
        .collect();
    (lm, examples)
}

/// Runs optimizer steps `from..to` over `examples` (4 per step, as 2 micro-batches of
/// 2, the way `retrain` accumulates) and returns each step's mean loss per token.
fn train(
    lm: &TrainableLm,
    optimizer: &mut AdamW,
    examples: &[TokenizedExample],
    from: usize,
    to: usize,
    peak_lr: f64,
) -> Vec<f64> {
    let mut losses = Vec::new();
    for step in from..to {
        let micro: Vec<Vec<&TokenizedExample>> = (0..2)
            .map(|m| {
                (0..2)
                    .map(|i| &examples[(step * 4 + m * 2 + i) % examples.len()])
                    .collect()
            })
            .collect();
        let lr = learning_rate(step, 300, 10, peak_lr, Schedule::Cosine, 0.1);
        let report = optimizer_step(&lm.model, optimizer, &micro, 1.0, lr).unwrap();
        losses.push(report.loss);
    }
    losses
}

/// Rank-4 adapters on attention's q and v and the feed-forward's down projection.
fn adapters() -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
    }
}

/// The largest absolute difference between two tensors of one shape.
fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[test]
fn a_tiny_llama_learns_its_completions() {
    let (lm, examples) = tiny(7, None);
    let mut optimizer = AdamW::new(lm.parameters(), AdamWConfig::default()).unwrap();
    let losses = train(&lm, &mut optimizer, &examples, 0, 300, 3e-3);
    let (first, last) = (mean(&losses[..10]), mean(&losses[290..]));
    eprintln!("loss: first 10 steps {first:.3}, last 10 steps {last:.3}");
    assert!(first > 4.0, "a random model starts near ln(vocab): {first}");
    assert!(last < first / 4.0, "loss fell only from {first} to {last}");
}

#[test]
fn a_resumed_run_repeats_an_uninterrupted_one() {
    let (lm, examples) = tiny(3, None);
    let mut optimizer = AdamW::new(lm.parameters(), AdamWConfig::default()).unwrap();
    let straight = train(&lm, &mut optimizer, &examples, 0, 30, 3e-3);

    // Stop after 15 steps, save through bytes, restore into a fresh model, go on.
    let (first, _) = tiny(3, None);
    let mut optimizer = AdamW::new(first.parameters(), AdamWConfig::default()).unwrap();
    let mut resumed = train(&first, &mut optimizer, &examples, 0, 15, 3e-3);
    let params = labelfleet_models::train::safetensors_bytes(&first.parameter_tensors()).unwrap();
    let state = labelfleet_models::train::safetensors_bytes(&optimizer.state().unwrap()).unwrap();
    let steps = optimizer.steps();
    drop((first, optimizer));

    let (second, _) = tiny(3, None);
    let load = |b: &[u8]| labelfleet_models::train::tensors_from_bytes(b, &Device::Cpu).unwrap();
    second.restore_parameters(&load(&params)).unwrap();
    let mut optimizer = AdamW::new(second.parameters(), AdamWConfig::default()).unwrap();
    optimizer.restore(&load(&state), steps).unwrap();
    resumed.extend(train(&second, &mut optimizer, &examples, 15, 30, 3e-3));

    for (step, (a, b)) in straight.iter().zip(&resumed).enumerate() {
        assert!((a - b).abs() < 1e-5, "step {step}: {a} vs {b}");
    }
}

#[test]
fn the_training_forward_pass_equals_the_inference_one() {
    let (lm, examples) = tiny(11, None);
    let batch: Vec<&TokenizedExample> = examples[..3].iter().collect();
    let len = batch.iter().map(|e| e.tokens.len()).max().unwrap();
    let (mut tokens, mut padding) = (Vec::new(), Vec::new());
    for e in &batch {
        let pad = len - e.tokens.len();
        let mut row = vec![0u32; pad];
        row.extend(&e.tokens);
        tokens.push(row);
        padding.push(pad);
    }
    let training = lm
        .model
        .logits(&lm.model.hidden_for_training(&tokens, &padding).unwrap())
        .unwrap();
    let mut cache = lm.model.new_cache(tokens.len());
    let inference = lm.model.forward_all(&tokens, &padding, &mut cache).unwrap();
    for (r, &pad) in padding.iter().enumerate() {
        let a = training.get(r).unwrap().narrow(0, pad, len - pad).unwrap();
        let b = inference.get(r).unwrap().narrow(0, pad, len - pad).unwrap();
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-4, "row {r}");
    }
}

/// The loss pass of `eval` and of validation runs the inference kernels on batches
/// sorted by length; it must measure what the differentiable pass measures, on a
/// packed inference model as on a trainable one, and report its progress.
#[test]
fn the_scoring_loss_equals_the_training_loss() {
    let (lm, examples) = tiny(12, None);
    let mut sum = 0f64;
    let mut count = 0;
    for batch in examples.chunks(5) {
        let refs: Vec<&TokenizedExample> = batch.iter().collect();
        let (nll, n) = completion_nll(&lm.model, &refs).unwrap();
        sum += nll.to_scalar::<f32>().unwrap() as f64;
        count += n;
    }
    let expected = sum / count as f64;
    let dir = tempfile::tempdir().unwrap();
    lm.save(dir.path()).unwrap();
    let packed = load_causal_lm(dir.path(), WeightFormat::F32, &Device::Cpu).unwrap();
    let generic = load_causal_lm_with_kernels(
        dir.path(),
        WeightFormat::F32,
        &Device::Cpu,
        Kernels::Generic,
    )
    .unwrap();
    for model in [&lm.model, &packed.model, &generic.model] {
        let mut reports = Vec::new();
        let loss = mean_completion_loss(model, &examples, 5, &mut |done, total| {
            reports.push((done, total))
        })
        .unwrap()
        .unwrap();
        assert!((loss - expected).abs() < 1e-4, "{loss} vs {expected}");
        assert_eq!(reports.len(), examples.len().div_ceil(5));
        assert_eq!(reports.last(), Some(&(examples.len(), examples.len())));
    }
}

#[test]
fn lora_adapters_train_and_merge_into_the_base() {
    let lora = adapters();
    let (full, examples) = tiny(5, None);
    let (adapted, _) = tiny(5, Some(lora));
    // B starts at zero: the adapted model starts as the base.
    let batch: Vec<&TokenizedExample> = examples[..4].iter().collect();
    let base_loss = completion_nll(&full.model, &batch).unwrap().0;
    let start_loss = completion_nll(&adapted.model, &batch).unwrap().0;
    let diff =
        (base_loss.to_scalar::<f32>().unwrap() - start_loss.to_scalar::<f32>().unwrap()).abs();
    assert!(diff < 1e-4, "{diff}");
    assert!(adapted.trainable_count() < full.trainable_count() / 4);

    let mut optimizer = AdamW::new(adapted.parameters(), AdamWConfig::default()).unwrap();
    let losses = train(&adapted, &mut optimizer, &examples, 0, 60, 1e-2);
    // Adapters over a random base learn slowly, but they learn: half a nat in 60 steps.
    let (first, last) = (mean(&losses[..5]), mean(&losses[50..]));
    assert!(last < first - 0.5, "LoRA loss went from {first} to {last}");

    // Save base and adapter, load the adapter folder: merged weights give the logits
    // of the attached adapter.
    let dir = tempfile::tempdir().unwrap();
    let base_dir = dir.path().join("base");
    full.save(&base_dir).unwrap();
    let reloaded = TrainableLm::load(&base_dir, Some(adapters()), 5, &Device::Cpu).unwrap();
    reloaded
        .restore_parameters(&adapted.parameter_tensors())
        .unwrap();
    let adapter_dir = dir.path().join("adapter");
    reloaded.save(&adapter_dir).unwrap();
    assert!(adapter_dir.join("adapter_config.json").exists());
    let trained_loss = completion_nll(&adapted.model, &batch).unwrap().0;
    for kernels in [Kernels::Native, Kernels::Generic] {
        let merged =
            load_causal_lm_with_kernels(&adapter_dir, WeightFormat::F32, &Device::Cpu, kernels)
                .unwrap();
        let merged_loss = completion_nll(&merged.model, &batch).unwrap().0;
        let (a, b) = (
            merged_loss.to_scalar::<f32>().unwrap(),
            trained_loss.to_scalar::<f32>().unwrap(),
        );
        assert!(
            (a - b).abs() < 1e-3 * a.abs().max(1.0),
            "{kernels:?}: {a} vs {b}"
        );
    }
}

#[test]
fn a_full_fine_tune_saves_a_model_that_loads_for_generation() {
    let (lm, examples) = tiny(9, None);
    let mut optimizer = AdamW::new(lm.parameters(), AdamWConfig::default()).unwrap();
    train(&lm, &mut optimizer, &examples, 0, 5, 3e-3);
    let dir = tempfile::tempdir().unwrap();
    lm.save(dir.path()).unwrap();
    let loaded = load_causal_lm(dir.path(), WeightFormat::F32, &Device::Cpu).unwrap();
    let batch: Vec<&TokenizedExample> = examples[..2].iter().collect();
    let a = completion_nll(&lm.model, &batch)
        .unwrap()
        .0
        .to_scalar::<f32>()
        .unwrap();
    let b = completion_nll(&loaded.model, &batch)
        .unwrap()
        .0
        .to_scalar::<f32>()
        .unwrap();
    assert!((a - b).abs() < 1e-4, "{a} vs {b}");
}

/// A GGUF llama (q/k permuted for interleaved rotary) converted to trainable Hugging
/// Face-layout weights gives the logits of the GGUF model itself.
#[test]
fn a_gguf_model_converts_to_trainable_weights_unchanged() {
    let path = common::model(common::SMOLLM2);
    let device = Device::Cpu;
    let gguf = Llama::from_gguf(&path, WeightFormat::F32, &device).unwrap();
    let weights = HfWeights::from_gguf(&path, &device).unwrap();
    assert!(!weights.config.rope_interleaved);
    let tensors: HashMap<String, Tensor> = weights.tensors;
    let vb = candle_nn::VarBuilder::from_tensors(tensors, candle_core::DType::F32, &device);
    let converted =
        Llama::from_var_builder(vb, weights.config, weights.tie_embeddings, &device).unwrap();
    let prompt = vec![vec![1u32, 504, 3458, 282, 4649, 314, 28, 339, 2231, 30]];
    let a = gguf.forward(&prompt, &[0], &mut gguf.new_cache(1)).unwrap();
    let b = converted
        .forward(&prompt, &[0], &mut converted.new_cache(1))
        .unwrap();
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() < 1e-3);
}

/// The mean loss per completion token of `batch`.
fn mean_loss(lm: &TrainableLm, batch: &[&TokenizedExample]) -> Tensor {
    let (nll, count) = completion_nll(&lm.model, batch).unwrap();
    (nll / count as f64).unwrap()
}

#[test]
fn gradients_match_finite_differences() {
    // The derivative of the loss along its own gradient `g` is `|g|`: measured by central
    // differences over every trainable number at once, it checks the whole backward
    // pass (the attention node, the fused norm and rotary gradients, the frozen
    // projections).
    let lora = adapters();
    let cases = [
        (None, Kernels::Native),
        (Some(lora.clone()), Kernels::Native),
        (None, Kernels::Generic),
        (Some(lora), Kernels::Generic),
    ];
    for (lora, kernels) in cases {
        let adapted = lora.is_some();
        let (mut lm, examples) = tiny(11, lora);
        if kernels == Kernels::Generic {
            // The GPU's path: nothing is packed, only the kernels are switched off.
            lm.model.use_kernels(Kernels::Generic).unwrap();
        }
        if adapted {
            // B starts at zero, which zeroes A's gradient: a few steps first.
            let mut optimizer = AdamW::new(lm.parameters(), AdamWConfig::default())
                .unwrap()
                .with_kernels(kernels);
            train(&lm, &mut optimizer, &examples, 0, 5, 1e-2);
        }
        let batch: Vec<&TokenizedExample> = examples[..4].iter().collect();
        let params = lm.parameters();
        let grads = mean_loss(&lm, &batch).backward().unwrap();
        let gradients: Vec<Tensor> = params
            .iter()
            .map(|(name, var)| {
                grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("no gradient for {name}"))
                    .clone()
            })
            .collect();
        let norm = gradients
            .iter()
            .map(|g| {
                g.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap() as f64
            })
            .sum::<f64>()
            .sqrt();
        assert!(
            norm > 1e-3,
            "lora {adapted}, {kernels:?}: gradient norm {norm}"
        );
        let originals: Vec<Tensor> = params
            .iter()
            .map(|(_, v)| v.as_tensor().copy().unwrap())
            .collect();
        let eps = 3e-3;
        let loss_at = |step: f64| {
            for (((_, var), original), g) in params.iter().zip(&originals).zip(&gradients) {
                var.set(&(original + (g * (step / norm)).unwrap()).unwrap())
                    .unwrap();
            }
            mean_loss(&lm, &batch).to_scalar::<f32>().unwrap() as f64
        };
        let numeric = (loss_at(eps) - loss_at(-eps)) / (2.0 * eps);
        loss_at(0.0);
        assert!(
            (numeric - norm).abs() < 0.01 * norm,
            "lora {adapted}, {kernels:?}: finite differences {numeric}, backward pass {norm}"
        );
    }
}

#[test]
fn the_in_place_adamw_update_equals_the_tensor_one() {
    // A matrix larger than one parallel chunk (with weight decay) and a vector
    // (without), five steps of different gradients.
    let start = |shape: &[usize], salt: usize| {
        let count: usize = shape.iter().product();
        let values: Vec<f32> = (0..count)
            .map(|i| ((i * 7919 + salt) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        candle_core::Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu).unwrap())
            .unwrap()
    };
    let params = || {
        vec![
            ("layer.weight".to_string(), start(&[40_000, 3], 1)),
            ("norm.weight".to_string(), start(&[7], 2)),
        ]
    };
    let config = AdamWConfig {
        weight_decay: 0.1,
        ..AdamWConfig::default()
    };
    let (native_params, generic_params) = (params(), params());
    let mut native = AdamW::new(native_params.clone(), config).unwrap();
    let mut generic = AdamW::new(generic_params.clone(), config)
        .unwrap()
        .with_kernels(Kernels::Generic);
    for step in 0..5 {
        for (optimizer, params) in [
            (&mut native, &native_params),
            (&mut generic, &generic_params),
        ] {
            // Loss Σ (step + 1)·p³: each step's gradient differs, and depends on p.
            let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
            for (_, var) in params {
                let cube = var.as_tensor().powf(3.0).unwrap().sum_all().unwrap();
                loss = (loss + (cube * (step + 1) as f64).unwrap()).unwrap();
            }
            let grads = loss.backward().unwrap();
            optimizer.step(&grads, 1e-2).unwrap();
        }
    }
    for ((name, a), (_, b)) in native_params.iter().zip(&generic_params) {
        let difference = max_difference(a.as_tensor(), b.as_tensor());
        let salt = if name == "norm.weight" { 2 } else { 1 };
        let moved = max_difference(a.as_tensor(), start(a.dims(), salt).as_tensor());
        assert!(moved > 1e-2, "{name} did not move: {moved}");
        assert!(difference < 1e-6, "{name}: {difference}");
    }
    let (a, b) = (native.state().unwrap(), generic.state().unwrap());
    assert_eq!(a.len(), 4);
    for (name, moment) in &a {
        let difference = max_difference(moment, &b[name]);
        // Moments reach about 15: within a few f32 roundings of each other.
        assert!(difference < 1e-5, "{name}: {difference}");
    }
}
