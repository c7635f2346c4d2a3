//! Log output with credentials blanked, at every level.
//!
//! At `debug` and `trace` the AWS SDK and its HTTP stack print signed requests:
//! `authorization: AWS4-HMAC-SHA256 Credential=AKIA…, Signature=…`, the
//! `x-amz-security-token` of temporary credentials, presigned URLs. Every log event
//! passes through [`Redacting`] on its way to stderr, which replaces the value after
//! any credential-like key with `[redacted]`, in text and JSON logs alike.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Keys whose values are secrets, lower case. A value counts when `:` or `=` follows
/// the key (quotes and spaces aside), so prose that merely says "signature" is kept.
const SECRET_KEYS: [&str; 14] = [
    "x-amz-security-token",
    "x-amz-credential",
    "x-amz-signature",
    "authorization",
    "credential",
    "signature",
    "security_token",
    "session_token",
    "secret_access_key",
    "aws_secret_access_key",
    "access_key_id",
    "hf_token",
    "api_key",
    "token",
];

/// The text shown instead of a secret.
pub const REDACTED: &str = "[redacted]";

/// `text` with the value after every secret key replaced by [`REDACTED`].
pub fn redact(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut at = 0;
    while at < text.len() {
        let Some(key_len) = SECRET_KEYS
            .iter()
            .find(|k| lower.as_bytes()[at..].starts_with(k.as_bytes()) && starts_word(bytes, at))
            .map(|k| k.len())
        else {
            at += 1;
            continue;
        };
        // Skip quotes (escaped too, in JSON logs), spaces, colour codes (text logs on
        // a terminal) and one `:` or `=`.
        let mut value = at + key_len;
        let mut separated = false;
        while value < text.len() {
            match bytes[value] {
                b'"' | b'\'' | b'\\' | b' ' => value += 1,
                0x1b => {
                    while value < text.len() && bytes[value] != b'm' {
                        value += 1;
                    }
                    value = (value + 1).min(text.len());
                }
                b':' | b'=' if !separated => {
                    separated = true;
                    value += 1;
                }
                _ => break,
            }
        }
        let mut end = value;
        while end < text.len()
            && !matches!(
                bytes[end],
                b'"' | b'\''
                    | b'\\'
                    | b','
                    | b'&'
                    | b';'
                    | b' '
                    | b'\n'
                    | b'\r'
                    | b'}'
                    | b')'
                    | 0x1b
            )
        {
            end += 1;
        }
        if separated && end > value {
            out.push_str(&text[copied..value]);
            out.push_str(REDACTED);
            copied = end;
        }
        at = end.max(at + key_len);
    }
    out.push_str(&text[copied..]);
    out
}

/// Whether a key found at `at` starts a word (so `token` does not match inside
/// `max_tokens` — though `x-amz-security-token` does, being a key of its own).
fn starts_word(bytes: &[u8], at: usize) -> bool {
    if at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
        return true;
    }
    // Right after a colour code (`ESC [ 3 m`), which ends in a letter.
    let before = &bytes[at.saturating_sub(8)..at];
    bytes[at - 1] == b'm'
        && before.iter().rposition(|&b| b == 0x1b).is_some_and(|esc| {
            before[esc + 1..before.len() - 1]
                .iter()
                .enumerate()
                .all(|(i, &b)| {
                    if i == 0 {
                        b == b'['
                    } else {
                        b.is_ascii_digit() || b == b';'
                    }
                })
        })
}

/// A [`MakeWriter`] for stderr that redacts each event before writing it.
pub struct Redacting;

impl<'a> MakeWriter<'a> for Redacting {
    type Writer = RedactingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(Vec::new())
    }
}

/// Collects one event and writes it, redacted, to stderr when dropped.
pub struct RedactingWriter(Vec<u8>);

impl Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingWriter {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.0);
        let _ = io::stderr().lock().write_all(redact(&text).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_request_parts_are_blanked_in_text_and_json() {
        let line = r#"headers: {"authorization": "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261202/us-east-1/sqs/aws4_request, SignedHeaders=host;x-amz-date, Signature=0123abcd", "x-amz-security-token": "IQoJb3JpZ2luX2VjEXAMPLE"}"#;
        let out = redact(line);
        for secret in ["AKIAEXAMPLE", "0123abcd", "IQoJb3JpZ2luX2VjEXAMPLE"] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(out.contains("SignedHeaders=host"), "{out}");
        let json = r#"{"fields":{"message":"x-amz-security-token: \"IQoJSECRET\"\r\nX-Amz-Signature=feedbeef&X-Amz-Credential=AKIAJSON%2F1"}}"#;
        let out = redact(json);
        for secret in ["IQoJSECRET", "feedbeef", "AKIAJSON"] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(out.ends_with("}}"), "{out}");
    }

    #[test]
    fn prose_and_look_alike_keys_are_kept() {
        for text in [
            "the signature of the function",
            "max_tokens=40 new_tokens: 12",
            "job completed metrics={\"turns\": 3}",
            "é token é",
        ] {
            assert_eq!(redact(text), text);
        }
        assert_eq!(redact("api_key=sk-123 next"), "api_key=[redacted] next");
        // Colour codes between the key and its value (text logs on a terminal).
        assert_eq!(
            redact("\x1b[3mtoken\x1b[0m\x1b[2m=\x1b[0mabc\x1b[0m"),
            "\x1b[3mtoken\x1b[0m\x1b[2m=\x1b[0m[redacted]\x1b[0m"
        );
    }
}
