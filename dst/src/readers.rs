//! Readers for the dataset formats, into canonical [`Dialogue`]s.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::json_error::{from_value, without_values};
use crate::slots::{canonical_slot, normalize_value};
use crate::turn::{Dialogue, SlotValues, format_act};

/// The dataset formats labelfleet reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// MultiWOZ 2.1 `data.json`: `{dialogue_id: {goal, log: [turn…]}}`, even turns the
    /// user, odd turns the system with the state after the user turn in `metadata`.
    Multiwoz21,
    /// IC-DST: a list of turns with `ID`, `turn_id`, `dialog: {sys, usr}`,
    /// `slot_values`.
    Icdst,
    /// Schema-Guided Dialogue (and MultiWOZ 2.2): a list of dialogues whose user turns'
    /// `frames` hold each service's state.
    Sgd,
}

/// A dataset that could not be read: which file and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct DataError {
    /// The file.
    pub file: String,
    /// What is wrong.
    pub message: String,
}

/// Reads a dataset file (JSON, or a `.zip` holding one JSON file).
pub fn read_dataset(path: &Path, format: Format) -> Result<Vec<Dialogue>, DataError> {
    let file = path.display().to_string();
    let fail = |message: String| DataError {
        file: file.clone(),
        message,
    };
    let text = read_text(path).map_err(fail)?;
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        fail(format!(
            "not valid JSON: {}",
            without_values(&e.to_string())
        ))
    })?;
    match format {
        Format::Multiwoz21 => read_multiwoz21(value),
        Format::Icdst => read_icdst(value),
        Format::Sgd => read_sgd(value),
    }
    .map_err(fail)
}

/// A dialogue id from the file, as an error quotes it: at most 80 characters.
fn short_id(id: &str) -> String {
    match id.char_indices().nth(80) {
        Some((end, _)) => format!("{}…", &id[..end]),
        None => id.to_string(),
    }
}

fn read_text(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
    {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
            .map_err(|e| format!("not a readable zip archive: {e}"))?;
        let name = archive
            .file_names()
            .find(|n| n.ends_with(".json"))
            .map(str::to_string)
            .ok_or("the zip archive holds no .json file")?;
        let mut text = String::new();
        archive
            .by_name(&name)
            .map_err(|e| format!("cannot open {name} in the archive: {e}"))?
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read {name} in the archive: {e}"))?;
        Ok(text)
    } else {
        String::from_utf8(bytes).map_err(|_| "the file is not UTF-8 text".to_string())
    }
}

fn put(state: &mut SlotValues, slot: String, value: &str) {
    if let Some(v) = normalize_value(value) {
        state.insert(slot, v);
    }
}

#[derive(Deserialize)]
struct MwozDialogue {
    log: Vec<MwozTurn>,
}

#[derive(Deserialize)]
struct MwozTurn {
    text: String,
    #[serde(default)]
    metadata: serde_json::Map<String, Value>,
    /// `{"Hotel-Inform": [["Area", "east"], …]}`; absent in trimmed copies.
    #[serde(default)]
    dialog_act: BTreeMap<String, Vec<Vec<String>>>,
}

/// A MultiWOZ turn's acts, as [`format_act`] writes them.
fn multiwoz_acts(turn: &MwozTurn) -> Vec<String> {
    turn.dialog_act
        .iter()
        .flat_map(|(act, pairs)| {
            pairs.iter().map(move |pair| {
                let slot = pair.first().map(String::as_str).unwrap_or("");
                let value = pair.get(1).map(String::as_str).unwrap_or("");
                format_act(act, slot, value)
            })
        })
        .collect()
}

fn read_multiwoz21(value: Value) -> Result<Vec<Dialogue>, String> {
    let Value::Object(dialogues) = value else {
        return Err("expected MultiWOZ's {dialogue_id: {log: [...]}} object".into());
    };
    let mut out = Vec::with_capacity(dialogues.len());
    for (id, dialogue) in dialogues {
        let dialogue: MwozDialogue =
            from_value(dialogue).map_err(|e| format!("dialogue {}: {e}", short_id(&id)))?;
        let mut turns = Vec::new();
        // The system turns: none before the user opens, then each reply.
        let mut system = vec![(String::new(), Vec::new())];
        for (k, pair) in dialogue.log.chunks(2).enumerate() {
            let [user, reply] = pair else { break };
            let before = system[k].0.clone();
            turns.push((before, user.text.clone(), multiwoz_state(&reply.metadata)));
            system.push((reply.text.clone(), multiwoz_acts(reply)));
        }
        out.push(Dialogue::from_states(&id, turns).with_system_turns(system));
    }
    Ok(out)
}

/// MultiWOZ 2.1's `metadata`: `{domain: {semi: {slot: v}, book: {slot: v, booked: [...]}}}`.
fn multiwoz_state(metadata: &serde_json::Map<String, Value>) -> SlotValues {
    let mut state = SlotValues::new();
    for (domain, parts) in metadata {
        for (section, book) in [("semi", false), ("book", true)] {
            let Some(Value::Object(slots)) = parts.get(section) else {
                continue;
            };
            for (slot, value) in slots {
                // `booked` lists booking results and `ticket` is a system output, not user
                // constraints; neither is part of the tracked state.
                if slot == "booked" || slot == "ticket" {
                    continue;
                }
                if let Value::String(v) = value {
                    put(&mut state, canonical_slot(domain, slot, book), v);
                }
            }
        }
    }
    state
}

#[derive(Deserialize)]
struct IcdstTurn {
    #[serde(rename = "ID")]
    id: String,
    turn_id: u32,
    dialog: IcdstDialog,
    slot_values: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
struct IcdstDialog {
    sys: Vec<String>,
    usr: Vec<String>,
}

fn read_icdst(value: Value) -> Result<Vec<Dialogue>, String> {
    let turns: Vec<IcdstTurn> =
        from_value(value).map_err(|e| format!("expected IC-DST's list of turns: {e}"))?;
    // Turns of one dialogue may be scattered; group them, keeping first-seen order.
    let mut order: Vec<String> = Vec::new();
    let mut by_dialogue: std::collections::HashMap<String, Vec<IcdstTurn>> = Default::default();
    for t in turns {
        if !by_dialogue.contains_key(&t.id) {
            order.push(t.id.clone());
        }
        by_dialogue.entry(t.id.clone()).or_default().push(t);
    }
    let mut out = Vec::with_capacity(order.len());
    for id in order {
        let mut turns = by_dialogue.remove(&id).expect("grouped above");
        turns.sort_by_key(|t| t.turn_id);
        for (expected, t) in turns.iter().enumerate() {
            if t.turn_id as usize != expected {
                return Err(format!("dialogue {id}: turn {expected} is missing"));
            }
        }
        // A turn's system utterance is the reply to the turn before; the last reply is
        // not in the file.
        let system: Vec<(String, Vec<String>)> = turns
            .iter()
            .map(|t| (t.dialog.sys.last().cloned().unwrap_or_default(), Vec::new()))
            .collect();
        let states = turns.into_iter().map(|t| {
            let mut state = SlotValues::new();
            for (name, value) in &t.slot_values {
                if let (Some((domain, slot)), Value::String(v)) = (name.split_once('-'), value) {
                    put(&mut state, canonical_slot(domain, slot, false), v);
                }
            }
            let system = t.dialog.sys.last().cloned().unwrap_or_default();
            let user = t.dialog.usr.last().cloned().unwrap_or_default();
            (system, user, state)
        });
        out.push(Dialogue::from_states(&id, states.collect::<Vec<_>>()).with_system_turns(system));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct SgdDialogue {
    dialogue_id: String,
    turns: Vec<SgdTurn>,
}

#[derive(Deserialize)]
struct SgdTurn {
    speaker: String,
    utterance: String,
    #[serde(default)]
    frames: Vec<SgdFrame>,
}

#[derive(Deserialize)]
struct SgdFrame {
    service: String,
    #[serde(default)]
    state: Option<SgdState>,
    #[serde(default)]
    actions: Vec<SgdAction>,
}

#[derive(Deserialize)]
struct SgdAction {
    act: String,
    #[serde(default)]
    slot: String,
    #[serde(default)]
    values: Vec<String>,
}

#[derive(Deserialize)]
struct SgdState {
    #[serde(default)]
    slot_values: serde_json::Map<String, Value>,
}

fn read_sgd(value: Value) -> Result<Vec<Dialogue>, String> {
    let dialogues: Vec<SgdDialogue> =
        from_value(value).map_err(|e| format!("expected a list of SGD dialogues: {e}"))?;
    let mut out = Vec::with_capacity(dialogues.len());
    for d in dialogues {
        let mut state = SlotValues::new();
        let mut last_system = String::new();
        let mut last_acts = Vec::new();
        let mut turns = Vec::new();
        let mut system = Vec::new();
        let mut system_spoke_last = false;
        for t in d.turns {
            system_spoke_last = t.speaker.eq_ignore_ascii_case("system");
            if system_spoke_last {
                last_system = t.utterance;
                last_acts = t
                    .frames
                    .iter()
                    .flat_map(|f| {
                        f.actions.iter().map(|a| {
                            let act = format!("{}-{}", f.service, a.act);
                            format_act(&act, &a.slot, &a.values.join("|"))
                        })
                    })
                    .collect();
                continue;
            }
            // A frame carries its service's whole state; services without a frame in
            // this turn keep theirs.
            for frame in &t.frames {
                let Some(frame_state) = &frame.state else {
                    continue;
                };
                let prefix = format!("{}-", frame.service.to_lowercase());
                state.retain(|k, _| !k.starts_with(&prefix));
                for (slot, values) in &frame_state.slot_values {
                    let first = match values {
                        Value::Array(vs) => vs.first().and_then(Value::as_str),
                        Value::String(s) => Some(s.as_str()),
                        _ => None,
                    };
                    if let Some(v) = first {
                        put(&mut state, canonical_slot(&frame.service, slot, false), v);
                    }
                }
            }
            system.push((last_system.clone(), std::mem::take(&mut last_acts)));
            turns.push((std::mem::take(&mut last_system), t.utterance, state.clone()));
        }
        if system_spoke_last {
            system.push((last_system, last_acts));
        }
        out.push(Dialogue::from_states(&d.dialogue_id, turns).with_system_turns(system));
    }
    Ok(out)
}
