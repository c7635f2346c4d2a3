//! What labels a batch of prompts: a causal LM on the worker (candle, any family) or
//! one behind an OpenAI-compatible endpoint. Everything else of labelling (retrieval,
//! prompts, parsing, the running log and resuming, scoring) is the same code for both.

use labelfleet_models::{CausalLm, Completion, GenerationParams};

use crate::runner::JobFailure;
use crate::runners::endpoint::EndpointModel;

/// Completes a batch of prompts, in order. Blocking: call it off the async runtime.
pub trait Labeller: Send + Sync {
    /// One completion per prompt, in the prompts' order.
    fn complete(
        &self,
        prompts: &[String],
        params: &GenerationParams,
    ) -> Result<Vec<Completion>, JobFailure>;

    /// Requests it has retried so far (an endpoint's 429s, 5xx, timeouts): a local
    /// model never retries.
    fn retried_requests(&self) -> u64 {
        0
    }
}

impl Labeller for CausalLm {
    fn complete(
        &self,
        prompts: &[String],
        params: &GenerationParams,
    ) -> Result<Vec<Completion>, JobFailure> {
        self.generate(prompts, params)
            .map(|(completions, _timing)| completions)
            .map_err(|e| JobFailure::new(format!("generation failed: {e}")))
    }
}

impl Labeller for EndpointModel {
    fn complete(
        &self,
        prompts: &[String],
        params: &GenerationParams,
    ) -> Result<Vec<Completion>, JobFailure> {
        self.generate(prompts, params)
    }

    fn retried_requests(&self) -> u64 {
        self.retried()
    }
}
