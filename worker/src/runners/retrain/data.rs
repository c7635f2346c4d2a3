//! A retrain job's examples: labelled turns from manifest groups (what `self_label`
//! jobs labelled) and gold dataset files, grouped by dialogue (rendered into prompt →
//! completion pairs by [`crate::runners::prompts`]).

use std::collections::BTreeMap;

use labelfleet_core::job::DataSource;
use labelfleet_dst::prompt::Example;

use crate::runner::{JobContext, JobFailure};
use crate::runners::data::read_data;
use labelfleet_models::Confidence;

use crate::runners::labelling::{GroupTurn, group_examples};

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
    /// The labeller's confidence in each example's update, in the order of `examples`
    /// (`None` for gold turns, and for labels that carry none).
    pub confidence: Vec<Option<Confidence>>,
    /// How many times it trains an epoch (its source's `repeat`; 1 for a group).
    pub repeat: usize,
}

/// How a `group` source's dialogues name their source.
const GROUP_PREFIX: &str = "group:";

impl LabelledDialogue {
    /// Whether its labels come from a model (a `group` source) rather than gold data.
    pub fn is_self_labelled(&self) -> bool {
        self.source.starts_with(GROUP_PREFIX)
    }

    /// A total order over dialogues that does not depend on how they were read.
    pub fn key(&self) -> (&str, &str) {
        (&self.dialogue_id, &self.source)
    }
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
                let mut by_dialogue: BTreeMap<String, Vec<GroupTurn>> = BTreeMap::new();
                for turn in group_examples(group, ctx).await? {
                    by_dialogue
                        .entry(turn.dialogue_id.clone())
                        .or_default()
                        .push(turn);
                }
                if by_dialogue.is_empty() {
                    tracing::warn!(group, "the group holds no labelled turns yet");
                }
                by_dialogue
                    .into_iter()
                    .map(|(dialogue_id, turns)| LabelledDialogue {
                        source: format!("{GROUP_PREFIX}{group}"),
                        dialogue_id,
                        confidence: turns.iter().map(|t| t.confidence).collect(),
                        examples: turns.into_iter().map(|t| t.example).collect(),
                        repeat: 1,
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
                        confidence: vec![None; d.turns.len()],
                        repeat: gold.repeat,
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
