//! BERT encoders for sentence embeddings, in two forms over the same weights:
//!
//! - [`CpuEncoder`] (in [`cpu`]): the CPU in f32, written for throughput over plain
//!   buffers with unpadded sentences;
//! - [`BertEncoder`]: candle tensor operations, for GPUs and other dtypes (and on the
//!   CPU the reference the other is tested against). It fuses the query/key/value
//!   projections into one matmul and uses candle's fused layer norm and softmax.

use candle_core::{DType, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::Deserialize;

use crate::positions::over_positions;

mod cpu;
mod kernels;

pub(crate) use cpu::{CpuEncoder, Sentence};

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

impl BertConfig {
    /// The weights' root in `vb` (with or without a `bert.` prefix), once the config
    /// is one these encoders implement.
    pub(crate) fn root<'a>(&self, vb: VarBuilder<'a>) -> candle_core::Result<VarBuilder<'a>> {
        if self.hidden_act != "gelu" {
            candle_core::bail!(
                "hidden_act `{}`: this encoder implements BERT's exact `gelu`",
                self.hidden_act
            );
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            candle_core::bail!(
                "hidden_size {} does not split into {} attention heads",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        Ok(
            if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
                vb.pp("bert")
            } else {
                vb
            },
        )
    }
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
        let vb = config.root(vb)?;
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
            let inner = over_positions(&layer.intermediate, &x)?.gelu_erf()?;
            x = layer
                .output_norm
                .forward(&(over_positions(&layer.down, &inner)? + &x)?, eps)?;
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::Device;

    use super::*;
    use crate::test_values::normal;

    /// One sentence's token ids and token type ids.
    type Tokens = (Vec<u32>, Vec<u32>);

    /// A small BERT with random weights: 3 heads of 8, two layers.
    fn tiny() -> (BertConfig, VarBuilder<'static>) {
        let config = BertConfig {
            vocab_size: 50,
            hidden_size: 24,
            num_hidden_layers: 2,
            num_attention_heads: 3,
            intermediate_size: 40,
            max_position_embeddings: 40,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
        };
        let (h, inner) = (config.hidden_size, config.intermediate_size);
        let mut shapes: Vec<(String, Vec<usize>)> = vec![
            ("embeddings.word_embeddings.weight".into(), vec![50, h]),
            ("embeddings.position_embeddings.weight".into(), vec![40, h]),
            ("embeddings.token_type_embeddings.weight".into(), vec![2, h]),
        ];
        let norm = |shapes: &mut Vec<(String, Vec<usize>)>, name: &str| {
            shapes.push((format!("{name}.weight"), vec![h]));
            shapes.push((format!("{name}.bias"), vec![h]));
        };
        norm(&mut shapes, "embeddings.LayerNorm");
        for i in 0..config.num_hidden_layers {
            let l = format!("encoder.layer.{i}");
            for (name, outputs, inputs) in [
                ("attention.self.query", h, h),
                ("attention.self.key", h, h),
                ("attention.self.value", h, h),
                ("attention.output.dense", h, h),
                ("intermediate.dense", inner, h),
                ("output.dense", h, inner),
            ] {
                shapes.push((format!("{l}.{name}.weight"), vec![outputs, inputs]));
                shapes.push((format!("{l}.{name}.bias"), vec![outputs]));
            }
            norm(&mut shapes, &format!("{l}.attention.output.LayerNorm"));
            norm(&mut shapes, &format!("{l}.output.LayerNorm"));
        }
        let tensors: HashMap<String, Tensor> = shapes
            .into_iter()
            .enumerate()
            .map(|(i, (name, shape))| (name, normal(&shape, 0.5, i as u64)))
            .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        (config, vb)
    }

    /// Sentences of 5, 17 and 35 tokens (past one 32-key panel), some of type 1.
    fn sentences() -> Vec<Tokens> {
        [5usize, 17, 35]
            .iter()
            .map(|&len| {
                let ids = (0..len).map(|i| ((i * 7 + len) % 50) as u32).collect();
                let types = (0..len).map(|i| u32::from(i > len / 2)).collect();
                (ids, types)
            })
            .collect()
    }

    fn embed_on_cpu(
        encoder: &CpuEncoder,
        sentences: &[Tokens],
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let sentences: Vec<Sentence> = sentences
            .iter()
            .map(|(ids, types)| Sentence { ids, types })
            .collect();
        encoder.embed(&sentences)
    }

    /// The CPU encoder against the tensor encoder over a right-padded batch, mean-pooled
    /// over real tokens and normalised as `SentenceEmbedder` does.
    #[test]
    fn the_cpu_encoder_matches_the_tensor_encoder() {
        let (config, vb) = tiny();
        let cpu = CpuEncoder::load(vb.clone(), &config).unwrap();
        let tensors = BertEncoder::load(vb, &config).unwrap();
        let sentences = sentences();
        let longest = sentences.iter().map(|(ids, _)| ids.len()).max().unwrap();
        let padded = |pick: &dyn Fn(&Tokens) -> Vec<u32>| -> Tensor {
            let rows: Vec<u32> = sentences
                .iter()
                .flat_map(|s| {
                    let mut row = pick(s);
                    row.resize(longest, 0);
                    row
                })
                .collect();
            Tensor::from_vec(rows, (sentences.len(), longest), &Device::Cpu).unwrap()
        };
        let ids = padded(&|(ids, _)| ids.clone());
        let types = padded(&|(_, types)| types.clone());
        let mask = padded(&|(ids, _)| vec![1; ids.len()]);
        let hidden = tensors.forward(&ids, &types, &mask).unwrap();
        let mask = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
        let mean = hidden
            .broadcast_mul(&mask)
            .unwrap()
            .sum(1)
            .unwrap()
            .broadcast_div(&mask.sum(1).unwrap())
            .unwrap();
        let norms = mean.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap();
        let expected: Vec<Vec<f32>> = mean.broadcast_div(&norms).unwrap().to_vec2().unwrap();
        let ours = embed_on_cpu(&cpu, &sentences).unwrap();
        for (i, (a, b)) in ours.iter().zip(&expected).enumerate() {
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "sentence {i}: largest difference {worst}");
        }
    }

    /// With no padding, a sentence's embedding is the same, bit for bit, alone or in a
    /// batch with longer and shorter ones.
    #[test]
    fn the_cpu_encoder_is_batch_invariant() {
        let (config, vb) = tiny();
        let cpu = CpuEncoder::load(vb, &config).unwrap();
        let sentences = sentences();
        let together = embed_on_cpu(&cpu, &sentences).unwrap();
        for (i, sentence) in sentences.iter().enumerate() {
            let alone = embed_on_cpu(&cpu, std::slice::from_ref(sentence)).unwrap();
            assert_eq!(alone[0], together[i], "sentence {i}");
        }
    }

    #[test]
    fn the_cpu_encoder_names_a_bad_token() {
        let (config, vb) = tiny();
        let cpu = CpuEncoder::load(vb, &config).unwrap();
        let error = embed_on_cpu(&cpu, &[(vec![1, 99], vec![0, 0])]).unwrap_err();
        assert!(error.to_string().contains("token id 99"), "{error}");
    }
}
