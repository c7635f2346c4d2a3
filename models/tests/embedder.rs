//! MiniLM sentence embeddings against an independent numpy forward over the same
//! safetensors (`scripts/reference/minilm_numpy.py`), on both code paths: the CPU
//! encoder over plain buffers and the tensor operations a GPU runs.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use candle_core::Device;
use labelfleet_models::{Kernels, SentenceEmbedder};

fn python() -> std::path::PathBuf {
    let venv = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test.sh, which makes it",
        venv.display()
    );
    venv
}

fn reference(sentences: &[String]) -> Vec<Vec<f32>> {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/reference/minilm_numpy.py");
    let mut child = Command::new(python())
        .arg(script)
        .arg(common::model(common::MINILM))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(sentences).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the numpy reference failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn embeddings_match_an_independent_numpy_forward() {
    let sentences: Vec<String> = [
        "I need a cheap hotel in the centre of town.",
        "Context: for train, the destination is cambridge. System: Where are you leaving from? User: From London, on Friday please.",
        "yes",
        "Is there a restaurant serving Italian food near the museum? It should be moderately priced and open late.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let expected = reference(&sentences);
    for kernels in [Kernels::Native, Kernels::Generic] {
        let model = common::model(common::MINILM);
        let embedder = SentenceEmbedder::load_with_kernels(&model, &Device::Cpu, kernels).unwrap();
        check(&embedder, &sentences, &expected, kernels);
    }
}

fn check(
    embedder: &SentenceEmbedder,
    sentences: &[String],
    expected: &[Vec<f32>],
    kernels: Kernels,
) {
    // A batch holds sentences of different lengths, so padding is exercised too.
    let ours = embedder.embed(sentences, 3).unwrap();
    assert_eq!(ours.len(), expected.len());
    for (i, (a, b)) in ours.iter().zip(expected).enumerate() {
        assert_eq!(a.len(), embedder.dimension());
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-4,
            "{kernels:?}, sentence {i}: largest difference {worst}"
        );
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
    // Related sentences are closer than unrelated ones.
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!(dot(&ours[0], &ours[3]) > dot(&ours[0], &ours[2]));
}
