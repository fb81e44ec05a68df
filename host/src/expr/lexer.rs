//! Turns expression text into tokens, each with its 1-based character column.

use super::ParseError;
use crate::value::Str;

/// One lexical token.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// An integer literal without its sign; may be `i64::MAX + 1` (only valid after `-`).
    Int(u64),
    Float(f64),
    Str(String),
    /// A single bare word: a keyword, a function name or a one-segment field.
    Ident(String),
    /// A dotted and/or backtick-quoted field path: always a field.
    Path(Vec<Str>),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    End,
}

/// A token and the column where it starts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub column: usize,
}

fn err(column: usize, message: impl Into<String>, hint: Option<&str>) -> ParseError {
    ParseError {
        column,
        message: message.into(),
        hint: hint.map(str::to_string),
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

const TWO_CHAR_OPS: [&str; 6] = ["==", "!=", "<=", ">=", "&&", "||"];

/// Splits `text` into tokens, ending with [`Tok::End`] (column one past the last character).
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        if let Some(op) = TWO_CHAR_OPS.into_iter().find(|op| {
            let mut it = op.chars();
            it.next() == Some(c) && it.next() == next
        }) {
            tokens.push(Token {
                tok: Tok::Op(op),
                column,
            });
            i += 2;
            continue;
        }
        let (tok, end) = match c {
            '(' => (Tok::LParen, i + 1),
            ')' => (Tok::RParen, i + 1),
            ',' => (Tok::Comma, i + 1),
            '+' => (Tok::Op("+"), i + 1),
            '-' => (Tok::Op("-"), i + 1),
            '*' => (Tok::Op("*"), i + 1),
            '/' => (Tok::Op("/"), i + 1),
            '%' => (Tok::Op("%"), i + 1),
            '<' => (Tok::Op("<"), i + 1),
            '>' => (Tok::Op(">"), i + 1),
            '!' => (Tok::Op("!"), i + 1),
            '=' => return Err(err(column, "unexpected `=`", Some("compare with `==`"))),
            '&' | '|' => {
                return Err(err(
                    column,
                    format!("unexpected `{c}`"),
                    Some("use `&&` / `||` (or `and` / `or`)"),
                ))
            }
            '\'' | '"' => string(&chars, i)?,
            '0'..='9' => number(&chars, i)?,
            '`' => path(&chars, i)?,
            c if c.is_alphabetic() || c == '_' => path(&chars, i)?,
            other => return Err(err(column, format!("unexpected character `{other}`"), None)),
        };
        tokens.push(Token { tok, column });
        i = end;
    }
    tokens.push(Token {
        tok: Tok::End,
        column: chars.len() + 1,
    });
    Ok(tokens)
}

/// A quoted string starting at `start`; returns the token and the index after the closing quote.
fn string(chars: &[char], start: usize) -> Result<(Tok, usize), ParseError> {
    let quote = chars[start];
    let mut out = String::new();
    let mut i = start + 1;
    while let Some(&c) = chars.get(i) {
        if c == quote {
            return Ok((Tok::Str(out), i + 1));
        }
        if c != '\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let escaped = match chars.get(i + 1) {
            Some('n') => '\n',
            Some('t') => '\t',
            Some('r') => '\r',
            Some(&c @ ('\\' | '\'' | '"')) => c,
            Some(other) => {
                return Err(err(
                    i + 1,
                    format!("unknown escape `\\{other}`"),
                    Some(r#"escapes are \n \t \r \\ \' \""#),
                ))
            }
            None => break,
        };
        out.push(escaped);
        i += 2;
    }
    Err(err(
        start + 1,
        "unterminated string",
        Some("close it with the same quote it opened with"),
    ))
}

/// A number: digits, an optional `.digits` fraction and an optional `e[+-]digits` exponent.
fn number(chars: &[char], start: usize) -> Result<(Tok, usize), ParseError> {
    let digits = |mut i: usize| {
        while chars.get(i).is_some_and(char::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = digits(start);
    let mut float = false;
    if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
        float = true;
        i = digits(i + 1);
    }
    if matches!(chars.get(i), Some('e' | 'E')) {
        let sign = usize::from(matches!(chars.get(i + 1), Some('+' | '-')));
        if chars.get(i + 1 + sign).is_some_and(char::is_ascii_digit) {
            float = true;
            i = digits(i + 1 + sign);
        }
    }
    if chars.get(i).is_some_and(|&c| is_word_char(c)) {
        let mut end = i;
        while chars.get(end).is_some_and(|&c| is_word_char(c)) {
            end += 1;
        }
        let word: String = chars[start..end].iter().collect();
        return Err(err(
            start + 1,
            format!("`{word}` is neither a number nor a name"),
            Some("names cannot start with a digit; quote odd field names with backticks"),
        ));
    }
    let text: String = chars[start..i].iter().collect();
    let tok = if float {
        Tok::Float(
            text.parse()
                .map_err(|_| err(start + 1, format!("bad number `{text}`"), None))?,
        )
    } else {
        match text.parse::<u64>() {
            Ok(n) if n <= i64::MAX as u64 + 1 => Tok::Int(n),
            _ => {
                return Err(err(
                    start + 1,
                    format!("integer `{text}` is too large"),
                    Some("integers are 64-bit; write a float such as `1e20` for larger numbers"),
                ))
            }
        }
    };
    Ok((tok, i))
}

/// A field path or bare word: segments of word characters or backtick-quoted names, joined by
/// dots (`user.id`, `items.0`, `` `odd name`.x ``). Segments after a dot may start with a digit.
fn path(chars: &[char], start: usize) -> Result<(Tok, usize), ParseError> {
    let mut segments: Vec<Str> = Vec::new();
    let mut quoted = false;
    let mut i = start;
    loop {
        if chars.get(i) == Some(&'`') {
            let len = chars[i + 1..]
                .iter()
                .position(|&c| c == '`')
                .ok_or_else(|| {
                    err(
                        i + 1,
                        "unterminated backtick name",
                        Some("close the name with a backtick"),
                    )
                })?;
            if len == 0 {
                return Err(err(i + 1, "empty backtick name", None));
            }
            segments.push(chars[i + 1..i + 1 + len].iter().collect());
            quoted = true;
            i += len + 2;
        } else {
            let seg_start = i;
            while chars.get(i).is_some_and(|&c| is_word_char(c)) {
                i += 1;
            }
            if i == seg_start {
                return Err(err(
                    i + 1,
                    "expected a field name after `.`",
                    Some("field paths look like `user.id` or `items.0`"),
                ));
            }
            segments.push(chars[seg_start..i].iter().collect());
        }
        if chars.get(i) != Some(&'.') {
            break;
        }
        i += 1;
    }
    let tok = match segments.as_slice() {
        [word] if !quoted => Tok::Ident(word.to_string()),
        _ => Tok::Path(segments),
    };
    Ok((tok, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Tok> {
        tokenize(text)
            .expect("tokenizes")
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    fn lex_err(text: &str) -> ParseError {
        tokenize(text).expect_err("should fail")
    }

    fn path_tok(segments: &[&str]) -> Tok {
        Tok::Path(segments.iter().map(|s| Str::from(*s)).collect())
    }

    #[test]
    fn operators_and_columns() {
        let tokens = tokenize("a>=1 && !b").expect("tokenizes");
        let cols: Vec<_> = tokens.iter().map(|t| (t.tok.clone(), t.column)).collect();
        assert_eq!(
            cols,
            [
                (Tok::Ident("a".into()), 1),
                (Tok::Op(">="), 2),
                (Tok::Int(1), 4),
                (Tok::Op("&&"), 6),
                (Tok::Op("!"), 9),
                (Tok::Ident("b".into()), 10),
                (Tok::End, 11),
            ]
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let tokens = tokenize("'é€' + x").expect("tokenizes");
        assert_eq!(tokens[1].column, 6);
        assert_eq!(tokens[2].column, 8);
    }

    #[test]
    fn numbers() {
        assert_eq!(
            toks("42 4.5 1e3 2.5E-2"),
            [
                Tok::Int(42),
                Tok::Float(4.5),
                Tok::Float(1000.0),
                Tok::Float(0.025),
                Tok::End
            ]
        );
        assert_eq!(toks("9223372036854775808"), [Tok::Int(1 << 63), Tok::End]);
        assert!(lex_err("99999999999999999999")
            .message
            .contains("too large"));
        assert!(lex_err("9223372036854775809").message.contains("too large"));
        let e = lex_err("x + 3abc");
        assert_eq!(e.column, 5);
        assert!(
            e.hint.as_deref().unwrap_or("").contains("backticks"),
            "{e:?}"
        );
    }

    #[test]
    fn string_escapes() {
        assert_eq!(
            toks(r#""a\"b\\c\n\t\r""#),
            [Tok::Str("a\"b\\c\n\t\r".into()), Tok::End]
        );
        assert_eq!(
            toks(r#"'it\'s' 'say \"hi\"'"#),
            [
                Tok::Str("it's".into()),
                Tok::Str("say \"hi\"".into()),
                Tok::End
            ]
        );
        assert_eq!(
            toks(r#"'a"b' "a'b""#),
            [Tok::Str("a\"b".into()), Tok::Str("a'b".into()), Tok::End]
        );
        let e = lex_err(r"'a\qb'");
        assert_eq!(e.column, 3);
        assert!(e.message.contains(r"\q"), "{e:?}");
    }

    #[test]
    fn unterminated_strings_point_at_the_opening_quote() {
        assert_eq!(lex_err("a == 'x").column, 6);
        assert_eq!(lex_err(r#"a == "x\"#).column, 6);
    }

    #[test]
    fn paths_and_backticks() {
        assert_eq!(toks("price"), [Tok::Ident("price".into()), Tok::End]);
        assert_eq!(
            toks("user.id items.0"),
            [
                path_tok(&["user", "id"]),
                path_tok(&["items", "0"]),
                Tok::End
            ]
        );
        assert_eq!(toks("`my field`"), [path_tok(&["my field"]), Tok::End]);
        assert_eq!(
            toks("`a.b`.c.`d e`"),
            [path_tok(&["a.b", "c", "d e"]), Tok::End]
        );
        assert_eq!(toks("_x1"), [Tok::Ident("_x1".into()), Tok::End]);
        assert_eq!(lex_err("a..b").column, 3);
        assert_eq!(lex_err("a. b").column, 3);
        assert_eq!(lex_err("x + `abc").column, 5);
        assert!(lex_err("``").message.contains("empty"));
    }

    #[test]
    fn single_equals_and_ampersand_have_hints() {
        let e = lex_err("a = 1");
        assert_eq!(e.column, 3);
        assert!(e.hint.as_deref().unwrap_or("").contains("=="), "{e:?}");
        let e = lex_err("a & b");
        assert!(e.hint.as_deref().unwrap_or("").contains("&&"), "{e:?}");
        assert_eq!(lex_err("a # b").column, 3);
    }
}
