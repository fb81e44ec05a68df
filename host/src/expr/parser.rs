//! A precedence-climbing parser from tokens to [`Node`] trees, with constant folding.
//!
//! Precedence, loosest first: `||`/`or`, `&&`/`and`, `not`, comparisons (which do not chain),
//! `+ -`, `* / %`, unary `-` and `!`. `not` binds looser than comparisons (`not a == b` is
//! `not (a == b)`), `!` tighter (`!a == b` is `(!a) == b`).

use super::ast::{BinOp, Node, MAX_DEPTH};
use super::eval::{eval, NULL};
use super::functions::{lookup, FUNCTIONS};
use super::lexer::{Tok, Token};
use super::ParseError;
use crate::value::{Str, Value};

/// A parsed subtree and its depth.
type Parsed = Result<(Node, usize), ParseError>;

const OR: u8 = 1;
const AND: u8 = 2;
/// `not` takes an operand of everything binding tighter than `&&`.
const NOT: u8 = AND;
const COMPARE: u8 = 3;

const KEYWORDS: [&str; 6] = ["true", "false", "null", "and", "or", "not"];

/// Parses a whole token list (as produced by the lexer, ending with [`Tok::End`]).
pub(crate) fn parse(tokens: &[Token]) -> Result<Node, ParseError> {
    let mut p = Parser {
        tokens,
        pos: 0,
        nesting: 0,
    };
    let (node, _) = p.expr(0)?;
    let t = p.peek();
    if t.tok != Tok::End {
        let hint = match &t.tok {
            Tok::RParen => "this `)` has no matching `(`".to_string(),
            Tok::Ident(w) if keyword_case(w).is_some() => keyword_hint(w),
            _ => "an operator such as `+`, `==` or `&&` may be missing".to_string(),
        };
        return Err(error(
            t.column,
            format!("unexpected {}", describe(&t.tok)),
            Some(hint),
        ));
    }
    Ok(node)
}

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
    /// Current recursion depth, bounded so deeply nested input cannot overflow the stack.
    nesting: usize,
}

fn error(column: usize, message: String, hint: Option<String>) -> ParseError {
    ParseError {
        column,
        message,
        hint,
    }
}

fn binop(tok: &Tok) -> Option<(Option<BinOp>, u8)> {
    Some(match tok {
        Tok::Op("||") => (None, OR),
        Tok::Ident(w) if w == "or" => (None, OR),
        Tok::Op("&&") => (None, AND),
        Tok::Ident(w) if w == "and" => (None, AND),
        Tok::Op("==") => (Some(BinOp::Eq), COMPARE),
        Tok::Op("!=") => (Some(BinOp::Ne), COMPARE),
        Tok::Op("<") => (Some(BinOp::Lt), COMPARE),
        Tok::Op("<=") => (Some(BinOp::Le), COMPARE),
        Tok::Op(">") => (Some(BinOp::Gt), COMPARE),
        Tok::Op(">=") => (Some(BinOp::Ge), COMPARE),
        Tok::Op("+") => (Some(BinOp::Add), 4),
        Tok::Op("-") => (Some(BinOp::Sub), 4),
        Tok::Op("*") => (Some(BinOp::Mul), 5),
        Tok::Op("/") => (Some(BinOp::Div), 5),
        Tok::Op("%") => (Some(BinOp::Rem), 5),
        _ => return None,
    })
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &'a Token {
        let tokens: &'a [Token] = self.tokens;
        // The lexer always ends the list with `End`, which is never consumed past.
        &tokens[self.pos.min(tokens.len().saturating_sub(1))]
    }

    fn next(&mut self) -> &'a Token {
        let t = self.peek();
        if t.tok != Tok::End {
            self.pos += 1;
        }
        t
    }

    /// Checks the depth of a new node and folds it to a literal when all its inputs are literals.
    fn build(&self, node: Node, depth: usize, column: usize) -> Parsed {
        if depth > MAX_DEPTH {
            return Err(too_deep(column));
        }
        let constant = !matches!(node, Node::Literal(_) | Node::Field(_))
            && node
                .children()
                .iter()
                .all(|c| matches!(c, Node::Literal(_)));
        if constant {
            // Errors (like `1 / 0`) are left for evaluation, where they are reported per record.
            if let Ok(v) = eval(&node, &NULL) {
                return Ok((Node::Literal(v.into_owned()), 1));
            }
        }
        Ok((node, depth))
    }

    fn expr(&mut self, min_prec: u8) -> Parsed {
        let (mut left, mut depth) = self.unary()?;
        let mut compared = false;
        while let Some((op, prec)) = binop(&self.peek().tok) {
            if prec <= min_prec {
                break;
            }
            let column = self.next().column;
            if prec == COMPARE && compared {
                return Err(error(
                    column,
                    "comparisons cannot be chained".into(),
                    Some("write `a < b && b < c`, or use parentheses".into()),
                ));
            }
            compared = prec == COMPARE;
            let (right, right_depth) = self.expr(prec)?;
            let (l, r) = (Box::new(left), Box::new(right));
            let node = match op {
                Some(op) => Node::Binary(op, l, r),
                None if prec == OR => Node::Or(l, r),
                None => Node::And(l, r),
            };
            (left, depth) = self.build(node, depth.max(right_depth) + 1, column)?;
        }
        Ok((left, depth))
    }

    fn unary(&mut self) -> Parsed {
        self.nesting += 1;
        let result = if self.nesting > MAX_DEPTH {
            Err(too_deep(self.peek().column))
        } else {
            self.unary_inner()
        };
        self.nesting -= 1;
        result
    }

    fn unary_inner(&mut self) -> Parsed {
        let t = self.peek();
        match &t.tok {
            Tok::Op("-") => {
                self.next();
                // The one integer literal that exists only with its minus sign.
                if self.peek().tok == Tok::Int(i64::MIN.unsigned_abs()) {
                    self.next();
                    return Ok((Node::Literal(Value::Int(i64::MIN)), 1));
                }
                let (operand, d) = self.unary()?;
                self.build(Node::Neg(Box::new(operand)), d + 1, t.column)
            }
            Tok::Op("!") => {
                self.next();
                let (operand, d) = self.unary()?;
                self.build(Node::Not(Box::new(operand)), d + 1, t.column)
            }
            Tok::Ident(w) if w == "not" => {
                self.next();
                let (operand, d) = self.expr(NOT)?;
                self.build(Node::Not(Box::new(operand)), d + 1, t.column)
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Parsed {
        let t = self.next();
        let literal = |v: Value| Ok((Node::Literal(v), 1));
        match &t.tok {
            Tok::Int(i) => match i64::try_from(*i) {
                Ok(i) => literal(Value::Int(i)),
                Err(_) => Err(error(
                    t.column,
                    format!("integer `{i}` is too large"),
                    Some(format!("the largest int is {}", i64::MAX)),
                )),
            },
            Tok::Float(f) => literal(Value::Float(*f)),
            Tok::Str(s) => literal(Value::Str(Str::from(s.as_str()))),
            Tok::Path(segments) if self.peek().tok == Tok::LParen => {
                Err(unknown_function(&segments.join("."), t.column))
            }
            Tok::Path(segments) => Ok((Node::Field(segments.clone().into_boxed_slice()), 1)),
            Tok::LParen => {
                let inner = self.expr(0)?;
                let close = self.next();
                if close.tok != Tok::RParen {
                    return Err(error(
                        close.column,
                        format!("expected `)`, found {}", describe(&close.tok)),
                        Some(format!("the `(` at column {} is not closed", t.column)),
                    ));
                }
                Ok(inner)
            }
            Tok::Ident(word) => match word.as_str() {
                "true" => literal(Value::Bool(true)),
                "false" => literal(Value::Bool(false)),
                "null" => literal(Value::Null),
                _ if self.peek().tok == Tok::LParen => self.call(word, t.column),
                "and" | "or" => Err(expected_value(t)),
                _ if keyword_case(word).is_some() => Err(error(
                    t.column,
                    format!("`{word}` is not a keyword"),
                    Some(keyword_hint(word)),
                )),
                _ => Ok((
                    Node::Field(vec![Str::from(word.as_str())].into_boxed_slice()),
                    1,
                )),
            },
            _ => Err(expected_value(t)),
        }
    }

    fn call(&mut self, name: &str, column: usize) -> Parsed {
        let info = lookup(name).ok_or_else(|| unknown_function(name, column))?;
        let open = self.next(); // `(`
        let mut args = Vec::new();
        let mut depth = 0;
        if self.peek().tok == Tok::RParen {
            self.next();
        } else {
            loop {
                let (arg, d) = self.expr(0)?;
                args.push(arg);
                depth = depth.max(d);
                let t = self.next();
                match t.tok {
                    Tok::Comma => {}
                    Tok::RParen => break,
                    _ => {
                        return Err(error(
                            t.column,
                            format!("expected `,` or `)`, found {}", describe(&t.tok)),
                            Some(format!(
                                "the `(` of `{name}` at column {} is not closed",
                                open.column
                            )),
                        ))
                    }
                }
            }
        }
        let n = args.len();
        if n < info.min_args || info.max_args.is_some_and(|max| n > max) {
            let takes = match info.max_args {
                Some(1) => "exactly 1 argument".to_string(),
                Some(max) if max == info.min_args => format!("exactly {max} arguments"),
                Some(max) => format!("{} to {max} arguments", info.min_args),
                None => format!(
                    "at least {} argument{}",
                    info.min_args,
                    plural(info.min_args)
                ),
            };
            return Err(error(
                column,
                format!("`{name}` takes {takes}, got {n}"),
                Some(format!("usage: {}", info.usage)),
            ));
        }
        self.build(
            Node::Call(info.function, args.into_boxed_slice()),
            depth + 1,
            column,
        )
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn too_deep(column: usize) -> ParseError {
    error(
        column,
        format!("expression is nested more than {MAX_DEPTH} levels deep"),
        Some("split it into several steps or computed fields".into()),
    )
}

fn expected_value(t: &Token) -> ParseError {
    let hint = match t.tok {
        Tok::End => Some("the expression ends too early".to_string()),
        Tok::RParen => Some("something is missing before this `)`".to_string()),
        _ => None,
    };
    error(
        t.column,
        format!("expected a value, found {}", describe(&t.tok)),
        hint,
    )
}

fn unknown_function(name: &str, column: usize) -> ParseError {
    let names: Vec<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
    let lower = name.to_lowercase();
    let best = names
        .iter()
        .map(|&n| (n, strsim::jaro_winkler(&lower, n)))
        .filter(|&(_, score)| score >= 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let known = format!("known functions: {}", names.join(", "));
    let hint = match best {
        Some((n, _)) => format!("did you mean `{n}`? {known}"),
        None => known,
    };
    error(column, format!("unknown function `{name}`"), Some(hint))
}

/// The keyword `word` spells in another case (`AND` -> `and`), if any.
fn keyword_case(word: &str) -> Option<&'static str> {
    let lower = word.to_ascii_lowercase();
    KEYWORDS.into_iter().find(|k| *k == lower && *k != word)
}

fn keyword_hint(word: &str) -> String {
    let k = keyword_case(word).unwrap_or("");
    format!("keywords are lowercase: write `{k}` (or `` `{word}` `` for a field of that name)")
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::End => "the end of the expression".into(),
        Tok::Int(i) => format!("`{i}`"),
        Tok::Float(f) => format!("`{f}`"),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Ident(w) => format!("`{w}`"),
        Tok::Path(segments) => format!("`{}`", segments.join(".")),
        Tok::Op(o) => format!("`{o}`"),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::Comma => "`,`".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::lexer::tokenize;
    use crate::value::split_path;

    fn tree(text: &str) -> Node {
        parse(&tokenize(text).expect("tokenizes")).expect("parses")
    }

    fn parse_err(text: &str) -> ParseError {
        parse(&tokenize(text).expect("tokenizes")).expect_err("should fail")
    }

    fn hint(e: &ParseError) -> &str {
        e.hint.as_deref().unwrap_or("")
    }

    fn field(p: &str) -> Box<Node> {
        Box::new(Node::Field(split_path(p).into_boxed_slice()))
    }

    fn int(i: i64) -> Box<Node> {
        Box::new(Node::Literal(Value::Int(i)))
    }

    #[test]
    fn precedence_shapes() {
        use BinOp::*;
        assert_eq!(
            tree("a + b * c"),
            Node::Binary(
                Add,
                field("a"),
                Box::new(Node::Binary(Mul, field("b"), field("c")))
            )
        );
        assert_eq!(
            tree("a - b - c"),
            Node::Binary(
                Sub,
                Box::new(Node::Binary(Sub, field("a"), field("b"))),
                field("c")
            )
        );
        assert_eq!(
            tree("a || b && c"),
            Node::Or(field("a"), Box::new(Node::And(field("b"), field("c"))))
        );
        assert_eq!(tree("a or b and c"), tree("a || b && c"));
        assert_eq!(
            tree("a < b + 1"),
            Node::Binary(
                Lt,
                field("a"),
                Box::new(Node::Binary(Add, field("b"), int(1)))
            )
        );
        assert_eq!(
            tree("(a + b) * c"),
            Node::Binary(
                Mul,
                Box::new(Node::Binary(Add, field("a"), field("b"))),
                field("c")
            )
        );
        assert_eq!(
            tree("-a * b"),
            Node::Binary(Mul, Box::new(Node::Neg(field("a"))), field("b"))
        );
    }

    #[test]
    fn not_binds_looser_than_comparisons_and_bang_tighter() {
        use BinOp::*;
        assert_eq!(
            tree("not a == b"),
            Node::Not(Box::new(Node::Binary(Eq, field("a"), field("b"))))
        );
        assert_eq!(
            tree("!a == b"),
            Node::Binary(Eq, Box::new(Node::Not(field("a"))), field("b"))
        );
        assert_eq!(
            tree("not a && b"),
            Node::And(Box::new(Node::Not(field("a"))), field("b"))
        );
        assert_eq!(tree("!!a"), Node::Not(Box::new(Node::Not(field("a")))));
    }

    #[test]
    fn constants_are_folded() {
        assert_eq!(tree("1 + 2 * 3"), *int(7));
        assert_eq!(tree("-5"), *int(-5));
        assert_eq!(tree("-9223372036854775808"), *int(i64::MIN));
        assert_eq!(tree("upper('a') + 'b'"), Node::Literal(Value::from("Ab")));
        assert_eq!(
            tree("a * (2 + 3)"),
            Node::Binary(BinOp::Mul, field("a"), int(5))
        );
        // Errors stay for evaluation time.
        assert!(matches!(tree("1 / 0"), Node::Binary(BinOp::Div, _, _)));
    }

    #[test]
    fn fields_and_keywords() {
        assert_eq!(tree("true"), Node::Literal(Value::Bool(true)));
        assert_eq!(tree("null"), Node::Literal(Value::Null));
        assert_eq!(*field("user.id"), tree("user.id"));
        assert_eq!(
            Node::Field(vec![Str::from("and")].into_boxed_slice()),
            tree("`and`")
        );
        let e = parse_err("x == True");
        assert_eq!(e.column, 6);
        assert!(hint(&e).contains("`true`"), "{e:?}");
        let e = parse_err("a AND b");
        assert_eq!((e.column, e.message.as_str()), (3, "unexpected `AND`"));
        assert!(hint(&e).contains("`and`"), "{e:?}");
        assert_eq!(parse_err("a == and").column, 6);
    }

    #[test]
    fn error_columns_and_messages() {
        let e = parse_err("1 + ");
        assert_eq!(
            (e.column, e.message.as_str()),
            (5, "expected a value, found the end of the expression")
        );
        let e = parse_err("(1 + 2");
        assert_eq!(e.column, 7);
        assert!(
            e.message.contains("`)`") && hint(&e).contains("column 1"),
            "{e:?}"
        );
        let e = parse_err("a + 1)");
        assert_eq!(e.column, 6);
        assert!(hint(&e).contains("no matching"), "{e:?}");
        let e = parse_err("a b");
        assert_eq!((e.column, e.message.as_str()), (3, "unexpected `b`"));
        assert!(hint(&e).contains("operator"), "{e:?}");
        assert_eq!(parse_err("a * * b").column, 5);
        assert_eq!(parse_err("()").column, 2);
        assert_eq!(parse_err("9223372036854775808").column, 1);
        assert_eq!(parse_err("2 - 9223372036854775808").column, 5);
    }

    #[test]
    fn comparisons_do_not_chain() {
        let e = parse_err("1 < a < 3");
        assert_eq!(e.column, 7);
        assert!(hint(&e).contains("&&"), "{e:?}");
        assert!(parse_err("a == b != c").message.contains("chained"));
        tree("(a == b) == c");
        tree("a < b && b < c");
    }

    #[test]
    fn unknown_functions_suggest_names() {
        let e = parse_err("lowr(x)");
        assert_eq!(
            (e.column, e.message.as_str()),
            (1, "unknown function `lowr`")
        );
        assert!(hint(&e).starts_with("did you mean `lower`?"), "{e:?}");
        assert!(
            hint(&e).contains("starts_with") && hint(&e).contains("to_string"),
            "{e:?}"
        );
        let e = parse_err("1 + startswith(a, 'b')");
        assert_eq!(e.column, 5);
        assert!(hint(&e).starts_with("did you mean `starts_with`?"), "{e:?}");
        let e = parse_err("frobnicate(1)");
        assert!(
            hint(&e).starts_with("known functions: lower, upper"),
            "{e:?}"
        );
        let e = parse_err("math.abs(1)");
        assert_eq!(e.message, "unknown function `math.abs`");
    }

    #[test]
    fn wrong_arity_is_a_parse_error() {
        let e = parse_err("x + abs(1, 2)");
        assert_eq!(
            (e.column, e.message.as_str()),
            (5, "`abs` takes exactly 1 argument, got 2")
        );
        assert!(hint(&e).starts_with("usage: abs(n)"), "{e:?}");
        assert_eq!(
            parse_err("if(a, b)").message,
            "`if` takes exactly 3 arguments, got 2"
        );
        assert_eq!(
            parse_err("concat()").message,
            "`concat` takes at least 1 argument, got 0"
        );
        assert_eq!(
            parse_err("contains(a)").message,
            "`contains` takes exactly 2 arguments, got 1"
        );
        let e = parse_err("lower(a b)");
        assert_eq!(e.column, 9);
        assert!(hint(&e).contains("`lower`"), "{e:?}");
        assert_eq!(parse_err("lower(a,)").column, 9);
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse_err(&deep).message.contains("nested"));
        let long = vec!["a"; 10_000].join(" + ");
        assert!(parse_err(&long).message.contains("nested"));
        let negs = format!("{}a", "-".repeat(10_000));
        assert!(parse_err(&negs).message.contains("nested"));
        let ok = vec!["a"; MAX_DEPTH].join(" + ");
        tree(&ok);
        let wide = format!("concat({})", vec!["a"; 10_000].join(", "));
        tree(&wide);
    }
}
