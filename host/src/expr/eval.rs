//! Evaluation of compiled trees: operators, comparisons and evaluation errors.
//!
//! Evaluation returns `Cow` values: literals and field reads are borrowed from the tree and the
//! record, so only computed results are allocated.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::ast::{BinOp, Node};
use super::functions;
use crate::value::{Str, Value};

/// What a missing field reads as.
pub(crate) static NULL: Value = Value::Null;

/// A failure evaluating an expression on one record (the record usually goes to the DLQ).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// An operator applied to operand types it does not support, e.g. `'a' + 1`.
    #[error("cannot {verb} {left} and {right}")]
    TypeMismatch {
        /// What the operator does ("add", "compare", ...).
        verb: &'static str,
        /// Type of the left operand.
        left: &'static str,
        /// Type of the right operand.
        right: &'static str,
    },
    /// Unary minus on something that is not a number.
    #[error("cannot negate {0}")]
    Negate(&'static str),
    /// A function called with an argument of the wrong type.
    #[error("{function}() expects {expected}, got {got}")]
    Argument {
        /// The function's name.
        function: &'static str,
        /// What it accepts.
        expected: &'static str,
        /// The type it got.
        got: &'static str,
    },
    /// A function called with the wrong number of arguments (normally caught by the parser).
    #[error("{function}() cannot take {got} argument(s)")]
    Arity {
        /// The function's name.
        function: &'static str,
        /// How many arguments it got.
        got: usize,
    },
    /// `/` or `%` by zero.
    #[error("division by zero")]
    DivisionByZero,
    /// Integer arithmetic that does not fit in an i64; names the operator or function.
    #[error("integer overflow in {0}")]
    Overflow(&'static str),
    /// A value that cannot be converted, e.g. `to_int('abc')`.
    #[error("cannot convert {value} to {target}")]
    Conversion {
        /// The value, as shown to users (strings quoted, possibly shortened).
        value: String,
        /// The target type.
        target: &'static str,
    },
}

impl EvalError {
    /// A conversion failure for string `s`, quoted and shortened to keep messages small.
    pub(crate) fn conversion(s: &str, target: &'static str) -> Self {
        const MAX: usize = 40;
        let value = match s.char_indices().nth(MAX) {
            Some((cut, _)) => format!("{:?}...", &s[..cut]),
            None => format!("{s:?}"),
        };
        EvalError::Conversion { value, target }
    }
}

/// Evaluates `node` against `record`, borrowing from both where the result is not computed.
pub(crate) fn eval<'a>(node: &'a Node, record: &'a Value) -> Result<Cow<'a, Value>, EvalError> {
    Ok(match node {
        Node::Literal(v) => Cow::Borrowed(v),
        Node::Field(path) => Cow::Borrowed(record.get_path(path).unwrap_or(&NULL)),
        Node::Not(a) => Cow::Owned(Value::Bool(!eval(a, record)?.is_truthy())),
        Node::Neg(a) => Cow::Owned(negate(&*eval(a, record)?)?),
        Node::And(a, b) => Cow::Owned(Value::Bool(
            eval(a, record)?.is_truthy() && eval(b, record)?.is_truthy(),
        )),
        Node::Or(a, b) => Cow::Owned(Value::Bool(
            eval(a, record)?.is_truthy() || eval(b, record)?.is_truthy(),
        )),
        Node::Binary(BinOp::Add, a, b) => Cow::Owned(add(eval(a, record)?, &*eval(b, record)?)?),
        Node::Binary(op, a, b) => Cow::Owned(binary(*op, &*eval(a, record)?, &*eval(b, record)?)?),
        Node::Call(f, args) => functions::call(*f, args, record)?,
    })
}

fn negate(v: &Value) -> Result<Value, EvalError> {
    match v {
        Value::Int(i) => i
            .checked_neg()
            .map(Value::Int)
            .ok_or(EvalError::Overflow("-")),
        Value::Float(x) => Ok(Value::Float(-x)),
        other => Err(EvalError::Negate(other.type_name())),
    }
}

/// `+`: string concatenation (reusing the left string's buffer when it is ours) or arithmetic.
fn add(left: Cow<'_, Value>, right: &Value) -> Result<Value, EvalError> {
    match (left, right) {
        (Cow::Owned(Value::Str(mut s)), Value::Str(r)) => {
            s.push_str(r);
            Ok(Value::Str(s))
        }
        (Cow::Borrowed(Value::Str(l)), Value::Str(r)) => {
            let mut s = Str::with_capacity(l.len() + r.len());
            s.push_str(l);
            s.push_str(r);
            Ok(Value::Str(s))
        }
        (left, right) => binary(BinOp::Add, &left, right),
    }
}

/// Every binary operator except `&&` and `||`.
pub(crate) fn binary(op: BinOp, a: &Value, b: &Value) -> Result<Value, EvalError> {
    let mismatch = || EvalError::TypeMismatch {
        verb: op.verb(),
        left: a.type_name(),
        right: b.type_name(),
    };
    let (x, y) = match op {
        BinOp::Eq => return Ok(Value::Bool(equal(a, b))),
        BinOp::Ne => return Ok(Value::Bool(!equal(a, b))),
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let ord = order(a, b).ok_or_else(mismatch)?;
            return Ok(Value::Bool(ord.is_some_and(|o| match op {
                BinOp::Lt => o.is_lt(),
                BinOp::Le => o.is_le(),
                BinOp::Gt => o.is_gt(),
                _ => o.is_ge(),
            })));
        }
        _ => match (a, b) {
            (Value::Int(x), Value::Int(y)) => return int_arith(op, *x, *y),
            (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            ),
            _ => return Err(mismatch()),
        },
    };
    Ok(Value::Float(match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div | BinOp::Rem if y == 0.0 => return Err(EvalError::DivisionByZero),
        BinOp::Div => x / y,
        _ => x % y,
    }))
}

/// Int op Int: checked, and `/` still gives a float.
fn int_arith(op: BinOp, x: i64, y: i64) -> Result<Value, EvalError> {
    let overflow = || EvalError::Overflow(op.symbol());
    match op {
        BinOp::Add => x.checked_add(y).map(Value::Int).ok_or_else(overflow),
        BinOp::Sub => x.checked_sub(y).map(Value::Int).ok_or_else(overflow),
        BinOp::Mul => x.checked_mul(y).map(Value::Int).ok_or_else(overflow),
        _ if y == 0 => Err(EvalError::DivisionByZero),
        BinOp::Div => Ok(Value::Float(x as f64 / y as f64)),
        // Only i64::MIN % -1 wraps, and its true result is 0.
        _ => Ok(Value::Int(x.wrapping_rem(y))),
    }
}

/// `==`: numbers compare by value across int and float; other types must match exactly
/// (arrays and objects compare item by item, objects ignoring field order).
pub(crate) fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Float(y)) | (Value::Float(y), Value::Int(x)) => {
            cmp_int_float(*x, *y) == Some(Ordering::Equal)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

/// Ordering for `< <= > >=`: `None` if the types cannot be ordered, `Some(None)` if unordered
/// (NaN), in which case every ordering comparison is false.
fn order(a: &Value, b: &Value) -> Option<Option<Ordering>> {
    Some(match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        (Value::Int(x), Value::Float(y)) => cmp_int_float(*x, *y),
        (Value::Float(x), Value::Int(y)) => cmp_int_float(*y, *x).map(Ordering::reverse),
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        _ => return None,
    })
}

/// Exact comparison of an int with a float (no rounding of large ints through f64).
fn cmp_int_float(i: i64, f: f64) -> Option<Ordering> {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
    if f.is_nan() {
        return None;
    }
    if f >= LIMIT {
        return Some(Ordering::Less);
    }
    if f < -LIMIT {
        return Some(Ordering::Greater);
    }
    let whole = f.trunc();
    // `whole` is integral and within [-2^63, 2^63), so the cast is exact.
    Some(i.cmp(&(whole as i64)).then_with(|| {
        if f > whole {
            Ordering::Less
        } else if f < whole {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::Expr;

    fn run(text: &str, record: &str) -> Result<Value, EvalError> {
        Expr::parse(text)
            .expect("parses")
            .eval(&Value::from_json(record.as_bytes()).expect("json"))
    }

    fn ok(text: &str) -> String {
        run(
            text,
            r#"{"i":7,"f":2.5,"s":"ab","t":"","big":9007199254740993}"#,
        )
        .expect("evaluates")
        .to_json_string()
    }

    fn err(text: &str) -> EvalError {
        run(text, r#"{"i":7,"f":2.5,"s":"ab"}"#).expect_err("should fail")
    }

    #[test]
    fn int_arithmetic_stays_int() {
        assert_eq!(ok("i + 1"), "8");
        assert_eq!(ok("i - 10"), "-3");
        assert_eq!(ok("i * 3"), "21");
        assert_eq!(ok("i % 4"), "3");
        assert_eq!(ok("-i % 4"), "-3");
        assert_eq!(ok("i / 2"), "3.5");
        assert_eq!(ok("i / 7"), "1.0");
    }

    #[test]
    fn mixing_int_and_float_gives_float() {
        assert_eq!(ok("i + f"), "9.5");
        assert_eq!(ok("f * 2"), "5.0");
        assert_eq!(ok("i - 0.5"), "6.5");
        assert_eq!(ok("f % 1"), "0.5");
        assert_eq!(ok("-f"), "-2.5");
    }

    #[test]
    fn overflow_and_division_by_zero_are_errors() {
        assert_eq!(err("9223372036854775807 + i"), EvalError::Overflow("+"));
        assert_eq!(err("-9223372036854775807 - i"), EvalError::Overflow("-"));
        assert_eq!(err("4611686018427387904 * i"), EvalError::Overflow("*"));
        assert_eq!(
            err("-(i - 9223372036854775807 - 8)"),
            EvalError::Overflow("-")
        );
        assert_eq!(err("i / 0"), EvalError::DivisionByZero);
        assert_eq!(err("i % 0"), EvalError::DivisionByZero);
        assert_eq!(err("f / 0.0"), EvalError::DivisionByZero);
        assert_eq!(err("f % 0"), EvalError::DivisionByZero);
        assert_eq!(ok("(i - 9223372036854775807 - 8) % -1"), "0");
    }

    #[test]
    fn type_mismatches_name_both_types() {
        assert_eq!(err("s + 1").to_string(), "cannot add string and int");
        assert_eq!(err("1 - s").to_string(), "cannot subtract int and string");
        assert_eq!(err("s * 2").to_string(), "cannot multiply string and int");
        assert_eq!(err("missing / 2").to_string(), "cannot divide null and int");
        assert_eq!(
            err("true % 2").to_string(),
            "cannot take the remainder of bool and int"
        );
        assert_eq!(err("s < 1").to_string(), "cannot compare string and int");
        assert_eq!(
            err("missing > 1").to_string(),
            "cannot compare null and int"
        );
        assert_eq!(
            err("true < false").to_string(),
            "cannot compare bool and bool"
        );
        assert_eq!(err("-s").to_string(), "cannot negate string");
    }

    #[test]
    fn string_concatenation() {
        assert_eq!(ok("s + 'c'"), r#""abc""#);
        assert_eq!(ok("s + s + s + t"), r#""ababab""#);
        assert_eq!(ok("'a' + 'b'"), r#""ab""#);
    }

    #[test]
    fn equality() {
        assert_eq!(ok("i == 7.0"), "true");
        assert_eq!(ok("7.0 == i"), "true");
        assert_eq!(ok("i != 7"), "false");
        assert_eq!(ok("'7' == i"), "false");
        assert_eq!(ok("'7' != i"), "true");
        assert_eq!(ok("missing == null"), "true");
        assert_eq!(ok("null == false"), "false");
        assert_eq!(ok("s == 'ab'"), "true");
        assert_eq!(ok("big == 9007199254740992.0"), "false"); // exact, not via f64
        assert_eq!(ok("to_float('nan') == to_float('nan')"), "false");
        let rec = r#"{"a":[1,{"x":2,"y":3}],"b":[1.0,{"y":3,"x":2.0}],"c":[1]}"#;
        assert_eq!(run("a == b", rec).expect("eval"), Value::Bool(true));
        assert_eq!(run("a == c", rec).expect("eval"), Value::Bool(false));
    }

    #[test]
    fn ordering() {
        assert_eq!(ok("i < 7.5"), "true");
        assert_eq!(ok("i <= 7"), "true");
        assert_eq!(ok("i > 6.99"), "true");
        assert_eq!(ok("i >= 7.01"), "false");
        assert_eq!(ok("f > i"), "false");
        assert_eq!(ok("-3 < -2.5"), "true");
        assert_eq!(ok("big > 9007199254740992.0"), "true");
        assert_eq!(ok("i < 1e300"), "true");
        assert_eq!(ok("'ab' < 'abc'"), "true");
        assert_eq!(ok("'b' > 'abc'"), "true");
        assert_eq!(ok("'B' < 'a'"), "true");
        assert_eq!(ok("to_float('nan') < 1 || to_float('nan') >= 1"), "false");
    }

    #[test]
    fn int_float_comparison_is_exact() {
        let cases = [
            (3, 3.5, Ordering::Less),
            (-3, -3.5, Ordering::Greater),
            (4, 3.5, Ordering::Greater),
            (3, 3.0, Ordering::Equal),
            (i64::MAX, 9_223_372_036_854_775_808.0, Ordering::Less),
            (i64::MIN, -9_223_372_036_854_775_808.0, Ordering::Equal),
            (i64::MIN, f64::NEG_INFINITY, Ordering::Greater),
            (0, f64::INFINITY, Ordering::Less),
        ];
        for (i, f, want) in cases {
            assert_eq!(cmp_int_float(i, f), Some(want), "{i} vs {f}");
        }
        assert_eq!(cmp_int_float(0, f64::NAN), None);
    }

    #[test]
    fn logic_short_circuits_and_returns_bools() {
        assert_eq!(ok("i && s"), "true");
        assert_eq!(ok("t || 0"), "false");
        assert_eq!(ok("false && s < 1"), "false");
        assert_eq!(ok("true || s < 1"), "true");
        assert_eq!(ok("!t"), "true");
        assert_eq!(ok("!missing"), "true");
        assert_eq!(
            err("true && s < 1").to_string(),
            "cannot compare string and int"
        );
    }

    #[test]
    fn fields_are_borrowed_not_cloned() {
        let record = Value::from_json(br#"{"s":"a string that is longer than twenty-four bytes"}"#)
            .expect("json");
        let expr = Expr::parse("s").expect("parses");
        let v = eval(&expr.root, &record).expect("evaluates");
        assert!(matches!(v, Cow::Borrowed(_)));
        let missing = Node::Field(vec![Str::from("nope")].into_boxed_slice());
        let v = eval(&missing, &record).expect("eval");
        assert!(matches!(v, Cow::Borrowed(Value::Null)));
    }

    #[test]
    fn conversion_messages_are_shortened() {
        let e = EvalError::conversion(&"x".repeat(100), "int");
        assert_eq!(
            e.to_string(),
            format!("cannot convert \"{}\"... to int", "x".repeat(40))
        );
    }
}
