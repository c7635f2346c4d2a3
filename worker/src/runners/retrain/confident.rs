//! `data.confident`: train on only the self-labelled turns the labeller was surest of.
//!
//! A small model's self-labels are mostly wrong by omission, and they outnumber the
//! gold turns several times over; ranking them by the completion's token
//! log-probabilities and keeping the top share trades quantity for precision. Gold
//! turns are never dropped.

use labelfleet_core::job::{ConfidenceFilter, ConfidenceMeasure};
use labelfleet_models::Confidence;

use super::data::LabelledDialogue;
use crate::runner::JobFailure;

/// The number `measure` ranks a label by (higher is surer).
fn score(confidence: &Confidence, measure: ConfidenceMeasure) -> f64 {
    match measure {
        ConfidenceMeasure::MinLogprob => confidence.min_logprob,
        ConfidenceMeasure::Logprob => confidence.logprob,
    }
}

/// What the filter did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filtered {
    /// Self-labelled turns before it.
    pub candidates: usize,
    /// Those it kept.
    pub kept: usize,
}

/// Drops from `sets` every self-labelled turn that ranks below the top `filter.keep`
/// share of them all (ties at the cut are kept), then every dialogue left empty.
/// Fails, naming the source, when a self-labelled turn carries no confidence.
pub fn keep_confident(
    sets: [&mut Vec<LabelledDialogue>; 2],
    filter: &ConfidenceFilter,
) -> Result<Filtered, JobFailure> {
    let mut scores = Vec::new();
    for d in sets.iter().flat_map(|set| set.iter()) {
        if !d.is_self_labelled() {
            continue;
        }
        for confidence in &d.confidence {
            let Some(confidence) = confidence else {
                return Err(JobFailure::permanent(format!(
                    "retrain.data.confident: the labels of {} ({}) carry no confidence: they were labelled through an endpoint that sent no log-probabilities, or before labelfleet recorded them; relabel them with a local model or leave `confident` out",
                    d.source, d.dialogue_id
                )));
            };
            scores.push(score(confidence, filter.by));
        }
    }
    let candidates = scores.len();
    if candidates == 0 {
        return Ok(Filtered {
            candidates,
            kept: 0,
        });
    }
    scores.sort_by(|a, b| b.total_cmp(a));
    let keep = ((filter.keep * candidates as f64).ceil() as usize).clamp(1, candidates);
    let cut = scores[keep - 1];
    let mut kept = 0;
    for set in sets {
        for d in set.iter_mut().filter(|d| d.is_self_labelled()) {
            let (examples, confidence): (Vec<_>, Vec<_>) = std::mem::take(&mut d.examples)
                .into_iter()
                .zip(std::mem::take(&mut d.confidence))
                .filter(|(_, c)| c.is_some_and(|c| score(&c, filter.by) >= cut))
                .unzip();
            kept += examples.len();
            d.examples = examples;
            d.confidence = confidence;
        }
        set.retain(|d| !d.examples.is_empty());
    }
    Ok(Filtered { candidates, kept })
}

#[cfg(test)]
mod tests {
    use labelfleet_dst::SlotValues;
    use labelfleet_dst::prompt::{Example, TurnContext};

    use super::*;

    fn dialogue(source: &str, id: &str, min_logprobs: &[Option<f64>]) -> LabelledDialogue {
        LabelledDialogue {
            source: source.to_string(),
            dialogue_id: id.to_string(),
            examples: min_logprobs
                .iter()
                .map(|_| Example {
                    context: TurnContext::default(),
                    update: SlotValues::default(),
                })
                .collect(),
            confidence: min_logprobs
                .iter()
                .map(|m| {
                    m.map(|m| Confidence {
                        logprob: -m.abs() * 10.0,
                        min_logprob: m,
                    })
                })
                .collect(),
            repeat: 1,
        }
    }

    fn filter(keep: f64) -> ConfidenceFilter {
        ConfidenceFilter {
            keep,
            by: ConfidenceMeasure::MinLogprob,
        }
    }

    fn turns(set: &[LabelledDialogue]) -> Vec<(String, Vec<f64>)> {
        set.iter()
            .map(|d| {
                let scores = d.confidence.iter().map(|c| c.unwrap().min_logprob);
                (d.dialogue_id.clone(), scores.collect())
            })
            .collect()
    }

    #[test]
    fn keeps_the_surest_share_of_self_labels_across_sets_and_every_gold_turn() {
        let mut old = vec![
            dialogue("gold:g.json", "g1", &[None, None]),
            dialogue("group:a", "a1", &[Some(-0.1), Some(-3.0)]),
        ];
        let mut new = vec![
            dialogue("group:b", "b1", &[Some(-2.0), Some(-0.5)]),
            dialogue("group:b", "b2", &[Some(-4.0)]),
        ];
        let filtered = keep_confident([&mut old, &mut new], &filter(0.4)).unwrap();
        // 5 self-labelled turns, 40 % of them: the 2 surest (-0.1 and -0.5).
        assert_eq!(
            filtered,
            Filtered {
                candidates: 5,
                kept: 2
            }
        );
        assert_eq!(old.len(), 2);
        assert_eq!(old[0].examples.len(), 2, "gold turns are all kept");
        assert_eq!(turns(&old[1..]), vec![("a1".to_string(), vec![-0.1])]);
        assert_eq!(
            turns(&new),
            vec![("b1".to_string(), vec![-0.5])],
            "b2 lost its only turn and goes"
        );
    }

    #[test]
    fn keeping_everything_changes_nothing_and_ranks_by_the_measure_asked() {
        let mut old = Vec::new();
        let mut new = vec![dialogue("group:b", "b1", &[Some(-2.0), Some(-0.5)])];
        let all = keep_confident([&mut old, &mut new], &filter(1.0)).unwrap();
        assert_eq!((all.candidates, all.kept), (2, 2));
        // By the whole completion's log-probability (-20 and -5 here) the order is
        // the same, and keeping half keeps the second turn.
        let by_logprob = ConfidenceFilter {
            keep: 0.5,
            by: ConfidenceMeasure::Logprob,
        };
        keep_confident([&mut old, &mut new], &by_logprob).unwrap();
        assert_eq!(turns(&new), vec![("b1".to_string(), vec![-0.5])]);
    }

    #[test]
    fn a_self_label_without_confidence_is_an_error_naming_its_source() {
        let mut old = Vec::new();
        let mut new = vec![dialogue("group:endpoint-labels", "d7", &[Some(-1.0), None])];
        let error = keep_confident([&mut old, &mut new], &filter(0.5)).unwrap_err();
        let message = error.message;
        assert!(message.contains("group:endpoint-labels"), "{message}");
        assert!(message.contains("retrain.data.confident"), "{message}");
        assert_eq!(new[0].examples.len(), 2, "nothing is dropped on failure");
    }
}
