//! The readers on real data and on one dialogue written in all three formats.

use std::path::{Path, PathBuf};

use labelfleet_dst::{Format, read_dataset};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The shared data folder: `LABELFLEET_DATA`, or `../shared/data` beside the checkout.
fn shared_data() -> PathBuf {
    let dir = std::env::var_os("LABELFLEET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    assert!(
        dir.join("multiwoz21/val.json.zip").exists(),
        "the shared MultiWOZ data is not at {} (set LABELFLEET_DATA)",
        dir.display()
    );
    dir
}

#[test]
fn the_three_formats_of_one_dialogue_agree() {
    let mwoz = read_dataset(
        &fixture("same_dialogue.multiwoz21.json"),
        Format::Multiwoz21,
    )
    .unwrap();
    let icdst = read_dataset(&fixture("same_dialogue.icdst.json"), Format::Icdst).unwrap();
    let sgd = read_dataset(&fixture("same_dialogue.sgd.json"), Format::Sgd).unwrap();
    assert_eq!(mwoz.len(), 1);
    assert_eq!(mwoz, sgd, "MultiWOZ 2.1 and SGD readers disagree");
    // IC-DST's file has no system turn after the last user turn; apart from that reply,
    // it agrees too.
    let mut without_last_reply = mwoz.clone();
    let last = without_last_reply[0].turns.last_mut().unwrap();
    assert!(!last.system_response.is_empty());
    last.system_response.clear();
    assert_eq!(
        without_last_reply, icdst,
        "MultiWOZ 2.1 and IC-DST readers disagree"
    );
    let d = &mwoz[0];
    assert_eq!(d.dialogue_id, "PMUL1635");
    assert_eq!(d.turns.len(), 9);
    // Spot checks against the file itself.
    assert_eq!(
        d.turns[0].user_utterance,
        "I need to book a hotel in the east that has 4 stars ."
    );
    assert_eq!(d.turns[0].system_utterance, "");
    assert_eq!(
        d.turns[0].slot_values.get("hotel-area").map(String::as_str),
        Some("east")
    );
    assert_eq!(
        d.turns[1].system_utterance,
        "I can help you with that . What is your price range ?"
    );
    // Each turn's response is the next turn's system utterance.
    assert_eq!(d.turns[0].system_response, d.turns[1].system_utterance);
    let last = &d.turns.last().unwrap().slot_values;
    assert!(
        last.keys().any(|k| k.starts_with("hotel-book ")),
        "{last:?}"
    );
    assert!(last.keys().any(|k| k.starts_with("train-")), "{last:?}");
    // Deltas are derived the same way for every format.
    for t in &d.turns {
        for (k, v) in &t.turn_slot_values {
            assert_eq!(t.slot_values.get(k), Some(v));
            assert_ne!(t.last_slot_values.get(k), Some(v));
        }
    }
}

#[test]
fn multiwoz21_validation_set_reads_completely() {
    let dialogues = read_dataset(
        &shared_data().join("multiwoz21/val.json.zip"),
        Format::Multiwoz21,
    )
    .unwrap();
    assert_eq!(dialogues.len(), 999);
    let turns: usize = dialogues.iter().map(|d| d.turns.len()).sum();
    // 14,730 utterances, alternating user and system.
    assert_eq!(turns, 14_730 / 2);
    assert!(
        dialogues
            .iter()
            .flat_map(|d| &d.turns)
            .any(|t| !t.slot_values.is_empty())
    );
    // The system acts before each user turn: none before the first.
    let d = dialogues
        .iter()
        .find(|d| d.dialogue_id == "PMUL1635")
        .unwrap();
    assert!(d.turns[0].system_acts.is_empty());
    assert_eq!(d.turns[1].system_acts, ["Hotel-Request(Price=?)"]);
    assert_eq!(d.turns[0].system_response_acts, d.turns[1].system_acts);
    // The reply to the last user turn is kept too.
    let log_end = d.turns.last().unwrap();
    assert!(!log_end.system_response.is_empty() && !log_end.system_response_acts.is_empty());
    assert_eq!(
        d.turns[2].system_acts,
        [
            "Hotel-Recommend(Price=cheap)",
            "Hotel-Recommend(Price=moderately priced)",
            "Hotel-Recommend(Name=Allenbell)",
            "Hotel-Recommend(Name=Warkworth House)"
        ]
    );
}

#[test]
fn icdst_and_sgd_files_read() {
    let data = shared_data();
    let icdst = read_dataset(&data.join("icdst_train/train_1p_v1.json"), Format::Icdst).unwrap();
    assert_eq!(icdst.len(), 78);
    for d in &icdst {
        for (i, t) in d.turns.iter().enumerate() {
            assert_eq!(t.turn_id as usize, i);
            assert!(t.slot_values.keys().all(|k| !k.contains("price range")));
        }
    }
    let sgd = read_dataset(&data.join("sgd_sample/dialogues_001.json"), Format::Sgd).unwrap();
    assert_eq!(sgd.len(), 128);
    let first = &sgd[0];
    assert_eq!(first.dialogue_id, "1_00000");
    assert_eq!(
        first.turns[0]
            .slot_values
            .get("restaurants_2-number_of_seats")
            .map(String::as_str),
        Some("2")
    );
    assert_eq!(
        first.turns[1].system_acts,
        [
            "Restaurants_2-REQUEST(restaurant_name)",
            "Restaurants_2-REQUEST(location)"
        ]
    );
    assert_eq!(
        first.turns[0].system_response_acts,
        first.turns[1].system_acts
    );
    assert_eq!(
        first.turns[0].system_response,
        first.turns[1].system_utterance
    );
}

#[test]
fn bundled_sample_reads() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../runs/sample-data/multiwoz21_val_sample.json");
    let dialogues = read_dataset(&sample, Format::Multiwoz21).unwrap();
    assert_eq!(dialogues.len(), 10);
}

#[test]
fn unreadable_files_name_the_file() {
    let err = read_dataset(Path::new("/nonexistent/data.json"), Format::Icdst).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/data.json: cannot read"),
        "{err}"
    );
    let err = read_dataset(&fixture("same_dialogue.sgd.json"), Format::Icdst).unwrap_err();
    assert!(err.to_string().contains("IC-DST"), "{err}");
}
