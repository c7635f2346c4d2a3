//! A dense layer applied to every position of a batch at once.

use candle_core::{Module, Tensor};
use candle_nn::Linear;

/// `linear` applied to `x` `(…, input)` as one 2-D matmul over all leading positions.
///
/// candle's `Linear` on a 3-D input broadcasts its weights over the first dimension and
/// runs one matmul per row of the batch, each only as tall as a prompt; one matmul as
/// tall as the whole batch keeps the CPU's matmul kernel busier.
pub(crate) fn over_positions(linear: &Linear, x: &Tensor) -> candle_core::Result<Tensor> {
    map_positions(x, |flat| linear.forward(flat))
}

/// `f` applied to `x` `(…, input)` flattened to `(positions, input)`; its
/// `(positions, output)` result is shaped back to `(…, output)`.
pub(crate) fn map_positions(
    x: &Tensor,
    f: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let input = dims.pop().unwrap_or(1);
    let positions = dims.iter().product::<usize>();
    let y = f(&x.reshape((positions, input))?)?;
    dims.push(y.dim(1)?);
    y.reshape(dims)
}
