//! Calling a module's functions natively, through the same encoding the host uses, for
//! `cargo test`: `testing::call(headwater_functions(), "enrich", &[json!({...})])`.

use crate::abi::{KEYED_HAS_STATE, KEYED_HAS_VALUE, KEYED_TIMER, UNCHANGED};
use crate::{Error, ErrorClass, Function};
use serde_json::Value;

/// What one record's call returned: its outputs (for a filter: the record, or nothing).
pub type Outcome = Result<Vec<Value>, Error>;

fn index(functions: &[Function], name: &str) -> usize {
    functions
        .iter()
        .position(|f| f.name() == name)
        .unwrap_or_else(|| panic!("no function `{name}` among the module's functions"))
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u32(&mut self) -> u32 {
        let b = self.take(4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    fn i64(&mut self) -> i64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8));
        i64::from_le_bytes(a)
    }
    fn bytes(&mut self) -> &'a [u8] {
        let n = self.u32() as usize;
        self.take(n)
    }
    fn error(&mut self, status: u8) -> Error {
        let message = String::from_utf8_lossy(self.bytes()).into_owned();
        let detail = String::from_utf8_lossy(self.bytes()).into_owned();
        Error {
            class: if status == 1 {
                ErrorClass::Transient
            } else {
                ErrorClass::Permanent
            },
            message,
            detail: (!detail.is_empty()).then_some(detail),
        }
    }
    fn outputs(&mut self, input: &Value) -> Vec<Value> {
        (0..self.u32())
            .map(|_| match self.u32() {
                UNCHANGED => input.clone(),
                n => serde_json::from_slice(self.take(n as usize)).expect("an output is JSON"),
            })
            .collect()
    }
}

/// Calls map, filter or flat-map function `name` on `records`, one outcome per record.
pub fn call(functions: &[Function], name: &str, records: &[Value]) -> Vec<Outcome> {
    let mut batch = Vec::new();
    batch.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        put(&mut batch, r.to_string().as_bytes());
    }
    let results =
        crate::call_batch(functions, index(functions, name), &batch).expect("the batch decodes");
    let mut r = Reader(&results);
    assert_eq!(r.u32() as usize, records.len(), "one result per record");
    records
        .iter()
        .map(|input| match r.u8() {
            0 => Ok(r.outputs(input)),
            status => Err(r.error(status)),
        })
        .collect()
}

/// One keyed call: a record (or a timer) of a key, with its state (JSON text).
#[derive(Clone, Debug, Default)]
pub struct KeyedCall {
    pub key: Value,
    pub record: Option<Value>,
    pub time: i64,
    pub timer: Option<i64>,
    pub state: Option<String>,
}

/// What a keyed call returned.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyedResult {
    pub outputs: Vec<Value>,
    /// `None`: unchanged; `Some(None)`: cleared; `Some(Some(json))`: set.
    pub state: Option<Option<String>>,
    pub timers: Vec<i64>,
}

/// Calls keyed process function `name` once per call.
pub fn call_keyed(
    functions: &[Function],
    name: &str,
    calls: &[KeyedCall],
) -> Vec<Result<KeyedResult, Error>> {
    let mut batch = Vec::new();
    batch.extend_from_slice(&(calls.len() as u32).to_le_bytes());
    for c in calls {
        let mut flags = 0;
        if c.record.is_some() {
            flags |= KEYED_HAS_VALUE;
        }
        if c.state.is_some() {
            flags |= KEYED_HAS_STATE;
        }
        if c.timer.is_some() {
            flags |= KEYED_TIMER;
        }
        batch.push(flags);
        batch.extend_from_slice(&c.time.to_le_bytes());
        batch.extend_from_slice(&c.timer.unwrap_or(0).to_le_bytes());
        put(&mut batch, c.key.to_string().as_bytes());
        put(
            &mut batch,
            c.record
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default()
                .as_bytes(),
        );
        put(&mut batch, c.state.as_deref().unwrap_or("").as_bytes());
    }
    let results =
        crate::call_batch(functions, index(functions, name), &batch).expect("the batch decodes");
    let mut r = Reader(&results);
    assert_eq!(r.u32() as usize, calls.len(), "one result per call");
    calls
        .iter()
        .map(|c| match r.u8() {
            0 => {
                let outputs = r.outputs(c.record.as_ref().unwrap_or(&Value::Null));
                let state = match r.u8() {
                    0 => None,
                    1 => Some(Some(String::from_utf8_lossy(r.bytes()).into_owned())),
                    _ => Some(None),
                };
                let timers = (0..r.u32()).map(|_| r.i64()).collect();
                Ok(KeyedResult {
                    outputs,
                    state,
                    timers,
                })
            }
            status => Err(r.error(status)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{export, Keyed};
    use serde::{Deserialize, Serialize};
    use serde_json::json;
    use std::borrow::Cow;

    #[derive(Deserialize)]
    struct In {
        n: i64,
    }

    #[derive(Serialize)]
    struct Out {
        n: i64,
        square: i64,
    }

    fn square(r: In) -> Result<Out, Error> {
        if r.n < 0 {
            return Err(Error::transient("negative").with_detail("n < 0"));
        }
        Ok(Out {
            n: r.n,
            square: r.n * r.n,
        })
    }

    fn even(r: In) -> Result<bool, Error> {
        Ok(r.n % 2 == 0)
    }

    fn twice(r: Value) -> Result<Vec<Value>, Error> {
        Ok(vec![r.clone(), r])
    }

    fn same(r: &[u8]) -> Result<Cow<'_, [u8]>, Error> {
        Ok(Cow::Borrowed(r))
    }

    fn total(ctx: &mut Keyed<i64>, r: Option<In>) -> Result<(), Error> {
        let sum = ctx.state().copied().unwrap_or(0);
        match r {
            Some(r) if r.n < 0 => Err(Error::permanent("negative")),
            Some(r) => {
                ctx.set_state(sum + r.n);
                ctx.set_timer(ctx.event_time() + 10);
                ctx.emit(&json!({"seen": r.n}))
            }
            None => {
                ctx.emit(&json!({"key": ctx.key_as::<String>()?, "total": sum}))?;
                ctx.clear_state();
                Ok(())
            }
        }
    }

    export! {
        map square,
        filter even,
        flat_map twice as "twice_over",
        map_bytes same,
        keyed_process total,
    }

    #[test]
    fn records_go_through_the_encoding_with_their_errors() {
        let fns = headwater_functions();
        let out = call(
            fns,
            "square",
            &[json!({"n": 3}), json!({"n": -1}), json!({"x": 1})],
        );
        assert_eq!(out[0], Ok(vec![json!({"n": 3, "square": 9})]));
        let e = out[1].clone().expect_err("negative");
        assert_eq!(
            (e.class, e.detail.as_deref()),
            (ErrorClass::Transient, Some("n < 0"))
        );
        let e = out[2].clone().expect_err("no n");
        assert!(e.message.contains("missing field `n`"), "{}", e.message);
        assert_eq!(
            call(fns, "even", &[json!({"n": 2}), json!({"n": 3})]),
            vec![Ok(vec![json!({"n": 2})]), Ok(vec![])]
        );
        assert_eq!(
            call(fns, "twice_over", &[json!(1)])[0],
            Ok(vec![json!(1), json!(1)])
        );
        assert_eq!(
            call(fns, "same", &[json!({"a": [1]})])[0],
            Ok(vec![json!({"a": [1]})])
        );
    }

    #[test]
    fn keyed_calls_thread_state_and_timers() {
        let fns = headwater_functions();
        let out = call_keyed(
            fns,
            "total",
            &[
                KeyedCall {
                    key: json!("k"),
                    record: Some(json!({"n": 5})),
                    time: 100,
                    state: Some("2".into()),
                    ..Default::default()
                },
                KeyedCall {
                    key: json!("k"),
                    time: 110,
                    timer: Some(110),
                    state: Some("7".into()),
                    ..Default::default()
                },
                KeyedCall {
                    key: json!("j"),
                    record: Some(json!({"n": -5})),
                    ..Default::default()
                },
            ],
        );
        assert_eq!(
            out[0],
            Ok(KeyedResult {
                outputs: vec![json!({"seen": 5})],
                state: Some(Some("7".into())),
                timers: vec![110],
            })
        );
        assert_eq!(
            out[1],
            Ok(KeyedResult {
                outputs: vec![json!({"key": "k", "total": 7})],
                state: Some(None),
                timers: vec![],
            })
        );
        assert_eq!(out[2].clone().expect_err("negative").message, "negative");
        // The function itself, called directly.
        let mut ctx = Keyed::new(&"k", 5, Some(1));
        total(&mut ctx, Some(In { n: 2 })).expect("ok");
        assert_eq!((ctx.state(), ctx.timers()), (Some(&3), &[15][..]));
    }

    #[test]
    fn the_description_lists_functions_and_kinds() {
        let doc: Value =
            serde_json::from_slice(&crate::describe(headwater_functions())).expect("json");
        assert_eq!(doc["abi"], json!(1));
        assert_eq!(
            doc["functions"][2],
            json!({"name": "twice_over", "kind": "flat_map"})
        );
        assert_eq!(doc["functions"][4]["kind"], json!("keyed_process"));
        assert!(
            crate::call_batch(headwater_functions(), 0, &[1, 0, 0, 0]).is_none(),
            "truncated"
        );
        assert!(
            crate::call_batch(headwater_functions(), 9, &[0, 0, 0, 0]).is_none(),
            "no function 9"
        );
    }
}
