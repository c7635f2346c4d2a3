//! A retrain job's examples: labelled turns from manifest groups (what `self_label`
//! jobs labelled) and gold dataset files, grouped by dialogue and rendered into the
//! prompt → completion form `self_label` prompts with.

use std::collections::BTreeMap;

use labelfleet_core::job::{DataSource, PromptMode};
use labelfleet_dst::prompt::{Example, build_compact_prompt, build_prompt, target_completion};
use labelfleet_models::{ModelError, TextTokenizer, TokenizedExample};

use crate::runner::{JobContext, JobFailure};
use crate::runners::self_label::{group_examples, read_data};

/// Dialogues a `--mini` retrain job takes from each source.
pub const MINI_DIALOGUES: usize = 4;

/// One dialogue's labelled turns, in order.
#[derive(Debug, Clone)]
pub struct LabelledDialogue {
    /// Where it came from: `group:G` or `gold:PATH`.
    pub source: String,
    /// The dialogue.
    pub dialogue_id: String,
    /// Its turns as examples (context and the update labelled for it).
    pub examples: Vec<Example>,
}

impl LabelledDialogue {
    /// A total order over dialogues that does not depend on how they were read.
    pub fn key(&self) -> (&str, &str) {
        (&self.dialogue_id, &self.source)
    }
}

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

/// Reads every source's labelled dialogues.
pub async fn gather(
    sources: &[DataSource],
    ctx: &JobContext,
    mini: bool,
) -> Result<Vec<LabelledDialogue>, JobFailure> {
    let mut out = Vec::new();
    for source in sources {
        let mut dialogues = match source {
            DataSource::Group(group) => {
                let mut by_dialogue: BTreeMap<String, Vec<Example>> = BTreeMap::new();
                for (_, dialogue_id, example) in group_examples(group, ctx).await? {
                    by_dialogue.entry(dialogue_id).or_default().push(example);
                }
                if by_dialogue.is_empty() {
                    tracing::warn!(group, "the group holds no labelled turns yet");
                }
                by_dialogue
                    .into_iter()
                    .map(|(dialogue_id, examples)| LabelledDialogue {
                        source: format!("group:{group}"),
                        dialogue_id,
                        examples,
                    })
                    .collect::<Vec<_>>()
            }
            DataSource::Gold(gold) => {
                let (path, format) = (gold.path.clone(), gold.format);
                let dialogues = tokio::task::spawn_blocking(move || read_data(&path, format))
                    .await
                    .map_err(|e| JobFailure::new(format!("reading {} failed: {e}", gold.path)))??;
                dialogues
                    .into_iter()
                    .take(gold.max_dialogues.unwrap_or(usize::MAX))
                    .map(|d| LabelledDialogue {
                        source: format!("gold:{}", gold.path),
                        examples: d.turns.iter().map(Example::of_gold_turn).collect(),
                        dialogue_id: d.dialogue_id,
                    })
                    .collect()
            }
        };
        if mini {
            dialogues.truncate(MINI_DIALOGUES);
        }
        out.extend(dialogues);
    }
    Ok(out)
}

/// Turns in `dialogues`.
pub fn turn_count(dialogues: &[LabelledDialogue]) -> usize {
    dialogues.iter().map(|d| d.examples.len()).sum()
}
