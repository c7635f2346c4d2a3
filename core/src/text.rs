//! Error text that is safe to show to whoever can run `status`: bounded in length, with
//! values quoted from input cut short.
//!
//! Errors travel into dead-letter reasons, worker reports and logs. A job file with a
//! 50 MB `group_id`, or an unknown 50 MB key, must not put 50 MB into each of them.

/// The longest error message kept, in bytes.
pub const MAX_MESSAGE: usize = 2_000;

/// The longest value quoted from input in a message, in characters.
pub const MAX_QUOTED: usize = 80;

/// `text`, cut to [`MAX_MESSAGE`] bytes (at a character boundary) with a note of how
/// much was left out.
pub fn capped(text: &str) -> String {
    if text.len() <= MAX_MESSAGE {
        return text.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} more bytes not shown)",
        &text[..end],
        text.len() - end
    )
}

/// A value from input as a message quotes it: at most [`MAX_QUOTED`] characters, and
/// its length when it is longer.
pub fn quoted(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED) {
        None => value.to_string(),
        Some((end, _)) => format!("{}… ({} bytes in all)", &value[..end], value.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_a_character_boundary_with_a_note() {
        assert_eq!(capped("short"), "short");
        let long = "é".repeat(MAX_MESSAGE);
        let cut = capped(&long);
        assert!(cut.len() < MAX_MESSAGE + 60, "{}", cut.len());
        assert!(cut.ends_with("more bytes not shown)"), "{cut}");
        assert_eq!(quoted("group"), "group");
        let id = "x".repeat(50_000_000);
        let q = quoted(&id);
        assert!(q.len() < 120 && q.contains("50000000 bytes in all"), "{q}");
    }
}
