//! In-flight records of an unaligned checkpoint ("channel state"): records a task received
//! after its snapshot that its upstream sent before the barrier. They are stored with the
//! snapshot, one JSON line each (event time, key, value, origin), and processed first when a
//! run resumes from it.

use std::io::Write;
use std::path::Path;

use crate::record::{Origin, Record};
use crate::value::Value;

/// Writes `records` to `path` (created or replaced). Not synced: the copy that counts is the
/// one the coordinator uploads before it writes the manifest.
pub fn write_records(path: &Path, records: &[Record]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(records.len() * 96);
    for r in records {
        let o = &r.origin;
        let _ = write!(
            out,
            "{{\"t\":{},\"o\":[{},{},{}",
            r.time, o.source, o.partition, o.offset
        );
        if o.entry != 0 {
            // A replayed dead letter on its way to the step it enters at.
            let _ = write!(out, ",{}", o.entry);
        }
        out.extend_from_slice(b"],\"k\":");
        match &r.key {
            Some(k) => k.write_json(&mut out),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"v\":");
        r.value().write_json(&mut out);
        out.extend_from_slice(b"}\n");
    }
    std::fs::write(path, out)
}

/// Reads records written by [`write_records`]; an error names the line.
pub fn read_records(bytes: &[u8]) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |what: &str| format!("line {}: {what}", i + 1);
        let Value::Object(mut o) = Value::from_json(line).map_err(|e| bad(&e.to_string()))? else {
            return Err(bad("not an object"));
        };
        let time = match o.get("t") {
            Some(Value::Int(t)) => *t,
            _ => return Err(bad("no event time")),
        };
        let origin = match o.get("o") {
            Some(Value::Array(a)) => match a.as_slice() {
                [Value::Int(s), Value::Int(p), Value::Int(off), entry @ ..] => Origin {
                    source: u16::try_from(*s).map_err(|_| bad("bad origin"))?,
                    partition: u32::try_from(*p).map_err(|_| bad("bad origin"))?,
                    offset: u64::try_from(*off).map_err(|_| bad("bad origin"))?,
                    entry: match entry {
                        [] => 0,
                        [Value::Int(e)] => u16::try_from(*e).map_err(|_| bad("bad origin"))?,
                        _ => return Err(bad("bad origin")),
                    },
                },
                _ => return Err(bad("bad origin")),
            },
            _ => return Err(bad("no origin")),
        };
        let key = match o.remove("k") {
            None | Some(Value::Null) => None,
            Some(k) => Some(k),
        };
        let value = o.remove("v").ok_or_else(|| bad("no value"))?;
        records.push(Record::new(value, time, origin).with_key(key));
    }
    Ok(records)
}

/// Writes results in flight to a sink (`values`, one JSON line each) to `path` (not synced,
/// like [`write_records`]).
pub fn write_values(path: &Path, values: &[Value]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(values.len() * 64);
    for v in values {
        v.write_json(&mut out);
        out.push(b'\n');
    }
    std::fs::write(path, out)
}

/// Reads values written by [`write_values`]; an error names the line.
pub fn read_values(bytes: &[u8]) -> Result<Vec<Value>, String> {
    bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| Value::from_json(line).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_keys_and_origins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.jsonl");
        let mut a = Record::new(
            Value::from_json(br#"{"user":"u1","n":[1,2.5,"x"]}"#).expect("json"),
            42,
            Origin {
                source: 1,
                partition: 3,
                offset: 7,
                entry: 0,
            },
        );
        a.key = Some(Value::from("u1"));
        let b = Record::new(Value::Int(5), -3, Origin::default());
        // A replayed dead letter still on its way to its step keeps where it enters.
        let mut c = b.clone();
        c.origin.entry = 3;
        write_records(&path, &[a.clone(), b.clone(), c.clone()]).expect("write");
        let back = read_records(&std::fs::read(&path).expect("read")).expect("parse");
        assert_eq!(back[2].origin.entry_step(), Some(2));
        assert_eq!(back, vec![a, b, c]);
        assert!(read_records(b"{\"t\":1}\n")
            .expect_err("bad")
            .contains("line 1"));
    }

    #[test]
    fn sink_values_round_trip_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.jsonl");
        let values = vec![
            Value::from_json(br#"{"user":"u1","n":[1,2.5,"x\ny"]}"#).expect("json"),
            Value::Null,
            Value::from("plain"),
        ];
        write_values(&path, &values).expect("write");
        let back = read_values(&std::fs::read(&path).expect("read")).expect("parse");
        assert_eq!(back, values);
        assert!(read_values(b"1\n{oops\n")
            .expect_err("bad")
            .contains("line 2"));
    }
}
