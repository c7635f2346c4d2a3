//! The label browser: a self_label or eval job's turns, dialogue by dialogue, with the
//! utterances, the examples retrieved and their similarity, the prompt and the raw
//! completion, and the predicted state against the gold state as a diff; filters by
//! dialogue, domain and wrong turns; and the job's error counts per slot.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, RawQuery, State as Extract};
use labelfleet_core::job::{JobBody, JobKey};
use labelfleet_dst::metrics::ValueMatcher;
use maud::{Markup, html};
use serde_json::{Map, Value};

use super::State;
use super::groups::name as job_name;
use super::layout::{Page, PageError, encode, job_href, shell};
use crate::cli::redact::redact;

/// Turns on one page.
const PAGE_TURNS: usize = 40;

/// How a slot of a turn compares with the gold state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SlotDiff {
    /// Predicted as the gold state has it.
    Same,
    /// In the gold state, not predicted.
    Missed,
    /// Predicted with another value.
    Wrong,
    /// Predicted, not in the gold state.
    Extra,
}

impl SlotDiff {
    fn class(self) -> &'static str {
        match self {
            SlotDiff::Same => "same",
            SlotDiff::Missed => "missed",
            SlotDiff::Wrong => "wrong",
            SlotDiff::Extra => "extra",
        }
    }
}

/// Each slot of `predicted` and `gold` with how they compare (values matched by
/// `matcher`, as the job's scores matched them), sorted by slot.
pub fn diff(
    predicted: &Map<String, Value>,
    gold: &Map<String, Value>,
    matcher: ValueMatcher,
) -> Vec<(String, SlotDiff, String, String)> {
    let as_text =
        |v: Option<&Value>| v.map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string));
    let slots: BTreeSet<&String> = predicted.keys().chain(gold.keys()).collect();
    slots
        .into_iter()
        .map(|slot| {
            let (p, g) = (as_text(predicted.get(slot)), as_text(gold.get(slot)));
            let kind = match (&p, &g) {
                (Some(p), Some(g)) if matcher.matches(p, g) => SlotDiff::Same,
                (Some(_), Some(_)) => SlotDiff::Wrong,
                (None, Some(_)) => SlotDiff::Missed,
                _ => SlotDiff::Extra,
            };
            (
                slot.clone(),
                kind,
                p.unwrap_or_default(),
                g.unwrap_or_default(),
            )
        })
        .collect()
}

/// The domain of a slot name (`hotel-area` → `hotel`).
fn domain(slot: &str) -> &str {
    slot.split_once('-').map_or(slot, |(d, _)| d)
}

/// One turn of the log, read and compared.
struct Row<'a> {
    turn: &'a Value,
    diff: Vec<(String, SlotDiff, String, String)>,
    has_gold: bool,
    valid: bool,
}

impl Row<'_> {
    fn right(&self) -> bool {
        self.has_gold && self.valid && self.diff.iter().all(|d| d.1 == SlotDiff::Same)
    }

    fn wrong(&self) -> bool {
        !self.valid || (self.has_gold && !self.right())
    }

    fn domains(&self) -> BTreeSet<&str> {
        self.diff.iter().map(|d| domain(&d.0)).collect()
    }
}

fn read_row(turn: &Value, matcher: ValueMatcher) -> Row<'_> {
    let empty = Map::new();
    let predicted = turn["slot_values"].as_object().unwrap_or(&empty);
    let gold = turn["gold_slot_values"].as_object();
    Row {
        turn,
        diff: diff(predicted, gold.unwrap_or(&empty), matcher),
        has_gold: gold.is_some(),
        valid: turn["valid"].as_bool().unwrap_or(true),
    }
}

/// The page's filters, from its query.
#[derive(Default)]
struct Filters {
    dialogue: String,
    domain: String,
    wrong: bool,
    page: usize,
}

fn filters(query: Option<&str>) -> Filters {
    let mut f = Filters::default();
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*k {
            "dialogue" => f.dialogue = v.into_owned(),
            "domain" => f.domain = v.into_owned(),
            "wrong" => f.wrong = !v.is_empty() && v != "0",
            "page" => f.page = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    f
}

fn slot_chip(slot: &str, kind: SlotDiff, predicted: &str, gold: &str) -> Markup {
    let title = match kind {
        SlotDiff::Same => "predicted as gold".to_string(),
        SlotDiff::Missed => format!("missed: gold is {gold}"),
        SlotDiff::Wrong => format!("wrong: gold is {gold}"),
        SlotDiff::Extra => "extra: not in the gold state".to_string(),
    };
    html! {
        span.slot.(kind.class()) title=(title) {
            (slot) "=" @if kind == SlotDiff::Missed { s { (gold) } } @else { (predicted) }
            @if kind == SlotDiff::Wrong { " (gold " (gold) ")" }
        }
    }
}

/// A retrieved example's source as a link to the job that labelled it, where it is one.
fn example_link(source: &str) -> Markup {
    let target = source.split_once(':').and_then(|(job, turn)| {
        let (group, name) = job.split_once('/')?;
        let dialogue = turn.split_once('#').map_or(turn, |(d, _)| d);
        Some(format!(
            "{}/labels?dialogue={}",
            job_href(group, name),
            encode(dialogue)
        ))
    });
    html! { @match target { Some(href) => a href=(href) { (source) }, None => (source) } }
}

fn turn_card(row: &Row) -> Markup {
    let t = row.turn;
    let class = if row.wrong() {
        "wrong"
    } else if row.right() {
        "right"
    } else {
        ""
    };
    let similarity = t["example_similarity"].as_array();
    html! {
        div.turn.(class) {
            div { b { (t["dialogue_id"].as_str().unwrap_or("?")) " turn " (t["turn_id"]) }
                @if !row.valid { " " span.state.dead { "invalid completion" } }
                @if row.right() { " " span.state.done { "right" } }
                @if let Some(c) = confidence(t) { " " span.muted { (c) } }
            }
            div.utt { b { "system" } (t["system_utterance"].as_str().unwrap_or("")) }
            div.utt { b { "user" } (t["user_utterance"].as_str().unwrap_or("")) }
            div {
                @if row.has_gold {
                    @if row.diff.is_empty() { span.muted { "empty state, as gold" } }
                    @for (slot, kind, p, g) in &row.diff { (slot_chip(slot, *kind, p, g)) }
                } @else {
                    span.muted { "predicted (no gold): " }
                    @for (slot, _, p, _) in &row.diff { span.slot { (slot) "=" (p) } }
                }
            }
            @if let Some(examples) = t["examples"].as_array().filter(|e| !e.is_empty()) {
                details {
                    summary { (examples.len()) " retrieved examples" }
                    table {
                        tr { th { "example" } th { "similarity" } }
                        @for (i, e) in examples.iter().enumerate() {
                            tr {
                                td { (example_link(e.as_str().unwrap_or(""))) }
                                td.num { (similarity.and_then(|s| s.get(i)?.as_f64()).map_or("–".into(), |s| format!("{s:.3}"))) }
                            }
                        }
                    }
                }
            }
            details {
                summary { "prompt (" (t["prompt_tokens"]) " tokens) and raw completion" }
                pre { (redact(t["prompt"].as_str().unwrap_or(""))) }
                pre { (t["completion"].as_str().unwrap_or("")) }
            }
        }
    }
}

/// The labeller's confidence in a turn's completion, as probabilities, where the log
/// recorded it.
fn confidence(turn: &Value) -> Option<String> {
    let c = &turn["confidence"];
    let (whole, least) = (c["logprob"].as_f64()?, c["min_logprob"].as_f64()?);
    Some(format!(
        "p = {:.2} (least likely token {:.2})",
        whole.exp(),
        least.exp()
    ))
}

/// `/groups/{group}/jobs/{name}/labels`.
pub async fn page(
    Extract(state): State,
    Path((group, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Page {
    let (group, name) = (job_name(&group, "group")?, job_name(&name, "job")?);
    let key = JobKey {
        group_id: group.clone(),
        name: name.clone(),
    };
    let view = state.snapshots.job(&key).await?;
    let log_key = view.labels_key().ok_or_else(|| {
        PageError::not_found(format!(
            "job {key} has no labelled turns (no running log) yet"
        ))
    })?;
    let log = state
        .snapshots
        .json(&log_key)
        .await?
        .ok_or_else(|| PageError::not_found(format!("{log_key} is missing")))?;
    let f = filters(query.as_deref());
    // An eval scores with its own `fuzzy_threshold`; self_label with the default.
    let matcher = match view.job.as_ref().map(|j| &j.body) {
        Some(JobBody::Eval(spec)) => ValueMatcher {
            threshold: spec.fuzzy_threshold,
        },
        _ => ValueMatcher::default(),
    };
    let rows: Vec<Row> = log["turns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|turn| read_row(turn, matcher))
        .collect();
    let mut dialogues: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut per_slot: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    let mut domains = BTreeSet::new();
    for r in &rows {
        let d = dialogues
            .entry(r.turn["dialogue_id"].as_str().unwrap_or("?"))
            .or_default();
        d.0 += usize::from(r.right());
        d.1 += 1;
        domains.extend(r.domains());
        for (slot, kind, _, _) in &r.diff {
            let i = match kind {
                SlotDiff::Same => continue,
                SlotDiff::Missed => 0,
                SlotDiff::Wrong => 1,
                SlotDiff::Extra => 2,
            };
            per_slot.entry(slot).or_default()[i] += 1;
        }
    }
    let has_gold = rows.iter().any(|r| r.has_gold);
    let right = rows.iter().filter(|r| r.right()).count();
    let invalid = rows.iter().filter(|r| !r.valid).count();
    let shown: Vec<&Row> = rows
        .iter()
        .filter(|r| f.dialogue.is_empty() || r.turn["dialogue_id"].as_str() == Some(&f.dialogue))
        .filter(|r| f.domain.is_empty() || r.domains().contains(f.domain.as_str()))
        .filter(|r| !f.wrong || r.wrong())
        .collect();
    let pages = shown.len().div_ceil(PAGE_TURNS).max(1);
    let page = f.page.min(pages - 1);
    let mut slot_errors: Vec<(&str, [usize; 3])> = per_slot.into_iter().collect();
    slot_errors.sort_by_key(|(s, c)| (std::cmp::Reverse(c.iter().sum::<usize>()), *s));
    let here = format!("{}/labels", job_href(&group, &name));
    let page_href = |p: usize| {
        format!(
            "{here}?dialogue={}&domain={}&wrong={}&page={p}",
            encode(&f.dialogue),
            encode(&f.domain),
            u8::from(f.wrong)
        )
    };
    let body = html! {
        h1 { "Labels of " a href=(job_href(&group, &name)) { (key) } }
        div.cards {
            div.card { b { (rows.len()) } span { "turns labelled" } }
            @if has_gold {
                div.card { b { (format!("{:.3}", right as f64 / rows.len().max(1) as f64)) } span { "joint goal accuracy (these turns)" } }
            }
            div.card { b.error[invalid > 0] { (invalid) } span { "invalid completions" } }
            div.card { b { (dialogues.len()) } span { "dialogues" } }
        }
        @if log["complete"] == false { p.muted { "The job is still labelling: this is its running log so far." } }
        form.filters method="get" action=(here) {
            label { "dialogue" select name="dialogue" {
                option value="" { "all" }
                @for (d, (r, n)) in &dialogues {
                    option value=(d) selected[f.dialogue == *d] { (d) @if has_gold { " (" (r) "/" (n) " right)" } }
                }
            } }
            label { "domain" select name="domain" {
                option value="" { "all" }
                @for d in &domains { option value=(d) selected[f.domain == *d] { (d) } }
            } }
            label { "wrong turns only" input type="checkbox" name="wrong" value="1" checked[f.wrong]; }
            button type="submit" { "filter" }
        }
        p.muted {
            "Slots: "
            span.slot.same { "as gold" } span.slot.missed { "missed (gold value struck)" }
            span.slot.wrong { "wrong (gold in brackets)" } span.slot.extra { "extra" }
        }
        p.muted {
            (shown.len()) " turns match"
            @if pages > 1 { "; page " (page + 1) " of " (pages) " · "
                @if page > 0 { a href=(page_href(page - 1)) { "previous" } " " }
                @if page + 1 < pages { a href=(page_href(page + 1)) { "next" } }
            }
        }
        @for row in shown.iter().skip(page * PAGE_TURNS).take(PAGE_TURNS) { (turn_card(row)) }
        @if has_gold {
            h2 { "Errors by slot (every turn of the job)" }
            @if slot_errors.is_empty() { p.ok { "No slot errors." } } @else {
                table {
                    tr { th { "slot" } th { "missed" } th { "wrong" } th { "extra" } }
                    @for (slot, [m, w, x]) in &slot_errors {
                        tr { td { (slot) } td.num { (m) } td.num { (w) } td.num { (x) } }
                    }
                }
            }
        }
    };
    Ok(shell(&format!("Labels of {key}"), "Groups", None, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_turn_s_slots_are_same_missed_wrong_or_extra() {
        let predicted = json!({"hotel-area": "north", "hotel-stars": "4", "train-day": "monday"});
        let gold =
            json!({"hotel-area": "north", "hotel-stars": "3", "hotel-name": "acorn guest house"});
        let matcher = ValueMatcher::default();
        let d = diff(
            predicted.as_object().unwrap(),
            gold.as_object().unwrap(),
            matcher,
        );
        let kinds: Vec<(&str, SlotDiff)> = d.iter().map(|(s, k, _, _)| (s.as_str(), *k)).collect();
        assert_eq!(
            kinds,
            [
                ("hotel-area", SlotDiff::Same),
                ("hotel-name", SlotDiff::Missed),
                ("hotel-stars", SlotDiff::Wrong),
                ("train-day", SlotDiff::Extra),
            ]
        );
        let turn = json!({"slot_values": predicted, "gold_slot_values": gold, "valid": true});
        let row = read_row(&turn, matcher);
        assert!(row.wrong() && !row.right());
        assert_eq!(
            row.domains().into_iter().collect::<Vec<_>>(),
            ["hotel", "train"]
        );
        let empty = json!({"slot_values": {}, "gold_slot_values": {}, "valid": true});
        assert!(read_row(&empty, matcher).right());
        let invalid = json!({"slot_values": {}, "gold_slot_values": {}, "valid": false});
        assert!(read_row(&invalid, matcher).wrong());
    }

    #[test]
    fn a_turn_s_confidence_shows_as_probabilities() {
        let turn = json!({"confidence": {"logprob": -0.5, "min_logprob": -0.25}});
        assert_eq!(
            confidence(&turn).as_deref(),
            Some("p = 0.61 (least likely token 0.78)")
        );
        assert_eq!(confidence(&json!({})), None);
    }

    #[test]
    fn values_match_as_loosely_as_the_job_scored_them() {
        let predicted = json!({"hotel-name": "acorn guesthouse"});
        let gold = json!({"hotel-name": "acorn guest house"});
        let kind = |threshold| {
            diff(
                predicted.as_object().unwrap(),
                gold.as_object().unwrap(),
                ValueMatcher { threshold },
            )[0]
            .1
        };
        assert_eq!(kind(0.9), SlotDiff::Same);
        assert_eq!(kind(1.0), SlotDiff::Wrong);
    }
}
