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
