//! What the test crates share: where the test models are (`$LABELFLEET_MODELS` or
//! `.models/` at the repository root, filled by `scripts/fetch-models.sh`, which
//! `scripts/test.sh` runs) and a seeded generator for random weights.

// Each test crate compiles this module and uses only some of it.
#![allow(dead_code)]

use std::path::PathBuf;

use labelfleet_core::rng::SplitMix64;

pub fn models_dir() -> PathBuf {
    std::env::var_os("LABELFLEET_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.models"))
}

pub fn model(name: &str) -> PathBuf {
    let path = models_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-models.sh (or set LABELFLEET_MODELS)",
        path.display()
    );
    path
}

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const MINILM: &str = "all-MiniLM-L6-v2";

/// A seeded generator (core's SplitMix64), so every run tests the same weights: with
/// candle's unseeded `randn` a tolerance held on most draws and failed on a few
/// (bf16 reached 5.7 % of the largest logit in 2 runs of 30).
pub struct Seeded(SplitMix64);

impl Seeded {
    pub fn new(seed: u64) -> Seeded {
        Seeded(SplitMix64::new(seed))
    }

    /// Uniform in [0, 1), from the top 24 bits (exact in f32: never rounds up to 1).
    pub fn uniform(&mut self) -> f32 {
        (self.0.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}
