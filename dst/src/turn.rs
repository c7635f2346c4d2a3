use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A belief state: canonical `domain-slot` name → normalised value.
pub type SlotValues = BTreeMap<String, String>;

/// One user turn with its context and the belief state after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// The dialogue (without a `.json` suffix).
    pub dialogue_id: String,
    /// The turn's index among the dialogue's user turns, from 0.
    pub turn_id: u32,
    /// The system utterance just before this user turn (empty for the first turn).
    pub system_utterance: String,
    /// That system utterance's dialogue acts where the dataset annotates them, each as
    /// [`format_act`] writes it; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system_acts: Vec<String>,
    /// The user utterance.
    pub user_utterance: String,
    /// What the system said next, where the data has it (empty otherwise).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub system_response: String,
    /// That response's dialogue acts, where annotated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system_response_acts: Vec<String>,
    /// The full belief state after this turn.
    pub slot_values: SlotValues,
    /// The state after the previous turn.
    pub last_slot_values: SlotValues,
    /// The slots this turn added or changed (deletions are not listed).
    pub turn_slot_values: SlotValues,
}

/// A dialogue: its user turns in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dialogue {
    /// The dialogue id (without a `.json` suffix).
    pub dialogue_id: String,
    /// The user turns, `turn_id` 0, 1, 2, …
    pub turns: Vec<Turn>,
}

impl Dialogue {
    /// Builds a dialogue from (system utterance, user utterance, state) triples, deriving
    /// each turn's previous state and delta the same way for every format.
    pub fn from_states(
        dialogue_id: &str,
        turns: impl IntoIterator<Item = (String, String, SlotValues)>,
    ) -> Dialogue {
        let dialogue_id = dialogue_id.trim_end_matches(".json").to_string();
        let mut last = SlotValues::new();
        let turns = turns
            .into_iter()
            .enumerate()
            .map(|(i, (system_utterance, user_utterance, slot_values))| {
                let turn_slot_values = delta(&last, &slot_values);
                Turn {
                    dialogue_id: dialogue_id.clone(),
                    turn_id: i as u32,
                    system_utterance,
                    system_acts: Vec::new(),
                    user_utterance,
                    system_response: String::new(),
                    system_response_acts: Vec::new(),
                    last_slot_values: std::mem::replace(&mut last, slot_values.clone()),
                    slot_values,
                    turn_slot_values,
                }
            })
            .collect();
        Dialogue { dialogue_id, turns }
    }

    /// Sets what the system said around each user turn from the dialogue's system
    /// turns, each as (utterance, acts): entry i is the one before user turn i (the
    /// first is empty when the user opens), and entry i + 1 is turn i's response. The
    /// final response may be missing.
    pub fn with_system_turns(mut self, system: Vec<(String, Vec<String>)>) -> Dialogue {
        for (i, turn) in self.turns.iter_mut().enumerate() {
            if let Some((_, acts)) = system.get(i) {
                turn.system_acts = acts.clone();
            }
            if let Some((text, acts)) = system.get(i + 1) {
                turn.system_response = text.clone();
                turn.system_response_acts = acts.clone();
            }
        }
        self
    }

    /// The domains mentioned in any state of the dialogue, sorted.
    pub fn domains(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .turns
            .iter()
            .flat_map(|t| t.slot_values.keys())
            .filter_map(|k| k.split_once('-').map(|(d, _)| d.to_string()))
            .collect();
        set.into_iter().collect()
    }
}

/// One dialogue act as text: `Domain-Act(slot=value)`, `Domain-Act(slot)` when the
/// value is empty, `Domain-Act()` for an act without a slot (MultiWOZ's `none`).
pub fn format_act(act: &str, slot: &str, value: &str) -> String {
    let slot = if slot.eq_ignore_ascii_case("none") {
        ""
    } else {
        slot
    };
    let value = if value.eq_ignore_ascii_case("none") {
        ""
    } else {
        value
    };
    match (slot.is_empty(), value.is_empty()) {
        (true, _) => format!("{act}()"),
        (false, true) => format!("{act}({slot})"),
        (false, false) => format!("{act}({slot}={value})"),
    }
}

/// The slots of `now` that are new or changed relative to `before`.
pub fn delta(before: &SlotValues, now: &SlotValues) -> SlotValues {
    now.iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acts_read_as_calls() {
        assert_eq!(
            format_act("Hotel-Inform", "Area", "east"),
            "Hotel-Inform(Area=east)"
        );
        assert_eq!(
            format_act("Hotel-Request", "Price", "?"),
            "Hotel-Request(Price=?)"
        );
        assert_eq!(format_act("general-bye", "none", "none"), "general-bye()");
        assert_eq!(
            format_act("Taxi-REQUEST", "location", ""),
            "Taxi-REQUEST(location)"
        );
    }
}
