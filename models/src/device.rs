//! Choosing where a model runs: `cpu`, `cuda` or `cuda:N`.

use candle_core::Device;

use crate::ModelError;

/// Parses a device name as job files spell it.
pub fn parse_device(name: &str) -> Result<Device, ModelError> {
    match name.trim() {
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(ordinal)) => cuda(ordinal),
            _ => Err(ModelError::Invalid(format!(
                "device `{other}`: expected `cpu`, `cuda` or `cuda:N`"
            ))),
        },
    }
}

fn cuda(ordinal: usize) -> Result<Device, ModelError> {
    if !candle_core::utils::cuda_is_available() {
        return Err(ModelError::Unsupported(format!(
            "device `cuda:{ordinal}`: this build of labelfleet has no CUDA support; rebuild with \
             `--features cuda` on a machine with the CUDA toolkit"
        )));
    }
    Ok(Device::new_cuda(ordinal)?)
}

/// Fixes the CPU thread count candle uses, once, for the whole process.
///
/// Unless `RAYON_NUM_THREADS` is set, candle 0.11 works out its thread count afresh on
/// every dense matmul, and on Linux that parses `/proc/cpuinfo`: about 60 reads per
/// decoded token, a tenth of single-stream decoding time on a 2-core machine. Setting
/// the variable to the count candle would find turns each of those into a lookup. A
/// value the user already set is kept.
///
/// # Safety
///
/// It sets an environment variable, so no other thread may exist yet: call it first
/// thing in `main`.
pub unsafe fn pin_cpu_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = candle_core::utils::get_num_threads();
        // SAFETY: the caller guarantees the process has a single thread.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }
}
