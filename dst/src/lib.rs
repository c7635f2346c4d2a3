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
