//! A BERT encoder for sentence embeddings, written for throughput on a CPU.
//!
//! candle-transformers' BERT evaluates GELU with a scalar `erff` on one thread, which
//! took most of the time of a MiniLM batch here; this encoder runs GELU in parallel
//! with an erf approximation accurate to 5e-7 in f32, fuses the query/key/value projections
//! into one matmul, and uses candle's fused layer norm and softmax.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use candle_nn::{Linear, VarBuilder};
use rayon::prelude::*;
use serde::Deserialize;

use crate::positions::over_positions;

/// The fields of a BERT `config.json` the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Longest input.
    pub max_position_embeddings: usize,
    /// Token type vocabulary (2 for BERT).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Layer norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Must be `gelu` (the exact, erf-based GELU) for this encoder.
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    fn load(vb: VarBuilder, size: usize) -> candle_core::Result<Norm> {
        Ok(Norm {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
        })
    }

    fn forward(&self, x: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, eps)
    }
}

struct EncoderLayer {
    qkv: Linear,
    output: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    down: Linear,
    output_norm: Norm,
}

/// A BERT encoder: token ids in, last hidden states out.
pub struct BertEncoder {
    config: BertConfig,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embedding_norm: Norm,
    layers: Vec<EncoderLayer>,
}

fn linear(vb: VarBuilder, input: usize, output: usize) -> candle_core::Result<Linear> {
    Ok(Linear::new(
        vb.get((output, input), "weight")?,
        Some(vb.get(output, "bias")?),
    ))
}

impl BertEncoder {
    /// Loads the weights (with or without a `bert.` prefix).
    pub fn load(vb: VarBuilder, config: &BertConfig) -> candle_core::Result<BertEncoder> {
        if config.hidden_act != "gelu" {
            candle_core::bail!(
                "hidden_act `{}`: this encoder implements BERT's exact `gelu`",
                config.hidden_act
            );
        }
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let h = config.hidden_size;
        let e = vb.pp("embeddings");
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention.self");
            let part = |name: &str| linear(a.pp(name), h, h);
            let (q, k, v) = (part("query")?, part("key")?, part("value")?);
            let bias = |l: &Linear| l.bias().expect("loaded with a bias").clone();
            let qkv = Linear::new(
                Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?,
                Some(Tensor::cat(&[bias(&q), bias(&k), bias(&v)], 0)?),
            );
            layers.push(EncoderLayer {
                qkv,
                output: linear(l.pp("attention.output.dense"), h, h)?,
                attention_norm: Norm::load(l.pp("attention.output.LayerNorm"), h)?,
                intermediate: linear(l.pp("intermediate.dense"), h, config.intermediate_size)?,
                down: linear(l.pp("output.dense"), config.intermediate_size, h)?,
                output_norm: Norm::load(l.pp("output.LayerNorm"), h)?,
            });
        }
        Ok(BertEncoder {
            word: e
                .pp("word_embeddings")
                .get((config.vocab_size, h), "weight")?,
            position: e
                .pp("position_embeddings")
                .get((config.max_position_embeddings, h), "weight")?,
            token_type: e
                .pp("token_type_embeddings")
                .get((config.type_vocab_size, h), "weight")?,
            embedding_norm: Norm::load(e.pp("LayerNorm"), h)?,
            layers,
            config: config.clone(),
        })
    }

    /// Last hidden states, `(rows, len, hidden)`, for `ids` and `types` `(rows, len)`
    /// with `mask` (1 for real tokens, 0 for padding).
    pub fn forward(
        &self,
        ids: &Tensor,
        types: &Tensor,
        mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (rows, len) = ids.dims2()?;
        let (h, heads) = (c.hidden_size, c.num_attention_heads);
        let head_dim = h / heads;
        let eps = c.layer_norm_eps as f32;
        let gather = |table: &Tensor, ids: &Tensor| -> candle_core::Result<Tensor> {
            table
                .index_select(&ids.flatten_all()?, 0)?
                .reshape((rows, len, h))
        };
        let x = (gather(&self.word, ids)? + gather(&self.token_type, types)?)?
            .broadcast_add(&self.position.narrow(0, 0, len)?)?;
        let mut x = self.embedding_norm.forward(&x, eps)?;
        // Padding keys get a large negative score: (rows, 1, 1, len).
        let bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?.reshape((rows, 1, 1, len))?;
        let scale = 1.0 / (head_dim as f64).sqrt();
        for layer in &self.layers {
            let qkv = over_positions(&layer.qkv, &x)?;
            let split = |i: usize| -> candle_core::Result<Tensor> {
                qkv.narrow(2, i * h, h)?
                    .reshape((rows, len, heads, head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (q, k, v) = (split(0)?, split(1)?, split(2)?);
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&bias)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((rows, len, h))?;
            x = layer
                .attention_norm
                .forward(&(over_positions(&layer.output, &context)? + &x)?, eps)?;
            let inner = over_positions(&layer.intermediate, &x)?;
            let inner = if inner.device().is_cpu() {
                inner.apply_op1_no_bwd(&Gelu)?
            } else {
                inner.gelu_erf()?
            };
            x = layer
                .output_norm
                .forward(&(over_positions(&layer.down, &inner)? + &x)?, eps)?;
        }
        Ok(x)
    }
}

/// erf(x) by Abramowitz & Stegun 7.1.26: absolute error below 1.5e-7, plus f32 rounding.
fn erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * (-x * x).exp();
    y.copysign(x)
}

/// The exact GELU, `x/2 · (1 + erf(x/√2))`, in parallel over the CPU's threads.
struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu-erf-parallel"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("gelu-erf-parallel: expects a contiguous f32 tensor");
        };
        let mut out = data[start..end].to_vec();
        out.par_chunks_mut(4096).for_each(|chunk| {
            for v in chunk {
                *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_erf_approximation_is_within_5e_7() {
        for i in -600..=600 {
            let x = i as f32 / 100.0;
            let exact = libm_erf(x as f64);
            assert!(
                (erf(x) as f64 - exact).abs() < 5e-7,
                "erf({x}) = {} vs {exact}",
                erf(x)
            );
        }
    }

    /// erf by its Taylor series (|x| < 3) or 1 (beyond), in f64: a reference for the test.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() >= 3.0 {
            return erf_far(x);
        }
        let mut sum = 0.0;
        let mut term = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    fn erf_far(x: f64) -> f64 {
        // For |x| >= 3, from the continued fraction of erfc.
        let a = x.abs();
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (a + f);
        }
        let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f);
        (1.0 - erfc).copysign(x)
    }
}
