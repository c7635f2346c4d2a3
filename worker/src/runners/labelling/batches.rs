//! The labelling loop: one turn of each of up to `batch_size` dialogues per batch,
//! retrieval for each, one batched generation, parsing, and the running log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use labelfleet_core::job::{PromptMode, RetrieverSpec, SelfLabelSpec};
use labelfleet_dst::prompt::{
    Example, apply_update, build_compact_prompt, build_prompt, parse_update, retrieval_text,
};
use labelfleet_dst::{Dialogue, Turn};
use labelfleet_models::{Confidence, GenerationParams, SentenceEmbedder};
use serde::{Deserialize, Serialize};

use super::labeller::Labeller;
use super::retrieval::{ExampleIndex, IndexedTurn, context_of, example_of};
use crate::runner::JobFailure;

/// Texts embedded per forward pass of the retriever.
const EMBED_BATCH: usize = 32;

/// One labelled turn: what the model saw and said, and the state that follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelledTurn {
    /// The turn's text as the data has it, with the states as *predicted*:
    /// `last_slot_values` before the turn, `slot_values` after it, `turn_slot_values`
    /// what it changed. (Flattened: a running log's turn reads as the data's turn.)
    #[serde(flatten)]
    pub turn: Turn,
    /// The prompt the model completed.
    pub prompt: String,
    /// The model's completion, as generated.
    pub completion: String,
    /// Whether the completion parsed; an invalid one leaves the state unchanged.
    pub valid: bool,
    /// Where the in-context examples came from (`group/run:dialogue#turn`).
    pub examples: Vec<String>,
    /// Each example's cosine similarity to the turn, in the order of `examples`
    /// (absent in logs written before labelfleet recorded it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub example_similarity: Vec<f32>,
    /// The state the data gives after the turn, where it has one: kept beside the
    /// prediction so that a person can see where they differ (`labelfleet serve`).
    /// Never shown to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold_slot_values: Option<labelfleet_dst::SlotValues>,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub new_tokens: usize,
    /// Seconds of the batch this turn was labelled in.
    pub batch_seconds: f64,
    /// How sure the labeller was of the completion, where it said (absent for an
    /// endpoint that sent no log-probabilities, and in logs written before labelfleet
    /// recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// (`retrain`'s `data.confident` ranks self-labels by it.)
    pub confidence: Option<Confidence>,
}

impl LabelledTurn {
    /// The turn as an in-context example: its context and what it changed.
    pub(super) fn example(&self) -> Example {
        example_of(
            &self.turn.last_slot_values,
            &self.turn.system_utterance,
            &self.turn.user_utterance,
            &self.turn.turn_slot_values,
        )
    }
}

/// The running log artifact: the job's identity and its labelled turns so far.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RunningLog {
    /// Hash of the job's config: a log of a different job is never resumed.
    pub(super) config_hash: String,
    /// Whether every turn has been labelled.
    pub(super) complete: bool,
    pub(super) turns: Vec<LabelledTurn>,
    /// Seconds spent labelling so far, over every delivery of the job (absent in logs
    /// written before labelfleet recorded it).
    #[serde(default)]
    pub(super) seconds: f64,
}

/// What the in-context prompt retrieves its examples with.
pub(super) struct Retrieval {
    pub(super) spec: RetrieverSpec,
    pub(super) index: ExampleIndex,
    pub(super) embedder: Arc<SentenceEmbedder>,
}

/// Everything the blocking labelling loop needs.
pub(super) struct Labelling {
    pub(super) spec: SelfLabelSpec,
    pub(super) mode: PromptMode,
    pub(super) source: String,
    pub(super) dialogues: Vec<Dialogue>,
    pub(super) done: HashMap<String, Vec<LabelledTurn>>,
    /// The examples and embedder of the `in_context` prompt; `None` for `compact`.
    pub(super) retrieval: Option<Retrieval>,
    /// Whether the data has gold states (kept in the log beside each prediction).
    pub(super) has_gold: bool,
    pub(super) lm: Arc<dyn Labeller>,
}

pub(super) fn embed_into(
    index: &mut ExampleIndex,
    embedder: &SentenceEmbedder,
    items: Vec<(String, String, Example)>,
) -> Result<(), JobFailure> {
    let texts: Vec<String> = items
        .iter()
        .map(|(_, _, e)| retrieval_text(&e.context))
        .collect();
    let embeddings = embedder
        .embed(&texts, EMBED_BATCH)
        .map_err(|e| JobFailure::new(format!("embedding examples: {e}")))?;
    for ((source, dialogue_id, example), embedding) in items.into_iter().zip(embeddings) {
        index.push(IndexedTurn {
            source,
            dialogue_id,
            example,
            embedding,
        });
    }
    Ok(())
}

/// Where labelling stands after a batch step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Step {
    /// Turns labelled so far, those resumed from an earlier attempt included.
    pub(super) labelled: usize,
    /// Turns labelled by this attempt.
    pub(super) labelled_now: usize,
    /// Tokens generated by this attempt.
    pub(super) new_tokens_now: usize,
    /// `checkpoint_turns` turns have been labelled since the running log was last due.
    pub(super) log_due: bool,
}

impl Labelling {
    /// Labels every remaining turn. After every batch step, `after_step` is called with
    /// where labelling stands and a way to get every turn so far (in the dialogues'
    /// order), to report progress, write the running log when it is due or the job must
    /// stop, and stop the job by returning an error.
    pub(super) fn run(
        &mut self,
        mut after_step: impl FnMut(Step, &dyn Fn() -> Vec<LabelledTurn>) -> Result<(), JobFailure>,
    ) -> Result<(), JobFailure> {
        let spec = self.spec.clone();
        let params = GenerationParams {
            max_new_tokens: spec.generation.max_new_tokens,
            temperature: spec.generation.temperature,
            top_p: spec.generation.top_p,
            seed: spec.generation.seed,
            stop: labelfleet_dst::prompt::STOP_SEQUENCES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let dialogues = std::mem::take(&mut self.dialogues);
        let unfinished: Vec<&Dialogue> = dialogues
            .iter()
            .filter(|d| self.done.get(&d.dialogue_id).map_or(0, Vec::len) < d.turns.len())
            .collect();
        let mut waiting = unfinished.into_iter();
        let mut active: Vec<&Dialogue> = Vec::new();
        let mut since_checkpoint = 0;
        let mut step = Step {
            labelled: self.done.values().map(Vec::len).sum(),
            labelled_now: 0,
            new_tokens_now: 0,
            log_due: false,
        };
        loop {
            while active.len() < spec.batch_size.unwrap_or(8) {
                match waiting.next() {
                    Some(d) => active.push(d),
                    None => break,
                }
            }
            if active.is_empty() {
                break;
            }
            // Each turn's context is embedded once, in one batch: as the retrieval query,
            // and again as the index entry the labelled turn becomes.
            let targets: Vec<_> = active
                .iter()
                .map(|d| {
                    let done = self
                        .done
                        .get(&d.dialogue_id)
                        .map(Vec::as_slice)
                        .unwrap_or(&[]);
                    let turn = &d.turns[done.len()];
                    let last = done
                        .last()
                        .map(|t| t.turn.slot_values.clone())
                        .unwrap_or_default();
                    let context = context_of(&last, &turn.system_utterance, &turn.user_utterance);
                    (turn, last, context)
                })
                .collect();
            let retrieve = self
                .retrieval
                .as_ref()
                .is_some_and(|r| r.index.len() >= r.spec.example_warmup);
            let keep = self
                .retrieval
                .as_ref()
                .is_some_and(|r| r.spec.add_predictions);
            let embeddings = match &self.retrieval {
                Some(r) if retrieve || keep => {
                    let texts: Vec<String> = targets
                        .iter()
                        .map(|(_, _, context)| retrieval_text(context))
                        .collect();
                    r.embedder
                        .embed(&texts, EMBED_BATCH)
                        .map_err(|e| JobFailure::new(format!("embedding turns: {e}")))?
                }
                _ => Vec::new(),
            };
            let mut prompts = Vec::with_capacity(targets.len());
            let mut sources = Vec::with_capacity(targets.len());
            for (i, (turn, _, context)) in targets.iter().enumerate() {
                let picked = match &self.retrieval {
                    Some(r) if retrieve => r.index.top_k(
                        &embeddings[i],
                        &turn.dialogue_id,
                        r.spec.k_examples,
                        r.spec.minimum_distinct,
                    ),
                    _ => Vec::new(),
                };
                let examples: Vec<Example> =
                    picked.iter().map(|(_, t)| t.example.clone()).collect();
                prompts.push(match self.mode {
                    PromptMode::InContext => build_prompt(&examples, context),
                    PromptMode::Compact => build_compact_prompt(context),
                });
                sources.push(
                    picked
                        .iter()
                        .map(|(s, t)| (t.source.clone(), *s))
                        .collect::<Vec<_>>(),
                );
            }
            let started = Instant::now();
            let completions = self.lm.complete(&prompts, &params)?;
            let seconds = started.elapsed().as_secs_f64();
            let labelled_turns = targets
                .into_iter()
                .zip(prompts)
                .zip(sources)
                .zip(completions);
            for (i, ((((turn, last, _), prompt), sources), completion)) in
                labelled_turns.enumerate()
            {
                let (state, valid) = match parse_update(&completion.text) {
                    Ok(update) => (apply_update(&last, &update), true),
                    Err(_) => (last.clone(), false),
                };
                let (examples, example_similarity): (Vec<String>, Vec<f32>) =
                    sources.into_iter().unzip();
                let labelled = LabelledTurn {
                    gold_slot_values: self.has_gold.then(|| turn.slot_values.clone()),
                    turn: Turn {
                        turn_slot_values: labelfleet_dst::delta(&last, &state),
                        last_slot_values: last,
                        slot_values: state,
                        ..turn.clone()
                    },
                    prompt,
                    completion: completion.text,
                    valid,
                    examples,
                    example_similarity,
                    prompt_tokens: completion.prompt_tokens,
                    new_tokens: completion.new_tokens,
                    batch_seconds: seconds,
                    confidence: completion.confidence,
                };
                if keep && let Some(r) = self.retrieval.as_mut() {
                    r.index.push(IndexedTurn {
                        source: format!(
                            "{}:{}#{}",
                            self.source, labelled.turn.dialogue_id, labelled.turn.turn_id
                        ),
                        dialogue_id: labelled.turn.dialogue_id.clone(),
                        example: labelled.example(),
                        embedding: embeddings[i].clone(),
                    });
                }
                step.labelled += 1;
                step.labelled_now += 1;
                step.new_tokens_now += labelled.new_tokens;
                self.done
                    .entry(labelled.turn.dialogue_id.clone())
                    .or_default()
                    .push(labelled);
                since_checkpoint += 1;
            }
            active.retain(|d| self.done.get(&d.dialogue_id).map_or(0, Vec::len) < d.turns.len());
            step.log_due = since_checkpoint >= spec.checkpoint_turns;
            if step.log_due {
                since_checkpoint = 0;
            }
            let done = &self.done;
            after_step(step, &|| in_order(&dialogues, done))?;
        }
        self.dialogues = dialogues;
        Ok(())
    }

    /// Every labelled turn, in the dialogues' order.
    pub(super) fn ordered_turns(&self) -> Vec<LabelledTurn> {
        in_order(&self.dialogues, &self.done)
    }
}

/// The labelled turns of `dialogues`, in their order.
fn in_order(
    dialogues: &[Dialogue],
    done: &HashMap<String, Vec<LabelledTurn>>,
) -> Vec<LabelledTurn> {
    dialogues
        .iter()
        .flat_map(|d| done.get(&d.dialogue_id).cloned().unwrap_or_default())
        .collect()
}

pub(super) fn log_bytes(
    hash: &str,
    complete: bool,
    turns: Vec<LabelledTurn>,
    seconds: f64,
) -> Vec<u8> {
    serde_json::to_vec(&RunningLog {
        config_hash: hash.to_string(),
        complete,
        turns,
        seconds,
    })
    .expect("the running log serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A running log's turn keeps the flat shape earlier versions wrote (and the data's
    /// turn has), so logs written before read back, and new ones read as before.
    #[test]
    fn a_labelled_turn_reads_and_writes_the_flat_running_log_shape() {
        let written_before = serde_json::json!({
            "dialogue_id": "PMUL1234", "turn_id": 2,
            "system_utterance": "What area?", "user_utterance": "The north, please.",
            "last_slot_values": {"hotel-type": "guesthouse"},
            "slot_values": {"hotel-type": "guesthouse", "hotel-area": "north"},
            "turn_slot_values": {"hotel-area": "north"},
            "prompt": "p", "completion": "c", "valid": true, "examples": ["gold:X#0"],
            "prompt_tokens": 10, "new_tokens": 4, "batch_seconds": 0.5
        });
        let turn: LabelledTurn = serde_json::from_value(written_before.clone()).unwrap();
        assert_eq!(turn.turn.dialogue_id, "PMUL1234");
        assert_eq!(turn.turn.turn_slot_values["hotel-area"], "north");
        assert_eq!(turn.example().update.len(), 1);
        assert_eq!(serde_json::to_value(&turn).unwrap(), written_before);
    }
}
