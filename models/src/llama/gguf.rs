//! GGUF files: the model's shape from their metadata, their tensors under Hugging Face
//! names (llama.cpp's rotary permutation of q/k undone), and a [`Llama`] straight from
//! their quantized blocks.

use std::path::Path;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{Device, Tensor};

use super::layers::{Layer, Linear, Norm};
use super::{Llama, LlamaConfig, WeightFormat};
use crate::ModelError;

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

/// The shape of the llama, qwen2, qwen3 or starcoder2 model in a GGUF file.
fn gguf_config(content: &gguf_file::Content, path: &Path) -> Result<LlamaConfig, ModelError> {
    let arch = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_else(|| "llama".to_string());
    let family = match arch.as_str() {
        "llama" | "qwen2" => super::ModelFamily::Llama,
        "qwen3" => super::ModelFamily::Qwen3,
        "starcoder2" => super::ModelFamily::Starcoder2,
        _ => {
            return Err(ModelError::Unsupported(format!(
                "{}: GGUF architecture `{arch}`; labelfleet runs llama, qwen2, qwen3 and \
                 starcoder2 from GGUF",
                path.display()
            )));
        }
    };
    let key = |name: &str| format!("{arch}.{name}");
    let hidden_size = gguf_u32(content, &key("embedding_length"))?;
    let num_heads = gguf_u32(content, &key("attention.head_count"))?;
    let starcoder2 = family == super::ModelFamily::Starcoder2;
    // starcoder2 normalises with layer norms (`layer_norm_epsilon`), the others with
    // RMS norms.
    let eps_key = if starcoder2 {
        "attention.layer_norm_epsilon"
    } else {
        "attention.layer_norm_rms_epsilon"
    };
    let vocab_size = content
        .tensor_infos
        .get("token_embd.weight")
        .map(|info| info.shape.dims()[0])
        .ok_or_else(|| ModelError::Format(format!("{}: no `token_embd.weight`", path.display())))?;
    Ok(LlamaConfig {
        family,
        vocab_size,
        hidden_size,
        intermediate_size: gguf_u32(content, &key("feed_forward_length"))?,
        num_layers: gguf_u32(content, &key("block_count"))?,
        num_heads,
        num_kv_heads: gguf_u32(content, &key("attention.head_count_kv")).unwrap_or(num_heads),
        // qwen3 gives its heads' width; elsewhere it is the hidden width's share.
        head_dim: gguf_u32(content, &key("attention.key_length"))
            .unwrap_or(hidden_size / num_heads),
        // llama.cpp's converter writes no window for starcoder2 and runs it without
        // one; a file that names a window gets it.
        sliding_window: gguf_u32(content, &key("attention.sliding_window")).ok(),
        activation: if starcoder2 {
            super::Activation::GeluPytorchTanh
        } else {
            super::Activation::Silu
        },
        rms_norm_eps: gguf_f32(content, &key(eps_key)).unwrap_or(1e-5) as f64,
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
    /// Reads and dequantizes every tensor of a llama or qwen2 GGUF file (other families
    /// do not train, and are refused).
    pub fn from_gguf(path: &Path, device: &Device) -> Result<HfWeights, ModelError> {
        let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| ModelError::Format(format!("{}: not a GGUF file: {e}", path.display())))?;
        let mut config = gguf_config(&content, path)?;
        // The names below are llama's: another family's tensors would be read wrongly.
        config.family.check_trainable(path)?;
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
    /// Loads a GGUF file of architecture `llama`, `qwen2`, `qwen3` or `starcoder2`.
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
        let dtype = super::dense_dtype(format);
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
            // `Llama::use_kernels` adds our 8-bit kernel on the CPU.
            let matmul = QMatMul::from_arc(std::sync::Arc::new(q))?;
            Ok(Linear::Quantized(matmul, bias))
        };
        let embeddings_q = tensor("token_embd.weight")?;
        let embeddings = embeddings_q.dequantize(device)?.to_dtype(dtype)?;
        let lm_head = match tensor("output.weight") {
            Ok(q) => linear(q, None)?,
            // Tied embeddings: the output projection is the embedding matrix.
            Err(_) => linear(embeddings_q, None)?,
        };
        // A norm: RMS when the file has no bias for it, layer norm when it has one
        // (starcoder2).
        type Read<'a> = dyn FnMut(&str) -> Result<QTensor, ModelError> + 'a;
        let norm = |tensor: &mut Read, name: &str| -> Result<Norm, ModelError> {
            let weight = to_dense(tensor(&format!("{name}.weight"))?)?;
            let bias = tensor(&format!("{name}.bias"))
                .ok()
                .map(to_dense)
                .transpose()?;
            Ok(Norm { weight, bias })
        };
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let p = format!("blk.{i}");
            let attn_norm = norm(&mut tensor, &format!("{p}.attn_norm"))?;
            let ffn_norm = norm(&mut tensor, &format!("{p}.ffn_norm"))?;
            let mut optional = |name: &str| tensor(&format!("{p}.{name}")).ok();
            let (bq, bk, bv, bo, q_norm, k_norm) = (
                optional("attn_q.bias"),
                optional("attn_k.bias"),
                optional("attn_v.bias"),
                optional("attn_output.bias"),
                optional("attn_q_norm.weight"),
                optional("attn_k_norm.weight"),
            );
            // starcoder2's feed-forward is `down(act(up(x)))` with biases, no gate.
            let (gate, b_up, b_down) = (
                optional("ffn_gate.weight"),
                optional("ffn_up.bias"),
                optional("ffn_down.bias"),
            );
            // qwen3 norms each query and key head.
            let q_norm = q_norm.map(|t| to_dense(t).map(Norm::rms)).transpose()?;
            let k_norm = k_norm.map(|t| to_dense(t).map(Norm::rms)).transpose()?;
            let gate = match (gate, config.family) {
                (Some(g), _) => Some(linear(g, None)?),
                (None, super::ModelFamily::Starcoder2) => None,
                (None, _) => {
                    return Err(ModelError::Format(format!(
                        "{}: no tensor `{p}.ffn_gate.weight` (a {} model's feed-forward is gated)",
                        path.display(),
                        config.family.as_str()
                    )));
                }
            };
            layers.push(Layer {
                attn_norm,
                wq: linear(tensor(&format!("{p}.attn_q.weight"))?, bq)?,
                wk: linear(tensor(&format!("{p}.attn_k.weight"))?, bk)?,
                wv: linear(tensor(&format!("{p}.attn_v.weight"))?, bv)?,
                wo: linear(tensor(&format!("{p}.attn_output.weight"))?, bo)?,
                q_norm,
                k_norm,
                ffn_norm,
                gate,
                up: linear(tensor(&format!("{p}.ffn_up.weight"))?, b_up)?,
                down: linear(tensor(&format!("{p}.ffn_down.weight"))?, b_down)?,
            });
        }
        let norm = norm(&mut tensor, "output_norm")?;
        Llama::assemble(config, embeddings, layers, norm, lm_head, device)
    }
}
