//! The batched llama against candle-transformers' own quantized llama, and generation
//! with the real SmolLM2-135M GGUF.

mod common;

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use labelfleet_models::{GenerationParams, WeightFormat, load_causal_lm};

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

#[test]
fn logits_match_candle_transformers_quantized_llama() {
    let path = common::model(common::SMOLLM2);
    let lm = load_causal_lm(&path, WeightFormat::Stored, &Device::Cpu).unwrap();
    let ids = lm
        .tokenizer
        .encode(&chat("Name a city in England."))
        .unwrap();

    let mut file = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let mut reference = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    let as_input = |ids: &[u32]| {
        Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap()
    };
    let mut cache = lm.model.new_cache(1);

    let expected = row(reference.forward(&as_input(&ids), 0));
    let ours = row(lm
        .model
        .forward(std::slice::from_ref(&ids), &[0], &mut cache)
        .map_err(|e| candle_core::Error::Msg(e.to_string())));
    let worst = largest_difference(&expected, &ours);
    assert!(worst < 1e-3, "largest logit difference {worst}");

    // One decode step after the prompt, through both caches.
    let next = 42u32;
    let expected = row(reference.forward(&as_input(&[next]), ids.len()));
    let ours = row(lm
        .model
        .forward(&[vec![next]], &[0], &mut cache)
        .map_err(|e| candle_core::Error::Msg(e.to_string())));
    let worst = largest_difference(&expected, &ours);
    assert!(
        worst < 1e-3,
        "largest logit difference after a cached step {worst}"
    );
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
}

#[test]
fn a_batch_of_uneven_prompts_decodes_as_each_would_alone() {
    let lm = load_causal_lm(
        &common::model(common::SMOLLM2),
        WeightFormat::Stored,
        &Device::Cpu,
    )
    .unwrap();
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
        assert_eq!(&alone[0], together, "prompt {prompt:?}");
    }
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
