//! A dataset file a job reads, and its format.

use serde::{Deserialize, Serialize};

/// A dataset file and its format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetRef {
    /// Path to the file, relative to the worker's working directory unless absolute.
    /// A `.zip` holding one JSON file is read as that file.
    pub path: String,
    /// The file's format.
    pub format: DatasetFormat,
}

/// The dialogue dataset formats labelfleet reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetFormat {
    /// MultiWOZ 2.1 `data.json`: `{dialogue_id: {goal, log: [turn…]}}`.
    Multiwoz21,
    /// IC-DST's turn-level list of turns.
    Icdst,
    /// Schema-Guided Dialogue / MultiWOZ 2.2 schema format.
    Sgd,
}
