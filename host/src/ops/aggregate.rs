//! Built-in window aggregates and their accumulators.
//!
//! Missing, null and (for sum/avg) non-numeric values are ignored, as SQL ignores NULL; an
//! aggregate over no values is `null` (`count` and `count_distinct` are 0). `min`/`max` order
//! numbers numerically, strings lexicographically, and numbers before strings.
//! `count_distinct` keeps its members as separate state entries (see the window operator), so
//! the accumulator holds only the count.

use std::cmp::Ordering;

use crate::config::spec::AggregateFn;
use crate::value::Value;

/// The running state of one aggregate.
#[derive(Clone, Debug, PartialEq)]
pub enum Acc {
    Count(u64),
    Sum {
        int: i64,
        float: f64,
        is_float: bool,
        seen: bool,
    },
    Min(Option<Value>),
    Max(Option<Value>),
    Avg {
        sum: f64,
        n: u64,
    },
    Distinct(u64),
    /// A user-defined aggregate: its accumulator as the function returned it (JSON; empty
    /// before the first record), and records added but not yet folded in by the function.
    /// The window operator folds `pending` in (one call per batch) before storing it.
    Udf {
        acc: Vec<u8>,
        pending: Vec<Value>,
    },
}

impl Acc {
    pub fn new(f: AggregateFn) -> Acc {
        match f {
            AggregateFn::Count => Acc::Count(0),
            AggregateFn::Sum => Acc::Sum {
                int: 0,
                float: 0.0,
                is_float: false,
                seen: false,
            },
            AggregateFn::Min => Acc::Min(None),
            AggregateFn::Max => Acc::Max(None),
            AggregateFn::Avg => Acc::Avg { sum: 0.0, n: 0 },
            AggregateFn::CountDistinct => Acc::Distinct(0),
            AggregateFn::Udf => Acc::Udf {
                acc: Vec::new(),
                pending: Vec::new(),
            },
        }
    }

    /// Adds one value (`None` = the field is missing). `count_distinct` is updated by the
    /// window operator, which knows whether the value is new.
    pub fn add(&mut self, v: Option<&Value>) {
        match self {
            Acc::Count(n) => *n += 1,
            Acc::Sum {
                int,
                float,
                is_float,
                seen,
            } => match v {
                Some(Value::Int(i)) => {
                    *seen = true;
                    if *is_float {
                        *float += *i as f64;
                    } else if let Some(s) = int.checked_add(*i) {
                        *int = s;
                    } else {
                        *is_float = true;
                        *float = *int as f64 + *i as f64;
                    }
                }
                Some(Value::Float(f)) => {
                    *seen = true;
                    if !*is_float {
                        *is_float = true;
                        *float = *int as f64;
                    }
                    *float += f;
                }
                _ => {}
            },
            Acc::Min(cur) => keep_if(cur, v, Ordering::Less),
            Acc::Max(cur) => keep_if(cur, v, Ordering::Greater),
            Acc::Avg { sum, n } => {
                if let Some(x) = v.and_then(Value::as_f64) {
                    *sum += x;
                    *n += 1;
                }
            }
            Acc::Distinct(_) | Acc::Udf { .. } => {}
        }
    }

    /// Folds another accumulator of the same aggregate into this one (session merges).
    pub fn merge(&mut self, other: &Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (
                Acc::Sum {
                    int,
                    float,
                    is_float,
                    seen,
                },
                Acc::Sum {
                    int: i2,
                    float: f2,
                    is_float: fl2,
                    seen: s2,
                },
            ) => {
                *seen |= *s2;
                if *is_float || *fl2 {
                    let mine = if *is_float { *float } else { *int as f64 };
                    let theirs = if *fl2 { *f2 } else { *i2 as f64 };
                    *is_float = true;
                    *float = mine + theirs;
                } else if let Some(s) = int.checked_add(*i2) {
                    *int = s;
                } else {
                    *is_float = true;
                    *float = *int as f64 + *i2 as f64;
                }
            }
            (Acc::Min(a), Acc::Min(b)) => keep_if(a, b.as_ref(), Ordering::Less),
            (Acc::Max(a), Acc::Max(b)) => keep_if(a, b.as_ref(), Ordering::Greater),
            (Acc::Avg { sum, n }, Acc::Avg { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            // Adding is right for disjoint member sets (and for folding a window into an empty
            // accumulator); after a union of overlapping sets the window operator recounts.
            (Acc::Distinct(a), Acc::Distinct(b)) => *a += b,
            // Merging two non-empty user accumulators takes a call to the function, which the
            // window operator makes; folding into an empty one is a copy.
            (
                Acc::Udf { acc, pending },
                Acc::Udf {
                    acc: a2,
                    pending: p2,
                },
            ) if acc.is_empty() => {
                acc.clone_from(a2);
                pending.extend(p2.iter().cloned());
            }
            _ => {}
        }
    }

    pub fn result(&self) -> Value {
        match self {
            Acc::Count(n) | Acc::Distinct(n) => Value::Int(i64::try_from(*n).unwrap_or(i64::MAX)),
            Acc::Sum { seen: false, .. } => Value::Null,
            Acc::Sum {
                float,
                is_float: true,
                ..
            } => Value::Float(*float),
            Acc::Sum { int, .. } => Value::Int(*int),
            Acc::Min(v) | Acc::Max(v) => v.clone().unwrap_or(Value::Null),
            Acc::Avg { n: 0, .. } => Value::Null,
            Acc::Avg { sum, n } => Value::Float(sum / *n as f64),
            // Computed by the function; the window operator asks for it.
            Acc::Udf { .. } => Value::Null,
        }
    }

    /// Appends a compact binary encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Acc::Count(n) => {
                out.push(0);
                out.extend_from_slice(&n.to_le_bytes());
            }
            Acc::Sum {
                int,
                float,
                is_float,
                seen,
            } => {
                out.push(1);
                out.extend_from_slice(&int.to_le_bytes());
                out.extend_from_slice(&float.to_le_bytes());
                out.push(u8::from(*is_float) | (u8::from(*seen) << 1));
            }
            Acc::Min(v) | Acc::Max(v) => {
                out.push(if matches!(self, Acc::Min(_)) { 2 } else { 3 });
                let mut json = Vec::new();
                if let Some(v) = v {
                    v.write_json(&mut json);
                }
                out.extend_from_slice(&(json.len() as u32).to_le_bytes());
                out.extend_from_slice(&json);
            }
            Acc::Avg { sum, n } => {
                out.push(4);
                out.extend_from_slice(&sum.to_le_bytes());
                out.extend_from_slice(&n.to_le_bytes());
            }
            Acc::Distinct(n) => {
                out.push(5);
                out.extend_from_slice(&n.to_le_bytes());
            }
            Acc::Udf { acc, .. } => {
                out.push(6);
                out.extend_from_slice(&(acc.len() as u32).to_le_bytes());
                out.extend_from_slice(acc);
            }
        }
    }

    /// Decodes one accumulator from the front of `bytes`, returning it and the rest.
    pub fn decode(bytes: &[u8]) -> Option<(Acc, &[u8])> {
        let (&tag, rest) = bytes.split_first()?;
        match tag {
            0 | 5 => {
                let (n, rest) = take_u64(rest)?;
                Some((
                    if tag == 0 {
                        Acc::Count(n)
                    } else {
                        Acc::Distinct(n)
                    },
                    rest,
                ))
            }
            1 => {
                let (int, rest) = take_u64(rest)?;
                let (float, rest) = take_u64(rest)?;
                let (&flags, rest) = rest.split_first()?;
                Some((
                    Acc::Sum {
                        int: int as i64,
                        float: f64::from_bits(float),
                        is_float: flags & 1 != 0,
                        seen: flags & 2 != 0,
                    },
                    rest,
                ))
            }
            2 | 3 => {
                let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
                let json = rest.get(4..4 + len)?;
                let v = if len == 0 {
                    None
                } else {
                    Some(Value::from_json(json).ok()?)
                };
                let rest = &rest[4 + len..];
                Some((if tag == 2 { Acc::Min(v) } else { Acc::Max(v) }, rest))
            }
            4 => {
                let (sum, rest) = take_u64(rest)?;
                let (n, rest) = take_u64(rest)?;
                Some((
                    Acc::Avg {
                        sum: f64::from_bits(sum),
                        n,
                    },
                    rest,
                ))
            }
            6 => {
                let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
                let acc = rest.get(4..4 + len)?.to_vec();
                Some((
                    Acc::Udf {
                        acc,
                        pending: Vec::new(),
                    },
                    &rest[4 + len..],
                ))
            }
            _ => None,
        }
    }
}

fn take_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let head: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some((u64::from_le_bytes(head), &bytes[8..]))
}

/// Replaces `cur` with `v` when `v` compares as `want` against it (or `cur` is empty).
fn keep_if(cur: &mut Option<Value>, v: Option<&Value>, want: Ordering) {
    let Some(v) = v else { return };
    if !matches!(v, Value::Int(_) | Value::Float(_) | Value::Str(_)) {
        return;
    }
    match cur {
        None => *cur = Some(v.clone()),
        Some(c) => {
            if compare(v, c) == Some(want) {
                *cur = Some(v.clone());
            }
        }
    }
}

/// Orders numbers numerically, strings lexicographically, numbers before strings.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Str(_), _) => Some(Ordering::Greater),
        (_, Value::Str(_)) => Some(Ordering::Less),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// A list of accumulators, one per aggregate of a window step.
pub fn encode_all(accs: &[Acc]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * accs.len());
    for a in accs {
        a.encode(&mut out);
    }
    out
}

pub fn decode_all(mut bytes: &[u8], expected: usize) -> Option<Vec<Acc>> {
    let mut accs = Vec::with_capacity(expected);
    while !bytes.is_empty() {
        let (acc, rest) = Acc::decode(bytes)?;
        accs.push(acc);
        bytes = rest;
    }
    (accs.len() == expected).then_some(accs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(f: AggregateFn, values: &[Value]) -> Value {
        let mut a = Acc::new(f);
        for v in values {
            a.add(Some(v));
        }
        a.add(None);
        a.result()
    }

    #[test]
    fn aggregates_compute_sql_like_results() {
        let vals = [
            Value::Int(3),
            Value::Float(1.5),
            Value::Null,
            Value::from("x"),
        ];
        assert_eq!(feed(AggregateFn::Count, &vals), Value::Int(5));
        assert_eq!(feed(AggregateFn::Sum, &vals), Value::Float(4.5));
        assert_eq!(
            feed(AggregateFn::Sum, &[Value::Int(2), Value::Int(3)]),
            Value::Int(5)
        );
        assert_eq!(feed(AggregateFn::Sum, &[]), Value::Null);
        assert_eq!(feed(AggregateFn::Min, &vals), Value::Float(1.5));
        assert_eq!(feed(AggregateFn::Max, &vals), Value::from("x"));
        assert_eq!(feed(AggregateFn::Avg, &vals), Value::Float(2.25));
        assert_eq!(feed(AggregateFn::Avg, &[]), Value::Null);
    }

    #[test]
    fn int_sum_overflow_switches_to_float() {
        assert_eq!(
            feed(AggregateFn::Sum, &[Value::Int(i64::MAX), Value::Int(1)]),
            Value::Float(i64::MAX as f64 + 1.0)
        );
    }

    #[test]
    fn merge_equals_feeding_everything_to_one() {
        for f in [
            AggregateFn::Count,
            AggregateFn::Sum,
            AggregateFn::Min,
            AggregateFn::Max,
            AggregateFn::Avg,
        ] {
            let (xs, ys) = (
                [Value::Int(4), Value::Int(-2)],
                [Value::Float(0.5), Value::Int(9)],
            );
            let mut a = Acc::new(f);
            xs.iter().for_each(|v| a.add(Some(v)));
            let mut b = Acc::new(f);
            ys.iter().for_each(|v| b.add(Some(v)));
            a.merge(&b);
            let all: Vec<Value> = xs.iter().chain(ys.iter()).cloned().collect();
            let mut c = Acc::new(f);
            all.iter().for_each(|v| c.add(Some(v)));
            assert_eq!(a.result(), c.result(), "{f:?}");
        }
    }

    #[test]
    fn encoding_round_trips() {
        let mut accs = vec![
            Acc::Count(7),
            Acc::Sum {
                int: -3,
                float: 2.5,
                is_float: true,
                seen: true,
            },
            Acc::Min(Some(Value::from("a"))),
            Acc::Max(None),
            Acc::Avg { sum: 1.0, n: 2 },
            Acc::Distinct(9),
            Acc::Udf {
                acc: br#"{"n":[1,2]}"#.to_vec(),
                pending: Vec::new(),
            },
        ];
        let bytes = encode_all(&accs);
        assert_eq!(decode_all(&bytes, 7), Some(accs.clone()));
        accs.pop();
        assert_eq!(decode_all(&bytes, 6), None, "a count mismatch is detected");
        assert_eq!(
            decode_all(&bytes[..bytes.len() - 1], 7),
            None,
            "truncation is detected"
        );
    }
}
