//! A projection by weights that training does not update.
//!
//! candle's matmul backward computes the gradient of both operands, whether or not
//! anything asks for it. With LoRA every base projection, and a tied output head, is
//! frozen, so each backward pass spent a second matmul as large as the forward one on
//! every projection, plus a zeroed weight-sized buffer to add the unused result into:
//! the backward pass cost twice what LoRA needs. [`frozen_matmul`] is the same matmul
//! as a custom op whose backward pass returns the input's gradient alone. It runs
//! candle's matmul of the tensor's own device (CPU or CUDA), so both paths take it.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, Layout, Shape, Storage, Tensor};

use crate::storage;

/// `x · weightᵀ` for `x: (rows, in)` and `weight: (out, in)`, where `weight` receives no
/// gradient: the backward pass computes only `grad · weight`, the gradient of `x`.
pub(crate) fn frozen_matmul(x: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    let weight = weight.contiguous()?;
    x.contiguous()?.apply_op1(NoWeightGradient { weight })
}

/// `linear` applied to `x: (…, in)` over every position at once, as
/// [`crate::positions::over_positions`] does, with its weights frozen: only `x` (and
/// the bias, if it is a variable) receives a gradient.
pub(crate) fn frozen_linear(linear: &candle_nn::Linear, x: &Tensor) -> candle_core::Result<Tensor> {
    crate::positions::map_positions(x, |flat| {
        let y = frozen_matmul(flat, linear.weight())?;
        match linear.bias() {
            Some(bias) => y.broadcast_add(bias),
            None => Ok(y),
        }
    })
}

/// Whether `linear` applied to `x` should run as [`frozen_linear`]: gradients flow
/// through `x`, and none is wanted for the weights.
pub(crate) fn is_frozen_for(linear: &candle_nn::Linear, x: &Tensor) -> bool {
    x.track_op() && !linear.weight().track_op()
}

/// The custom op: it holds the frozen `(out, in)` weight it multiplies by.
struct NoWeightGradient {
    weight: Tensor,
}

/// `x · weightᵀ` with the storage type of one device.
fn forward<S: BackendStorage>(
    x: &S,
    x_layout: &Layout,
    weight: &S,
    weight_layout: &Layout,
) -> candle_core::Result<(S, Shape)> {
    let (rows, inputs) = x_layout.shape().dims2()?;
    let (outputs, weight_inputs) = weight_layout.shape().dims2()?;
    if inputs != weight_inputs {
        candle_core::bail!(
            "frozen matmul: an input of width {inputs} against weights of width {weight_inputs}"
        );
    }
    let transposed = weight_layout.transpose(0, 1)?;
    let y = x.matmul(weight, (1, rows, outputs, inputs), x_layout, &transposed)?;
    Ok((y, Shape::from((rows, outputs))))
}

impl NoWeightGradient {
    /// The forward pass on one device, whose storage `unwrap` picks out.
    fn forward_on<S: BackendStorage>(
        &self,
        x: &S,
        layout: &Layout,
        unwrap: impl Fn(&Storage) -> Option<&S>,
    ) -> candle_core::Result<(S, Shape)> {
        let (storage, weight_layout) = self.weight.storage_and_layout();
        match unwrap(&storage) {
            Some(weight) => forward(x, layout, weight, weight_layout),
            None => candle_core::bail!(
                "frozen matmul: the input and the weights are on different devices"
            ),
        }
    }
}

impl CustomOp1 for NoWeightGradient {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.forward_on(x, layout, storage::cpu)
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        self.forward_on(x, layout, storage::cuda)
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // d(x·Wᵀ)/dx = grad · W; the weight's own gradient is never formed.
        Ok(Some(grad.matmul(&self.weight)?))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Var;

    use super::*;
    use crate::test_values::{max_difference, tensor};

    #[test]
    fn values_and_input_gradients_equal_a_plain_matmul() {
        // (batch, positions, in) through a (out, in) layer with a bias, then a weighted
        // sum, so that every output element has its own gradient.
        let x = Var::from_tensor(&tensor(&[2, 5, 7], 1)).unwrap();
        let linear = candle_nn::Linear::new(tensor(&[3, 7], 2), Some(tensor(&[3], 3)));
        let weights = tensor(&[2, 5, 3], 4);
        assert!(is_frozen_for(&linear, x.as_tensor()));

        let frozen = frozen_linear(&linear, x.as_tensor()).unwrap();
        let plain = crate::positions::over_positions(&linear, x.as_tensor()).unwrap();
        assert_eq!(frozen.dims(), plain.dims());
        assert!(max_difference(&frozen, &plain) < 1e-5);

        let frozen_grads = (frozen * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let plain_grads = (plain * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (a, b) = (
            frozen_grads.get(x.as_tensor()).unwrap(),
            plain_grads.get(x.as_tensor()).unwrap(),
        );
        assert!(max_difference(a, b) < 1e-5, "{}", max_difference(a, b));
        // The plain matmul formed a gradient for the (transposed) weights; the frozen
        // one formed none of that size.
        let weight_sized = |grads: &candle_core::backprop::GradStore| {
            grads
                .get_ids()
                .filter(|&&id| grads.get_id(id).is_some_and(|g| g.elem_count() == 21))
                .count()
        };
        assert_eq!(weight_sized(&plain_grads), 1);
        assert_eq!(weight_sized(&frozen_grads), 0);
    }

    #[test]
    fn only_a_tracked_input_against_untracked_weights_takes_the_frozen_path() {
        let plain_x = tensor(&[4, 7], 5);
        let var_x = Var::from_tensor(&plain_x).unwrap();
        let frozen = candle_nn::Linear::new(tensor(&[3, 7], 6), None);
        let trained = candle_nn::Linear::new(
            Var::from_tensor(&tensor(&[3, 7], 6)).unwrap().into_inner(),
            None,
        );
        assert!(is_frozen_for(&frozen, var_x.as_tensor()));
        // Inference: nothing is tracked, candle's own matmul is as good.
        assert!(!is_frozen_for(&frozen, &plain_x));
        // A full fine-tune: the weights want their gradient.
        assert!(!is_frozen_for(&trained, var_x.as_tensor()));
    }

    #[test]
    fn mismatched_widths_are_an_error_not_a_panic() {
        let x = Var::from_tensor(&tensor(&[4, 6], 7)).unwrap();
        let error = frozen_matmul(x.as_tensor(), &tensor(&[3, 7], 8)).unwrap_err();
        assert!(error.to_string().contains("width 6"), "{error}");
    }
}
