//! Where the test models are: `$LABELFLEET_MODELS` or `.models/` at the repository root,
//! filled by `scripts/fetch-models.sh` (which `scripts/test.sh` runs).

use std::path::PathBuf;

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

#[allow(dead_code)]
pub const SMOLLM2: &str = "SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
#[allow(dead_code)]
pub const MINILM: &str = "all-MiniLM-L6-v2";
