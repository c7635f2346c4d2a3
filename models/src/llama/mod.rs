//! A llama-family decoder (llama, SmolLM, qwen2) that runs a *batch* of prompts of
//! different lengths at once.
//!
//! candle-transformers' llama models keep one position counter for the whole batch and
//! no padding mask, so prompts of different lengths cannot share a forward pass. Here
//! prompts are left-padded to a common length and a per-row key mask hides the padding.
//! Every row then uses the same absolute positions: rotary embeddings depend only on the
//! distance between query and key, so a padded row computes what it would alone.
//!
//! Weights come from a GGUF file (quantized matmuls, optionally re-quantized at load) or
//! from safetensors in the Hugging Face layout (dense matmuls). For inference on the
//! CPU, quantized layers use the integer kernel of `qmatmul`, dense f32 layers are packed
//! for `sgemm` (see `Llama::pack_for_cpu`), and attention is fused (`attention`); for
//! training and on GPUs everything stays candle tensor operations.

use std::path::Path;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use crate::ModelError;
use crate::attention;
use crate::qmatmul::PackedWeights;
use crate::sgemm::PackedLinear;

/// The shape of a llama-family model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_layers: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads (grouped-query attention when fewer than query heads).
    pub num_kv_heads: usize,
    /// RMS norm epsilon.
    pub rms_norm_eps: f64,
    /// Rotary embedding base.
    pub rope_theta: f32,
    /// Longest sequence the rotary tables cover.
    pub max_positions: usize,
    /// Whether rotary pairs are adjacent (GGUF llama's layout) or half a head apart
    /// (the Hugging Face layout).
    pub rope_interleaved: bool,
}

impl LlamaConfig {
    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Bytes one prompt of `tokens` tokens needs while it is decoded in a batch by a
    /// model whose activations are `dtype`: its key/value cache in every layer and one
    /// layer's activations in that dtype, and one layer's attention scores during
    /// prefill and its logits in f32 (they are always computed in f32).
    pub fn bytes_per_row(&self, tokens: usize, dtype: DType) -> u64 {
        let (e, f) = (dtype.size_in_bytes() as u64, 4u64);
        let t = tokens as u64;
        let kv = 2 * self.num_layers as u64 * (self.num_kv_heads * self.head_dim()) as u64 * t * e;
        let scores = self.num_heads as u64 * t * t * f;
        let activations = t * (4 * self.hidden_size + 2 * self.intermediate_size) as u64 * e;
        kv + scores + activations + self.vocab_size as u64 * f
    }
}

/// The projections LoRA may adapt, by their Hugging Face names.
pub const LORA_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// How to hold a model's weights, and so which dtype its activations take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// A GGUF model's quantized weights as stored in the file (safetensors: f32).
    #[default]
    Stored,
    /// GGUF re-quantized to Q8_0 at load, which has SIMD kernels for every CPU candle
    /// knows (safetensors: f32).
    Q8_0,
    /// Dense f32: fastest for long batched prompts on a CPU, four times the memory of
    /// Q8_0.
    F32,
    /// Dense f16, activations and KV cache too: half the memory of f32, and what GPUs'
    /// tensor cores run. Softmax still runs in f32.
    F16,
    /// Dense bf16, as [`WeightFormat::F16`] with f32's range.
    Bf16,
}

impl WeightFormat {
    /// The dtype of a dense model held this way.
    pub fn dense_dtype(self) -> DType {
        match self {
            WeightFormat::F16 => DType::F16,
            WeightFormat::Bf16 => DType::BF16,
            WeightFormat::Stored | WeightFormat::Q8_0 | WeightFormat::F32 => DType::F32,
        }
    }
}

enum Linear {
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
fn tensor_bytes(t: &Tensor) -> u64 {
    (t.elem_count() * t.dtype().size_in_bytes()) as u64
}

impl Linear {
    /// Bytes of memory its weights take (a shared quantized tensor counted once).
    fn bytes(&self) -> u64 {
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

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
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
            Linear::Dense(l) => crate::positions::over_positions(l, x),
            Linear::PackedDense(packed) => packed.forward_tensor(x),
            Linear::Lora { base, a, b, scale } => {
                base.forward(x)? + (b.forward(&a.forward(x)?)? * *scale)?
            }
        }
    }
}

struct Layer {
    attn_norm: Tensor,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// What every layer of one forward pass shares about the positions it computes.
struct Positions<'a> {
    /// `(rows, 1, len, total)`: 0 where a query sees a key, -inf elsewhere.
    mask: &'a Tensor,
    /// For a decoding step, per row and cached position, whether the new query sees it.
    visible: Option<&'a [Vec<bool>]>,
    /// Rotary tables for the new positions.
    cos: &'a Tensor,
    sin: &'a Tensor,
}

/// One layer's keys and values: buffers with room to grow, `(rows, kv_heads, capacity,
/// head_dim)`, of which the first `len` positions are filled. Appending writes in place
/// instead of concatenating, which would copy the whole cache at every step.
struct LayerKv {
    k: Tensor,
    v: Tensor,
    len: usize,
}

/// Positions a cache buffer grows by.
const CACHE_CHUNK: usize = 256;

impl LayerKv {
    fn new(k: &Tensor, v: &Tensor) -> candle_core::Result<LayerKv> {
        let (rows, heads, len, dim) = k.dims4()?;
        let capacity = len.div_ceil(CACHE_CHUNK) * CACHE_CHUNK;
        let buffer = || Tensor::zeros((rows, heads, capacity, dim), k.dtype(), k.device());
        let (kb, vb) = (buffer()?, buffer()?);
        kb.slice_set(k, 2, 0)?;
        vb.slice_set(v, 2, 0)?;
        Ok(LayerKv { k: kb, v: vb, len })
    }

    /// Appends `k`, `v` and returns views of everything cached.
    fn append(&mut self, k: &Tensor, v: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let added = k.dim(2)?;
        let capacity = self.k.dim(2)?;
        if self.len + added > capacity {
            let (rows, heads, _, dim) = self.k.dims4()?;
            let grown = (self.len + added).div_ceil(CACHE_CHUNK) * CACHE_CHUNK;
            let grow = |old: &Tensor| -> candle_core::Result<Tensor> {
                let new = Tensor::zeros((rows, heads, grown, dim), old.dtype(), old.device())?;
                new.slice_set(&old.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                Ok(new)
            };
            self.k = grow(&self.k)?;
            self.v = grow(&self.v)?;
        }
        self.k.slice_set(k, 2, self.len)?;
        self.v.slice_set(v, 2, self.len)?;
        self.len += added;
        Ok((
            self.k.narrow(2, 0, self.len)?,
            self.v.narrow(2, 0, self.len)?,
        ))
    }
}

/// The key/value cache of a batch being decoded, with each row's padding mask.
pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
    /// Per row, per cached position: 0 for a real token, -inf for padding.
    key_mask: Vec<Vec<f32>>,
}

impl KvCache {
    /// Positions cached so far (padding included).
    pub fn len(&self) -> usize {
        self.key_mask.first().map_or(0, Vec::len)
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.key_mask.len()
    }

    /// Keeps only `rows` (indices into the current batch), in that order: finished
    /// prompts leave the batch so the others decode faster.
    pub fn retain(&mut self, rows: &[usize]) -> candle_core::Result<()> {
        if rows.len() == self.rows() {
            return Ok(());
        }
        let device = match self.layers.iter().flatten().next() {
            Some(layer) => layer.k.device().clone(),
            None => Device::Cpu,
        };
        let ids = Tensor::new(rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), &device)?;
        for layer in self.layers.iter_mut().flatten() {
            layer.k = layer.k.index_select(&ids, 0)?.contiguous()?;
            layer.v = layer.v.index_select(&ids, 0)?.contiguous()?;
        }
        self.key_mask = rows.iter().map(|&r| self.key_mask[r].clone()).collect();
        Ok(())
    }
}

/// A llama-family causal LM that decodes batches of left-padded prompts.
pub struct Llama {
    config: LlamaConfig,
    embeddings: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

fn rope_tables(
    config: &LlamaConfig,
    device: &Device,
) -> Result<(Tensor, Tensor), candle_core::Error> {
    let head_dim = config.head_dim();
    let inv_freq: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1f32 / config.rope_theta.powf(i as f32 / head_dim as f32))
        .collect();
    let inv_freq = Tensor::from_vec(inv_freq, (1, head_dim / 2), device)?;
    let positions = Tensor::arange(0u32, config.max_positions as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((config.max_positions, 1))?;
    let angles = positions.matmul(&inv_freq)?;
    Ok((angles.cos()?, angles.sin()?))
}

fn gguf_u32(content: &gguf_file::Content, key: &str) -> Result<usize, ModelError> {
    content
        .metadata
        .get(key)
        .ok_or_else(|| ModelError::Format(format!("the GGUF metadata has no `{key}`")))?
        .to_u32()
        .map(|v| v as usize)
        .map_err(|e| ModelError::Format(format!("GGUF `{key}`: {e}")))
}

fn gguf_f32(content: &gguf_file::Content, key: &str) -> Option<f32> {
    content.metadata.get(key).and_then(|v| v.to_f32().ok())
}

/// The shape of the llama or qwen2 model in a GGUF file.
fn gguf_config(content: &gguf_file::Content, path: &Path) -> Result<LlamaConfig, ModelError> {
    let arch = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_else(|| "llama".to_string());
    if !matches!(arch.as_str(), "llama" | "qwen2") {
        return Err(ModelError::Unsupported(format!(
            "{}: GGUF architecture `{arch}`; labelfleet runs llama and qwen2",
            path.display()
        )));
    }
    let key = |name: &str| format!("{arch}.{name}");
    let hidden_size = gguf_u32(content, &key("embedding_length"))?;
    let num_heads = gguf_u32(content, &key("attention.head_count"))?;
    let vocab_size = content
        .tensor_infos
        .get("token_embd.weight")
        .map(|info| info.shape.dims()[0])
        .ok_or_else(|| ModelError::Format(format!("{}: no `token_embd.weight`", path.display())))?;
    Ok(LlamaConfig {
        vocab_size,
        hidden_size,
        intermediate_size: gguf_u32(content, &key("feed_forward_length"))?,
        num_layers: gguf_u32(content, &key("block_count"))?,
        num_heads,
        num_kv_heads: gguf_u32(content, &key("attention.head_count_kv")).unwrap_or(num_heads),
        rms_norm_eps: gguf_f32(content, &key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5)
            as f64,
        rope_theta: gguf_f32(content, &key("rope.freq_base")).unwrap_or(10_000.0),
        max_positions: gguf_u32(content, &key("context_length")).unwrap_or(4096),
        // llama.cpp's converter permutes llama's q/k so that pairs are adjacent;
        // qwen2 keeps the Hugging Face layout.
        rope_interleaved: arch == "llama",
    })
}

/// A GGUF model's weights dequantized to f32 under their Hugging Face names
/// (`model.layers.N.self_attn.q_proj.weight`, …), with llama.cpp's q/k permutation
/// undone: what training starts from, and what a checkpoint saves.
pub struct HfWeights {
    /// The model's shape (`rope_interleaved` is false: the layout is Hugging Face's).
    pub config: LlamaConfig,
    /// Whether the output projection is the embedding matrix (no `lm_head.weight`).
    pub tie_embeddings: bool,
    /// The tensors by name.
    pub tensors: std::collections::HashMap<String, Tensor>,
}

/// The Hugging Face name of a GGUF tensor.
fn hf_name(gguf: &str) -> Option<String> {
    let top = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = top {
        return Some(name.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (part, suffix) = rest.split_once('.')?;
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// Undoes llama.cpp's permutation of a q or k projection (rotary pairs adjacent) back
/// to the Hugging Face layout (pairs half a head apart). Works on weights `(out, in)`
/// and biases `(out,)`.
fn unpermute_rotary(t: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let dims = t.dims().to_vec();
    let half = dims[0] / heads / 2;
    let rest: usize = dims[1..].iter().product();
    t.reshape((heads, half, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

impl HfWeights {
    /// Reads and dequantizes every tensor of a llama or qwen2 GGUF file.
    pub fn from_gguf(path: &Path, device: &Device) -> Result<HfWeights, ModelError> {
        let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| ModelError::Format(format!("{}: not a GGUF file: {e}", path.display())))?;
        let mut config = gguf_config(&content, path)?;
        let mut tensors = std::collections::HashMap::new();
        let names: Vec<String> = content.tensor_infos.keys().cloned().collect();
        for gguf in names {
            let Some(name) = hf_name(&gguf) else {
                continue;
            };
            let q = content.tensor(&mut file, &gguf, device).map_err(|e| {
                ModelError::Format(format!("{}: tensor `{gguf}`: {e}", path.display()))
            })?;
            let mut t = q.dequantize(device)?;
            if config.rope_interleaved {
                if name.contains("q_proj") {
                    t = unpermute_rotary(&t, config.num_heads)?;
                } else if name.contains("k_proj") {
                    t = unpermute_rotary(&t, config.num_kv_heads)?;
                }
            }
            tensors.insert(name, t);
        }
        config.rope_interleaved = false;
        let tie_embeddings = !tensors.contains_key("lm_head.weight");
        Ok(HfWeights {
            config,
            tie_embeddings,
            tensors,
        })
    }
}

impl Llama {
    /// Loads a GGUF file of architecture `llama` (or `qwen2`).
    pub fn from_gguf(
        path: &Path,
        format: WeightFormat,
        device: &Device,
    ) -> Result<Llama, ModelError> {
        let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| ModelError::Format(format!("{}: not a GGUF file: {e}", path.display())))?;
        let config = gguf_config(&content, path)?;
        let mut tensor = |name: &str| -> Result<QTensor, ModelError> {
            content.tensor(&mut file, name, device).map_err(|e| {
                ModelError::Format(format!("{}: tensor `{name}`: {e}", path.display()))
            })
        };
        let dtype = format.dense_dtype();
        let to_dense = |q: QTensor| -> Result<Tensor, ModelError> {
            Ok(q.dequantize(device)?.to_dtype(dtype)?)
        };
        let linear = |q: QTensor, bias: Option<QTensor>| -> Result<Linear, ModelError> {
            let bias = bias.map(to_dense).transpose()?;
            let q = match (format, q.dtype()) {
                (WeightFormat::F32 | WeightFormat::F16 | WeightFormat::Bf16, _) => {
                    return Ok(Linear::Dense(candle_nn::Linear::new(to_dense(q)?, bias)));
                }
                (WeightFormat::Stored, _) | (_, GgmlDType::F32 | GgmlDType::F16) => q,
                (WeightFormat::Q8_0, GgmlDType::Q8_0) => q,
                (WeightFormat::Q8_0, _) => {
                    QTensor::quantize(&q.dequantize(device)?, GgmlDType::Q8_0)?
                }
            };
            // Our kernel and candle's matmul share one copy of the blocks.
            let q = std::sync::Arc::new(q);
            let matmul = QMatMul::from_arc(q.clone())?;
            Ok(match PackedWeights::from_qtensor(q) {
                Some(packed) => Linear::Packed(packed, matmul, bias),
                None => Linear::Quantized(matmul, bias),
            })
        };
        let embeddings_q = tensor("token_embd.weight")?;
        let embeddings = embeddings_q.dequantize(device)?.to_dtype(dtype)?;
        let lm_head = match tensor("output.weight") {
            Ok(q) => linear(q, None)?,
            // Tied embeddings: the output projection is the embedding matrix.
            Err(_) => linear(embeddings_q, None)?,
        };
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let p = format!("blk.{i}");
            let mut optional = |name: &str| tensor(&format!("{p}.{name}")).ok();
            let (bq, bk, bv) = (
                optional("attn_q.bias"),
                optional("attn_k.bias"),
                optional("attn_v.bias"),
            );
            layers.push(Layer {
                attn_norm: to_dense(tensor(&format!("{p}.attn_norm.weight"))?)?,
                wq: linear(tensor(&format!("{p}.attn_q.weight"))?, bq)?,
                wk: linear(tensor(&format!("{p}.attn_k.weight"))?, bk)?,
                wv: linear(tensor(&format!("{p}.attn_v.weight"))?, bv)?,
                wo: linear(tensor(&format!("{p}.attn_output.weight"))?, None)?,
                ffn_norm: to_dense(tensor(&format!("{p}.ffn_norm.weight"))?)?,
                gate: linear(tensor(&format!("{p}.ffn_gate.weight"))?, None)?,
                up: linear(tensor(&format!("{p}.ffn_up.weight"))?, None)?,
                down: linear(tensor(&format!("{p}.ffn_down.weight"))?, None)?,
            });
        }
        let norm = to_dense(tensor("output_norm.weight")?)?;
        Llama::assemble(config, embeddings, layers, norm, lm_head, device)
    }

    /// Loads safetensors in the Hugging Face layout (`model.layers.N.self_attn.q_proj`,
    /// …) with the shape in `config`, in `dtype`; q/k/v biases are picked up when
    /// present (qwen2).
    pub fn from_safetensors(
        files: &[std::path::PathBuf],
        config: LlamaConfig,
        tie_embeddings: bool,
        dtype: DType,
        device: &Device,
    ) -> Result<Llama, ModelError> {
        // SAFETY: the files are memory-mapped read-only and not modified while loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(files, dtype, device)? };
        Llama::from_var_builder(vb, config, tie_embeddings, device)
    }

    /// Builds the model from a var builder in the Hugging Face layout; training code
    /// uses this to run a model it holds in a `VarMap`.
    pub fn from_var_builder(
        vb: VarBuilder,
        config: LlamaConfig,
        tie_embeddings: bool,
        device: &Device,
    ) -> Result<Llama, ModelError> {
        let (h, kv) = (config.hidden_size, config.num_kv_heads * config.head_dim());
        let dense =
            |vb: VarBuilder, i: usize, o: usize, bias: bool| -> candle_core::Result<Linear> {
                let weight = vb.get((o, i), "weight")?;
                let bias = if bias && vb.contains_tensor("bias") {
                    Some(vb.get(o, "bias")?)
                } else {
                    None
                };
                Ok(Linear::Dense(candle_nn::Linear::new(weight, bias)))
            };
        let m = vb.pp("model");
        let vocab = config.vocab_size;
        let embeddings = m.pp("embed_tokens").get((vocab, h), "weight")?;
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let l = m.pp(format!("layers.{i}"));
            let a = l.pp("self_attn");
            let f = l.pp("mlp");
            layers.push(Layer {
                attn_norm: l.pp("input_layernorm").get(h, "weight")?,
                wq: dense(a.pp("q_proj"), h, h, true)?,
                wk: dense(a.pp("k_proj"), h, kv, true)?,
                wv: dense(a.pp("v_proj"), h, kv, true)?,
                wo: dense(a.pp("o_proj"), h, h, false)?,
                ffn_norm: l.pp("post_attention_layernorm").get(h, "weight")?,
                gate: dense(f.pp("gate_proj"), h, config.intermediate_size, false)?,
                up: dense(f.pp("up_proj"), h, config.intermediate_size, false)?,
                down: dense(f.pp("down_proj"), config.intermediate_size, h, false)?,
            });
        }
        let norm = m.pp("norm").get(h, "weight")?;
        let lm_head = if tie_embeddings {
            Linear::Dense(candle_nn::Linear::new(embeddings.clone(), None))
        } else {
            dense(vb.pp("lm_head"), h, vocab, false)?
        };
        Llama::assemble(config, embeddings, layers, norm, lm_head, device)
    }

    /// The model from its parts, with the rotary tables its config asks for.
    fn assemble(
        config: LlamaConfig,
        embeddings: Tensor,
        layers: Vec<Layer>,
        norm: Tensor,
        lm_head: Linear,
        device: &Device,
    ) -> Result<Llama, ModelError> {
        // Everything the layers add or multiply follows the weights' dtype.
        let dtype = embeddings.dtype();
        let (cos, sin) = rope_tables(&config, device)?;
        let (cos, sin) = (cos.to_dtype(dtype)?, sin.to_dtype(dtype)?);
        Ok(Llama {
            config,
            embeddings,
            layers,
            norm,
            lm_head,
            cos,
            sin,
            device: device.clone(),
        })
    }

    /// The dtype of the model's activations (its weights' when dense, f32 when
    /// quantized).
    pub fn dtype(&self) -> DType {
        self.embeddings.dtype()
    }

    /// Bytes of memory the weights take, as held (quantized, packed or dense); an
    /// output projection tied to the embeddings is counted once. What a model cache
    /// weighs a loaded model by.
    pub fn weight_bytes(&self) -> u64 {
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down]
                    .iter()
                    .map(|w| w.bytes())
                    .sum::<u64>()
                    + tensor_bytes(&l.attn_norm)
                    + tensor_bytes(&l.ffn_norm)
            })
            .sum();
        let tied =
            matches!(&self.lm_head, Linear::Dense(l) if l.weight().id() == self.embeddings.id());
        let head = if tied { 0 } else { self.lm_head.bytes() };
        tensor_bytes(&self.embeddings) + layers + tensor_bytes(&self.norm) + head
    }

    /// The model's shape.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

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

    /// Repacks every layer's dense f32 projections, on the CPU, for the register-tile
    /// matmul of [`crate::sgemm`], which beats candle's on these shapes and adds the
    /// bias as it writes. Inference only: packed layers carry no gradients,
    /// and adapters can no longer be merged into them, so [`crate::load_causal_lm`]
    /// calls this last. The output projection stays as it is (it often shares the
    /// embedding matrix, which packing would copy).
    pub(crate) fn pack_for_cpu(&mut self) -> Result<(), ModelError> {
        if !self.device.is_cpu() {
            return Ok(());
        }
        for layer in &mut self.layers {
            let slots = [
                &mut layer.wq,
                &mut layer.wk,
                &mut layer.wv,
                &mut layer.wo,
                &mut layer.gate,
                &mut layer.up,
                &mut layer.down,
            ];
            for slot in slots {
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
            "gate_proj" => &mut l.gate,
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

    /// A cache for a batch of `rows` prompts.
    pub fn new_cache(&self, rows: usize) -> KvCache {
        KvCache {
            layers: (0..self.layers.len()).map(|_| None).collect(),
            key_mask: vec![Vec::new(); rows],
        }
    }

    /// Runs `tokens` (one row per prompt, `padding[r]` leading pad positions in row r,
    /// all rows the same length) after what `cache` holds; returns the logits of every
    /// row's last position, `(rows, vocab)`.
    pub fn forward(
        &self,
        tokens: &[Vec<u32>],
        padding: &[usize],
        cache: &mut KvCache,
    ) -> Result<Tensor, ModelError> {
        let hidden = self.forward_hidden(tokens, padding, Some(cache), true)?;
        Ok(self
            .lm_head
            .forward(&hidden)?
            .squeeze(1)?
            .to_dtype(DType::F32)?)
    }

    /// As [`Llama::forward`], returning the logits of every position, `(rows, len, vocab)`:
    /// what scoring a completion needs.
    pub fn forward_all(
        &self,
        tokens: &[Vec<u32>],
        padding: &[usize],
        cache: &mut KvCache,
    ) -> Result<Tensor, ModelError> {
        let hidden = self.forward_hidden(tokens, padding, Some(cache), false)?;
        Ok(self.lm_head.forward(&hidden)?.to_dtype(DType::F32)?)
    }

    /// The final hidden states of every position, `(rows, len, hidden)`, computed
    /// without a cache and with differentiable operations only (candle's fused rms
    /// norm, rotary and softmax kernels have no backward pass): what training needs.
    /// Rows are left-padded as for [`Llama::forward`].
    pub fn hidden_for_training(
        &self,
        tokens: &[Vec<u32>],
        padding: &[usize],
    ) -> Result<Tensor, ModelError> {
        self.forward_hidden(tokens, padding, None, false)
    }

    /// Projects hidden states to vocabulary logits.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.lm_head.forward(hidden)?)
    }

    fn forward_hidden(
        &self,
        tokens: &[Vec<u32>],
        padding: &[usize],
        mut cache: Option<&mut KvCache>,
        last_only: bool,
    ) -> Result<Tensor, ModelError> {
        let rows = tokens.len();
        let len = tokens.first().map_or(0, Vec::len);
        let cache_rows = cache.as_ref().map_or(rows, |c| c.rows());
        if rows != cache_rows || rows != padding.len() || tokens.iter().any(|t| t.len() != len) {
            return Err(ModelError::Invalid(
                "a batch needs rows of equal length, one padding count and one cache row each"
                    .into(),
            ));
        }
        let start = cache.as_ref().map_or(0, |c| c.len());
        if start + len > self.config.max_positions {
            return Err(ModelError::Invalid(format!(
                "{} positions exceed the model's context of {}",
                start + len,
                self.config.max_positions
            )));
        }
        let new_keys =
            |pad: usize| (0..len).map(move |i| if i < pad { f32::NEG_INFINITY } else { 0.0 });
        let training = cache.is_none();
        let uncached: Vec<Vec<f32>>;
        let key_mask: &[Vec<f32>] = match cache.as_deref_mut() {
            Some(cache) => {
                for (mask, &pad) in cache.key_mask.iter_mut().zip(padding) {
                    mask.extend(new_keys(pad));
                }
                &cache.key_mask
            }
            None => {
                uncached = padding.iter().map(|&pad| new_keys(pad).collect()).collect();
                &uncached
            }
        };
        let total = start + len;
        // Row r, query i (absolute position start+i) sees key j when j <= start+i and j
        // is not padding; a padding query sees only itself, so its softmax stays finite.
        let mut mask = Vec::with_capacity(rows * len * total);
        for (r, keys) in key_mask.iter().enumerate() {
            for i in 0..len {
                let query_is_pad = i < padding[r];
                for (j, &key) in keys.iter().enumerate() {
                    let visible = if query_is_pad {
                        j == start + i
                    } else {
                        j <= start + i && key == 0.0
                    };
                    mask.push(if visible { 0.0 } else { f32::NEG_INFINITY });
                }
            }
        }
        // Softmax runs in f32 whatever the weights' dtype, so the mask is f32 too.
        let mask = Tensor::from_vec(mask, (rows, 1, len, total), &self.device)?;
        let flat: Vec<u32> = tokens.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, (rows, len), &self.device)?;
        let mut x = self
            .embeddings
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((rows, len, self.config.hidden_size))?;
        let cos = self.cos.narrow(0, start, len)?;
        let sin = self.sin.narrow(0, start, len)?;
        // A decoding step (one new position per row, none of them padding) takes the
        // fused attention, which walks each row's real keys.
        let decoding = len == 1 && !training && padding.iter().all(|&p| p == 0);
        let visible: Option<Vec<Vec<bool>>> = decoding.then(|| {
            key_mask
                .iter()
                .map(|keys| keys.iter().map(|&k| k == 0.0).collect())
                .collect()
        });
        let positions = Positions {
            mask: &mask,
            visible: visible.as_deref(),
            cos: &cos,
            sin: &sin,
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = self.layer_forward(layer, &x, &positions, slot)?;
        }
        if last_only {
            x = x.narrow(1, len - 1, 1)?.contiguous()?;
        }
        Ok(rms_norm(
            &x,
            &self.norm,
            self.config.rms_norm_eps as f32,
            training,
        )?)
    }

    fn layer_forward(
        &self,
        layer: &Layer,
        x: &Tensor,
        positions: &Positions,
        cache: Option<&mut Option<LayerKv>>,
    ) -> candle_core::Result<Tensor> {
        let Positions {
            mask,
            visible,
            cos,
            sin,
        } = *positions;
        let c = &self.config;
        let training = cache.is_none();
        let (rows, len, _) = x.dims3()?;
        let head_dim = c.head_dim();
        let eps = c.rms_norm_eps as f32;
        let normed = rms_norm(x, &layer.attn_norm, eps, training)?;
        let heads = |t: Tensor, n: usize| -> candle_core::Result<Tensor> {
            t.reshape((rows, len, n, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads(layer.wq.forward(&normed)?, c.num_heads)?;
        let k = heads(layer.wk.forward(&normed)?, c.num_kv_heads)?;
        let v = heads(layer.wv.forward(&normed)?, c.num_kv_heads)?;
        let rope = match (c.rope_interleaved, training) {
            (true, false) => candle_nn::rotary_emb::rope_i,
            (true, true) => candle_nn::rotary_emb::rope_i_slow,
            (false, false) => candle_nn::rotary_emb::rope,
            (false, true) => candle_nn::rotary_emb::rope_slow,
        };
        let q = rope(&q, cos, sin)?;
        let k = rope(&k, cos, sin)?;
        let (k, v) = match cache {
            None => (k, v),
            Some(Some(layer)) => layer.append(&k, &v)?,
            Some(slot @ None) => {
                let layer = LayerKv::new(&k, &v)?;
                let views = (
                    layer.k.narrow(2, 0, layer.len)?,
                    layer.v.narrow(2, 0, layer.len)?,
                );
                *slot = Some(layer);
                views
            }
        };
        let scale = 1.0 / (head_dim as f64).sqrt();
        let attended = match visible {
            Some(visible) if attention::fits(&q) => {
                attention::decode_step(&q, &k, &v, visible, scale as f32)?
            }
            _ if !training && attention::fits_prompt(&q) => {
                attention::prompt(&q, &k, &v, mask, scale as f32)?
            }
            _ => self.attention(&q, &k, &v, mask, training)?,
        };
        let x = (x + layer.wo.forward(&attended)?)?;
        let normed = rms_norm(&x, &layer.ffn_norm, eps, training)?;
        let gated =
            (candle_nn::ops::silu(&layer.gate.forward(&normed)?)? * layer.up.forward(&normed)?)?;
        x + layer.down.forward(&gated)?
    }

    /// Attention as tensor operations, for prompts (and training): `q` `(rows, heads,
    /// len, head_dim)` over `k`, `v` `(rows, kv_heads, total, head_dim)` under `mask`
    /// `(rows, 1, len, total)`; returns `(rows, len, hidden)`.
    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        training: bool,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (rows, _, len, head_dim) = q.dims4()?;
        let scale = 1.0 / (head_dim as f64).sqrt();
        // The query heads that share a key/value head sit side by side in `q`, so one
        // matmul per key/value head serves all of them: the cache is read in place,
        // never copied out once per query head.
        let (kv_heads, groups) = (c.num_kv_heads, c.num_heads / c.num_kv_heads);
        let total = k.dim(2)?;
        let q = q.reshape((rows, kv_heads, groups * len, head_dim))?;
        // In half precision the scores are summed in f32: f16 overflows past 65,504.
        let dtype = q.dtype();
        let scores = (q.matmul(&k.t()?)?.to_dtype(DType::F32)? * scale)?
            .reshape((rows, kv_heads, groups, len, total))?
            .broadcast_add(&mask.unsqueeze(2)?)?;
        let weights = if training {
            candle_nn::ops::softmax(&scores, D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        let attended = weights
            .reshape((rows, kv_heads, groups * len, total))?
            .to_dtype(dtype)?
            .matmul(v)?
            .reshape((rows, c.num_heads, len, head_dim))?
            .transpose(1, 2)?
            .reshape((rows, len, c.hidden_size))?;
        Ok(attended)
    }
}

/// RMS norm: candle's fused kernel for inference, the composite (differentiable) form
/// for training.
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32, training: bool) -> candle_core::Result<Tensor> {
    if training {
        candle_nn::ops::rms_norm_slow(x, weight, eps)
    } else {
        candle_nn::ops::rms_norm(x, weight, eps)
    }
}

/// Index of the largest logit in each row.
pub fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>, ModelError> {
    Ok(logits
        .argmax(D::Minus1)?
        .to_dtype(DType::U32)?
        .to_vec1::<u32>()?)
}
