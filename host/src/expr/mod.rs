//! A small expression language for `filter` steps and `map: compute:` fields.
//!
//! ```text
//! price * quantity > 100 && lower(status) == 'paid'
//! concat(user.first, ' ', user.last)
//! if(amount > 0, 'credit', 'debit')
//! ```
//!
//! - Literals: integers (i64), floats (`1.5`, `2e3`), `'strings'` or `"strings"` (escapes
//!   `\n \t \r \\ \' \"`), `true`, `false`, `null`.
//! - Fields: `price`, dotted paths `user.id` and `items.0`, backticks for odd names
//!   (`` `unit price` ``, `` `a.b`.c ``). A missing field reads as `null`.
//! - Operators, loosest first: `||`/`or`; `&&`/`and`; `not`; `== != < <= > >=` (not
//!   chainable); `+ -`; `* / %`; unary `-` and `!`. `not a == b` means `not (a == b)`.
//! - `&&`, `||`, `!`, `not` use truthiness ([`Value::is_truthy`]), short-circuit, and give bools.
//! - Arithmetic: int op int stays int and overflow is an error; mixing int and float gives a
//!   float; `/` always gives a float; `%` takes the sign of the left side; `+` also joins two
//!   strings; dividing by zero is an error.
//! - `==`/`!=`: ints and floats compare by value, other types must match (`'1' == 1` is
//!   false, `null == null` is true). `< <= > >=` order numbers, or strings by code point;
//!   anything else (including `null`) is an error.
//! - Functions: see [`FUNCTIONS`]. Unknown functions and wrong argument counts are parse
//!   errors.
//!
//! Parsing compiles to a tree with pre-split field paths and folds constant subexpressions;
//! evaluation borrows literals and fields, so only computed results are allocated.

mod ast;
mod eval;
mod functions;
mod lexer;
mod parser;

use std::fmt;

use crate::value::Value;

pub use eval::EvalError;
pub use functions::{FunctionInfo, FUNCTIONS};

/// A compiled expression, cheap to clone and to evaluate per record.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    root: ast::Node,
    source: Box<str>,
}

/// A problem in an expression's text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (at column {column})")]
pub struct ParseError {
    /// 1-based character (not byte) column in the expression text.
    pub column: usize,
    /// What is wrong, e.g. "unknown function `lowr`".
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
}

impl ParseError {
    /// A multi-line rendering with the expression, a caret under the column, and the hint.
    pub fn render(&self, text: &str) -> String {
        let pad = " ".repeat(self.column.saturating_sub(1));
        let mut out = format!("{text}\n{pad}^ {}", self.message);
        if let Some(hint) = &self.hint {
            out.push_str("\nhint: ");
            out.push_str(hint);
        }
        out
    }
}

impl Expr {
    /// Compiles `text`. Syntax errors, unknown functions and wrong argument counts are
    /// reported here, with a column and usually a hint.
    pub fn parse(text: &str) -> Result<Expr, ParseError> {
        let tokens = lexer::tokenize(text)?;
        let root = parser::parse(&tokens)?;
        Ok(Expr {
            root,
            source: text.into(),
        })
    }

    /// Evaluates against a record. Missing fields read as `null`; type mismatches, overflow
    /// and division by zero are errors.
    pub fn eval(&self, record: &Value) -> Result<Value, EvalError> {
        eval::eval(&self.root, record).map(std::borrow::Cow::into_owned)
    }

    /// Evaluates and tests the result's truthiness, without copying it: the fast path for
    /// `filter` steps.
    pub fn matches(&self, record: &Value) -> Result<bool, EvalError> {
        eval::eval(&self.root, record).map(|v| v.is_truthy())
    }

    /// Dotted paths of the fields the expression reads, in order of first use, without
    /// duplicates (for docs/validation).
    pub fn fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.root.collect_fields(&mut out);
        out
    }

    /// The text the expression was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str, record: &str) -> Result<Value, EvalError> {
        Expr::parse(text)
            .expect("parses")
            .eval(&Value::from_json(record.as_bytes()).expect("json"))
    }

    fn ok(text: &str, record: &str) -> String {
        eval(text, record).expect("evaluates").to_json_string()
    }

    #[test]
    fn expr_is_shareable_across_threads() {
        fn check<T: Clone + fmt::Debug + Send + Sync + 'static>() {}
        check::<Expr>();
        check::<ParseError>();
        check::<EvalError>();
    }

    #[test]
    fn precedence() {
        assert_eq!(ok("1 + 2 * 3", "{}"), "7");
        assert_eq!(ok("(1 + 2) * 3", "{}"), "9");
        assert_eq!(ok("10 - 3 - 2", "{}"), "5");
        assert_eq!(ok("2 * 3 % 4", "{}"), "2");
        assert_eq!(ok("-2 * 3", "{}"), "-6");
        assert_eq!(ok("1 < 2 && 3 > 4 || true", "{}"), "true");
        assert_eq!(ok("true || false && false", "{}"), "true");
        assert_eq!(ok("not 1 == 2", "{}"), "true");
        assert_eq!(ok("!0 == true", "{}"), "true");
        assert_eq!(ok("1 + 1 == 2 and 'a' + 'b' == 'ab'", "{}"), "true");
        assert_eq!(ok("7 / 2", "{}"), "3.5");
    }

    #[test]
    fn fields_paths_and_missing_fields() {
        let r = r#"{"a":{"b":[10,20]},"odd name":5,"s":"x","d.o.t":{"x":1}}"#;
        assert_eq!(ok("a.b.1 + 1", r), "21");
        assert_eq!(ok("`odd name` * 2", r), "10");
        assert_eq!(ok("`d.o.t`.x", r), "1");
        assert_eq!(ok("a.b", r), "[10,20]");
        assert_eq!(ok("missing", r), "null");
        assert_eq!(ok("a.b.7", r), "null");
        assert_eq!(ok("s.deeper", r), "null");
        assert_eq!(ok("missing.x == null", r), "true");
        assert_eq!(ok("coalesce(missing, 'default')", r), r#""default""#);
        assert_eq!(ok("s + 'y'", r), r#""xy""#);
        assert_eq!(ok("a.b.1", "[]"), "null");
    }

    #[test]
    fn fields_lists_paths_once_in_order() {
        let e = Expr::parse("a.b + c * a.b + len(`x y`) + coalesce(d, 1)").expect("parse");
        assert_eq!(e.fields(), ["a.b", "c", "x y", "d"]);
        assert!(Expr::parse("1 + 2").expect("parse").fields().is_empty());
    }

    #[test]
    fn matches_uses_truthiness() {
        let r = Value::from_json(br#"{"n":0,"s":"x","xs":[]}"#).expect("json");
        let m = |t: &str| {
            Expr::parse(t)
                .expect("parses")
                .matches(&r)
                .expect("evaluates")
        };
        assert!(!m("n"));
        assert!(m("s"));
        assert!(!m("xs"));
        assert!(!m("missing"));
        assert!(m("n == 0 && s == 'x'"));
        assert!(Expr::parse("s > 1").expect("parses").matches(&r).is_err());
    }

    #[test]
    fn string_escapes() {
        assert_eq!(
            ok(r#""a\"b" + 'c\'d' + '\n' + "\\""#, "{}"),
            r#""a\"bc'd\n\\""#
        );
        assert_eq!(ok(r#"'tab\there'"#, "{}"), r#""tab\there""#);
    }

    #[test]
    fn errors_display() {
        let e = Expr::parse("lowr(x)").expect_err("unknown function");
        assert_eq!(e.to_string(), "unknown function `lowr` (at column 1)");
        assert_eq!(
            e.render("lowr(x)").lines().take(2).collect::<Vec<_>>(),
            ["lowr(x)", "^ unknown function `lowr`"]
        );
        let e = Expr::parse("a == 'x").expect_err("unterminated");
        assert_eq!(e.column, 6);
        assert!(e
            .render("a == 'x")
            .contains("\n     ^ unterminated string\nhint: "));
        assert_eq!(
            eval("'a' + 1", "{}").expect_err("type").to_string(),
            "cannot add string and int"
        );
    }

    #[test]
    fn source_and_display() {
        let e = Expr::parse(" price > 1 ").expect("parses");
        assert_eq!(e.source(), " price > 1 ");
        assert_eq!(e.to_string(), " price > 1 ");
    }

    #[test]
    fn functions_table_is_public() {
        assert_eq!(FUNCTIONS.len(), 15);
        let names: Vec<_> = FUNCTIONS.iter().map(|f| f.name).collect();
        for name in [
            "lower", "upper", "len", "abs", "round", "floor", "ceil", "concat", "coalesce",
        ] {
            assert!(names.contains(&name), "{name}");
        }
        for name in [
            "contains",
            "starts_with",
            "to_int",
            "to_float",
            "to_string",
            "if",
        ] {
            assert!(names.contains(&name), "{name}");
        }
    }
}
