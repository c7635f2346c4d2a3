//! What a worker knows of its GPUs without touching CUDA: which are visible (honouring
//! `CUDA_VISIBLE_DEVICES`), how much memory each has free (from `nvidia-smi`, or the
//! program `LABELFLEET_NVIDIA_SMI` names), and batch sizes chosen from that memory.

use std::process::Command;

/// The `nvidia-smi` to ask.
fn nvidia_smi() -> String {
    std::env::var("LABELFLEET_NVIDIA_SMI").unwrap_or_else(|_| "nvidia-smi".into())
}

/// The GPUs this process may use, as `nvidia-smi` ids (indices or UUIDs):
/// `CUDA_VISIBLE_DEVICES` when set (empty means none), otherwise every GPU
/// `nvidia-smi -L` lists. CUDA ordinal N of this process is the N-th of them.
pub fn visible_gpus() -> Vec<String> {
    if let Ok(visible) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return visible
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty() && !id.starts_with('-'))
            .map(str::to_string)
            .collect();
    }
    let Ok(out) = Command::new(nvidia_smi()).arg("-L").output() else {
        return Vec::new();
    };
    if !out.status.success() {
        return Vec::new();
    }
    let listed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("GPU "))
        .count();
    (0..listed).map(|i| i.to_string()).collect()
}

/// The CUDA ordinal of a device name (`cuda` is 0), or `None` for the CPU.
pub fn cuda_ordinal(device: &str) -> Option<usize> {
    match device.trim() {
        "cuda" => Some(0),
        other => other.strip_prefix("cuda:")?.parse().ok(),
    }
}

/// Free memory of CUDA device `ordinal` of this process, in bytes.
pub fn free_memory(ordinal: usize) -> Result<u64, String> {
    let id = visible_gpus()
        .into_iter()
        .nth(ordinal)
        .ok_or_else(|| format!("no visible GPU has ordinal {ordinal}"))?;
    let out = Command::new(nvidia_smi())
        .args([
            "--query-gpu=memory.free",
            "--format=csv,noheader,nounits",
            "-i",
            &id,
        ])
        .output()
        .map_err(|e| format!("running {}: {e}", nvidia_smi()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            nvidia_smi(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mib: u64 = text
        .trim()
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .parse()
        .map_err(|_| {
            format!(
                "unexpected memory.free from {}: `{}`",
                nvidia_smi(),
                text.trim()
            )
        })?;
    Ok(mib * 1024 * 1024)
}

/// How many rows fit when each needs `per_row` bytes: 60 % of `free` (the rest for
/// the weights' workspace, fragmentation and the retriever), at least 1, at most `cap`.
pub fn batch_for_memory(free: u64, per_row: u64, cap: usize) -> usize {
    let rows = (free as f64 * 0.6 / per_row.max(1) as f64).floor() as usize;
    rows.clamp(1, cap.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_follow_free_memory_within_bounds() {
        let gib = 1u64 << 30;
        assert_eq!(batch_for_memory(40 * gib, gib / 2, 64), 48);
        assert_eq!(batch_for_memory(80 * gib, gib / 2, 64), 64);
        assert_eq!(batch_for_memory(gib / 4, gib, 64), 1);
    }

    #[test]
    fn device_names_give_cuda_ordinals() {
        assert_eq!(cuda_ordinal("cuda"), Some(0));
        assert_eq!(cuda_ordinal("cuda:3"), Some(3));
        assert_eq!(cuda_ordinal("cpu"), None);
    }
}
