//! JSON errors of data files that say where the problem is and what was expected,
//! never the value found.
//!
//! A job may name any file as its gold set or predictions, a credentials file
//! included, and its errors end up in dead-letter reasons that anyone who runs `status`
//! reads. serde quotes the offending value (`invalid type: string "AKIA…", expected a
//! map`); these helpers keep the JSON path and the expectation, and drop the value.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// The longest message kept, in bytes.
const MAX_MESSAGE: usize = 1_000;

/// Deserializes `value`; the error names the JSON path and what was expected.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(describe)
}

/// Parses and deserializes `bytes`; the error names the JSON path (or the line and
/// column of a syntax error) and what was expected.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(describe)
}

fn describe(e: serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let message = without_values(&e.into_inner().to_string());
    let text = if path.is_empty() || path == "." {
        message
    } else {
        format!("at `{path}`: {message}")
    };
    cut(&text)
}

/// A serde error message without the values it quotes: what comes before `, expected`
/// loses its `"strings"` and `` `values` ``, what comes after (from our own types)
/// stays.
pub fn without_values(message: &str) -> String {
    let (found, expected) = match message.find(", expected") {
        Some(at) => message.split_at(at),
        None => (message, ""),
    };
    let mut out = String::with_capacity(found.len());
    let mut chars = found.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                // Skip to the closing quote, past escaped ones.
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                }
            }
            '`' => {
                for c in chars.by_ref() {
                    if c == '`' {
                        break;
                    }
                }
            }
            c => out.push(c),
        }
    }
    let found = out.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("{}{expected}", found.trim_end_matches([' ', ':']))
}

fn cut(text: &str) -> String {
    if text.len() <= MAX_MESSAGE {
        return text.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Turn {
        turn_id: u32,
        slots: BTreeMap<String, String>,
    }

    #[test]
    fn errors_name_the_path_and_the_expectation_but_not_the_value() {
        let secret = "AKIAIOSFODNN7EXAMPLE";
        let err = from_slice::<Vec<Turn>>(
            format!(
                r#"[{{"turn_id": 1, "slots": {{}}}}, {{"turn_id": "{secret}", "slots": {{}}}}]"#
            )
            .as_bytes(),
        )
        .unwrap_err();
        assert!(!err.contains(secret), "{err}");
        assert!(err.contains("[1].turn_id"), "{err}");
        assert!(err.contains("invalid type: string, expected u32"), "{err}");
        let err = from_value::<Vec<Turn>>(serde_json::json!({"aws_secret_access_key": secret}))
            .unwrap_err();
        assert!(!err.contains(secret), "{err}");
        assert!(err.contains("expected a sequence"), "{err}");
        let err = from_value::<Turn>(serde_json::json!({"turn_id": 12345678, "slots": [secret]}))
            .unwrap_err();
        assert!(!err.contains(secret), "{err}");
        assert!(err.contains("slots"), "{err}");
    }

    #[test]
    fn quoted_values_go_and_escapes_inside_them_do_not_confuse_it() {
        assert_eq!(
            without_values(r#"invalid value: string "a\"b`c", expected one of `x`, `y`"#),
            "invalid value: string, expected one of `x`, `y`"
        );
        assert_eq!(
            without_values("invalid type: integer `123456`, expected a string"),
            "invalid type: integer, expected a string"
        );
        assert_eq!(
            without_values("unknown variant `hunter2`"),
            "unknown variant"
        );
        let long = "x".repeat(5_000);
        assert!(cut(&long).len() <= MAX_MESSAGE + 3);
    }
}
