//! Dividing labelled dialogues into train, validation and test sets, as droidlet's
//! retraining does: `keep_old` (old splits fixed, new data added) or `resample`.
//! Splits are by dialogue, so turns of one dialogue never sit in two splits.

use labelfleet_core::job::{SplitPolicy, SplitSpec, SplitUse};

use super::data::LabelledDialogue;
use labelfleet_core::rng::shuffle;

/// The three sets.
#[derive(Debug, Default)]
pub struct Splits {
    /// Training dialogues.
    pub train: Vec<LabelledDialogue>,
    /// Validation dialogues.
    pub valid: Vec<LabelledDialogue>,
    /// Test dialogues.
    pub test: Vec<LabelledDialogue>,
}

/// A number in [0, 1) fixed by the dialogue id alone: old data's split never moves,
/// whatever the seed or the other dialogues.
fn stable_fraction(dialogue_id: &str) -> f64 {
    let digest = labelfleet_core::hash::sha256(dialogue_id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// Cuts `dialogues` (already in their final order) into three by `ratios`.
fn cut(dialogues: Vec<LabelledDialogue>, ratios: [f64; 3]) -> Splits {
    let n = dialogues.len();
    let train = (n as f64 * ratios[0]).round() as usize;
    let valid = ((n as f64 * ratios[1]).round() as usize).min(n - train);
    let mut rest = dialogues.into_iter();
    Splits {
        train: rest.by_ref().take(train).collect(),
        valid: rest.by_ref().take(valid).collect(),
        test: rest.collect(),
    }
}

fn take(
    use_: SplitUse,
    old: &mut Vec<LabelledDialogue>,
    new: &mut Vec<LabelledDialogue>,
) -> Vec<LabelledDialogue> {
    match use_ {
        SplitUse::Old => std::mem::take(old),
        SplitUse::New => std::mem::take(new),
        SplitUse::Both => {
            let mut all = std::mem::take(old);
            all.append(new);
            all
        }
    }
}

/// The training set with each dialogue as many times as its source's `repeat` asks
/// (the copies beside the original: the trainer shuffles every epoch).
pub fn repeated(train: Vec<LabelledDialogue>) -> Vec<LabelledDialogue> {
    train
        .into_iter()
        .flat_map(|d| {
            let times = d.repeat.max(1);
            std::iter::repeat_n(d, times)
        })
        .collect()
}

/// Splits old and new dialogues by `spec`.
pub fn split(old: Vec<LabelledDialogue>, new: Vec<LabelledDialogue>, spec: &SplitSpec) -> Splits {
    match spec.policy {
        SplitPolicy::Resample => {
            let mut all = old;
            all.extend(new);
            // Sort first so that the result depends only on the dialogues and the seed.
            all.sort_by(|a, b| a.key().cmp(&b.key()));
            shuffle(&mut all, spec.seed);
            cut(all, spec.ratios)
        }
        SplitPolicy::KeepOld => {
            let mut old_parts = Splits::default();
            for d in old {
                let u = stable_fraction(&d.dialogue_id);
                if u < spec.ratios[0] {
                    old_parts.train.push(d);
                } else if u < spec.ratios[0] + spec.ratios[1] {
                    old_parts.valid.push(d);
                } else {
                    old_parts.test.push(d);
                }
            }
            let evaluates_new = spec.valid != SplitUse::Old || spec.test != SplitUse::Old;
            let mut new_parts = if evaluates_new {
                let mut new = new;
                new.sort_by(|a, b| a.key().cmp(&b.key()));
                shuffle(&mut new, spec.seed);
                cut(new, spec.ratios)
            } else {
                // No evaluation split looks at new data: all of it trains.
                Splits {
                    train: new,
                    ..Splits::default()
                }
            };
            Splits {
                train: take(spec.train, &mut old_parts.train, &mut new_parts.train),
                valid: take(spec.valid, &mut old_parts.valid, &mut new_parts.valid),
                test: take(spec.test, &mut old_parts.test, &mut new_parts.test),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn dialogues(prefix: &str, n: usize) -> Vec<LabelledDialogue> {
        (0..n)
            .map(|i| LabelledDialogue {
                source: prefix.to_string(),
                dialogue_id: format!("{prefix}{i:03}"),
                examples: Vec::new(),
                confidence: Vec::new(),
                repeat: 1,
            })
            .collect()
    }

    fn ids(ds: &[LabelledDialogue]) -> BTreeSet<String> {
        ds.iter().map(|d| d.dialogue_id.clone()).collect()
    }

    #[test]
    fn a_repeated_dialogue_trains_that_many_times_beside_the_others() {
        let mut train = dialogues("g", 2);
        train[1].repeat = 3;
        let ids: Vec<String> = repeated(train).into_iter().map(|d| d.dialogue_id).collect();
        assert_eq!(ids, ["g000", "g001", "g001", "g001"]);
    }

    fn spec(policy: SplitPolicy) -> SplitSpec {
        SplitSpec {
            policy,
            ..SplitSpec::default()
        }
    }

    #[test]
    fn keep_old_fixes_old_evaluation_sets_and_trains_on_all_new() {
        let s = split(
            dialogues("old", 200),
            dialogues("new", 50),
            &spec(SplitPolicy::KeepOld),
        );
        let (train, valid, test) = (ids(&s.train), ids(&s.valid), ids(&s.test));
        assert!(valid.iter().chain(&test).all(|d| d.starts_with("old")));
        assert_eq!(train.iter().filter(|d| d.starts_with("new")).count(), 50);
        assert_eq!(train.len() + valid.len() + test.len(), 250);
        assert!(train.is_disjoint(&valid) && train.is_disjoint(&test) && valid.is_disjoint(&test));
        // Roughly 80/10/10 of the old data, by hash.
        assert!((140..=180).contains(&(train.len() - 50)), "{}", train.len());

        // Another seed, and other new data: the old validation and test sets stay put.
        let mut other = spec(SplitPolicy::KeepOld);
        other.seed = 99;
        let again = split(dialogues("old", 200), dialogues("fresh", 10), &other);
        assert_eq!(ids(&again.valid), valid);
        assert_eq!(ids(&again.test), test);
    }

    #[test]
    fn keep_old_can_evaluate_on_new_data_only() {
        let mut s = spec(SplitPolicy::KeepOld);
        s.train = SplitUse::Both;
        s.valid = SplitUse::New;
        s.test = SplitUse::New;
        let out = split(dialogues("old", 100), dialogues("new", 100), &s);
        assert!(ids(&out.valid).iter().all(|d| d.starts_with("new")));
        assert!(ids(&out.test).iter().all(|d| d.starts_with("new")));
        assert_eq!(out.valid.len(), 10);
        assert_eq!(out.test.len(), 10);
        // Old data's own validation and test parts are unused; its training part trains.
        let old_train = out.train.iter().filter(|d| d.source == "old").count();
        assert!(old_train < 100 && old_train > 60, "{old_train}");
        assert_eq!(out.train.len() - old_train, 80);

        s.train = SplitUse::New;
        let out = split(dialogues("old", 100), dialogues("new", 100), &s);
        assert!(ids(&out.train).iter().all(|d| d.starts_with("new")));
    }

    #[test]
    fn resample_mixes_old_and_new_by_ratio_and_seed() {
        let s = spec(SplitPolicy::Resample);
        let a = split(dialogues("old", 60), dialogues("new", 40), &s);
        assert_eq!((a.train.len(), a.valid.len(), a.test.len()), (80, 10, 10));
        assert!(
            ids(&a.valid).iter().any(|d| d.starts_with("new"))
                || ids(&a.test).iter().any(|d| d.starts_with("new"))
        );
        // Input order does not matter; the seed does.
        let mut reversed = dialogues("new", 40);
        reversed.reverse();
        let b = split(reversed, dialogues("old", 60), &s);
        assert_eq!(ids(&a.valid), ids(&b.valid));
        let mut other = s.clone();
        other.seed = 7;
        let c = split(dialogues("old", 60), dialogues("new", 40), &other);
        assert_ne!(ids(&a.valid), ids(&c.valid));
    }
}
