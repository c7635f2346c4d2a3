//! Changing a loaded model's projections: LoRA updates attached or merged, and weights
//! packed for the CPU kernels.

use candle_core::{DType, Tensor};

use candle_core::quantized::QMatMul;

use super::layers::Linear;
use super::{LORA_TARGETS, Llama};
use crate::kernels::qmatmul::PackedWeights;
use crate::kernels::sgemm::PackedLinear;
use crate::{Kernels, ModelError};

impl Llama {
    /// Wraps projection `target` (`q_proj`, `v_proj`, … see [`LORA_TARGETS`]) of
    /// layer `layer` with a low-rank update `scale · B·A`, `a: (rank, in)`,
    /// `b: (out, rank)`. The base stays as it is (frozen when it is not a variable).
    pub fn attach_lora(
        &mut self,
        layer: usize,
        target: &str,
        a: Tensor,
        b: Tensor,
        scale: f64,
    ) -> Result<(), ModelError> {
        let slot = self.projection(layer, target)?;
        let base = std::mem::replace(slot, Linear::Dense(candle_nn::Linear::new(a.clone(), None)));
        *slot = Linear::Lora {
            base: Box::new(base),
            a: candle_nn::Linear::new(a, None),
            b: candle_nn::Linear::new(b, None),
            scale,
        };
        Ok(())
    }

    /// Folds a low-rank update into projection `target` of layer `layer`:
    /// `W ← W + scale · B·A`. The projection must hold dense weights.
    pub fn merge_lora(
        &mut self,
        layer: usize,
        target: &str,
        a: &Tensor,
        b: &Tensor,
        scale: f64,
    ) -> Result<(), ModelError> {
        let slot = self.projection(layer, target)?;
        let Linear::Dense(dense) = slot else {
            return Err(ModelError::Invalid(format!(
                "layer {layer} `{target}` is not dense; load the base model with f32 weights to merge an adapter"
            )));
        };
        let merged = (dense.weight() + (b.matmul(a)? * scale)?)?;
        *slot = Linear::Dense(candle_nn::Linear::new(merged, dense.bias().cloned()));
        Ok(())
    }

    /// Readies a loaded model for inference with `kernels`. With [`Kernels::Native`] on
    /// the CPU, dense f32 projections are repacked for the register-tile matmul of
    /// `kernels::sgemm` (which beats candle's on these shapes and adds the bias as it
    /// writes), Q4_1 and Q8_0 ones get the 8-bit kernel of `kernels::qmatmul` for
    /// decoding, and attention is fused. With [`Kernels::Generic`], or on a GPU, the
    /// model keeps candle's tensor operations throughout.
    ///
    /// Call it once, on a model as loaded: packing cannot be undone. Inference only:
    /// packed layers carry no gradients, and adapters can no longer be merged into
    /// them, so [`crate::load_causal_lm`] calls this last. A dense output
    /// projection stays as it is (it often shares the embedding matrix, which packing
    /// would copy).
    pub fn use_kernels(&mut self, kernels: Kernels) -> Result<(), ModelError> {
        self.kernels = kernels;
        if !kernels.native_on(&self.device) {
            return Ok(());
        }
        if let Some(packed) = pack_quantized(&self.lm_head) {
            self.lm_head = packed;
        }
        for layer in &mut self.layers {
            let slots = [
                Some(&mut layer.wq),
                Some(&mut layer.wk),
                Some(&mut layer.wv),
                Some(&mut layer.wo),
                layer.gate.as_mut(),
                Some(&mut layer.up),
                Some(&mut layer.down),
            ];
            for slot in slots.into_iter().flatten() {
                if let Some(packed) = pack_quantized(slot) {
                    *slot = packed;
                    continue;
                }
                let Linear::Dense(dense) = slot else {
                    continue;
                };
                if dense.weight().dtype() != DType::F32 {
                    continue;
                }
                let (outputs, inputs) = dense.weight().dims2()?;
                let weight: Vec<f32> = dense.weight().flatten_all()?.to_vec1()?;
                let bias: Option<Vec<f32>> = dense.bias().map(|b| b.to_vec1()).transpose()?;
                *slot = Linear::PackedDense(PackedLinear::new(
                    &weight,
                    bias.as_deref(),
                    outputs,
                    inputs,
                ));
            }
        }
        Ok(())
    }

    /// The code the model runs (see [`Llama::use_kernels`]).
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    fn projection(&mut self, layer: usize, target: &str) -> Result<&mut Linear, ModelError> {
        let count = self.layers.len();
        let l = self.layers.get_mut(layer).ok_or_else(|| {
            ModelError::Invalid(format!(
                "layer {layer} does not exist; the model has {count}"
            ))
        })?;
        Ok(match target {
            "q_proj" => &mut l.wq,
            "k_proj" => &mut l.wk,
            "v_proj" => &mut l.wv,
            "o_proj" => &mut l.wo,
            "gate_proj" => l.gate.as_mut().ok_or_else(|| {
                ModelError::Invalid("this model's feed-forward has no gate_proj".into())
            })?,
            "up_proj" => &mut l.up,
            "down_proj" => &mut l.down,
            other => {
                return Err(ModelError::Invalid(format!(
                    "`{other}` is not a projection LoRA can adapt; use one of {LORA_TARGETS:?}"
                )));
            }
        })
    }

    /// The `(out, in)` shape of projection `target`.
    pub fn projection_shape(&self, target: &str) -> Result<(usize, usize), ModelError> {
        let c = &self.config;
        let kv = c.num_kv_heads * c.head_dim();
        Ok(match target {
            "q_proj" | "o_proj" => (c.hidden_size, c.hidden_size),
            "k_proj" | "v_proj" => (kv, c.hidden_size),
            "gate_proj" | "up_proj" => (c.intermediate_size, c.hidden_size),
            "down_proj" => (c.hidden_size, c.intermediate_size),
            other => {
                return Err(ModelError::Invalid(format!(
                    "`{other}` is not a projection LoRA can adapt; use one of {LORA_TARGETS:?}"
                )));
            }
        })
    }
}

/// `linear` with our 8-bit kernel beside candle's quantized matmul, when its blocks are
/// a format the kernel reads; both share one copy of the blocks.
fn pack_quantized(linear: &Linear) -> Option<Linear> {
    let Linear::Quantized(matmul @ QMatMul::QTensor(blocks), bias) = linear else {
        return None;
    };
    let packed = PackedWeights::from_qtensor(blocks.clone())?;
    Some(Linear::Packed(packed, matmul.clone(), bias.clone()))
}
