//! One decoder layer's parts: projections in every form they are held in (quantized,
//! packed for the CPU kernels, dense, with a LoRA update), and the norms (RMS, or
//! layer norm with a bias). A family's layer is these parts in its arrangement: a gated
//! feed-forward or a plain one, per-head query/key norms or none.

use candle_core::quantized::QMatMul;
use candle_core::{Module, Tensor};

use crate::kernels::qmatmul::PackedWeights;
use crate::kernels::sgemm::PackedLinear;

pub(crate) enum Linear {
    Quantized(QMatMul, Option<Tensor>),
    /// Quantized weights with our few-rows kernel for decoding, and candle's
    /// quantized matmul for long prompts.
    Packed(PackedWeights, QMatMul, Option<Tensor>),
    Dense(candle_nn::Linear),
    /// Dense f32 weights on the CPU, packed for our register-tile matmul; inference
    /// only (no gradients flow through it).
    PackedDense(PackedLinear),
    /// A frozen projection plus a low-rank update: `base(x) + scale · B(A(x))`.
    Lora {
        base: Box<Linear>,
        a: candle_nn::Linear,
        b: candle_nn::Linear,
        scale: f64,
    },
}

/// Bytes of memory a tensor's elements take.
pub(crate) fn tensor_bytes(t: &Tensor) -> u64 {
    (t.elem_count() * t.dtype().size_in_bytes()) as u64
}

impl Linear {
    /// Bytes of memory its weights take (a shared quantized tensor counted once).
    pub(super) fn bytes(&self) -> u64 {
        let quantized = |w: &QMatMul| match w {
            QMatMul::QTensor(q) => q.storage_size_in_bytes() as u64,
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => tensor_bytes(t),
        };
        let bias = |b: &Option<Tensor>| b.as_ref().map_or(0, tensor_bytes);
        match self {
            Linear::Quantized(w, b) | Linear::Packed(_, w, b) => quantized(w) + bias(b),
            Linear::Dense(l) => tensor_bytes(l.weight()) + l.bias().map_or(0, tensor_bytes),
            Linear::PackedDense(p) => p.bytes(),
            Linear::Lora { base, a, b, .. } => {
                base.bytes() + tensor_bytes(a.weight()) + tensor_bytes(b.weight())
            }
        }
    }

    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Linear::Quantized(w, bias) => {
                let y = x.apply(w)?;
                match bias {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            }
            Linear::Packed(packed, w, bias) => {
                let rows = x.elem_count() / x.dims().last().copied().unwrap_or(1).max(1);
                let y = if packed.is_faster_for(rows) {
                    packed.forward(x)?
                } else {
                    x.apply(w)?
                };
                match bias {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            }
            Linear::Dense(l) if crate::frozen::is_frozen_for(l, x) => {
                crate::frozen::frozen_linear(l, x)
            }
            Linear::Dense(l) => crate::positions::over_positions(l, x),
            Linear::PackedDense(packed) => packed.forward_tensor(x),
            Linear::Lora { base, a, b, scale } => {
                base.forward(x)? + (b.forward(&a.forward(x)?)? * *scale)?
            }
        }
    }
}

pub(crate) struct Layer {
    pub(crate) attn_norm: Norm,
    pub(crate) wq: Linear,
    pub(crate) wk: Linear,
    pub(crate) wv: Linear,
    pub(crate) wo: Linear,
    /// qwen3's RMS norms over each query and key head, before the rotary embedding.
    pub(crate) q_norm: Option<Norm>,
    pub(crate) k_norm: Option<Norm>,
    pub(crate) ffn_norm: Norm,
    /// The gate of a gated feed-forward (`act(gate(x)) · up(x)`); without one the
    /// feed-forward is `act(up(x))` (starcoder2's `c_fc`).
    pub(crate) gate: Option<Linear>,
    pub(crate) up: Linear,
    pub(crate) down: Linear,
}

/// A norm's weights: RMS norm when it has no bias, layer norm when it has one.
pub(crate) struct Norm {
    pub(crate) weight: Tensor,
    pub(crate) bias: Option<Tensor>,
}

impl Norm {
    /// An RMS norm.
    pub(crate) fn rms(weight: Tensor) -> Norm {
        Norm { weight, bias: None }
    }

    /// Bytes of memory its weights take.
    pub(crate) fn bytes(&self) -> u64 {
        tensor_bytes(&self.weight) + self.bias.as_ref().map_or(0, tensor_bytes)
    }

    /// Normalises the last dimension of `x`: candle's fused kernels, with a backward
    /// pass for training (`crate::fused`) where they are RMS norms; a layer norm trains
    /// through its composite (differentiable) form.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        eps: f32,
        training: bool,
    ) -> candle_core::Result<Tensor> {
        match (&self.bias, training) {
            (None, false) => candle_nn::ops::rms_norm(x, &self.weight, eps),
            (None, true) => crate::fused::rms_norm(x, &self.weight, eps),
            (Some(bias), false) => candle_nn::ops::layer_norm(x, &self.weight, bias, eps),
            (Some(bias), true) => candle_nn::ops::layer_norm_slow(x, &self.weight, bias, eps),
        }
    }
}

/// What every layer of one forward pass shares about the positions it computes.
pub(super) struct Positions<'a> {
    /// `(rows, 1, len, total)`: 0 where a query sees a key, -inf elsewhere.
    pub(super) mask: &'a Tensor,
    /// For a decoding step, per row and cached position, whether the new query sees it.
    pub(super) visible: Option<&'a [Vec<bool>]>,
    /// Rotary tables for the new positions.
    pub(super) cos: &'a Tensor,
    pub(super) sin: &'a Tensor,
    /// Whether gradients must flow back: candle's composite (differentiable) ops
    /// instead of the fused inference kernels, which have no backward pass.
    pub(super) differentiable: bool,
}
