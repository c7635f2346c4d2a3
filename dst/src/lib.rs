//! Dialogue state tracking data: one canonical turn type, three readers, and metrics.
//!
//! - [`Dialogue`] and [`Turn`] are the canonical form every reader produces: a user
//!   turn with the system utterance before it and the belief state after it, as
//!   [`SlotValues`] keyed by canonical `domain-slot` names.
//! - [`slots`] is the one place where slot names and values are normalised
//!   (`pricerange`, `price range` and `hotel-pricerange` all become
//!   `hotel-pricerange`; `do n't care` becomes `dontcare`).
//! - [`read_dataset`] reads a file in one of the [`Format`]s (MultiWOZ 2.1
//!   `data.json`, IC-DST turn lists, SGD / MultiWOZ 2.2 schema dialogues), from plain
//!   JSON or a `.zip` holding it.
//! - [`metrics::score`] compares predicted states ([`Prediction`]s) with gold:
//!   joint goal accuracy, turn (delta) accuracy, slot precision/recall/F1, overall and
//!   per domain.
//! - [`prompt`] renders the code-style prompt of `self_label` and parses completions
//!   back into state updates.
//!
//! # Example
//!
//! Gold states scored against themselves are right on every turn.
//!
//! ```
//! use std::path::Path;
//!
//! use labelfleet_dst::metrics::{ValueMatcher, score};
//! use labelfleet_dst::{Format, Prediction, read_dataset};
//!
//! let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../runs/sample-data/multiwoz21_val_sample.json");
//! let dialogues = read_dataset(Path::new(sample), Format::Multiwoz21).unwrap();
//! let predictions: Vec<Prediction> = dialogues
//!     .iter()
//!     .flat_map(|d| &d.turns)
//!     .map(|t| Prediction {
//!         dialogue_id: t.dialogue_id.clone(),
//!         turn_id: t.turn_id,
//!         slot_values: t.slot_values.clone(),
//!     })
//!     .collect();
//! let scores = score(&dialogues, &predictions, ValueMatcher { threshold: 0.95 });
//! assert_eq!(scores.joint_goal_accuracy, 1.0);
//! ```

#![warn(missing_docs)]

pub mod json_error;
pub mod metrics;
mod predictions;
pub mod prompt;
mod readers;
pub mod slots;
mod turn;

pub use predictions::{Prediction, read_predictions, read_predictions_file};
pub use readers::{DataError, Format, read_dataset};
pub use turn::{Dialogue, SlotValues, Turn, delta, format_act};
