//! Replay requests: what `headwater dlq replay` asks of a pipeline. Each is one object in the
//! pipeline's checkpoint storage, `replays/<number>.jsonl`, written once (create-only) and
//! never changed: a header line, then the group's envelopes exactly as the DLQ held them.
//!
//! The pipeline reads them in number order through its replay partition
//! (`connectors::replay`), whose position (the request and the envelopes read of it) is part
//! of every checkpoint like a file's offset: a request's records enter the pipeline exactly
//! once. The requests are also the ledger: an envelope (the same bytes) that an earlier
//! request holds is never sent again, neither by a later `dlq replay` (it leaves it out) nor
//! by the partition (it skips it, should two operators have asked at the same moment).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::checkpoint::storage::CheckpointStorage;
use crate::checkpoint::CheckpointError;

/// The folder of the requests, under the checkpoint root.
pub const FOLDER: &str = crate::checkpoint::storage::REPLAYS;

/// Asking again after a lost race for a number gives up after this many tries.
const CREATE_TRIES: u32 = 100;

/// The first line of a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The request's number: requests are read in this order.
    pub replay: u64,
    /// The group (`dlq inspect`'s fingerprint).
    pub fingerprint: String,
    /// The step the records enter at, as dead letters name it (`steps[2] udf enrich`).
    pub step: String,
    /// Envelopes in the request.
    pub records: usize,
    /// When it was asked for (RFC 3339).
    pub requested_at: String,
    /// The code the step ran when it was asked for (`python:sha256:...`).
    pub code: String,
    /// Whether `--force` sent records that had failed with that same code.
    #[serde(default)]
    pub forced: bool,
}

/// A request read back.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub header: Header,
    /// The envelopes, one JSON text each.
    pub envelopes: Vec<String>,
}

/// Failures to read or write requests.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Storage(#[from] CheckpointError),
    #[error("replay request `{key}` is damaged: {message}")]
    Damaged { key: String, message: String },
    #[error("could not take a replay number in {tries} tries (are many replays being asked for at once?)")]
    Busy { tries: u32 },
}

/// The key of request `number`.
pub fn key(number: u64) -> String {
    format!("{FOLDER}/{number:010}.jsonl")
}

/// The number of the request at `key`, if it is one.
fn number_of(key: &str) -> Option<u64> {
    key.strip_prefix(FOLDER)?
        .strip_prefix('/')?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

/// The numbers of the requests in `storage`, ascending.
pub fn list(storage: &CheckpointStorage) -> Result<Vec<u64>, RequestError> {
    let mut numbers: Vec<u64> = storage
        .list_keys(FOLDER)?
        .iter()
        .filter_map(|k| number_of(k))
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// Reads request `number`.
pub fn read(storage: &CheckpointStorage, number: u64) -> Result<Request, RequestError> {
    let key = key(number);
    let bytes = storage.get(&key)?;
    let damaged = |message: String| RequestError::Damaged {
        key: storage.display(&key),
        message,
    };
    let text = std::str::from_utf8(&bytes).map_err(|e| damaged(e.to_string()))?;
    let mut lines = text.lines();
    let header: Header = serde_json::from_str(lines.next().unwrap_or(""))
        .map_err(|e| damaged(format!("line 1: {e}")))?;
    let envelopes: Vec<String> = lines.map(str::to_string).collect();
    if envelopes.len() != header.records {
        return Err(damaged(format!(
            "the header says {} records, the request holds {}",
            header.records,
            envelopes.len()
        )));
    }
    Ok(Request { header, envelopes })
}

/// Writes a request for `envelopes` with the next free number (the header's `replay` and
/// `records` are set here) and returns that number.
pub fn submit(
    storage: &CheckpointStorage,
    header: Header,
    envelopes: &[String],
) -> Result<u64, RequestError> {
    let next = list(storage)?.last().map_or(1, |n| n + 1);
    submit_from(storage, header, envelopes, next)
}

/// [`submit`], trying numbers from `number` on.
fn submit_from(
    storage: &CheckpointStorage,
    mut header: Header,
    envelopes: &[String],
    mut number: u64,
) -> Result<u64, RequestError> {
    header.records = envelopes.len();
    for _ in 0..CREATE_TRIES {
        header.replay = number;
        let mut text = serde_json::to_string(&header).map_err(|e| RequestError::Damaged {
            key: key(number),
            message: e.to_string(),
        })?;
        for e in envelopes {
            text.push('\n');
            text.push_str(e.trim_end());
        }
        text.push('\n');
        if storage.create(&key(number), text.into_bytes())? {
            return Ok(number);
        }
        number += 1; // another replay took it a moment ago
    }
    Err(RequestError::Busy {
        tries: CREATE_TRIES,
    })
}

/// The identity of an envelope: the same failure of the same record has the same bytes.
pub fn envelope_id(envelope: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(envelope.trim_end().as_bytes())
}

/// Every envelope that a request asked for, with the first request that did.
pub fn ledger(storage: &CheckpointStorage) -> Result<HashMap<u128, u64>, RequestError> {
    let mut asked = HashMap::new();
    for number in list(storage)? {
        for e in read(storage, number)?.envelopes {
            asked.entry(envelope_id(&e)).or_insert(number);
        }
    }
    Ok(asked)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn header(step: &str) -> Header {
        Header {
            replay: 0,
            fingerprint: "f1".into(),
            step: step.into(),
            records: 0,
            requested_at: "2026-12-08T00:00:00.000Z".into(),
            code: "python:sha256:bb".into(),
            forced: false,
        }
    }

    #[test]
    fn requests_are_numbered_in_order_read_back_and_form_the_ledger() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = CheckpointStorage::open(dir.path().to_str().expect("utf-8")).expect("open");
        assert!(list(&storage).expect("list").is_empty());
        let a = vec![r#"{"raw":"1"}"#.to_string(), r#"{"raw":"2"}"#.to_string()];
        let b = vec![r#"{"raw":"3"}"#.to_string()];
        assert_eq!(
            submit(&storage, header("steps[1] udf f"), &a).expect("a"),
            1
        );
        assert_eq!(
            submit(&storage, header("steps[1] udf f"), &b).expect("b"),
            2
        );
        assert_eq!(list(&storage).expect("list"), vec![1, 2]);
        let back = read(&storage, 1).expect("read");
        assert_eq!(back.header.replay, 1);
        assert_eq!(back.header.records, 2);
        assert_eq!(back.envelopes, a);
        let ledger = ledger(&storage).expect("ledger");
        assert_eq!(ledger.len(), 3);
        assert_eq!(ledger.get(&envelope_id(&b[0])), Some(&2));
    }

    #[test]
    fn a_number_taken_meanwhile_moves_the_request_to_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = CheckpointStorage::open(dir.path().to_str().expect("utf-8")).expect("open");
        // Other replays wrote numbers 1 and 2 after this one listed an empty folder.
        assert!(storage.create(&key(1), b"x".to_vec()).expect("create"));
        assert!(storage.create(&key(2), b"y".to_vec()).expect("create"));
        let n = submit_from(&storage, header("steps[0] udf f"), &["{}".to_string()], 1)
            .expect("submit");
        assert_eq!(n, 3);
        assert_eq!(
            &storage.get(&key(1)).expect("get")[..],
            b"x",
            "never replaced"
        );
    }

    #[test]
    fn a_damaged_request_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = CheckpointStorage::open(dir.path().to_str().expect("utf-8")).expect("open");
        storage.put(&key(4), b"not json\n".to_vec()).expect("put");
        let e = read(&storage, 4).expect_err("damaged").to_string();
        assert!(
            e.contains("0000000004.jsonl") && e.contains("line 1"),
            "{e}"
        );
    }
}
