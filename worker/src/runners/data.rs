//! Dialogue files as runners read them: the reader for a job's dataset format, the
//! dialogues a job's selection picks, and the turn limits of `--mini` jobs.

use std::collections::HashSet;
use std::path::Path;

use labelfleet_core::job::{DatasetFormat, DatasetRef, DialogueSelection};
use labelfleet_core::rng::shuffle;
use labelfleet_dst::{Dialogue, Format, read_dataset};

use crate::runner::JobFailure;

/// Dialogues a `--mini` labelling job labels.
pub const MINI_DIALOGUES: usize = 2;
/// Turns of each dialogue a `--mini` labelling job labels.
pub const MINI_TURNS: usize = 3;

/// The reader format for a job file's dataset format (the job spec lives in
/// `labelfleet-core`, which does not know the readers).
pub fn format_of(format: DatasetFormat) -> Format {
    match format {
        DatasetFormat::Multiwoz21 => Format::Multiwoz21,
        DatasetFormat::Icdst => Format::Icdst,
        DatasetFormat::Sgd => Format::Sgd,
    }
}

/// The dialogues a job labels, cut to its turn limit: a seeded shuffle when the
/// selection names a seed, then `start`, `count` and `max_turns`.
pub fn select_dialogues(
    mut dialogues: Vec<Dialogue>,
    selection: &DialogueSelection,
    mini: bool,
) -> Vec<Dialogue> {
    if let Some(seed) = selection.shuffle_seed {
        shuffle(&mut dialogues, seed);
    }
    let mut count = selection.count.unwrap_or(usize::MAX);
    let mut max_turns = selection.max_turns.unwrap_or(usize::MAX);
    if mini {
        count = count.min(MINI_DIALOGUES);
        max_turns = max_turns.min(MINI_TURNS);
    }
    dialogues
        .into_iter()
        .skip(selection.start)
        .take(count)
        .map(|mut d| {
            d.turns.truncate(max_turns);
            d
        })
        .collect()
}

/// The dialogues of `data`, without those of the file `selection.exclude` names.
pub(crate) fn read_selected(
    data: &DatasetRef,
    selection: &DialogueSelection,
) -> Result<Vec<Dialogue>, JobFailure> {
    let mut dialogues = read_data(&data.path, data.format)?;
    if let Some(exclude) = &selection.exclude {
        let excluded: HashSet<String> = read_data(&exclude.path, exclude.format)?
            .into_iter()
            .map(|d| d.dialogue_id)
            .collect();
        dialogues.retain(|d| !excluded.contains(&d.dialogue_id));
    }
    Ok(dialogues)
}

/// Every dialogue of the file at `path`.
pub(crate) fn read_data(path: &str, format: DatasetFormat) -> Result<Vec<Dialogue>, JobFailure> {
    read_dataset(Path::new(path), format_of(format)).map_err(|e| {
        JobFailure::new(format!(
            "cannot read the dataset: {e} (paths are relative to the worker's working directory)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excluded_dialogues_are_left_out_by_id() {
        let sample = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../runs/sample-data/multiwoz21_val_sample.json"
        );
        let all: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&std::fs::read(sample).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let gold = dir.path().join("gold.json");
        let two: serde_json::Map<_, _> = all.clone().into_iter().take(2).collect();
        std::fs::write(&gold, serde_json::to_vec(&two).unwrap()).unwrap();
        let reference = |path: &str| DatasetRef {
            path: path.into(),
            format: DatasetFormat::Multiwoz21,
        };
        let selection = DialogueSelection {
            exclude: Some(reference(gold.to_str().unwrap())),
            ..DialogueSelection::default()
        };
        let pool = read_selected(&reference(sample), &selection).unwrap();
        assert_eq!(pool.len(), all.len() - 2);
        assert!(pool.iter().all(|d| !two.contains_key(&d.dialogue_id)));
        let everything = read_selected(&reference(sample), &DialogueSelection::default()).unwrap();
        assert_eq!(everything.len(), all.len());
    }

    #[test]
    fn a_mini_selection_keeps_a_few_short_dialogues() {
        let sample = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../runs/sample-data/multiwoz21_val_sample.json"
        );
        let all = read_data(sample, DatasetFormat::Multiwoz21).unwrap();
        let picked = select_dialogues(all.clone(), &DialogueSelection::default(), true);
        assert_eq!(picked.len(), MINI_DIALOGUES);
        assert!(picked.iter().all(|d| d.turns.len() <= MINI_TURNS));
        let seeded = DialogueSelection {
            shuffle_seed: Some(7),
            start: 1,
            count: Some(3),
            ..DialogueSelection::default()
        };
        let a = select_dialogues(all.clone(), &seeded, false);
        let b = select_dialogues(all, &seeded, false);
        assert_eq!(a.len(), 3);
        let ids = |v: &[Dialogue]| v.iter().map(|d| d.dialogue_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
    }
}
