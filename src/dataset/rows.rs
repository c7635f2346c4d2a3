//! Turn rows from `self_label` running logs, with the seed's columns: every utterance
//! so far, the system's response, the belief states, and the system's dialogue acts
//! where the data has them.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

/// A belief state: `domain-slot` → value.
pub type SlotValues = BTreeMap<String, String>;

/// One labelled user turn as a dataset row.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRow {
    /// The dialogue.
    pub dialogue_id: String,
    /// The user turn, from 0.
    pub turn_id: i64,
    /// Every user utterance up to and including this turn.
    pub user_utterances: Vec<String>,
    /// The system utterance before each of those user turns (`""` before the first).
    pub system_utterances: Vec<String>,
    /// What the system said after this turn (`""` when the log ends here).
    pub system_response: String,
    /// The dialogue acts of `system_response`, where the data has them.
    pub system_response_acts: Vec<String>,
    /// The slots this turn set or changed, as labelled.
    pub turn_slot_values: SlotValues,
    /// The state after this turn.
    pub slot_values: SlotValues,
    /// The state before this turn.
    pub last_slot_values: SlotValues,
    /// Domains of the state after this turn.
    pub domains: Vec<String>,
    /// The dialogue acts of the system utterance before this turn, where known.
    pub last_system_response_acts: Vec<String>,
    /// The manifest entry it came from (`group/run`).
    pub source: String,
}

/// The fields of a running log this export reads.
#[derive(Deserialize)]
struct Log {
    turns: Vec<LoggedTurn>,
}

#[derive(Deserialize)]
struct LoggedTurn {
    dialogue_id: String,
    turn_id: u32,
    system_utterance: String,
    #[serde(default)]
    system_acts: Vec<String>,
    user_utterance: String,
    /// Absent in logs written before responses were logged.
    #[serde(default)]
    system_response: Option<String>,
    #[serde(default)]
    system_response_acts: Vec<String>,
    last_slot_values: SlotValues,
    slot_values: SlotValues,
    turn_slot_values: SlotValues,
}

/// The rows of one running log (the `labels` artifact of a `self_label` entry).
pub fn rows_of_log(bytes: &[u8], source: &str) -> Result<Vec<TurnRow>, String> {
    let log: Log =
        serde_json::from_slice(bytes).map_err(|e| format!("{source}: not a running log: {e}"))?;
    let mut by_dialogue: BTreeMap<String, Vec<LoggedTurn>> = BTreeMap::new();
    for t in log.turns {
        by_dialogue
            .entry(t.dialogue_id.clone())
            .or_default()
            .push(t);
    }
    let mut rows = Vec::new();
    for (dialogue_id, mut turns) in by_dialogue {
        turns.sort_by_key(|t| t.turn_id);
        for (i, t) in turns.iter().enumerate() {
            let domains: BTreeSet<String> = t
                .slot_values
                .keys()
                .filter_map(|k| k.split_once('-').map(|(d, _)| d.to_string()))
                .collect();
            let (system_response, system_response_acts) = match &t.system_response {
                Some(text) => (text.clone(), t.system_response_acts.clone()),
                // Logs written before responses were logged: the next logged turn's.
                None => turns
                    .get(i + 1)
                    .map(|n| (n.system_utterance.clone(), n.system_acts.clone()))
                    .unwrap_or_default(),
            };
            rows.push(TurnRow {
                dialogue_id: dialogue_id.clone(),
                turn_id: t.turn_id as i64,
                user_utterances: turns[..=i]
                    .iter()
                    .map(|u| u.user_utterance.clone())
                    .collect(),
                system_utterances: turns[..=i]
                    .iter()
                    .map(|u| u.system_utterance.clone())
                    .collect(),
                system_response,
                system_response_acts,
                turn_slot_values: t.turn_slot_values.clone(),
                slot_values: t.slot_values.clone(),
                last_slot_values: t.last_slot_values.clone(),
                domains: domains.into_iter().collect(),
                last_system_response_acts: t.system_acts.clone(),
                source: source.to_string(),
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_carry_the_history_and_the_next_system_turn() {
        let log = serde_json::json!({"turns": [
            {"dialogue_id": "d1", "turn_id": 1, "system_utterance": "which area?",
             "system_acts": ["Hotel-Request(Area=?)"], "user_utterance": "north",
             "last_slot_values": {"hotel-type": "hotel"}, "slot_values": {"hotel-type": "hotel", "hotel-area": "north"},
             "turn_slot_values": {"hotel-area": "north"}},
            {"dialogue_id": "d1", "turn_id": 0, "system_utterance": "", "user_utterance": "a hotel please",
             "last_slot_values": {}, "slot_values": {"hotel-type": "hotel"}, "turn_slot_values": {"hotel-type": "hotel"}}
        ]});
        let rows = rows_of_log(log.to_string().as_bytes(), "g/job_0").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].turn_id, 0);
        assert_eq!(rows[0].system_response, "which area?");
        assert_eq!(rows[0].system_response_acts, ["Hotel-Request(Area=?)"]);
        assert!(rows[0].last_system_response_acts.is_empty());
        assert_eq!(rows[1].last_system_response_acts, ["Hotel-Request(Area=?)"]);
        assert!(rows[1].system_response_acts.is_empty());
        assert_eq!(rows[1].user_utterances, ["a hotel please", "north"]);
        assert_eq!(rows[1].system_utterances, ["", "which area?"]);
        assert_eq!(rows[1].system_response, "");
        assert_eq!(rows[1].domains, ["hotel"]);
        assert!(rows_of_log(b"{}", "g/x").unwrap_err().contains("g/x"));
    }

    #[test]
    fn a_logged_response_is_used_even_after_the_last_logged_turn() {
        let log = serde_json::json!({"turns": [
            {"dialogue_id": "d1", "turn_id": 0, "system_utterance": "", "user_utterance": "a taxi",
             "system_response": "where to?", "system_response_acts": ["Taxi-Request(Dest)"],
             "last_slot_values": {}, "slot_values": {}, "turn_slot_values": {}}
        ]});
        let rows = rows_of_log(log.to_string().as_bytes(), "g/job_0").unwrap();
        assert_eq!(rows[0].system_response, "where to?");
        assert_eq!(rows[0].system_response_acts, ["Taxi-Request(Dest)"]);
    }
}
