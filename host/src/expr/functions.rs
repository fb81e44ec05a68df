//! The built-in functions: their table (names, arities, usage) and their implementations.

use std::borrow::Cow;
use std::fmt::Write as _;

use super::ast::Node;
use super::eval::{equal, eval, EvalError, NULL};
use crate::value::{Str, Value};

/// Identifies a built-in function in a compiled call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Function {
    Lower,
    Upper,
    Len,
    Abs,
    Round,
    Floor,
    Ceil,
    Concat,
    Coalesce,
    Contains,
    StartsWith,
    ToInt,
    ToFloat,
    ToString,
    If,
}

/// A built-in function as documented to users.
#[derive(Clone, Copy, Debug)]
pub struct FunctionInfo {
    /// The name used in calls (`lower`).
    pub name: &'static str,
    /// Call shape and a one-line description (`lower(s): lowercase copy of a string`).
    pub usage: &'static str,
    /// Fewest arguments accepted.
    pub min_args: usize,
    /// Most arguments accepted; `None` for variadic functions.
    pub max_args: Option<usize>,
    pub(crate) function: Function,
}

const fn info(
    function: Function,
    name: &'static str,
    args: (usize, Option<usize>),
    usage: &'static str,
) -> FunctionInfo {
    FunctionInfo {
        name,
        usage,
        min_args: args.0,
        max_args: args.1,
        function,
    }
}

const ONE: (usize, Option<usize>) = (1, Some(1));
const TWO: (usize, Option<usize>) = (2, Some(2));
const MANY: (usize, Option<usize>) = (1, None);

/// Every built-in function, in documentation order.
pub const FUNCTIONS: &[FunctionInfo] = &[
    info(
        Function::Lower,
        "lower",
        ONE,
        "lower(s): lowercase copy of a string",
    ),
    info(
        Function::Upper,
        "upper",
        ONE,
        "upper(s): uppercase copy of a string",
    ),
    info(
        Function::Len,
        "len",
        ONE,
        "len(x): characters in a string, items in an array or fields in an object",
    ),
    info(
        Function::Abs,
        "abs",
        ONE,
        "abs(n): absolute value, keeping int or float",
    ),
    info(
        Function::Round,
        "round",
        ONE,
        "round(n): nearest int, halves away from zero",
    ),
    info(Function::Floor, "floor", ONE, "floor(n): largest int <= n"),
    info(Function::Ceil, "ceil", ONE, "ceil(n): smallest int >= n"),
    info(
        Function::Concat,
        "concat",
        MANY,
        "concat(a, b, ...): the arguments as one string (non-strings as JSON)",
    ),
    info(
        Function::Coalesce,
        "coalesce",
        MANY,
        "coalesce(a, b, ...): the first argument that is not null",
    ),
    info(
        Function::Contains,
        "contains",
        TWO,
        "contains(s, sub): whether string s contains sub, or array s has an item == sub",
    ),
    info(
        Function::StartsWith,
        "starts_with",
        TWO,
        "starts_with(s, prefix): whether string s starts with prefix",
    ),
    info(
        Function::ToInt,
        "to_int",
        ONE,
        "to_int(x): int from a number (truncating), bool or numeric string; null stays null",
    ),
    info(
        Function::ToFloat,
        "to_float",
        ONE,
        "to_float(x): float from a number, bool or numeric string; null stays null",
    ),
    info(
        Function::ToString,
        "to_string",
        ONE,
        "to_string(x): the value as a string (non-strings as JSON)",
    ),
    info(
        Function::If,
        "if",
        (3, Some(3)),
        "if(cond, then, else): `then` when cond is truthy, else `else` (only one is evaluated)",
    ),
];

/// Looks a built-in function up by name.
pub(crate) fn lookup(name: &str) -> Option<&'static FunctionInfo> {
    FUNCTIONS.iter().find(|f| f.name == name)
}

impl Function {
    pub fn name(self) -> &'static str {
        FUNCTIONS
            .iter()
            .find(|f| f.function == self)
            .map_or("?", |f| f.name)
    }
}

type Out<'a> = Result<Cow<'a, Value>, EvalError>;

fn owned<'a>(v: Value) -> Out<'a> {
    Ok(Cow::Owned(v))
}

fn wrong(f: Function, expected: &'static str, got: &Value) -> EvalError {
    EvalError::Argument {
        function: f.name(),
        expected,
        got: got.type_name(),
    }
}

/// Calls `f`; arguments are evaluated lazily so `if` and `coalesce` skip the ones not needed.
pub(crate) fn call<'a>(f: Function, args: &'a [Node], record: &'a Value) -> Out<'a> {
    match (f, args) {
        (Function::If, [cond, then, other]) => {
            if eval(cond, record)?.is_truthy() {
                eval(then, record)
            } else {
                eval(other, record)
            }
        }
        (Function::Coalesce, args) if !args.is_empty() => {
            for arg in args {
                let v = eval(arg, record)?;
                if !matches!(*v, Value::Null) {
                    return Ok(v);
                }
            }
            Ok(Cow::Borrowed(&NULL))
        }
        (Function::Concat, args) if !args.is_empty() => {
            let mut out = Str::default();
            for arg in args {
                match &*eval(arg, record)? {
                    Value::Str(s) => out.push_str(s),
                    Value::Int(i) => {
                        let _ = write!(out, "{i}");
                    }
                    other => {
                        let _ = write!(out, "{other}");
                    }
                }
            }
            owned(Value::Str(out))
        }
        (Function::Contains, [a, b]) => contains(&*eval(a, record)?, &*eval(b, record)?),
        (Function::StartsWith, [a, b]) => match (&*eval(a, record)?, &*eval(b, record)?) {
            (Value::Str(s), Value::Str(p)) => owned(Value::Bool(s.starts_with(p.as_str()))),
            (Value::Str(_), other) => Err(wrong(f, "a string as second argument", other)),
            (other, _) => Err(wrong(f, "a string", other)),
        },
        (_, [a]) => unary(f, eval(a, record)?),
        (f, args) => Err(EvalError::Arity {
            function: f.name(),
            got: args.len(),
        }),
    }
}

fn contains<'a>(haystack: &Value, needle: &Value) -> Out<'a> {
    let f = Function::Contains;
    match (haystack, needle) {
        (Value::Str(s), Value::Str(sub)) => owned(Value::Bool(s.contains(sub.as_str()))),
        (Value::Str(_), other) => Err(wrong(f, "a string as second argument", other)),
        (Value::Array(items), x) => owned(Value::Bool(items.iter().any(|item| equal(item, x)))),
        (other, _) => Err(wrong(f, "a string or an array", other)),
    }
}

/// The one-argument functions. Results equal to the input are passed through without copying.
fn unary(f: Function, v: Cow<'_, Value>) -> Out<'_> {
    match (f, &*v) {
        (Function::Lower, Value::Str(s)) => {
            if s.is_ascii() && !s.bytes().any(|b| b.is_ascii_uppercase()) {
                return Ok(v);
            }
            owned(Value::Str(change_case(s, false)))
        }
        (Function::Upper, Value::Str(s)) => {
            if s.is_ascii() && !s.bytes().any(|b| b.is_ascii_lowercase()) {
                return Ok(v);
            }
            owned(Value::Str(change_case(s, true)))
        }
        (Function::Lower | Function::Upper, other) => Err(wrong(f, "a string", other)),
        (Function::Len, Value::Str(s)) => owned(Value::Int(count(s.chars().count()))),
        (Function::Len, Value::Array(a)) => owned(Value::Int(count(a.len()))),
        (Function::Len, Value::Object(o)) => owned(Value::Int(count(o.len()))),
        (Function::Len, other) => Err(wrong(f, "a string, an array or an object", other)),
        (Function::Abs, Value::Int(i)) => i
            .checked_abs()
            .map(|i| Cow::Owned(Value::Int(i)))
            .ok_or(EvalError::Overflow("abs")),
        (Function::Abs, Value::Float(x)) => owned(Value::Float(x.abs())),
        (Function::Round | Function::Floor | Function::Ceil, Value::Int(_)) => Ok(v),
        (Function::Round, Value::Float(x)) => owned(float_to_int(x.round())?),
        (Function::Floor, Value::Float(x)) => owned(float_to_int(x.floor())?),
        (Function::Ceil, Value::Float(x)) => owned(float_to_int(x.ceil())?),
        (Function::Abs | Function::Round | Function::Floor | Function::Ceil, other) => {
            Err(wrong(f, "a number", other))
        }
        (Function::ToInt, Value::Null | Value::Int(_)) => Ok(v),
        (Function::ToInt, Value::Float(x)) => owned(float_to_int(x.trunc())?),
        (Function::ToInt, Value::Bool(b)) => owned(Value::Int(i64::from(*b))),
        (Function::ToInt, Value::Str(s)) => owned(str_to_int(s)?),
        (Function::ToFloat, Value::Null | Value::Float(_)) => Ok(v),
        (Function::ToFloat, Value::Int(i)) => owned(Value::Float(*i as f64)),
        (Function::ToFloat, Value::Bool(b)) => owned(Value::Float(f64::from(u8::from(*b)))),
        (Function::ToFloat, Value::Str(s)) => match s.trim().parse::<f64>() {
            Ok(x) => owned(Value::Float(x)),
            Err(_) => Err(EvalError::conversion(s, "float")),
        },
        (Function::ToInt | Function::ToFloat, other) => {
            Err(wrong(f, "a number, a bool or a string", other))
        }
        (Function::ToString, Value::Str(_)) => Ok(v),
        (Function::ToString, other) => owned(Value::Str(Str::from(other.to_string()))),
        (f, _) => Err(EvalError::Arity {
            function: f.name(),
            got: 1,
        }),
    }
}

/// Upper- or lowercases `s`; ASCII strings are built directly into an (often inline) `Str`.
fn change_case(s: &str, upper: bool) -> Str {
    match (s.is_ascii(), upper) {
        (true, true) => s.chars().map(|c| c.to_ascii_uppercase()).collect(),
        (true, false) => s.chars().map(|c| c.to_ascii_lowercase()).collect(),
        (false, true) => Str::from(s.to_uppercase()),
        (false, false) => Str::from(s.to_lowercase()),
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An integral float as an int; NaN, infinities and floats outside i64 are errors.
fn float_to_int(x: f64) -> Result<Value, EvalError> {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63, exactly representable
    if x.is_finite() && (-LIMIT..LIMIT).contains(&x) {
        Ok(Value::Int(x as i64))
    } else {
        Err(EvalError::Conversion {
            value: format!("{x:?}"),
            target: "int",
        })
    }
}

fn str_to_int(s: &str) -> Result<Value, EvalError> {
    let t = s.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Ok(Value::Int(i));
    }
    match t.parse::<f64>() {
        Ok(x) if x.is_finite() => float_to_int(x.trunc()),
        _ => Err(EvalError::conversion(s, "int")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::Expr;

    fn record() -> Value {
        Value::from_json(
            br#"{"s":"MiXed","lo":"abc","n":-2.5,"i":-7,"xs":[1,2.0,"x"],"o":{"a":1,"b":2},"e":""}"#,
        )
        .expect("json")
    }

    fn run(text: &str) -> Result<Value, EvalError> {
        Expr::parse(text).expect("parses").eval(&record())
    }

    fn ok(text: &str) -> String {
        run(text).expect("evaluates").to_json_string()
    }

    fn err(text: &str) -> String {
        run(text).expect_err("should fail").to_string()
    }

    #[test]
    fn table_is_consistent() {
        for f in FUNCTIONS {
            assert_eq!(lookup(f.name).map(|i| i.function), Some(f.function));
            assert_eq!(f.function.name(), f.name);
            assert!(f.usage.starts_with(&format!("{}(", f.name)), "{}", f.usage);
        }
        assert!(lookup("nope").is_none());
    }

    #[test]
    fn lower_and_upper() {
        assert_eq!(ok("lower(s)"), r#""mixed""#);
        assert_eq!(ok("upper(s)"), r#""MIXED""#);
        assert_eq!(ok("lower(lo)"), r#""abc""#);
        assert_eq!(ok("upper('ÉtÉ straße')"), r#""ÉTÉ STRASSE""#);
        assert_eq!(ok("lower('ÀB')"), r#""àb""#);
        assert_eq!(err("lower(1)"), "lower() expects a string, got int");
        assert_eq!(err("upper(missing)"), "upper() expects a string, got null");
    }

    #[test]
    fn len() {
        assert_eq!(ok("len(s)"), "5");
        assert_eq!(ok("len('héllo')"), "5");
        assert_eq!(ok("len(xs)"), "3");
        assert_eq!(ok("len(o)"), "2");
        assert_eq!(ok("len(e)"), "0");
        assert_eq!(
            err("len(1.5)"),
            "len() expects a string, an array or an object, got float"
        );
    }

    #[test]
    fn abs_round_floor_ceil() {
        assert_eq!(ok("abs(n)"), "2.5");
        assert_eq!(ok("abs(i)"), "7");
        assert_eq!(ok("round(n)"), "-3");
        assert_eq!(ok("round(2.5)"), "3");
        assert_eq!(ok("round(2.4)"), "2");
        assert_eq!(ok("floor(n)"), "-3");
        assert_eq!(ok("ceil(n)"), "-2");
        assert_eq!(ok("floor(i) + ceil(i) + round(i)"), "-21");
        assert_eq!(err("abs(-9223372036854775808)"), "integer overflow in abs");
        assert_eq!(err("round(1e300)"), "cannot convert 1e300 to int");
        assert_eq!(err("floor('1')"), "floor() expects a number, got string");
        assert_eq!(err("abs(true)"), "abs() expects a number, got bool");
    }

    #[test]
    fn concat() {
        assert_eq!(
            ok("concat(s, '-', 1, true, 2.5, null, xs)"),
            r#""MiXed-1true2.5null[1,2.0,\"x\"]""#
        );
        assert_eq!(ok("concat(lo)"), r#""abc""#);
        assert_eq!(ok("concat(i, o)"), r#""-7{\"a\":1,\"b\":2}""#);
    }

    #[test]
    fn coalesce() {
        assert_eq!(ok("coalesce(missing, null, 4, 5)"), "4");
        assert_eq!(ok("coalesce(missing)"), "null");
        assert_eq!(ok("coalesce(e, 'x')"), r#""""#);
        assert_eq!(ok("coalesce(1, 'a' < 1)"), "1"); // later arguments are not evaluated
    }

    #[test]
    fn contains_and_starts_with() {
        assert_eq!(ok("contains(s, 'Xe')"), "true");
        assert_eq!(ok("contains(s, 'xe')"), "false");
        assert_eq!(ok("contains(xs, 2)"), "true");
        assert_eq!(ok("contains(xs, 'x')"), "true");
        assert_eq!(ok("contains(xs, 3)"), "false");
        assert_eq!(ok("starts_with(s, 'Mi')"), "true");
        assert_eq!(ok("starts_with(s, 'Xe')"), "false");
        assert_eq!(
            err("contains(1, 'a')"),
            "contains() expects a string or an array, got int"
        );
        assert_eq!(
            err("contains(s, 1)"),
            "contains() expects a string as second argument, got int"
        );
        assert_eq!(
            err("starts_with(xs, 'a')"),
            "starts_with() expects a string, got array"
        );
        assert_eq!(
            err("starts_with(s, null)"),
            "starts_with() expects a string as second argument, got null"
        );
    }

    #[test]
    fn to_int() {
        assert_eq!(ok("to_int('42') + to_int(2.9) + to_int(-2.9)"), "42");
        assert_eq!(ok("to_int(' 7 ')"), "7");
        assert_eq!(ok("to_int('3.99')"), "3");
        assert_eq!(ok("to_int(true) + to_int(false)"), "1");
        assert_eq!(ok("to_int(i)"), "-7");
        assert_eq!(ok("to_int(missing)"), "null");
        assert_eq!(err("to_int('abc')"), r#"cannot convert "abc" to int"#);
        assert_eq!(err("to_int('nan')"), r#"cannot convert "nan" to int"#);
        assert_eq!(err("to_int(1e19)"), "cannot convert 1e19 to int");
        assert_eq!(
            err("to_int(xs)"),
            "to_int() expects a number, a bool or a string, got array"
        );
    }

    #[test]
    fn to_float() {
        assert_eq!(ok("to_float('1.5')"), "1.5");
        assert_eq!(ok("to_float(2)"), "2.0");
        assert_eq!(ok("to_float(n)"), "-2.5");
        assert_eq!(ok("to_float(true)"), "1.0");
        assert_eq!(ok("to_float(missing)"), "null");
        assert_eq!(err("to_float('x1')"), r#"cannot convert "x1" to float"#);
        assert_eq!(
            err("to_float(o)"),
            "to_float() expects a number, a bool or a string, got object"
        );
    }

    #[test]
    fn to_string() {
        assert_eq!(ok("to_string(12)"), r#""12""#);
        assert_eq!(ok("to_string(2.5)"), r#""2.5""#);
        assert_eq!(ok("to_string(s)"), r#""MiXed""#);
        assert_eq!(ok("to_string(null)"), r#""null""#);
        assert_eq!(ok("to_string(true)"), r#""true""#);
        assert_eq!(ok("to_string(xs)"), r#""[1,2.0,\"x\"]""#);
    }

    #[test]
    fn if_evaluates_only_the_chosen_branch() {
        assert_eq!(ok("if(n < 0, 'neg', 'pos')"), r#""neg""#);
        assert_eq!(ok("if(missing, 1, 2)"), "2");
        assert_eq!(ok("if(true, 1, 'a' < 1)"), "1");
        assert_eq!(ok("if(false, 'a' < 1, 2)"), "2");
        assert_eq!(err("if('a' < 1, 1, 2)"), "cannot compare string and int");
    }

    #[test]
    fn arity_is_checked_at_eval_too() {
        let args = [Node::Literal(Value::Int(1)), Node::Literal(Value::Int(2))];
        let e = call(Function::Abs, &args, &NULL).expect_err("wrong arity");
        assert_eq!(
            e,
            EvalError::Arity {
                function: "abs",
                got: 2
            }
        );
        let e = call(Function::Concat, &[], &NULL).expect_err("wrong arity");
        assert_eq!(
            e,
            EvalError::Arity {
                function: "concat",
                got: 0
            }
        );
    }
}
