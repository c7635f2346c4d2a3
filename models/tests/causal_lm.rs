//! The batched llama against candle-transformers' own quantized llama, and generation
//! with the real SmolLM2-135M GGUF, on both code paths: this crate's CPU kernels and
//! the tensor operations a GPU runs ([`Kernels::Generic`]).

mod common;

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use labelfleet_models::{
    GenerationParams, Kernels, WeightFormat, load_causal_lm, load_causal_lm_with_kernels,
};

/// SmolLM2's GGUF loaded on the CPU in `format`, running `kernels`.
fn smollm2(format: WeightFormat, kernels: Kernels) -> labelfleet_models::CausalLm {
    load_causal_lm_with_kernels(
        &common::model(common::SMOLLM2),
        format,
        &Device::Cpu,
        kernels,
    )
    .unwrap()
}

fn chat(question: &str) -> String {
    format!("<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
}

/// The logits of one row as a vector.
fn row(logits: candle_core::Result<Tensor>) -> Vec<f32> {
    logits.unwrap().squeeze(0).unwrap().to_vec1().unwrap()
}

fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Two sets of logits from models that round activations to 8 bits differently (or
/// not at all): a value that lands near a rounding boundary in one goes the other way
/// in the other, so they differ by that noise, not by float error. They must still
/// pick the same token, and differ little on average. (On these prompts: worst 0.4 to
/// 0.9 and mean 0.1 to 0.3, on logits up to 29.)
fn assert_close_within_rounding_noise(a: &[f32], b: &[f32], what: &str) {
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .fold(
                (0, f32::MIN),
                |best, (i, x)| if *x > best.1 { (i, *x) } else { best },
            )
            .0
    };
    assert_eq!(
        argmax(a),
        argmax(b),
        "{what}: a different most likely token"
    );
    let mean = a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
    let worst = largest_difference(a, b);
    assert!(
        mean < 0.5 && worst < 2.0,
        "{what}: mean difference {mean}, largest {worst}"
    );
}

fn logits(lm: &labelfleet_models::CausalLm, steps: &[Vec<u32>]) -> Vec<Vec<f32>> {
    let mut cache = lm.model.new_cache(1);
    steps
        .iter()
        .map(|ids| {
            row(lm
                .model
                .forward(std::slice::from_ref(ids), &[0], &mut cache)
                .map_err(|e| candle_core::Error::Msg(e.to_string())))
        })
        .collect()
}

/// Our llama against candle-transformers' quantized llama on the same GGUF. Both round
/// activations to 8 bits per block of 32 before each quantized matmul, with the same
/// arithmetic (the kernel's unit tests check that to 1e-4), but the sums run in another
/// order, so roundings differ here and there and the logits agree only within that
/// noise. Architecture equality to float precision is checked against
/// candle-transformers' llama in the model's unit tests.
#[test]
fn logits_match_candle_transformers_quantized_llama() {
    let path = common::model(common::SMOLLM2);
    let lm = smollm2(WeightFormat::Stored, Kernels::Native);
    let ids = lm
        .tokenizer
        .encode(&chat(
            "Name a city in England that has a famous university, a river called the Cam, \
             many old colleges, punting in the summer and a railway station with trains to \
             London every half hour.",
        ))
        .unwrap();
    assert!(ids.len() > 32, "the prompt must take the long-prompt path");

    let mut file = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let mut reference = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let expected = row(reference.forward(&input, 0));
    let ours = logits(&lm, std::slice::from_ref(&ids)).remove(0);
    assert_close_within_rounding_noise(&expected, &ours, "the prompt's last position");
    // The GPU's path runs candle's quantized matmul, as the reference does.
    let generic = smollm2(WeightFormat::Stored, Kernels::Generic);
    let theirs = logits(&generic, &[ids]).remove(0);
    assert_close_within_rounding_noise(&expected, &theirs, "generic: the last position");
}

/// The quantized model, through our packed kernel, against the same model dequantized to
/// f32 (candle's dense matmul, unrounded activations), over a prompt and a cached step
/// of two rows.
#[test]
fn the_packed_kernel_matches_the_dequantized_model() {
    let path = common::model(common::SMOLLM2);
    let packed = load_causal_lm(&path, WeightFormat::Stored, &Device::Cpu).unwrap();
    let generic = smollm2(WeightFormat::Stored, Kernels::Generic);
    let dense = load_causal_lm(&path, WeightFormat::F32, &Device::Cpu).unwrap();
    let ids = packed.tokenizer.encode(&chat("Name a city.")).unwrap();
    assert!(ids.len() <= 32);
    let run = |lm: &labelfleet_models::CausalLm| -> Vec<Vec<Vec<f32>>> {
        let mut cache = lm.model.new_cache(2);
        let prompt = lm
            .model
            .forward_all(&[ids.clone(), ids.clone()], &[0, 0], &mut cache)
            .unwrap();
        let step = lm
            .model
            .forward(&[vec![42], vec![7]], &[0, 0], &mut cache)
            .unwrap();
        vec![
            prompt.get(0).unwrap().to_vec2().unwrap(),
            step.to_vec2().unwrap(),
        ]
    };
    let reference = run(&dense);
    for (lm, what) in [(&packed, "packed"), (&generic, "generic")] {
        for (i, (a, b)) in run(lm).iter().zip(&reference).enumerate() {
            for (x, y) in a.iter().zip(b) {
                assert_close_within_rounding_noise(x, y, &format!("{what}, step {i}"));
            }
        }
    }
}

/// `load_causal_lm` packs f32 layers on the CPU for our own matmul (and prompts take
/// the fused attention either way); the same GGUF read without packing runs candle's
/// matmul, and with [`Kernels::Generic`] candle's attention too. All are unrounded
/// f32, so they agree to float noise, over a padded prompt and a cached step of two
/// rows.
#[test]
fn dense_layers_packed_for_the_cpu_match_candles_matmul() {
    let gguf = common::model(common::SMOLLM2);
    let packed = load_causal_lm(&gguf, WeightFormat::F32, &Device::Cpu).unwrap();
    let unpacked =
        labelfleet_models::Llama::from_gguf(&gguf, WeightFormat::F32, &Device::Cpu).unwrap();
    let ids = packed.tokenizer.encode(&chat("Name a city.")).unwrap();
    let run = |model: &labelfleet_models::Llama| -> Vec<Vec<f32>> {
        let mut cache = model.new_cache(2);
        let short = ids[..ids.len() - 3].to_vec();
        let mut padded = vec![0; 3];
        padded.extend(&short);
        let prompt = model
            .forward(&[ids.clone(), padded], &[0, 3], &mut cache)
            .unwrap();
        let step = model
            .forward(&[vec![42], vec![7]], &[0, 0], &mut cache)
            .unwrap();
        let mut rows: Vec<Vec<f32>> = prompt.to_vec2().unwrap();
        rows.extend(step.to_vec2::<f32>().unwrap());
        rows
    };
    let generic = smollm2(WeightFormat::F32, Kernels::Generic);
    let reference = run(&unpacked);
    for (model, what) in [(&packed.model, "packed"), (&generic.model, "generic")] {
        for (i, (a, b)) in run(model).iter().zip(&reference).enumerate() {
            let worst = largest_difference(a, b);
            assert!(
                worst < 1e-3,
                "{what}, row {i}: largest logit difference {worst}"
            );
        }
    }
}

#[test]
fn greedy_generation_is_deterministic_and_answers() {
    let lm = load_causal_lm(
        &common::model(common::SMOLLM2),
        WeightFormat::Stored,
        &Device::Cpu,
    )
    .unwrap();
    let params = GenerationParams {
        max_new_tokens: 24,
        stop: vec!["<|im_end|>".into(), "\n".into()],
        ..Default::default()
    };
    let prompt = vec![chat("What is the capital of France?")];
    let (first, _) = lm.generate(&prompt, &params).unwrap();
    let (second, _) = lm.generate(&prompt, &params).unwrap();
    assert_eq!(first, second, "greedy decoding of one prompt must not vary");
    assert!(first[0].text.contains("Paris"), "{:?}", first[0].text);
    // The same prompt as token ids completes the same; without stop strings the text
    // is decoded once, at the end, and is the same text up to where the stop fell.
    let ids = lm.tokenizer.encode(&prompt[0]).unwrap();
    let (from_ids, _) = lm.generate_tokens(&[ids], &params).unwrap();
    assert_eq!(from_ids, first);
    let unstopped = GenerationParams {
        stop: Vec::new(),
        ..params
    };
    let (long, _) = lm.generate(&prompt, &unstopped).unwrap();
    assert!(long[0].new_tokens >= first[0].new_tokens);
    assert!(
        long[0].text.starts_with(&first[0].text),
        "{:?}",
        long[0].text
    );
}

/// With f32 weights (self_label's default), a prompt decodes the same in any batch. (With
/// quantized weights activations are rounded to 8 bits, and a padded row's float noise,
/// which is harmless in f32, can tip a rounding, so a long greedy completion may part
/// from the one decoded alone, as llama.cpp's do.)
#[test]
fn a_batch_of_uneven_prompts_decodes_as_each_would_alone() {
    for kernels in [Kernels::Native, Kernels::Generic] {
        uneven_prompts_decode_as_alone(&smollm2(WeightFormat::F32, kernels));
    }
}

fn uneven_prompts_decode_as_alone(lm: &labelfleet_models::CausalLm) {
    let params = GenerationParams {
        max_new_tokens: 16,
        stop: vec!["<|im_end|>".into()],
        ..Default::default()
    };
    let prompts: Vec<String> = [
        "What is the capital of France?",
        "Write one word that rhymes with cat.",
        "Which is larger, an elephant or a mouse? Answer in a few words, please.",
    ]
    .iter()
    .map(|q| chat(q))
    .collect();
    let (batched, timing) = lm.generate(&prompts, &params).unwrap();
    assert!(timing.new_tokens > 0);
    for (prompt, together) in prompts.iter().zip(&batched) {
        let (alone, _) = lm.generate(std::slice::from_ref(prompt), &params).unwrap();
        // The same tokens; their log-probabilities agree to float noise (a padded
        // row's sums run over other lengths).
        let (a, b) = (alone[0].confidence.unwrap(), together.confidence.unwrap());
        assert!(
            (a.logprob - b.logprob).abs() < 1e-3 && (a.min_logprob - b.min_logprob).abs() < 1e-3,
            "{a:?} alone, {b:?} in the batch"
        );
        assert_eq!(
            labelfleet_models::Completion {
                confidence: together.confidence,
                ..alone[0].clone()
            },
            *together,
            "{:?}, prompt {prompt:?}",
            lm.model.kernels()
        );
    }
}

/// A completion's confidence is its tokens' log-probabilities, as a forward pass over
/// the prompt and the completion, one token at a time, gives them.
#[test]
fn the_confidence_is_the_completions_log_probability() {
    let lm = smollm2(WeightFormat::F32, Kernels::Native);
    let params = GenerationParams {
        max_new_tokens: 6,
        ..Default::default()
    };
    let prompt = lm.tokenizer.encode(&chat("Name a colour.")).unwrap();
    let (completion, _) = lm
        .generate_tokens(std::slice::from_ref(&prompt), &params)
        .unwrap();
    let completion = &completion[0];
    assert_eq!(completion.finish, labelfleet_models::Finish::Length);
    let generated = lm.tokenizer.encode(&completion.text).unwrap();
    assert_eq!(generated.len(), 6, "{:?}", completion.text);
    let mut steps = vec![prompt];
    steps.extend(generated[..5].iter().map(|&t| vec![t]));
    let token_logprobs: Vec<f64> = logits(&lm, &steps)
        .iter()
        .zip(&generated)
        .map(|(row, &token)| {
            let peak = row.iter().copied().fold(f32::MIN, f32::max) as f64;
            let sum: f64 = row.iter().map(|&x| (x as f64 - peak).exp()).sum();
            row[token as usize] as f64 - peak - sum.ln()
        })
        .collect();
    let expected_sum: f64 = token_logprobs.iter().sum();
    let expected_min = token_logprobs.iter().copied().fold(0.0, f64::min);
    let got = completion
        .confidence
        .expect("a local model reports confidence");
    assert!(expected_min < 0.0, "{token_logprobs:?}");
    assert!(
        (got.logprob - expected_sum).abs() < 1e-3 && (got.min_logprob - expected_min).abs() < 1e-3,
        "{got:?}, expected sum {expected_sum} and min {expected_min} from {token_logprobs:?}"
    );
}

#[test]
fn sampling_is_repeatable_from_its_seed() {
    let lm = load_causal_lm(
        &common::model(common::SMOLLM2),
        WeightFormat::Stored,
        &Device::Cpu,
    )
    .unwrap();
    let params = |seed| GenerationParams {
        max_new_tokens: 12,
        temperature: 1.0,
        top_p: Some(0.95),
        seed,
        ..Default::default()
    };
    let prompt = vec![chat("Tell me about trains.")];
    let a = lm.generate(&prompt, &params(7)).unwrap().0;
    let b = lm.generate(&prompt, &params(7)).unwrap().0;
    assert_eq!(a, b);
    let others: Vec<_> = (8..12)
        .map(|s| lm.generate(&prompt, &params(s)).unwrap().0)
        .collect();
    assert!(
        others.iter().any(|o| o != &a),
        "different seeds should sample different text"
    );
}
