//! Named tensors to and from safetensors bytes.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

use crate::ModelError;

/// Serialises named tensors to safetensors bytes.
pub fn safetensors_bytes(tensors: &HashMap<String, Tensor>) -> Result<Vec<u8>, ModelError> {
    let file = tempfile_path()?;
    candle_core::safetensors::save(tensors, &file)?;
    let bytes = std::fs::read(&file).map_err(|e| ModelError::io(&file, e));
    let _ = std::fs::remove_file(&file);
    bytes
}

/// Reads named tensors from safetensors bytes.
pub fn tensors_from_bytes(
    bytes: &[u8],
    device: &Device,
) -> Result<HashMap<String, Tensor>, ModelError> {
    Ok(candle_core::safetensors::load_buffer(bytes, device)?)
}

fn tempfile_path() -> Result<PathBuf, ModelError> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(std::env::temp_dir().join(format!("labelfleet-{}-{n}.safetensors", std::process::id())))
}
