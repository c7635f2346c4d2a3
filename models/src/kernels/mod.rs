//! The CPU kernels the models run on, a layer of their own below them: what candle
//! lacks or runs slowly for these shapes.
//!
//! - `sgemm`: `x · Wᵀ + b` in f32 against weights packed once at load (AVX-512, AVX2+FMA
//!   or portable register tiles).
//! - `qmatmul`: 8-bit integer products straight on GGUF's quantized blocks.
//! - `attention`: one decoding step of attention, fused.
//! - `fastmath`: elementwise math written so that the compiler vectorises it, compiled
//!   per instruction set and picked at run time.
//! - `adamw`: AdamW's update in place, three passes instead of fourteen allocating ones.
//! - `buffers`: plain f32 buffers borrowed from candle tensors, or shared between the
//!   threads that fill disjoint parts of one.

pub(crate) mod adamw;
pub(crate) mod attention;
pub(crate) mod buffers;
pub(crate) mod fastmath;
pub(crate) mod qmatmul;
pub(crate) mod sgemm;
