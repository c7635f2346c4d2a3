//! Attention for training: its value from any forward path, its gradient written out.
//!
//! As tensor operations, training's attention is a chain of graph nodes (two matmuls,
//! scaling, reshapes, the mask, the softmax), and candle's backward pass gives every
//! node of that chain a zeroed gradient buffer as large as the attention scores, adds
//! into it, and forms the mask's gradient that nobody reads. Here the forward value
//! comes from wherever the caller computed it without a graph (the fused CPU kernel of
//! inference, or tensor operations on a GPU), and one node's backward pass recomputes
//! the attention weights from `q` and `k` (flash attention's trade: one matmul more,
//! nothing kept between the passes) and forms the three gradients with four matmuls
//! and a few elementwise passes.

use candle_core::{
    CpuStorage, CudaStorage, CustomOp3, D, DType, Layout, MetalStorage, Result, Shape, Tensor,
};

use crate::storage::{copy_of, cpu, cuda, metal};

/// `softmax(q·kᵀ·scale + mask)·v` as one graph node over `q` `(rows, heads, len, hd)`,
/// `k`, `v` `(rows, kv_heads, total, hd)` and `mask` `(rows, 1, len, total)`, whose
/// value is `value` `(rows, len, heads·hd)`, computed by the caller without a graph.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
    value: Tensor,
) -> Result<Tensor> {
    if !(q.track_op() || k.track_op() || v.track_op()) {
        return Ok(value);
    }
    let op = Attention {
        value: value.contiguous()?,
        mask: mask.detach(),
        scale,
    };
    q.apply_op3(k, v, op)
}

/// The weights `softmax(q·kᵀ·scale + mask)` `(rows, kv_heads, groups·len, total)`, with
/// the query heads that share a key/value head side by side, as the forward pass groups
/// them.
pub(crate) fn weights(
    grouped_q: &Tensor,
    k: &Tensor,
    mask: &Tensor,
    scale: f64,
    groups: usize,
) -> Result<Tensor> {
    let (rows, kv_heads, grouped_len, _) = grouped_q.dims4()?;
    let (len, total) = (grouped_len / groups, k.dim(2)?);
    let scores = (grouped_q.matmul(&k.t()?)?.to_dtype(DType::F32)? * scale)?
        .reshape((rows, kv_heads, groups, len, total))?
        .broadcast_add(&mask.unsqueeze(2)?)?;
    candle_nn::ops::softmax_last_dim(&scores)?.reshape((rows, kv_heads, grouped_len, total))
}

struct Attention {
    /// The forward value, copied out as the node's result.
    value: Tensor,
    mask: Tensor,
    scale: f64,
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
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
        _: &MetalStorage,
        _: &Layout,
    ) -> Result<(MetalStorage, Shape)> {
        copy_of(&self.value, metal)
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _result: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (rows, heads, len, head_dim) = q.dims4()?;
        let kv_heads = k.dim(1)?;
        let groups = heads / kv_heads;
        let dtype = q.dtype();
        let grouped_q = q.reshape((rows, kv_heads, groups * len, head_dim))?;
        // The result's gradient `(rows, len, heads·hd)` in the grouped layout.
        let grad = grad
            .reshape((rows, len, heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((rows, kv_heads, groups * len, head_dim))?;
        let weights = weights(&grouped_q, k, &self.mask, self.scale, groups)?;
        // out = P·v: dv = Pᵀ·dout, dP = dout·vᵀ.
        let dv = weights.to_dtype(dtype)?.t()?.matmul(&grad)?;
        let dweights = grad.matmul(&v.t()?)?.to_dtype(DType::F32)?;
        // P = softmax(S): dS = P ⊙ (dP − Σ dP ⊙ P), and S = q·kᵀ·scale.
        let weighted = (dweights * &weights)?;
        let dot = weighted.sum_keepdim(D::Minus1)?;
        let dscores = ((weighted - weights.broadcast_mul(&dot)?)? * self.scale)?.to_dtype(dtype)?;
        let dq = dscores.matmul(k)?.reshape((rows, heads, len, head_dim))?;
        let dk = dscores.t()?.matmul(&grouped_q)?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::test_values::{max_difference, tensor};

    const ROWS: usize = 2;
    const HEADS: usize = 4;
    const KV_HEADS: usize = 2;
    const LEN: usize = 5;
    const HEAD_DIM: usize = 8;

    /// Causal, with row 1 left-padded by two positions (a padding query sees itself).
    fn mask() -> Tensor {
        let mut mask = Vec::new();
        for pad in [0, 2] {
            for i in 0..LEN {
                for j in 0..LEN {
                    let visible = if i < pad { j == i } else { j <= i && j >= pad };
                    mask.push(if visible { 0.0 } else { f32::NEG_INFINITY });
                }
            }
        }
        Tensor::from_vec(mask, (ROWS, 1, LEN, LEN), &Device::Cpu).unwrap()
    }

    /// Attention through candle's composite (differentiable) operations.
    fn composite(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> Tensor {
        let groups = HEADS / KV_HEADS;
        let grouped = q.reshape((ROWS, KV_HEADS, groups * LEN, HEAD_DIM)).unwrap();
        let scores = (grouped.matmul(&k.t().unwrap()).unwrap() * scale)
            .unwrap()
            .reshape((ROWS, KV_HEADS, groups, LEN, LEN))
            .unwrap()
            .broadcast_add(&mask.unsqueeze(2).unwrap())
            .unwrap();
        candle_nn::ops::softmax(&scores, D::Minus1)
            .unwrap()
            .reshape((ROWS, KV_HEADS, groups * LEN, LEN))
            .unwrap()
            .matmul(v)
            .unwrap()
            .reshape((ROWS, HEADS, LEN, HEAD_DIM))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((ROWS, LEN, HEADS * HEAD_DIM))
            .unwrap()
    }

    #[test]
    fn values_and_gradients_equal_the_composite_attention() {
        let q = Var::from_tensor(&tensor(&[ROWS, HEADS, LEN, HEAD_DIM], 1)).unwrap();
        let k = Var::from_tensor(&tensor(&[ROWS, KV_HEADS, LEN, HEAD_DIM], 2)).unwrap();
        let v = Var::from_tensor(&tensor(&[ROWS, KV_HEADS, LEN, HEAD_DIM], 3)).unwrap();
        let (mask, scale) = (mask(), 1.0 / (HEAD_DIM as f64).sqrt());
        let weights = tensor(&[ROWS, LEN, HEADS * HEAD_DIM], 4);
        let (q, k, v) = (q.as_tensor(), k.as_tensor(), v.as_tensor());

        let reference = composite(q, k, v, &mask, scale);
        let grads = (&reference * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        // The value as the CPU's fused kernel computes it, and as tensor operations
        // (a GPU's path) do: the gradients are the same node's either way.
        let (q_, k_, v_) = (q.detach(), k.detach(), v.detach());
        let values = [
            crate::kernels::attention::prompt(&q_, &k_, &v_, &mask, scale as f32).unwrap(),
            composite(&q_, &k_, &v_, &mask, scale),
        ];
        for value in values {
            let fused = attention(q, k, v, &mask, scale, value).unwrap();
            assert!(max_difference(&fused, &reference) < 1e-5);
            let fused_grads = (&fused * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (name, t) in [("q", q), ("k", k), ("v", v)] {
                let (a, b) = (fused_grads.get(t).unwrap(), grads.get(t).unwrap());
                let difference = max_difference(a, b);
                assert!(difference < 1e-5, "d{name}: {difference}");
            }
        }
    }

    #[test]
    fn untracked_inputs_return_the_value_itself() {
        let q = tensor(&[ROWS, HEADS, LEN, HEAD_DIM], 5);
        let k = tensor(&[ROWS, KV_HEADS, LEN, HEAD_DIM], 6);
        let value = tensor(&[ROWS, LEN, HEADS * HEAD_DIM], 7);
        let out = attention(&q, &k, &k, &mask(), 0.5, value.clone()).unwrap();
        assert!(!out.track_op());
        assert_eq!(max_difference(&out, &value), 0.0);
    }
}
