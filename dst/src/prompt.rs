//! The code-style prompt of `self_label`, and the parser that reads completions back.
//!
//! The schema is shown as Python function signatures, one per domain, and each turn's
//! belief-state change as a list of calls:
//!
//! ```text
//! def find_hotel(area: str = None, price_range: str = None, …): …
//!
//! # Context: for hotel, the area is centre.
//! # System: What price range would you like?
//! # User: Something cheap, please.
//! update = [find_hotel(price_range="cheap")]
//! ```
//!
//! The prompt ends with the target turn and an open `update = [`; the model completes
//! the list and [`parse_update`] reads it into slot values. Anything it cannot read is
//! a [`ParseError`] (the caller counts it as invalid and keeps the previous state).

use std::fmt::Write as _;

use crate::slots::{canonical_slot, normalize_value};
use crate::turn::SlotValues;

/// MultiWOZ's informable slots per domain, in canonical spelling.
pub const MULTIWOZ_SCHEMA: [(&str, &[&str]); 7] = [
    ("attraction", &["area", "name", "type"]),
    (
        "hotel",
        &[
            "area",
            "book day",
            "book people",
            "book stay",
            "internet",
            "name",
            "parking",
            "pricerange",
            "stars",
            "type",
        ],
    ),
    (
        "restaurant",
        &[
            "area",
            "book day",
            "book people",
            "book time",
            "food",
            "name",
            "pricerange",
        ],
    ),
    ("taxi", &["arriveby", "departure", "destination", "leaveat"]),
    (
        "train",
        &[
            "arriveby",
            "book people",
            "day",
            "departure",
            "destination",
            "leaveat",
        ],
    ),
    ("hospital", &["department"]),
    ("bus", &["day", "departure", "destination", "leaveat"]),
];

/// What the prompt shows of one turn: the state before it and its two utterances.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TurnContext {
    /// The belief state before the turn (the previous prediction, for the target turn).
    pub last_slot_values: SlotValues,
    /// The system utterance before the user's.
    pub system_utterance: String,
    /// The user utterance.
    pub user_utterance: String,
}

/// A labelled turn shown as an in-context example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The turn.
    pub context: TurnContext,
    /// The slots the turn set or changed.
    pub update: SlotValues,
}

impl Example {
    /// A gold turn as an example: its context and the slots it set or changed.
    pub fn of_gold_turn(turn: &crate::Turn) -> Example {
        Example {
            context: TurnContext {
                last_slot_values: turn.last_slot_values.clone(),
                system_utterance: turn.system_utterance.clone(),
                user_utterance: turn.user_utterance.clone(),
            },
            update: turn.turn_slot_values.clone(),
        }
    }
}

/// A Python-style argument name for a canonical slot: `pricerange` → `price_range`,
/// `book people` → `book_people`.
pub fn argument_name(slot: &str) -> String {
    match slot {
        "pricerange" => "price_range".into(),
        "arriveby" => "arrive_by".into(),
        "leaveat" => "leave_at".into(),
        other => other.replace(' ', "_"),
    }
}

fn readable(slot: &str) -> String {
    argument_name(slot).replace('_', " ")
}

fn function_name(domain: &str) -> String {
    match domain {
        "taxi" => "book_taxi".into(),
        other => format!("find_{other}"),
    }
}

/// The schema as function signatures, one line per domain.
pub fn schema_signatures() -> String {
    let mut out = String::new();
    for (domain, slots) in MULTIWOZ_SCHEMA {
        let args: Vec<String> = slots
            .iter()
            .map(|s| format!("{}: str = None", argument_name(s)))
            .collect();
        let _ = writeln!(
            out,
            "def {}({}): ...",
            function_name(domain),
            args.join(", ")
        );
    }
    out
}

/// A state in words, as retrieval and the prompt show it:
/// `for hotel, the area is centre, the price range is cheap; for train, …`.
pub fn describe_state(state: &SlotValues) -> String {
    if state.is_empty() {
        return "nothing yet".into();
    }
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&str> = None;
    for (name, value) in state {
        let (domain, slot) = name.split_once('-').unwrap_or(("general", name));
        let phrase = format!("the {} is {value}", readable(slot));
        if current == Some(domain) {
            parts
                .last_mut()
                .expect("a domain part")
                .push_str(&format!(", {phrase}"));
        } else {
            parts.push(format!("for {domain}, {phrase}"));
            current = Some(domain);
        }
    }
    parts.join("; ")
}

/// The text a turn is retrieved by: its context, the system's and the user's words.
pub fn retrieval_text(context: &TurnContext) -> String {
    format!(
        "Context: {}. System: {} User: {}",
        describe_state(&context.last_slot_values),
        context.system_utterance.trim(),
        context.user_utterance.trim()
    )
}

fn quote(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// A state change as calls: `find_hotel(area="centre"), find_train(day="friday")`.
pub fn render_update(update: &SlotValues) -> String {
    let mut calls: Vec<(String, Vec<String>)> = Vec::new();
    for (name, value) in update {
        let (domain, slot) = name.split_once('-').unwrap_or(("general", name));
        let arg = format!("{}={}", argument_name(slot), quote(value));
        let function = function_name(domain);
        match calls.last_mut() {
            Some((f, args)) if *f == function => args.push(arg),
            _ => calls.push((function, vec![arg])),
        }
    }
    calls
        .iter()
        .map(|(f, args)| format!("{f}({})", args.join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_turn(out: &mut String, context: &TurnContext) {
    let _ = writeln!(
        out,
        "# Context: {}.",
        describe_state(&context.last_slot_values)
    );
    let system = context.system_utterance.trim();
    let _ = writeln!(
        out,
        "# System: {}",
        if system.is_empty() { "(start)" } else { system }
    );
    let _ = writeln!(out, "# User: {}", context.user_utterance.trim());
}

/// The instructions and schema that open every prompt.
pub const PREAMBLE: &str = "# Track the user's goal in a travel-booking dialogue. After each user turn, write the \
slots the user set or changed as calls to these functions (values in double quotes, \
\"dontcare\" when the user has no preference, [] when nothing changed).\n";

/// The prompt for `target`, with `examples` shown before it (most similar last).
pub fn build_prompt(examples: &[Example], target: &TurnContext) -> String {
    let mut out = String::from(PREAMBLE);
    out.push_str(&schema_signatures());
    for example in examples {
        out.push('\n');
        render_turn(&mut out, &example.context);
        let _ = writeln!(out, "update = [{}]", render_update(&example.update));
    }
    out.push('\n');
    render_turn(&mut out, target);
    out.push_str("update = [");
    out
}

/// The compact prompt for `target`, for a model fine-tuned on it: the state so far as
/// calls, the system's last words and the user's, and the open update. No schema and
/// no examples, so a few dozen tokens instead of several hundred:
///
/// ```text
/// # State: find_hotel(area="centre")
/// # System: What price range would you like?
/// # User: Something cheap, please.
/// update = [
/// ```
pub fn build_compact_prompt(target: &TurnContext) -> String {
    let state = render_update(&target.last_slot_values);
    let system = target.system_utterance.trim();
    format!(
        "# State: {}\n# System: {}\n# User: {}\nupdate = [",
        if state.is_empty() { "none" } else { &state },
        if system.is_empty() { "(start)" } else { system },
        target.user_utterance.trim()
    )
}

/// What a model should complete a prompt with for `update`: the calls and the closing
/// bracket (where generation stops). Training data for `retrain`.
pub fn target_completion(update: &SlotValues) -> String {
    format!("{}]", render_update(update))
}

/// Where a completion stops: the end of the update line.
pub const STOP_SEQUENCES: [&str; 2] = ["\n", "]"];

/// A completion that is not a list of calls to the schema's functions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read the completion at character {at}: {message}")]
pub struct ParseError {
    /// Where reading stopped.
    pub at: usize,
    /// What was expected there.
    pub message: String,
}

struct Reader<'a> {
    text: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn error<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            at: self.at,
            message: message.into(),
        })
    }

    fn skip_space(&mut self) {
        while self.at < self.text.len() && self.text[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_space();
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn identifier(&mut self) -> Result<String, ParseError> {
        self.skip_space();
        let start = self.at;
        while let Some(c) = self.peek()
            && (c.is_ascii_alphanumeric() || c == b'_')
        {
            self.at += 1;
        }
        if start == self.at {
            return self.error("expected a name");
        }
        Ok(String::from_utf8_lossy(&self.text[start..self.at]).into_owned())
    }

    /// A quoted string, a number or a bare word (`None`, `True`).
    fn value(&mut self) -> Result<Option<String>, ParseError> {
        self.skip_space();
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => {
                self.at += 1;
                let mut bytes = Vec::new();
                loop {
                    match self.peek() {
                        None => return self.error("unterminated string"),
                        Some(b'\\') if self.at + 1 < self.text.len() => {
                            bytes.push(self.text[self.at + 1]);
                            self.at += 2;
                        }
                        Some(c) if c == q => {
                            self.at += 1;
                            break;
                        }
                        Some(c) => {
                            bytes.push(c);
                            self.at += 1;
                        }
                    }
                }
                Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
            Some(c) if c.is_ascii_alphanumeric() || c == b':' || c == b'.' => {
                let start = self.at;
                while let Some(c) = self.peek()
                    && (c.is_ascii_alphanumeric() || matches!(c, b':' | b'.' | b'_'))
                {
                    self.at += 1;
                }
                let word = String::from_utf8_lossy(&self.text[start..self.at]).into_owned();
                Ok((word != "None").then_some(word))
            }
            _ => self.error("expected a value"),
        }
    }
}

/// What a completion says changed: slots set (`Some`) or cleared (`None`).
pub type Update = Vec<(String, Option<String>)>;

/// Reads a completion of `update = [` into slot changes. Text after the closing `]`
/// is ignored; a completion cut off mid-call is an error.
pub fn parse_update(completion: &str) -> Result<Update, ParseError> {
    let mut r = Reader {
        text: completion.as_bytes(),
        at: 0,
    };
    let mut update = Update::new();
    loop {
        r.skip_space();
        if r.peek().is_none() || r.eat(b']') {
            return Ok(update);
        }
        let function = r.identifier()?;
        let Some(domain) = function
            .strip_prefix("find_")
            .or_else(|| function.strip_prefix("book_"))
        else {
            return r.error(format!("`{function}` is not one of the schema's functions"));
        };
        let domain = domain.to_lowercase();
        if !MULTIWOZ_SCHEMA.iter().any(|(d, _)| *d == domain) {
            return r.error(format!("`{function}`: unknown domain `{domain}`"));
        }
        if !r.eat(b'(') {
            return r.error("expected `(` after the function name");
        }
        loop {
            if r.eat(b')') {
                break;
            }
            let argument = r.identifier()?;
            if !r.eat(b'=') {
                return r.error(format!("expected `=` after `{argument}`"));
            }
            let value = r.value()?;
            let slot = canonical_slot(&domain, &argument, false);
            let known = MULTIWOZ_SCHEMA
                .iter()
                .any(|(d, slots)| *d == domain && slots.iter().any(|s| format!("{d}-{s}") == slot));
            if !known {
                return r.error(format!("`{argument}` is not a slot of {domain}"));
            }
            update.push((slot, value.and_then(|v| normalize_value(&v))));
            if !r.eat(b',') {
                if r.eat(b')') {
                    break;
                }
                return r.error("expected `,` or `)`");
            }
        }
        r.eat(b',');
    }
}

/// The state after applying `update` to `state`.
pub fn apply_update(state: &SlotValues, update: &Update) -> SlotValues {
    let mut next = state.clone();
    for (slot, value) in update {
        match value {
            Some(v) => {
                next.insert(slot.clone(), v.clone());
            }
            None => {
                next.remove(slot);
            }
        }
    }
    next
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

    #[test]
    fn the_compact_prompt_holds_the_state_and_both_utterances_and_no_schema() {
        let target = TurnContext {
            last_slot_values: state(&[("hotel-area", "centre")]),
            system_utterance: " What price range? ".into(),
            user_utterance: "Cheap, please.".into(),
        };
        assert_eq!(
            build_compact_prompt(&target),
            "# State: find_hotel(area=\"centre\")\n# System: What price range?\n# User: Cheap, please.\nupdate = ["
        );
        let first = TurnContext {
            last_slot_values: SlotValues::new(),
            system_utterance: String::new(),
            user_utterance: "I need a train.".into(),
        };
        let prompt = build_compact_prompt(&first);
        assert!(
            prompt.starts_with("# State: none\n# System: (start)\n"),
            "{prompt}"
        );
        assert!(
            prompt.len() * 5 < build_prompt(&[], &first).len(),
            "{prompt}"
        );
    }

    #[test]
    fn an_update_renders_and_parses_back() {
        let update = state(&[
            ("hotel-area", "centre"),
            ("hotel-book people", "2"),
            ("hotel-pricerange", "cheap"),
            ("train-leaveat", "08:15"),
            ("restaurant-name", "pizza \"hut\" city"),
        ]);
        let text = render_update(&update);
        assert!(
            text.contains("find_hotel(area=\"centre\", book_people=\"2\", price_range=\"cheap\")")
        );
        let parsed = parse_update(&format!("{text}]\nignored")).unwrap();
        assert_eq!(apply_update(&SlotValues::new(), &parsed), update);
    }

    #[test]
    fn completions_the_model_writes_are_read() {
        let parsed = parse_update(r#" find_train(day='friday', leave_at=9:30), book_taxi(destination="Cambridge Museum") ] extra"#)
            .unwrap();
        assert_eq!(
            parsed,
            vec![
                ("train-day".to_string(), Some("friday".to_string())),
                ("train-leaveat".to_string(), Some("09:30".to_string())),
                (
                    "taxi-destination".to_string(),
                    Some("cambridge museum".to_string())
                ),
            ]
        );
        assert_eq!(parse_update("]").unwrap(), vec![]);
        assert_eq!(parse_update("").unwrap(), vec![]);
        let cleared = parse_update("find_hotel(area=None)]").unwrap();
        let before = state(&[("hotel-area", "north"), ("hotel-stars", "4")]);
        assert_eq!(
            apply_update(&before, &cleared),
            state(&[("hotel-stars", "4")])
        );
    }

    #[test]
    fn malformed_completions_are_errors_not_panics() {
        for bad in [
            "find_hotel(area=\"centre\"",
            "find_hotel(area=\"cen",
            "find_spaceship(area=\"mars\")]",
            "find_hotel(colour=\"red\")]",
            "hello there",
            "find_hotel area",
            "find_hotel(area \"x\")",
            "find_hotel(area=)",
            "(((",
        ] {
            assert!(parse_update(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn the_prompt_shows_schema_examples_and_the_target() {
        let example = Example {
            context: TurnContext {
                last_slot_values: state(&[("hotel-area", "centre")]),
                system_utterance: "What price range?".into(),
                user_utterance: "Cheap please.".into(),
            },
            update: state(&[("hotel-pricerange", "cheap")]),
        };
        let target = TurnContext {
            last_slot_values: SlotValues::new(),
            system_utterance: String::new(),
            user_utterance: "I need a train to Ely.".into(),
        };
        let prompt = build_prompt(&[example], &target);
        assert!(prompt.contains("def find_hotel(area: str = None, book_day: str = None"));
        assert!(prompt.contains("# Context: for hotel, the area is centre.\n# System: What price range?\n# User: Cheap please.\nupdate = [find_hotel(price_range=\"cheap\")]\n"));
        assert!(prompt.ends_with(
            "# Context: nothing yet.\n# System: (start)\n# User: I need a train to Ely.\nupdate = ["
        ));
        assert_eq!(
            retrieval_text(&target),
            "Context: nothing yet. System:  User: I need a train to Ely."
        );
    }
}
