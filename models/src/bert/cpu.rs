//! The BERT encoder on the CPU in f32, over unpadded sentences, pooled to embeddings.
//!
//! As candle tensor operations, one MiniLM batch spent more time allocating results
//! (and faulting in fresh pages for them), adding biases and copying heads apart than
//! in its matrix products. Here the sentences of a batch lie one after another with no
//! padding, every step writes into buffers reused across layers and calls, the linear
//! layers are [`PackedLinear`]s that add their bias and residual as they write, and
//! attention runs per sentence over its own tokens only ([`kernels`]).
//!
//! Because nothing is padded, a sentence's embedding does not depend on the batch it
//! came in.

use std::sync::Mutex;

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::{BertConfig, kernels};
use crate::kernels::sgemm::PackedLinear;

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Layer {
    qkv: PackedLinear,
    output: PackedLinear,
    attention_norm: Norm,
    intermediate: PackedLinear,
    down: PackedLinear,
    output_norm: Norm,
}

/// A BERT encoder whose forward pass is [`CpuEncoder::embed`]: token ids in, pooled
/// unit-length sentence embeddings out.
pub(crate) struct CpuEncoder {
    config: BertConfig,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    /// The activations of the last call, kept to be reused (their size is the largest
    /// batch's tokens × `6·hidden + intermediate` floats).
    workspace: Mutex<Vec<f32>>,
}

/// One sentence's token ids and token type ids.
pub(crate) struct Sentence<'a> {
    pub ids: &'a [u32],
    pub types: &'a [u32],
}

fn values(tensor: Tensor) -> candle_core::Result<Vec<f32>> {
    tensor.flatten_all()?.to_vec1()
}

fn norm(vb: VarBuilder, size: usize) -> candle_core::Result<Norm> {
    Ok(Norm {
        weight: values(vb.get(size, "weight")?)?,
        bias: values(vb.get(size, "bias")?)?,
    })
}

/// The linear layers `parts` (sharing an input) packed as one, outputs side by side.
fn linear(
    parts: &[VarBuilder],
    inputs: usize,
    outputs: usize,
) -> candle_core::Result<PackedLinear> {
    let (mut weight, mut bias) = (Vec::new(), Vec::new());
    for vb in parts {
        weight.extend(values(vb.get((outputs, inputs), "weight")?)?);
        bias.extend(values(vb.get(outputs, "bias")?)?);
    }
    Ok(PackedLinear::new(
        &weight,
        Some(&bias),
        outputs * parts.len(),
        inputs,
    ))
}

impl CpuEncoder {
    /// Reads the weights from `vb` (with or without a `bert.` prefix) into packed,
    /// CPU-resident buffers.
    pub(crate) fn load(vb: VarBuilder, config: &BertConfig) -> candle_core::Result<CpuEncoder> {
        let vb = config.root(vb)?;
        let (h, inner) = (config.hidden_size, config.intermediate_size);
        let e = vb.pp("embeddings");
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                let a = l.pp("attention.self");
                Ok(Layer {
                    qkv: linear(&[a.pp("query"), a.pp("key"), a.pp("value")], h, h)?,
                    output: linear(&[l.pp("attention.output.dense")], h, h)?,
                    attention_norm: norm(l.pp("attention.output.LayerNorm"), h)?,
                    intermediate: linear(&[l.pp("intermediate.dense")], h, inner)?,
                    down: linear(&[l.pp("output.dense")], inner, h)?,
                    output_norm: norm(l.pp("output.LayerNorm"), h)?,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(CpuEncoder {
            word: values(
                e.pp("word_embeddings")
                    .get((config.vocab_size, h), "weight")?,
            )?,
            position: values(
                e.pp("position_embeddings")
                    .get((config.max_position_embeddings, h), "weight")?,
            )?,
            token_type: values(
                e.pp("token_type_embeddings")
                    .get((config.type_vocab_size, h), "weight")?,
            )?,
            embedding_norm: norm(e.pp("LayerNorm"), h)?,
            layers,
            config: config.clone(),
            workspace: Mutex::new(Vec::new()),
        })
    }

    /// The mean of each sentence's last hidden states, L2-normalised (a sentence with no
    /// tokens gets zeros).
    pub(crate) fn embed(&self, sentences: &[Sentence]) -> candle_core::Result<Vec<Vec<f32>>> {
        let c = &self.config;
        let (h, inner) = (c.hidden_size, c.intermediate_size);
        for (i, s) in sentences.iter().enumerate() {
            if s.ids.len() != s.types.len() || s.ids.len() > c.max_position_embeddings {
                candle_core::bail!(
                    "sentence {i}: {} ids and {} type ids, at most {} positions",
                    s.ids.len(),
                    s.types.len(),
                    c.max_position_embeddings
                );
            }
            if let Some(id) = s.ids.iter().find(|&&id| id as usize >= c.vocab_size) {
                candle_core::bail!("sentence {i}: token id {id} is outside the vocabulary");
            }
            if let Some(t) = s.types.iter().find(|&&t| t as usize >= c.type_vocab_size) {
                candle_core::bail!("sentence {i}: token type {t} is outside the table");
            }
        }
        let lengths: Vec<usize> = sentences.iter().map(|s| s.ids.len()).collect();
        let tokens: usize = lengths.iter().sum();
        // Another call holding the workspace gets a fresh one rather than waiting.
        let mut workspace = self
            .workspace
            .try_lock()
            .map(|mut kept| std::mem::take(&mut *kept))
            .unwrap_or_default();
        workspace.resize(workspace.len().max(tokens * (6 * h + inner)), 0.0);
        let (x, rest) = workspace.split_at_mut(tokens * h);
        let (y, rest) = rest.split_at_mut(tokens * h);
        let (qkv, rest) = rest.split_at_mut(tokens * 3 * h);
        let (context, rest) = rest.split_at_mut(tokens * h);
        let wide = &mut rest[..tokens * inner];

        self.embed_tokens(sentences, x);
        let eps = c.layer_norm_eps as f32;
        let norm = |x: &mut [f32], n: &Norm| kernels::layer_norm(x, &n.weight, &n.bias, eps);
        norm(x, &self.embedding_norm);
        for layer in &self.layers {
            layer.qkv.forward(x, qkv, None);
            kernels::attention(qkv, context, &lengths, c.num_attention_heads, h);
            layer.output.forward(context, y, Some(x));
            norm(y, &layer.attention_norm);
            layer.intermediate.forward(y, wide, None);
            kernels::gelu(wide);
            layer.down.forward(wide, x, Some(y));
            norm(x, &layer.output_norm);
        }
        let embeddings = pool(x, &lengths, h);
        if let Ok(mut kept) = self.workspace.try_lock()
            && kept.len() < workspace.len()
        {
            *kept = workspace;
        }
        Ok(embeddings)
    }

    /// Word + position + token type embeddings of every token, into `x`.
    fn embed_tokens(&self, sentences: &[Sentence], x: &mut [f32]) {
        let h = self.config.hidden_size;
        let mut rows = x.chunks_exact_mut(h);
        for s in sentences {
            for (position, (&id, &kind)) in s.ids.iter().zip(s.types).enumerate() {
                let row = rows.next().expect("x has a row per token");
                let word = &self.word[id as usize * h..][..h];
                let place = &self.position[position * h..][..h];
                let kind = &self.token_type[kind as usize * h..][..h];
                for (((x, w), p), k) in row.iter_mut().zip(word).zip(place).zip(kind) {
                    *x = w + p + k;
                }
            }
        }
    }
}

/// Mean over each sentence's rows of `x`, scaled to unit length.
fn pool(x: &[f32], lengths: &[usize], h: usize) -> Vec<Vec<f32>> {
    let mut first = 0;
    lengths
        .iter()
        .map(|&len| {
            let mut mean = vec![0f32; h];
            for row in x[first * h..(first + len) * h].chunks_exact(h) {
                mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
            }
            first += len;
            let count = len.max(1) as f32;
            mean.iter_mut().for_each(|m| *m /= count);
            let norm = mean.iter().map(|m| m * m).sum::<f32>().sqrt().max(1e-12);
            mean.iter_mut().for_each(|m| *m /= norm);
            mean
        })
        .collect()
}
