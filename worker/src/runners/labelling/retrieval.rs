//! The example index: labelled turns, their embeddings, and top-k selection with a
//! minimum number of distinct slot signatures (as the seed pipeline retrieves).

use std::collections::BTreeSet;

use labelfleet_dst::prompt::{Example, TurnContext};

/// One labelled turn that can be shown as an example.
#[derive(Debug, Clone)]
pub struct IndexedTurn {
    /// Where it came from: `group/run:dialogue#turn`, or `gold:dialogue#turn`.
    pub source: String,
    /// Its dialogue, so a dialogue is never its own example.
    pub dialogue_id: String,
    /// The example itself.
    pub example: Example,
    /// Unit-length embedding of its retrieval text.
    pub embedding: Vec<f32>,
}

/// Labelled turns to retrieve examples from.
#[derive(Default)]
pub struct ExampleIndex {
    turns: Vec<IndexedTurn>,
}

/// Which slots a turn set: examples with different signatures teach different things.
fn signature(example: &Example) -> BTreeSet<&str> {
    example.update.keys().map(String::as_str).collect()
}

/// Candidates considered before the distinct-signature pass.
const MIN_CANDIDATES: usize = 10;

impl ExampleIndex {
    /// Adds a turn.
    pub fn push(&mut self, turn: IndexedTurn) {
        self.turns.push(turn);
    }

    /// Turns in the index.
    pub fn len(&self) -> usize {
        self.turns.len()
    }

    /// The `k` best examples for `query` (an embedding), excluding the query's own
    /// dialogue: of the best max(10, k) by cosine, first the best `minimum_distinct`
    /// with distinct slot signatures, then the best of the rest. Returned least similar
    /// first, so the most similar example sits next to the target in the prompt, each
    /// with its cosine similarity to the query.
    pub fn top_k(
        &self,
        query: &[f32],
        dialogue_id: &str,
        k: usize,
        minimum_distinct: usize,
    ) -> Vec<(f32, &IndexedTurn)> {
        let mut scored: Vec<(f32, &IndexedTurn)> = self
            .turns
            .iter()
            .filter(|t| t.dialogue_id != dialogue_id)
            .map(|t| (dot(query, &t.embedding), t))
            .collect();
        scored.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then_with(|| a.1.source.cmp(&b.1.source))
        });
        scored.truncate(MIN_CANDIDATES.max(k));
        let mut chosen: Vec<(f32, &IndexedTurn)> = Vec::with_capacity(k);
        let mut seen = Vec::new();
        for &(score, turn) in &scored {
            if chosen.len() >= minimum_distinct {
                break;
            }
            let sig = signature(&turn.example);
            if !seen.contains(&sig) {
                seen.push(sig);
                chosen.push((score, turn));
            }
        }
        for &(score, turn) in &scored {
            if chosen.len() >= k {
                break;
            }
            if !chosen.iter().any(|(_, c)| std::ptr::eq(*c, turn)) {
                chosen.push((score, turn));
            }
        }
        chosen.sort_by(|a, b| a.0.total_cmp(&b.0));
        chosen
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The context of a turn as the prompt and the retriever see it.
pub fn context_of(
    last_slot_values: &labelfleet_dst::SlotValues,
    system: &str,
    user: &str,
) -> TurnContext {
    TurnContext {
        last_slot_values: last_slot_values.clone(),
        system_utterance: system.to_string(),
        user_utterance: user.to_string(),
    }
}

/// A labelled turn as an example: its context and what it changed.
pub fn example_of(
    last_slot_values: &labelfleet_dst::SlotValues,
    system: &str,
    user: &str,
    update: &labelfleet_dst::SlotValues,
) -> Example {
    Example {
        context: context_of(last_slot_values, system, user),
        update: update.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use labelfleet_dst::SlotValues;

    fn turn(source: &str, dialogue: &str, slots: &[&str], embedding: Vec<f32>) -> IndexedTurn {
        let update: SlotValues = slots
            .iter()
            .map(|s| (s.to_string(), "x".to_string()))
            .collect();
        IndexedTurn {
            source: source.into(),
            dialogue_id: dialogue.into(),
            example: Example {
                context: TurnContext::default(),
                update,
            },
            embedding,
        }
    }

    #[test]
    fn top_k_prefers_distinct_signatures_and_skips_the_own_dialogue() {
        let mut index = ExampleIndex::default();
        index.push(turn("a", "d1", &["hotel-area"], vec![1.0, 0.0]));
        index.push(turn("b", "d2", &["hotel-area"], vec![0.99, 0.1]));
        index.push(turn("c", "d3", &["train-day"], vec![0.9, 0.3]));
        index.push(turn("own", "me", &["taxi-leaveat"], vec![1.0, 0.0]));
        index.push(turn("far", "d4", &["hotel-area"], vec![0.0, 1.0]));
        let picked: Vec<&str> = index
            .top_k(&[1.0, 0.0], "me", 2, 2)
            .iter()
            .map(|(_, t)| t.source.as_str())
            .collect();
        // Two distinct signatures beat the second-closest turn; the closest sits last.
        assert_eq!(picked, vec!["c", "a"]);
        let picked: Vec<&str> = index
            .top_k(&[1.0, 0.0], "me", 3, 1)
            .iter()
            .map(|(_, t)| t.source.as_str())
            .collect();
        assert_eq!(picked, vec!["c", "b", "a"]);
        let similarity: Vec<f32> = index
            .top_k(&[1.0, 0.0], "me", 3, 1)
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(similarity, vec![0.9, 0.99, 1.0]);
    }
}
