//! A small expression language for `filter` steps and `map.compute` fields.
//!
//! ```text
//! price * quantity > 100 && lower(status) == 'paid'
//! concat(user.first, ' ', user.last)
//! if(amount > 0, 'credit', 'debit')
//! ```
//!
//! Literals: integers, floats, `'strings'` or `"strings"` (escapes `\n \t \\ \' \"`), `true`,
//! `false`, `null`. Fields: `price`, dotted paths `user.id`, `items.0`, or backticks for odd
//! names (`` `unit price` ``); a missing field is `null`. Operators, loosest first: `||`/`or`,
//! `&&`/`and`, `== != < <= > >=`, `+ -`, `* / %`, unary `- !`/`not`. `+` also joins two
//! strings; `/` always gives a float; int arithmetic that overflows is an error. See
//! [`functions`](eval::FUNCTIONS) for the built-in functions.

mod eval;
mod lexer;
mod parser;

use crate::value::{Str, Value};

pub use eval::{EvalError, FUNCTIONS};

/// A compiled expression, cheap to evaluate per record.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    root: Node,
}

/// A problem in an expression's text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (at column {column})")]
pub struct ParseError {
    /// 1-based character column in the expression.
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UnOp {
    Neg,
    Not,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Literal(Value),
    Field(Vec<Str>),
    Unary(UnOp, Box<Node>),
    Binary(BinOp, Box<Node>, Box<Node>),
    Call(eval::Function, Vec<Node>),
}

impl Expr {
    /// Compiles an expression; unknown functions and wrong arities are reported here.
    pub fn parse(text: &str) -> Result<Expr, ParseError> {
        let tokens = lexer::tokenize(text)?;
        let root = parser::Parser::new(&tokens, text).parse()?;
        Ok(Expr { root })
    }

    /// Evaluates against a record.
    pub fn eval(&self, record: &Value) -> Result<Value, EvalError> {
        eval::eval(&self.root, record)
    }

    /// Dotted paths of the fields the expression reads.
    pub fn fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_fields(&self.root, &mut out);
        out
    }
}

fn collect_fields(node: &Node, out: &mut Vec<String>) {
    match node {
        Node::Field(path) => {
            let p = path.join(".");
            if !out.contains(&p) {
                out.push(p);
            }
        }
        Node::Literal(_) => {}
        Node::Unary(_, a) => collect_fields(a, out),
        Node::Binary(_, a, b) => {
            collect_fields(a, out);
            collect_fields(b, out);
        }
        Node::Call(_, args) => args.iter().for_each(|a| collect_fields(a, out)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(expr: &str, record: &str) -> Result<Value, EvalError> {
        Expr::parse(expr).expect("parses").eval(&Value::from_json(record.as_bytes()).expect("json"))
    }

    fn ok(expr: &str, record: &str) -> String {
        eval(expr, record).expect("evaluates").to_json_string()
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(ok("1 + 2 * 3", "{}"), "7");
        assert_eq!(ok("(1 + 2) * 3", "{}"), "9");
        assert_eq!(ok("10 - 3 - 2", "{}"), "5");
        assert_eq!(ok("-2 * 3", "{}"), "-6");
        assert_eq!(ok("1 < 2 && 3 > 4 || true", "{}"), "true");
        assert_eq!(ok("not 1 == 2", "{}"), "true");
        assert_eq!(ok("7 % 3", "{}"), "1");
        assert_eq!(ok("7 / 2", "{}"), "3.5");
    }

    #[test]
    fn fields_paths_and_missing_fields() {
        let r = r#"{"a":{"b":[10,20]},"odd name":5,"s":"x"}"#;
        assert_eq!(ok("a.b.1 + 1", r), "21");
        assert_eq!(ok("`odd name` * 2", r), "10");
        assert_eq!(ok("missing", r), "null");
        assert_eq!(ok("missing == null", r), "true");
        assert_eq!(ok("s + 'y'", r), r#""xy""#);
        assert_eq!(Expr::parse("a.b + c * a.b").expect("parse").fields(), ["a.b", "c"]);
    }

    #[test]
    fn comparisons_across_types() {
        assert_eq!(ok("1 == 1.0", "{}"), "true");
        assert_eq!(ok("'1' == 1", "{}"), "false");
        assert_eq!(ok("'abc' < 'abd'", "{}"), "true");
        assert!(matches!(eval("'a' < 1", "{}"), Err(EvalError::Type { .. })));
    }

    #[test]
    fn arithmetic_errors() {
        assert!(matches!(eval("'a' * 2", "{}"), Err(EvalError::Type { .. })));
        assert!(matches!(eval("1 % 0", "{}"), Err(EvalError::DivisionByZero)));
        assert!(matches!(eval("1 / 0", "{}"), Err(EvalError::DivisionByZero)));
        assert!(matches!(eval("9223372036854775807 + 1", "{}"), Err(EvalError::Overflow)));
    }

    #[test]
    fn short_circuit_skips_errors() {
        assert_eq!(ok("false && 'a' < 1", "{}"), "false");
        assert_eq!(ok("true || 'a' < 1", "{}"), "true");
    }

    #[test]
    fn string_escapes() {
        assert_eq!(ok(r#""a\"b" + 'c\'d' + '\n'"#, "{}"), r#""a\"bc'd\n""#);
    }

    #[test]
    fn functions_work() {
        let r = r#"{"s":"MiXed","n":-2.5,"xs":[1,2,3]}"#;
        assert_eq!(ok("lower(s)", r), r#""mixed""#);
        assert_eq!(ok("upper(s)", r), r#""MIXED""#);
        assert_eq!(ok("len(s)", r), "5");
        assert_eq!(ok("len(xs)", r), "3");
        assert_eq!(ok("abs(n)", r), "2.5");
        assert_eq!(ok("round(n)", r), "-3");
        assert_eq!(ok("floor(n)", r), "-3");
        assert_eq!(ok("ceil(n)", r), "-2");
        assert_eq!(ok("concat(s, '-', 1, true)", r), r#""MiXed-1true""#);
        assert_eq!(ok("coalesce(missing, null, 4)", r), "4");
        assert_eq!(ok("contains(s, 'Xe')", r), "true");
        assert_eq!(ok("starts_with(s, 'Mi')", r), "true");
        assert_eq!(ok("to_int('42') + to_int(2.9)", r), "44");
        assert_eq!(ok("to_float('1.5')", r), "1.5");
        assert_eq!(ok("to_string(12)", r), r#""12""#);
        assert_eq!(ok("if(n < 0, 'neg', 'pos')", r), r#""neg""#);
    }

    #[test]
    fn parse_errors_have_columns_and_hints() {
        let e = Expr::parse("1 + ").expect_err("incomplete");
        assert_eq!(e.column, 5);
        let e = Expr::parse("lowr(x)").expect_err("unknown function");
        assert_eq!(e.column, 1);
        assert!(e.hint.as_deref().unwrap_or("").contains("lower"), "{e:?}");
        let e = Expr::parse("abs(1, 2)").expect_err("arity");
        assert!(e.message.contains("takes 1 argument"), "{e:?}");
        let e = Expr::parse("a == 'x").expect_err("unterminated");
        assert_eq!(e.column, 6);
        let e = Expr::parse("a = 1").expect_err("single =");
        assert!(e.hint.as_deref().unwrap_or("").contains("=="), "{e:?}");
        let e = Expr::parse("(1 + 2").expect_err("paren");
        assert!(e.message.contains(")"), "{e:?}");
    }
}
