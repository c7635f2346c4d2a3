//! One optimizer step: gradients accumulated over micro-batches, clipped, applied.

use candle_core::Var;
use candle_core::backprop::GradStore;

use crate::ModelError;
use crate::llama::Llama;

use super::*;

/// Adds `more` into `total`, gradient by gradient (accumulation over micro-batches).
pub fn accumulate(
    total: &mut GradStore,
    more: GradStore,
    params: &[(String, Var)],
) -> Result<(), ModelError> {
    for (_, var) in params {
        if let Some(g) = more.get(var) {
            let sum = match total.get(var) {
                Some(t) => (t + g)?,
                None => g.clone(),
            };
            total.insert(var, sum);
        }
    }
    Ok(())
}

/// Scales the gradients down so that their global L2 norm is at most `max_norm`;
/// returns the norm before clipping.
pub fn clip_grad_norm(
    grads: &mut GradStore,
    params: &[(String, Var)],
    max_norm: f64,
) -> Result<f64, ModelError> {
    let mut squares = 0f64;
    for (_, var) in params {
        if let Some(g) = grads.get(var) {
            squares += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = squares.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for (_, var) in params {
            if let Some(g) = grads.get(var) {
                let scaled = (g * scale)?;
                grads.insert(var, scaled);
            }
        }
    }
    Ok(norm)
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Mean loss per completion token over the step's examples.
    pub loss: f64,
    /// The gradients' global norm before clipping.
    pub grad_norm: f64,
    /// Tokens (prompt and completion) run through the model.
    pub tokens: usize,
}

/// One optimizer step of `model` over `micro_batches`: forward and backward per
/// micro-batch, gradients summed (each loss divided by the whole step's completion
/// tokens, so accumulation equals one large batch), clipped to `max_grad_norm` (0 for
/// no clipping), then an AdamW update with learning rate `lr`.
pub fn optimizer_step(
    model: &Llama,
    optimizer: &mut AdamW,
    micro_batches: &[Vec<&TokenizedExample>],
    max_grad_norm: f64,
    lr: f64,
) -> Result<StepReport, ModelError> {
    let scored: usize = micro_batches
        .iter()
        .flatten()
        .map(|e| e.scored_tokens())
        .sum();
    let params = optimizer.params().to_vec();
    let mut total: Option<GradStore> = None;
    let (mut loss_sum, mut tokens) = (0f64, 0usize);
    for batch in micro_batches {
        tokens += batch.iter().map(|e| e.tokens.len()).sum::<usize>();
        let (nll, _) = completion_nll(model, batch)?;
        loss_sum += nll.to_scalar::<f32>()? as f64;
        let grads = (nll / scored.max(1) as f64)?.backward()?;
        match total.as_mut() {
            None => total = Some(grads),
            Some(t) => accumulate(t, grads, &params)?,
        }
    }
    let mut grads =
        total.ok_or_else(|| ModelError::Invalid("a step needs a micro-batch".into()))?;
    let grad_norm = clip_grad_norm(&mut grads, &params, max_grad_norm)?;
    optimizer.step(&grads, lr)?;
    Ok(StepReport {
        loss: loss_sum / scored.max(1) as f64,
        grad_norm,
        tokens,
    })
}
