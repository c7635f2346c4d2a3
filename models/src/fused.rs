//! candle's fused kernels (RMS norm, rotary embeddings) with a backward pass, for
//! training.
//!
//! candle-nn's fused kernels have no backward pass, so training composed each one from
//! elementwise operations, each writing a fresh tensor, and a backward pass about three
//! times as long. Here each op runs the fused kernel forward, on its input outside the
//! graph, and a [`Graft`] joins the result back to the input with the op's gradient
//! written out by hand. The fused kernels exist on the CPU and on CUDA, and the graft
//! only copies, so both devices take this code. (Attention, whose softmax is the largest
//! of these, is one node of its own: `fused_attention`.)

use candle_core::{
    CpuStorage, CudaStorage, CustomOp2, D, Layout, MetalStorage, Result, Shape, Tensor,
};

use crate::storage::{copy_of, cpu, cuda, metal};

/// RMS norm of the last dimension, scaled by `weight`; `weight` gets a gradient when
/// it is trained.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    let x = x.contiguous()?;
    let value = candle_nn::ops::rms_norm(&x.detach(), &weight.detach(), eps)?;
    graft(&x, weight, value, Rule::RmsNorm(eps))
}

/// Rotary embedding of `x` `(rows, heads, len, head_dim)`: halves rotated together
/// (`interleaved` false, llama's layout) or neighbouring pairs (`interleaved` true).
/// `cos` and `sin` are tables, not trained.
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> Result<Tensor> {
    let x = x.contiguous()?;
    let value = apply_rope(&x.detach(), cos, sin, interleaved)?;
    let rule = Rule::Rope {
        cos: cos.detach(),
        sin: sin.detach(),
        interleaved,
    };
    // The table stands in as the op's second input; it gets no gradient.
    graft(&x, cos, value, rule)
}

fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> Result<Tensor> {
    if interleaved {
        candle_nn::rotary_emb::rope_i(x, cos, sin)
    } else {
        candle_nn::rotary_emb::rope(x, cos, sin)
    }
}

/// The gradient rule of a fused op.
enum Rule {
    RmsNorm(f32),
    Rope {
        cos: Tensor,
        sin: Tensor,
        interleaved: bool,
    },
}

impl Rule {
    /// The gradients of the input and of the parameter (when it is trained), given the
    /// gradient `grad` of the op's result.
    fn backward(
        &self,
        x: &Tensor,
        parameter: &Tensor,
        grad: &Tensor,
    ) -> Result<(Tensor, Option<Tensor>)> {
        match self {
            Rule::RmsNorm(eps) => {
                // y = x ⊙ r ⊙ w with r = (mean x² + eps)^-½ per row:
                // dx = r ⊙ (g ⊙ w) − x ⊙ r³ ⊙ mean(x ⊙ g ⊙ w), dw = Σ_rows g ⊙ x ⊙ r.
                let weight = parameter;
                let r = (x.sqr()?.mean_keepdim(D::Minus1)? + *eps as f64)?
                    .sqrt()?
                    .recip()?;
                let scaled = grad.broadcast_mul(weight)?;
                let dot = (x * &scaled)?.mean_keepdim(D::Minus1)?;
                let dx = (scaled.broadcast_mul(&r)? - x.broadcast_mul(&(r.powf(3.0)? * dot)?)?)?;
                let dw = if weight.track_op() {
                    let width = weight.elem_count();
                    let per_row = (grad * x.broadcast_mul(&r)?)?;
                    Some(
                        per_row
                            .reshape(((), width))?
                            .sum(0)?
                            .reshape(weight.shape())?,
                    )
                } else {
                    None
                };
                Ok((dx, dw))
            }
            Rule::Rope {
                cos,
                sin,
                interleaved,
            } => {
                // A rotation's transpose is the rotation by the opposite angle.
                Ok((apply_rope(grad, cos, &sin.neg()?, *interleaved)?, None))
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Rule::RmsNorm(_) => "graft-rms-norm",
            Rule::Rope { .. } => "graft-rope",
        }
    }
}

/// Joins `value`, computed from `x` and `parameter` outside the graph, back to them:
/// its result equals `value`, and gradients reach `x` and `parameter` by `rule`.
fn graft(x: &Tensor, parameter: &Tensor, value: Tensor, rule: Rule) -> Result<Tensor> {
    if !(x.track_op() || parameter.track_op()) {
        return Ok(value);
    }
    x.apply_op2(parameter, Graft { rule, value })
}

/// The custom op behind [`graft`]: forward, a copy of the value it holds.
struct Graft {
    rule: Rule,
    value: Tensor,
}

impl CustomOp2 for Graft {
    fn name(&self) -> &'static str {
        self.rule.name()
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        copy_of(&self.value, cpu)
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        copy_of(&self.value, cuda)
    }

    fn metal_fwd(
        &self,
        _: &MetalStorage,
        _: &Layout,
        _: &MetalStorage,
        _: &Layout,
    ) -> Result<(MetalStorage, Shape)> {
        copy_of(&self.value, metal)
    }

    fn bwd(
        &self,
        x: &Tensor,
        parameter: &Tensor,
        _result: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dp) = self.rule.backward(x, parameter, grad)?;
        Ok((Some(dx), dp))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Var;

    use super::*;
    use crate::test_values::{max_difference, tensor};

    /// The value and the gradients (of the input, and of `parameter` when given) of
    /// `Σ op(x) ⊙ weights`, so that every output element has its own gradient.
    fn value_and_gradients(
        op: impl Fn(&Tensor) -> Result<Tensor>,
        x: &Var,
        parameter: Option<&Var>,
        weights: &Tensor,
    ) -> (Tensor, Tensor, Option<Tensor>) {
        let y = op(x.as_tensor()).unwrap();
        let grads = (&y * weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let dx = grads.get(x.as_tensor()).unwrap().clone();
        let dp = parameter.map(|p| grads.get(p.as_tensor()).unwrap().clone());
        (y, dx, dp)
    }

    fn assert_close(what: &str, a: &Tensor, b: &Tensor) {
        assert_eq!(a.dims(), b.dims(), "{what}");
        let difference = max_difference(a, b);
        assert!(difference < 2e-5, "{what}: {difference}");
    }

    #[test]
    fn rms_norm_equals_the_composite_one_for_trained_and_frozen_weights() {
        let x = Var::from_tensor(&tensor(&[2, 5, 8], 3)).unwrap();
        let weights = tensor(&[2, 5, 8], 4);
        let scale = (tensor(&[8], 5) + 1.5).unwrap();
        // Trained weights (a full fine-tune): both gradients.
        let w = Var::from_tensor(&scale).unwrap();
        let fused = |t: &Tensor| rms_norm(t, w.as_tensor(), 1e-5);
        let composite = |t: &Tensor| candle_nn::ops::rms_norm_slow(t, w.as_tensor(), 1e-5);
        let (y, dx, dw) = value_and_gradients(fused, &x, Some(&w), &weights);
        let (y_ref, dx_ref, dw_ref) = value_and_gradients(composite, &x, Some(&w), &weights);
        assert_close("rms norm", &y, &y_ref);
        assert_close("rms norm input gradient", &dx, &dx_ref);
        assert_close("rms norm weight gradient", &dw.unwrap(), &dw_ref.unwrap());
        // Frozen weights (LoRA): the input's gradient alone, the same as before.
        let fused = |t: &Tensor| rms_norm(t, &scale, 1e-5);
        let (_, dx_frozen, _) = value_and_gradients(fused, &x, None, &weights);
        assert_close("rms norm, frozen weights", &dx_frozen, &dx_ref);
    }

    #[test]
    fn rope_equals_the_composite_one_in_both_layouts() {
        let x = Var::from_tensor(&tensor(&[2, 3, 5, 8], 6)).unwrap();
        let weights = tensor(&[2, 3, 5, 8], 7);
        let angles = tensor(&[5, 4], 8).affine(3.0, 0.0).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        for interleaved in [false, true] {
            let fused = |t: &Tensor| rope(t, &cos, &sin, interleaved);
            let composite = |t: &Tensor| {
                if interleaved {
                    candle_nn::rotary_emb::rope_i_slow(t, &cos, &sin)
                } else {
                    candle_nn::rotary_emb::rope_slow(t, &cos, &sin)
                }
            };
            let (y, dx, _) = value_and_gradients(fused, &x, None, &weights);
            let (y_ref, dx_ref, _) = value_and_gradients(composite, &x, None, &weights);
            assert_close(&format!("rope, interleaved {interleaved}"), &y, &y_ref);
            assert_close(
                &format!("rope gradient, interleaved {interleaved}"),
                &dx,
                &dx_ref,
            );
        }
    }

    #[test]
    fn untracked_inputs_get_the_value_without_a_graph() {
        let (x, weight) = (tensor(&[3, 4], 9), tensor(&[4], 10));
        let y = rms_norm(&x, &weight, 1e-5).unwrap();
        assert!(!y.track_op());
        let direct = candle_nn::ops::rms_norm(&x, &weight, 1e-5).unwrap();
        assert_close("untracked norm", &y, &direct);
    }
}
