//! Choosing where a model runs (`cpu`, `cuda` or `cuda:N`) and which code it runs
//! there ([`Kernels`]).

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

/// Which code a model runs on the CPU.
///
/// A GPU always runs candle's tensor operations (and candle's CUDA kernels under
/// them). On the CPU this crate has faster kernels of its own for the same work: the
/// packed f32 matmul (`sgemm`), 8-bit products on GGUF blocks (`qmatmul`), fused
/// attention, and an encoder for BERT over plain buffers. [`Kernels::Generic`] turns
/// them off, so that a CPU runs exactly the operations a GPU does: that is how CI tests
/// the GPU's code path (its masks, dtypes and shapes) on a machine without one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kernels {
    /// This crate's CPU kernels wherever they apply; candle's operations elsewhere.
    #[default]
    Native,
    /// candle's tensor operations only, on every device: the GPU's code path.
    Generic,
}

impl Kernels {
    /// Whether this crate's CPU kernels run for tensors on `device`.
    pub(crate) fn native_on(self, device: &Device) -> bool {
        self == Kernels::Native && device.is_cpu()
    }
}

fn cuda(ordinal: usize) -> Result<Device, ModelError> {
    if !candle_core::utils::cuda_is_available() {
        return Err(ModelError::Unsupported(format!(
            "device `cuda:{ordinal}`: this build of labelfleet has no CUDA support; run the job \
             on a worker built with `--features cuda`, or give it `\"device\": \"cpu\"`"
        )));
    }
    Device::new_cuda(ordinal).map_err(|e| {
        // candle appends a backtrace when RUST_BACKTRACE is set: the reason is its
        // first line.
        let e = e.to_string();
        let reason = e.lines().next().unwrap_or_default();
        ModelError::Unsupported(format!(
            "device `cuda:{ordinal}` did not open ({reason}); this machine has no usable GPU at \
             that ordinal (`nvidia-smi -L` lists them): run the job on a GPU worker, or give \
             it `\"device\": \"cpu\"`"
        ))
    })
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
