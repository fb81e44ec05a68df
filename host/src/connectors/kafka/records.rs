//! The records file of an exactly-once Kafka sink's epoch: every message it produced, one
//! `[key or null, record]` line each, kept until the epoch's transaction is committed so that
//! recovery can produce the epoch again.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

/// One line of a records file: `[key or null, record]`.
pub(super) fn write_record_line(
    out: &mut impl Write,
    key: Option<&[u8]>,
    payload: &[u8],
) -> std::io::Result<()> {
    match key {
        // Most keys need no escaping: written as they are.
        Some(k)
            if std::str::from_utf8(k).is_ok()
                && k.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\') =>
        {
            out.write_all(b"[\"")?;
            out.write_all(k)?;
            out.write_all(b"\",")?;
        }
        Some(k) => {
            let k = serde_json::to_string(&String::from_utf8_lossy(k))
                .map_err(std::io::Error::other)?;
            write!(out, "[{k},")?;
        }
        None => out.write_all(b"[null,")?,
    }
    out.write_all(payload)?;
    out.write_all(b"]\n")
}

/// A message as a records file keeps it: (key, payload).
pub(super) type KeyedPayload = (Option<Vec<u8>>, Vec<u8>);

pub(super) fn read_records(path: &Path) -> std::io::Result<Vec<KeyedPayload>> {
    let mut out = Vec::new();
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).map_err(std::io::Error::other)?;
        let (key, payload) = match v.as_array().map(|a| a.as_slice()) {
            Some([k, p]) => (k.as_str().map(|s| s.as_bytes().to_vec()), p.to_string()),
            _ => {
                return Err(std::io::Error::other(format!(
                    "not a [key, record] line: {line}"
                )))
            }
        };
        out.push((key, payload.into_bytes()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_files_round_trip_keys_and_payloads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("e.jsonl");
        let mut out = Vec::new();
        write_record_line(&mut out, Some(b"k\"1"), br#"{"a":1}"#).expect("write");
        write_record_line(&mut out, None, br#"{"b":[1,2]}"#).expect("write");
        write_record_line(&mut out, Some(b"plain-key"), b"3").expect("write");
        std::fs::write(&path, out).expect("save");
        let back = read_records(&path).expect("read");
        assert_eq!(
            back,
            vec![
                (Some(b"k\"1".to_vec()), br#"{"a":1}"#.to_vec()),
                (None, br#"{"b":[1,2]}"#.to_vec()),
                (Some(b"plain-key".to_vec()), b"3".to_vec()),
            ]
        );
    }
}
