//! A labelled turn as a model is trained on it and scored on it: the prompt `self_label`
//! builds for the turn (without retrieved examples) and the completion that is right.

use labelfleet_core::job::PromptMode;
use labelfleet_dst::prompt::{Example, build_compact_prompt, build_prompt, target_completion};
use labelfleet_models::{ModelError, TextTokenizer, TokenizedExample};

/// The prompt and the completion a model is trained to write for `example`: the
/// prompt `self_label` builds for the turn in `mode` (without retrieved examples) and
/// the update calls with the closing bracket.
pub fn render(example: &Example, mode: PromptMode) -> (String, String) {
    let prompt = match mode {
        PromptMode::InContext => build_prompt(&[], &example.context),
        PromptMode::Compact => build_compact_prompt(&example.context),
    };
    (prompt, target_completion(&example.update))
}

/// `example` rendered by [`render`] and tokenized for training or scoring, at most
/// `max_tokens` long.
pub fn tokenized(
    tokenizer: &TextTokenizer,
    example: &Example,
    mode: PromptMode,
    max_tokens: usize,
) -> Result<TokenizedExample, ModelError> {
    let (prompt, completion) = render(example, mode);
    TokenizedExample::new(tokenizer, &prompt, &completion, max_tokens)
}
