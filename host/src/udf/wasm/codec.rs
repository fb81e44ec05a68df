//! The batch and result encodings of the guest ABI (docs/wasm-abi.md), host side.
//!
//! Version 1 passes records as JSON text, each prefixed with its length, in one buffer per
//! guest call; results come back the same way, one per record, with an error class and message
//! in place of outputs when the record failed. All integers are little-endian.

use crate::record::{Record, SourceText};
use crate::udf::{
    FunctionError, FunctionKind, KeyedInput, KeyedOutcome, KeyedResult, RecordOutcome, StateUpdate,
};
use crate::value::Value;

/// An output length that means "the input record, unchanged" (no bytes follow).
pub const UNCHANGED: u32 = u32::MAX;

/// Flags of a keyed call.
pub const KEYED_HAS_VALUE: u8 = 1;
pub const KEYED_HAS_STATE: u8 = 2;
pub const KEYED_TIMER: u8 = 4;

/// Result status bytes.
const STATUS_OK: u8 = 0;
const STATUS_TRANSIENT: u8 = 1;
const STATUS_PERMANENT: u8 = 2;

/// What the guest returned does not follow the encoding: a bug in its SDK, not in a record.
#[derive(Debug, thiserror::Error)]
#[error("the module returned malformed results: {0}")]
pub struct Malformed(pub String);

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(bytes);
}

/// Appends a length-prefixed JSON text of `v`.
fn put_json(out: &mut Vec<u8>, v: &Value) {
    let at = out.len();
    put_u32(out, 0);
    v.write_json(out);
    let len = u32::try_from(out.len() - at - 4).unwrap_or(u32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// A record for a call: its value, and the JSON text a source read it from while the value is
/// unchanged (sent as it is: encoding the value again is most of a small function's cost).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordInput {
    pub value: Value,
    pub text: Option<SourceText>,
}

impl From<Value> for RecordInput {
    fn from(value: Value) -> Self {
        RecordInput { value, text: None }
    }
}

impl From<&Record> for RecordInput {
    fn from(r: &Record) -> Self {
        RecordInput {
            value: r.value().clone(),
            text: r.source_text().cloned(),
        }
    }
}

/// Encodes records for one call: `u32 count`, then per record `u32 len, JSON`.
pub fn encode_records(inputs: &[RecordInput], out: &mut Vec<u8>) {
    put_u32(out, inputs.len() as u32);
    for i in inputs {
        match &i.text {
            Some(text) => put_bytes(out, text),
            None => put_json(out, &i.value),
        }
    }
}

/// Encodes keyed calls: `u32 count`, then per call `u8 flags, i64 time, i64 timer, key, value,
/// state` (each of the last three `u32 len, bytes`; empty when absent).
pub fn encode_keyed(inputs: &[KeyedInput], out: &mut Vec<u8>) {
    put_u32(out, inputs.len() as u32);
    for i in inputs {
        let mut flags = 0;
        if i.value.is_some() {
            flags |= KEYED_HAS_VALUE;
        }
        if i.state.is_some() {
            flags |= KEYED_HAS_STATE;
        }
        if i.timer.is_some() {
            flags |= KEYED_TIMER;
        }
        out.push(flags);
        out.extend_from_slice(&i.time.to_le_bytes());
        out.extend_from_slice(&i.timer.unwrap_or(0).to_le_bytes());
        put_json(out, &i.key);
        match &i.value {
            Some(v) => put_json(out, v),
            None => put_u32(out, 0),
        }
        put_bytes(out, i.state.as_deref().unwrap_or_default());
    }
}

/// Reads the result encoding.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Malformed> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                Malformed(format!(
                    "{what} at byte {} runs past the end ({} bytes)",
                    self.at,
                    self.bytes.len()
                ))
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, Malformed> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, Malformed> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self, what: &str) -> Result<i64, Malformed> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8], Malformed> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }

    /// A length that may be [`UNCHANGED`]: `None` then.
    fn output(&mut self) -> Result<Option<&'a [u8]>, Malformed> {
        match self.u32("an output's length")? {
            UNCHANGED => Ok(None),
            n => self.take(n as usize, "an output").map(Some),
        }
    }

    fn count(&mut self, expected: usize) -> Result<(), Malformed> {
        let n = self.u32("the result count")? as usize;
        if n != expected {
            return Err(Malformed(format!("{n} results for {expected} records")));
        }
        Ok(())
    }

    fn text(&mut self, what: &str) -> Result<String, Malformed> {
        Ok(String::from_utf8_lossy(self.bytes(what)?).into_owned())
    }

    /// `Some(error)` when the next result failed (status, message, detail), `None` when ok.
    fn status(&mut self) -> Result<Option<FunctionError>, Malformed> {
        let status = self.u8("a result's status")?;
        let mut err = match status {
            STATUS_OK => return Ok(None),
            STATUS_TRANSIENT => FunctionError::transient(String::new()),
            STATUS_PERMANENT => FunctionError::permanent(String::new()),
            other => return Err(Malformed(format!("unknown result status {other}"))),
        };
        err.message = self.text("an error message")?;
        let detail = self.text("an error detail")?;
        if !detail.is_empty() {
            err.detail = Some(detail);
        }
        Ok(Some(err))
    }

    fn finish(&self) -> Result<(), Malformed> {
        if self.at != self.bytes.len() {
            return Err(Malformed(format!(
                "{} bytes left after the last result",
                self.bytes.len() - self.at
            )));
        }
        Ok(())
    }
}

fn parse_output(bytes: &[u8]) -> Result<Value, FunctionError> {
    Value::from_json(bytes)
        .map_err(|e| FunctionError::permanent(format!("the function returned invalid JSON: {e}")))
}

/// Decodes the results of a map, filter or flat-map call on `inputs` (taken from for outputs
/// that are the input unchanged, and for a filter's kept records).
pub fn decode_records(
    bytes: &[u8],
    kind: FunctionKind,
    inputs: &mut [RecordInput],
) -> Result<Vec<RecordOutcome>, Malformed> {
    let mut r = Reader { bytes, at: 0 };
    r.count(inputs.len())?;
    let mut out = Vec::with_capacity(inputs.len());
    for input in inputs.iter_mut() {
        if let Some(err) = r.status()? {
            out.push(Err(err));
            continue;
        }
        let n = r.u32("an output count")? as usize;
        if kind == FunctionKind::Filter {
            for _ in 0..n {
                r.output()?;
            }
            out.push(match n {
                0 => Ok(Vec::new()),
                1 => Ok(vec![std::mem::take(&mut input.value)]),
                n => Err(FunctionError::permanent(format!(
                    "a filter returns the record or nothing, got {n} outputs"
                ))),
            });
            continue;
        }
        let mut values = Vec::with_capacity(n.min(1024));
        let mut failed = None;
        for i in 0..n {
            let value = match r.output()? {
                // The last use of the input may take it; earlier ones copy it.
                None if i + 1 == n => Ok(std::mem::take(&mut input.value)),
                None => Ok(input.value.clone()),
                Some(b) => parse_output(b),
            };
            match value {
                Ok(v) => values.push(v),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        out.push(match failed {
            Some(e) => Err(e),
            None => Ok(values),
        });
    }
    r.finish()?;
    Ok(out)
}

/// Decodes the results of a keyed call: outputs, then `u8 state op` (0 keep, 1 set + bytes,
/// 2 clear), then `u32 count` timers (`i64` each).
pub fn decode_keyed(
    bytes: &[u8],
    inputs: &mut [KeyedInput],
) -> Result<Vec<KeyedOutcome>, Malformed> {
    let mut r = Reader { bytes, at: 0 };
    r.count(inputs.len())?;
    let mut out = Vec::with_capacity(inputs.len());
    for input in inputs.iter_mut() {
        if let Some(err) = r.status()? {
            out.push(Err(err));
            continue;
        }
        let n = r.u32("an output count")? as usize;
        let mut outputs = Vec::with_capacity(n.min(1024));
        let mut failed = None;
        for _ in 0..n {
            let value = match r.output()? {
                None => match &input.value {
                    Some(v) => Ok(v.clone()),
                    None => Err(FunctionError::permanent(
                        "a timer call emitted its input unchanged, but a timer has no record",
                    )),
                },
                Some(b) => parse_output(b),
            };
            match value {
                Ok(v) => outputs.push(v),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        let state = match r.u8("a state operation")? {
            0 => StateUpdate::Keep,
            1 => StateUpdate::Set(r.bytes("a new state")?.to_vec()),
            2 => StateUpdate::Clear,
            other => return Err(Malformed(format!("unknown state operation {other}"))),
        };
        let timers = (0..r.u32("a timer count")?)
            .map(|_| r.i64("a timer"))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(match failed {
            Some(e) => Err(e),
            None => Ok(KeyedResult {
                outputs,
                state,
                timers,
            }),
        });
    }
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use headwater_sdk::ErrorClass;

    fn json(s: &str) -> Value {
        Value::from_json(s.as_bytes()).expect("json")
    }

    fn records(texts: &[&str]) -> Vec<RecordInput> {
        texts.iter().map(|t| json(t).into()).collect()
    }

    #[test]
    fn records_are_length_prefixed_json() {
        let mut out = Vec::new();
        encode_records(&[json(r#"{"a":1}"#).into(), json("[]").into()], &mut out);
        let mut want = vec![2, 0, 0, 0, 7, 0, 0, 0];
        want.extend_from_slice(br#"{"a":1}"#);
        want.extend_from_slice(&[2, 0, 0, 0]);
        want.extend_from_slice(b"[]");
        assert_eq!(out, want);
    }

    #[test]
    fn a_record_read_by_a_source_is_sent_as_its_text_until_it_changes() {
        let text = br#"{ "a": 1.50 }"#;
        let mut record = Record::new(json(r#"{"a":1.5}"#), 0, Default::default())
            .with_source_text(text.as_slice().into());
        let mut out = Vec::new();
        encode_records(&[RecordInput::from(&record)], &mut out);
        assert_eq!(
            &out[8..],
            text,
            "the source's bytes, not the value encoded again"
        );

        record.set_value(json(r#"{"a":2}"#));
        out.clear();
        encode_records(&[RecordInput::from(&record)], &mut out);
        assert_eq!(&out[8..], br#"{"a":2}"#, "a changed value is encoded");
    }

    /// A result buffer: `(status, outputs or message)` per record.
    fn results(items: &[(u8, &[&[u8]])]) -> Vec<u8> {
        let mut b = Vec::new();
        put_u32(&mut b, items.len() as u32);
        for (status, parts) in items {
            b.push(*status);
            if *status == STATUS_OK {
                put_u32(&mut b, parts.len() as u32);
                for p in *parts {
                    if *p == b"=" {
                        put_u32(&mut b, UNCHANGED);
                    } else {
                        put_bytes(&mut b, p);
                    }
                }
            } else {
                put_bytes(&mut b, parts[0]);
                put_bytes(&mut b, parts[1]);
            }
        }
        b
    }

    #[test]
    fn outputs_errors_and_unchanged_inputs_decode_per_record() {
        let mut inputs = records(&[r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]);
        let bytes = results(&[
            (STATUS_OK, &[br#"{"n":10}"#, b"="]),
            (STATUS_TRANSIENT, &[b"try later", b""]),
            (STATUS_PERMANENT, &[b"bad", b"trace"]),
        ]);
        let out = decode_records(&bytes, FunctionKind::FlatMap, &mut inputs).expect("decode");
        let first: Vec<String> = out[0]
            .as_ref()
            .expect("ok")
            .iter()
            .map(Value::to_json_string)
            .collect();
        assert_eq!(first, [r#"{"n":10}"#, r#"{"n":1}"#]);
        let e = out[1].as_ref().expect_err("transient");
        assert_eq!(
            (e.class, e.message.as_str()),
            (ErrorClass::Transient, "try later")
        );
        assert_eq!(e.detail, None);
        let e = out[2].as_ref().expect_err("permanent");
        assert_eq!(e.class, ErrorClass::Permanent);
        assert_eq!(e.detail.as_deref(), Some("trace"));
    }

    #[test]
    fn a_filter_keeps_its_input_and_bad_json_fails_only_its_record() {
        let mut inputs = records(&[r#"{"n":1}"#, r#"{"n":2}"#]);
        let bytes = results(&[(STATUS_OK, &[b""]), (STATUS_OK, &[])]);
        let out = decode_records(&bytes, FunctionKind::Filter, &mut inputs).expect("decode");
        assert_eq!(
            out[0].as_ref().expect("kept")[0].to_json_string(),
            r#"{"n":1}"#
        );
        assert!(out[1].as_ref().expect("dropped").is_empty());

        let mut inputs = records(&["1", "2"]);
        let bytes = results(&[(STATUS_OK, &[b"{nope"]), (STATUS_OK, &[b"3"])]);
        let out = decode_records(&bytes, FunctionKind::Map, &mut inputs).expect("decode");
        assert!(out[0]
            .as_ref()
            .expect_err("bad json")
            .message
            .contains("invalid JSON"));
        assert_eq!(out[1].as_ref().expect("ok")[0], json("3"));
    }

    #[test]
    fn malformed_results_are_refused_whole() {
        let mut inputs = records(&["1"]);
        for bytes in [
            vec![],
            results(&[]),
            results(&[(9, &[b"", b""])]),
            {
                let mut b = results(&[(STATUS_OK, &[b"1"])]);
                b.push(0);
                b
            },
            vec![1, 0, 0, 0, 0, 1, 0, 0, 0, 200, 0, 0, 0],
        ] {
            assert!(
                decode_records(&bytes, FunctionKind::Map, &mut inputs).is_err(),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn keyed_calls_round_trip_state_and_timers() {
        let inputs = vec![
            KeyedInput {
                key: json(r#""k""#),
                value: Some(json(r#"{"v":1}"#)),
                time: 7,
                state: Some(b"41".to_vec()),
                timer: None,
            },
            KeyedInput {
                key: json("3"),
                value: None,
                time: 9,
                state: None,
                timer: Some(9),
            },
        ];
        let mut buf = Vec::new();
        encode_keyed(&inputs, &mut buf);
        assert_eq!(&buf[..4], &[2, 0, 0, 0]);
        assert_eq!(buf[4], KEYED_HAS_VALUE | KEYED_HAS_STATE);
        assert_eq!(&buf[5..13], &7i64.to_le_bytes());

        let mut r = Vec::new();
        put_u32(&mut r, 2);
        r.push(STATUS_OK);
        put_u32(&mut r, 1);
        put_bytes(&mut r, br#"{"sum":42}"#);
        r.push(1);
        put_bytes(&mut r, b"42");
        put_u32(&mut r, 1);
        r.extend_from_slice(&17i64.to_le_bytes());
        r.push(STATUS_OK);
        put_u32(&mut r, 0);
        r.push(2);
        put_u32(&mut r, 0);
        let mut inputs = inputs;
        let out = decode_keyed(&r, &mut inputs).expect("decode");
        let first = out[0].as_ref().expect("ok");
        assert_eq!(first.outputs, vec![json(r#"{"sum":42}"#)]);
        assert_eq!(first.state, StateUpdate::Set(b"42".to_vec()));
        assert_eq!(first.timers, vec![17]);
        let second = out[1].as_ref().expect("ok");
        assert_eq!(second.state, StateUpdate::Clear);
        assert!(second.outputs.is_empty() && second.timers.is_empty());
    }
}
