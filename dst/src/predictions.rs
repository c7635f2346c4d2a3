use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::json_error::from_slice;
use crate::readers::DataError;
use crate::slots::{canonical_slot_name, normalize_value};
use crate::turn::SlotValues;

/// A predicted belief state for one turn: the format of predictions files and of the
/// `predictions.json` artifacts labelling jobs write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prediction {
    /// The dialogue.
    pub dialogue_id: String,
    /// The user turn, from 0.
    pub turn_id: u32,
    /// The full predicted state after the turn.
    pub slot_values: SlotValues,
}

impl Prediction {
    /// The prediction with its dialogue id, slot names and values in canonical form.
    pub fn normalized(self) -> Prediction {
        Prediction {
            dialogue_id: self.dialogue_id.trim_end_matches(".json").to_string(),
            turn_id: self.turn_id,
            slot_values: self
                .slot_values
                .iter()
                .filter_map(|(k, v)| normalize_value(v).map(|v| (canonical_slot_name(k), v)))
                .collect(),
        }
    }
}

/// Reads a predictions file (a JSON list of [`Prediction`]s) or artifact bytes.
pub fn read_predictions(bytes: &[u8], origin: &str) -> Result<Vec<Prediction>, DataError> {
    let predictions: Vec<Prediction> = from_slice(bytes).map_err(|e| DataError {
        file: origin.to_string(),
        message: format!(
            "expected a JSON list of {{dialogue_id, turn_id, slot_values}} predictions: {e}"
        ),
    })?;
    Ok(predictions
        .into_iter()
        .map(Prediction::normalized)
        .collect())
}

/// Reads a predictions file from disk.
pub fn read_predictions_file(path: &Path) -> Result<Vec<Prediction>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError {
        file: path.display().to_string(),
        message: format!("cannot read the file: {e}"),
    })?;
    read_predictions(&bytes, &path.display().to_string())
}
