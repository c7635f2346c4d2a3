//! Training examples and the completion-only loss.

use candle_core::Tensor;

use crate::ModelError;
use crate::llama::Llama;
use crate::tokenizer::TextTokenizer;

/// One training example: the prompt's tokens followed by the completion's; the loss
/// covers only the completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedExample {
    /// Prompt then completion.
    pub tokens: Vec<u32>,
    /// Where the completion starts in `tokens`.
    pub completion_start: usize,
}

impl TokenizedExample {
    /// Tokenizes `prompt` and `completion` separately (as generation sees them) and
    /// keeps at most `max_tokens`, dropping the start of the prompt when it is too long.
    pub fn new(
        tokenizer: &TextTokenizer,
        prompt: &str,
        completion: &str,
        max_tokens: usize,
    ) -> Result<TokenizedExample, ModelError> {
        let mut prompt_tokens: Vec<u32> = tokenizer.bos.into_iter().collect();
        prompt_tokens.extend(tokenizer.encode(prompt)?);
        let completion_tokens = tokenizer.encode(completion)?;
        if completion_tokens.is_empty() || completion_tokens.len() + 1 > max_tokens {
            return Err(ModelError::Invalid(format!(
                "a completion of {} tokens does not fit in {max_tokens} tokens with its prompt",
                completion_tokens.len()
            )));
        }
        let keep = (max_tokens - completion_tokens.len()).min(prompt_tokens.len());
        let mut tokens = prompt_tokens[prompt_tokens.len() - keep..].to_vec();
        let completion_start = tokens.len();
        tokens.extend(completion_tokens);
        Ok(TokenizedExample {
            tokens,
            completion_start,
        })
    }

    /// Tokens the loss is computed on.
    pub fn scored_tokens(&self) -> usize {
        self.tokens.len() - self.completion_start
    }
}

/// The summed negative log-likelihood of every completion token in `batch` (a scalar
/// tensor that gradients flow through) and how many tokens it covers. Rows are
/// left-padded to a common length.
pub fn completion_nll(
    model: &Llama,
    batch: &[&TokenizedExample],
) -> Result<(Tensor, usize), ModelError> {
    batch_nll(model, batch, true)
}

/// [`completion_nll`], through differentiable operations or the inference kernels.
fn batch_nll(
    model: &Llama,
    batch: &[&TokenizedExample],
    differentiable: bool,
) -> Result<(Tensor, usize), ModelError> {
    let len = batch.iter().map(|e| e.tokens.len()).max().unwrap_or(0);
    let mut tokens = Vec::with_capacity(batch.len());
    let mut padding = Vec::with_capacity(batch.len());
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    for (row, example) in batch.iter().enumerate() {
        let pad = len - example.tokens.len();
        let mut padded = vec![0u32; pad];
        padded.extend(&example.tokens);
        tokens.push(padded);
        padding.push(pad);
        // Position p's logits predict token p + 1.
        for j in example.completion_start.max(1)..example.tokens.len() {
            positions.push((row * len + pad + j - 1) as u32);
            targets.push(example.tokens[j]);
        }
    }
    if targets.is_empty() {
        return Err(ModelError::Invalid(
            "the batch has no completion tokens".into(),
        ));
    }
    let device = model.device();
    let hidden = if differentiable {
        model.hidden_for_training(&tokens, &padding)?
    } else {
        model.hidden_for_scoring(&tokens, &padding)?
    };
    let hidden = hidden.reshape((batch.len() * len, model.config().hidden_size))?;
    let positions = Tensor::new(positions, device)?;
    let logits = model.logits(&hidden.index_select(&positions, 0)?)?;
    let count = targets.len();
    let targets = Tensor::new(targets, device)?;
    let mean = candle_nn::loss::cross_entropy(&logits, &targets)?;
    Ok(((mean * count as f64)?, count))
}

/// The mean loss per completion token of `model` over `examples`, in batches of
/// `batch_size`; `None` when there is nothing to score. It runs the inference kernels
/// (no gradients), on batches of examples of similar length so that little is padding,
/// and calls `progress(scored, total)` after every batch.
pub fn mean_completion_loss(
    model: &Llama,
    examples: &[TokenizedExample],
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Option<f64>, ModelError> {
    let mut by_length: Vec<&TokenizedExample> = examples.iter().collect();
    by_length.sort_by_key(|e| e.tokens.len());
    let (mut sum, mut tokens, mut scored) = (0f64, 0usize, 0usize);
    for batch in by_length.chunks(batch_size.max(1)) {
        let (nll, count) = batch_nll(model, batch, false)?;
        sum += nll.to_scalar::<f32>()? as f64;
        tokens += count;
        scored += batch.len();
        progress(scored, examples.len());
    }
    Ok((tokens > 0).then(|| sum / tokens as f64))
}
