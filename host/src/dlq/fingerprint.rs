//! What groups dead letters that share a cause: the error's *type* and a *fingerprint*.
//!
//! The same bug fails many records with messages that differ only in their data ("bad record
//! 13", "bad record 110"; "line 1 column 80"). The fingerprint hashes the step, the error type
//! and the message with its data taken out — numbers become `#`, quoted text `"…"` — so those
//! records share one, and an on-call engineer sees one group per cause instead of one line per
//! record. Code names in backticks (functions, fields) are kept: they tell causes apart.

/// The error's type: the exception class or error kind the message starts with
/// (`ValueError: ...` → `ValueError`, `headwater.TransientError: ...`), else where it failed
/// for the host's own checks (`decode`, `event_time`), else `error`.
pub fn error_type(step: &str, error: &str) -> String {
    if let Some((head, _)) = error.split_once(": ") {
        let is_name = !head.is_empty()
            && head.len() <= 80
            && head
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && head
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if is_name {
            return head.to_string();
        }
    }
    match step {
        "decode" | "event_time" => step.to_string(),
        _ => "error".to_string(),
    }
}

/// The message with its data taken out: digit runs → `#`, text in single or double quotes →
/// `"…"`, whitespace runs → one space. Text in backticks is kept.
pub fn normalize(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '0'..='9' => {
                while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                    chars.next();
                }
                out.push('#');
            }
            '"' | '\'' => {
                // A quote inside a word (don't, it's) is an apostrophe, not data.
                let in_word = out.chars().last().is_some_and(char::is_alphanumeric);
                if c == '\'' && in_word {
                    out.push(c);
                    continue;
                }
                let mut closed = false;
                for d in chars.by_ref() {
                    if d == c {
                        closed = true;
                        break;
                    }
                }
                out.push_str("\"…\"");
                if !closed {
                    break;
                }
            }
            '`' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '`' {
                        break;
                    }
                }
            }
            c if c.is_whitespace() => {
                while chars.peek().is_some_and(|d| d.is_whitespace()) {
                    chars.next();
                }
                out.push(' ');
            }
            c => out.push(c),
        }
    }
    out.trim().to_string()
}

/// The group a dead letter belongs to: 16 hex digits of a hash of its step, error type and
/// normalized message (stable across runs and versions of the host).
pub fn fingerprint(step: &str, error_type: &str, error: &str) -> String {
    let text = format!("{step}\n{error_type}\n{}", normalize(error));
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_cause_with_different_data_shares_a_fingerprint() {
        let step = "steps[0] udf enrich";
        let a = "ValueError: bad record 13";
        let b = "ValueError: bad record 110";
        assert_eq!(error_type(step, a), "ValueError");
        assert_eq!(
            fingerprint(step, "ValueError", a),
            fingerprint(step, "ValueError", b)
        );
        // Another step, type or message is another group.
        assert_ne!(
            fingerprint(step, "ValueError", a),
            fingerprint("steps[1] udf enrich", "ValueError", a)
        );
        assert_ne!(
            fingerprint(step, "ValueError", a),
            fingerprint(step, "KeyError", a)
        );
        assert_ne!(
            fingerprint(step, "ValueError", a),
            fingerprint(step, "ValueError", "ValueError: missing field 13")
        );
    }

    #[test]
    fn data_is_taken_out_of_messages_and_code_names_are_kept() {
        assert_eq!(
            normalize("EOF while parsing an object at line 1 column 80"),
            "EOF while parsing an object at line # column #"
        );
        assert_eq!(
            normalize("KeyError: 'price'  in\trecord \"o-17\""),
            "KeyError: \"…\" in record \"…\""
        );
        assert_eq!(
            normalize("map function `enrich_2` returned None; don't"),
            "map function `enrich_2` returned None; don't"
        );
        assert_eq!(normalize("unterminated 'quote 12"), "unterminated \"…\"");
        assert_eq!(normalize("  x  "), "x");
    }

    #[test]
    fn the_type_is_a_leading_name_or_the_host_check_that_failed() {
        assert_eq!(
            error_type("steps[0] udf f", "headwater.TransientError: down"),
            "headwater.TransientError"
        );
        assert_eq!(
            error_type("steps[0] udf f", "json: cannot unmarshal string"),
            "json"
        );
        assert_eq!(
            error_type("decode", "not valid JSON: EOF while parsing"),
            "decode"
        );
        assert_eq!(
            error_type("event_time", "field `ts` is missing"),
            "event_time"
        );
        assert_eq!(error_type("steps[2] window", "boom"), "error");
    }
}
