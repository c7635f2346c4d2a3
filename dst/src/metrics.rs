//! Scores predicted belief states against gold.
//!
//! - **Joint goal accuracy (JGA)**: the share of turns whose whole predicted state
//!   equals the gold state.
//! - **Turn accuracy**: the share of turns whose predicted change (this turn's state
//!   minus the previous predicted state) equals the gold change.
//! - **Slot precision / recall / F1**: over (slot, value) pairs of every turn's state,
//!   micro-averaged.
//! - **Per domain**: the same, restricted to one domain's slots, over the turns where
//!   the domain appears in the gold or the predicted state.
//!
//! Values match when their normalised forms are equal, or when their similarity
//! (1 − edit distance / longer length) reaches the matcher's threshold.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::predictions::Prediction;
use crate::turn::{Dialogue, SlotValues, delta};

/// Decides whether two normalised values match.
#[derive(Debug, Clone, Copy)]
pub struct ValueMatcher {
    /// Similarity at or above which values match; 1.0 asks for equality.
    pub threshold: f64,
}

impl Default for ValueMatcher {
    /// Similarity 0.95: what `self_label` scores with, and `eval`'s default.
    fn default() -> Self {
        ValueMatcher { threshold: 0.95 }
    }
}

impl ValueMatcher {
    /// Whether two values match.
    pub fn matches(&self, a: &str, b: &str) -> bool {
        a == b || (self.threshold < 1.0 && similarity(a, b) >= self.threshold)
    }

    fn same_state(&self, a: &SlotValues, b: &SlotValues) -> bool {
        a.len() == b.len()
            && a.iter()
                .all(|(k, v)| b.get(k).is_some_and(|w| self.matches(v, w)))
    }
}

/// 1 − Levenshtein distance / length of the longer string (1.0 for two empty strings).
pub fn similarity(a: &str, b: &str) -> f64 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let longest = a.len().max(b.len());
    if longest == 0 {
        return 1.0;
    }
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    1.0 - row[b.len()] as f64 / longest as f64
}

/// Precision, recall and F1 over slot-value pairs.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct SlotScores {
    /// Correct predicted pairs / predicted pairs.
    pub precision: f64,
    /// Correct predicted pairs / gold pairs.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
}

/// Scores of one domain.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DomainScores {
    /// Turns where the domain appears in the gold or predicted state.
    pub turns: u64,
    /// Joint goal accuracy over those turns, restricted to the domain's slots.
    pub joint_goal_accuracy: f64,
    /// Slot scores restricted to the domain.
    pub slots: SlotScores,
}

/// All scores of one evaluation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Scores {
    /// Dialogues scored.
    pub dialogues: u64,
    /// Turns scored.
    pub turns: u64,
    /// Gold turns that had no prediction (scored as an empty state).
    pub missing_predictions: u64,
    /// Joint goal accuracy.
    pub joint_goal_accuracy: f64,
    /// Turn (delta) accuracy.
    pub turn_accuracy: f64,
    /// Slot precision / recall / F1.
    pub slots: SlotScores,
    /// Per-domain scores.
    pub per_domain: BTreeMap<String, DomainScores>,
}

impl Scores {
    /// The headline figures a manifest entry carries: joint goal accuracy, turn
    /// accuracy and slot precision, recall and F1.
    pub fn headline(&self) -> serde_json::Value {
        serde_json::json!({
            "joint_goal_accuracy": self.joint_goal_accuracy,
            "turn_accuracy": self.turn_accuracy,
            "slot_precision": self.slots.precision,
            "slot_recall": self.slots.recall,
            "slot_f1": self.slots.f1,
        })
    }
}

#[derive(Default)]
struct Counts {
    turns: u64,
    joint: u64,
    tp: u64,
    fp: u64,
    fn_: u64,
}

impl Counts {
    fn add(&mut self, gold: &SlotValues, predicted: &SlotValues, m: &ValueMatcher) {
        self.turns += 1;
        if m.same_state(gold, predicted) {
            self.joint += 1;
        }
        let tp = gold
            .iter()
            .filter(|(k, v)| predicted.get(*k).is_some_and(|p| m.matches(v, p)))
            .count() as u64;
        self.tp += tp;
        self.fp += predicted.len() as u64 - tp;
        self.fn_ += gold.len() as u64 - tp;
    }

    fn slot_scores(&self) -> SlotScores {
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let precision = ratio(self.tp, self.tp + self.fp);
        let recall = ratio(self.tp, self.tp + self.fn_);
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        SlotScores {
            precision,
            recall,
            f1,
        }
    }

    fn joint_accuracy(&self) -> f64 {
        if self.turns == 0 {
            0.0
        } else {
            self.joint as f64 / self.turns as f64
        }
    }
}

fn domain_of(slot: &str) -> &str {
    slot.split_once('-').map_or(slot, |(d, _)| d)
}

fn restrict(state: &SlotValues, domain: &str) -> SlotValues {
    state
        .iter()
        .filter(|(k, _)| domain_of(k) == domain)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Scores predictions (already normalised) against gold dialogues.
pub fn score(gold: &[Dialogue], predictions: &[Prediction], matcher: ValueMatcher) -> Scores {
    let by_turn: HashMap<(&str, u32), &SlotValues> = predictions
        .iter()
        .map(|p| ((p.dialogue_id.as_str(), p.turn_id), &p.slot_values))
        .collect();
    let empty = SlotValues::new();
    let mut all = Counts::default();
    let mut turn_correct = 0u64;
    let mut missing = 0u64;
    let mut domains: BTreeMap<String, Counts> = BTreeMap::new();
    for dialogue in gold {
        let mut previous_prediction = &empty;
        for turn in &dialogue.turns {
            let predicted = match by_turn.get(&(dialogue.dialogue_id.as_str(), turn.turn_id)) {
                Some(p) => *p,
                None => {
                    missing += 1;
                    &empty
                }
            };
            all.add(&turn.slot_values, predicted, &matcher);
            let predicted_change = delta(previous_prediction, predicted);
            if matcher.same_state(&turn.turn_slot_values, &predicted_change) {
                turn_correct += 1;
            }
            let mut present: Vec<&str> = turn
                .slot_values
                .keys()
                .chain(predicted.keys())
                .map(|k| domain_of(k))
                .collect();
            present.sort_unstable();
            present.dedup();
            for domain in present {
                domains.entry(domain.to_string()).or_default().add(
                    &restrict(&turn.slot_values, domain),
                    &restrict(predicted, domain),
                    &matcher,
                );
            }
            previous_prediction = predicted;
        }
    }
    Scores {
        dialogues: gold.len() as u64,
        turns: all.turns,
        missing_predictions: missing,
        joint_goal_accuracy: all.joint_accuracy(),
        turn_accuracy: if all.turns == 0 {
            0.0
        } else {
            turn_correct as f64 / all.turns as f64
        },
        slots: all.slot_scores(),
        per_domain: domains
            .into_iter()
            .map(|(d, c)| {
                (
                    d,
                    DomainScores {
                        turns: c.turns,
                        joint_goal_accuracy: c.joint_accuracy(),
                        slots: c.slot_scores(),
                    },
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pairs: &[(&str, &str)]) -> SlotValues {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The worked example in the README's "Metrics" section, computed by hand.
    #[test]
    fn matches_a_hand_computed_example() {
        let gold_states = [
            state(&[("hotel-area", "centre")]),
            state(&[("hotel-area", "centre"), ("hotel-stars", "4")]),
            state(&[
                ("hotel-area", "centre"),
                ("hotel-stars", "4"),
                ("train-day", "monday"),
            ]),
        ];
        let gold = Dialogue::from_states(
            "D1",
            gold_states
                .iter()
                .map(|s| (String::new(), String::new(), s.clone())),
        );
        let predicted_states = [
            state(&[("hotel-area", "centre")]),
            state(&[("hotel-area", "centre"), ("hotel-stars", "5")]),
            state(&[
                ("hotel-area", "centre"),
                ("hotel-stars", "4"),
                ("train-day", "monday"),
            ]),
        ];
        let predictions: Vec<Prediction> = predicted_states
            .iter()
            .enumerate()
            .map(|(i, s)| Prediction {
                dialogue_id: "D1".into(),
                turn_id: i as u32,
                slot_values: s.clone(),
            })
            .collect();
        let s = score(&[gold], &predictions, ValueMatcher { threshold: 1.0 });
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert_eq!((s.dialogues, s.turns, s.missing_predictions), (1, 3, 0));
        // Turns 0 and 2 match exactly.
        assert!(close(s.joint_goal_accuracy, 2.0 / 3.0));
        // Gold changes: {area}, {stars=4}, {day}; predicted: {area}, {stars=5},
        // {stars=4, day}: only turn 0 agrees.
        assert!(close(s.turn_accuracy, 1.0 / 3.0));
        // 5 true positives, 1 false positive (stars=5), 1 false negative (stars=4).
        assert!(close(s.slots.precision, 5.0 / 6.0));
        assert!(close(s.slots.recall, 5.0 / 6.0));
        assert!(close(s.slots.f1, 5.0 / 6.0));
        let hotel = &s.per_domain["hotel"];
        assert_eq!(hotel.turns, 3);
        assert!(close(hotel.joint_goal_accuracy, 2.0 / 3.0));
        let train = &s.per_domain["train"];
        assert_eq!(train.turns, 1);
        assert!(close(train.joint_goal_accuracy, 1.0));
    }

    #[test]
    fn missing_predictions_count_as_empty_states() {
        let gold = Dialogue::from_states(
            "D",
            [(
                String::new(),
                String::new(),
                state(&[("taxi-day", "monday")]),
            )],
        );
        let s = score(&[gold], &[], ValueMatcher { threshold: 1.0 });
        assert_eq!(s.missing_predictions, 1);
        assert_eq!(s.joint_goal_accuracy, 0.0);
        assert_eq!(s.slots.recall, 0.0);
    }

    #[test]
    fn fuzzy_matching_accepts_near_misses_only_above_the_threshold() {
        let m = ValueMatcher { threshold: 0.9 };
        assert!(m.matches("cambridge belfry", "cambridge belfy"));
        assert!(!m.matches("east", "west"));
        assert!(!ValueMatcher { threshold: 1.0 }.matches("cambridge belfry", "cambridge belfy"));
        assert!((similarity("kitten", "sitting") - (1.0 - 3.0 / 7.0)).abs() < 1e-12);
    }
}
