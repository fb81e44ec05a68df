use super::*;
use crate::dlq::requests::submit;
use crate::dlq::requests::tests::header;
use crate::value::{split_path, Value};

fn envelope(n: i64, key: Option<&str>) -> String {
    let key = key.map(|k| format!(r#","key":"{k}""#)).unwrap_or_default();
    format!(
        r#"{{"envelope_version":1,"source":"orders","partition":0,"offset":{n},"step":"steps[2] udf enrich","error_class":"permanent","error":"ValueError: bad","fingerprint":"f1","attempts":1,"udf_version":"python:sha256:aa","event_time":{n}{key},"failed_at":"2026-12-07T10:00:00.000Z","raw":"{{\"n\":{n},\"user\":\"u{n}\"}}"}}"#
    )
}

fn storage(dir: &tempfile::TempDir) -> CheckpointStorage {
    CheckpointStorage::open(dir.path().to_str().expect("utf-8")).expect("open")
}

fn partition(dir: &tempfile::TempDir) -> ReplayPartition {
    ReplayPartition::new(
        storage(dir),
        vec!["clicks".into(), "orders".into()],
        vec![ReplayEntry {
            step: 2,
            name: "steps[2] udf enrich".into(),
            key_by: Some(KeyBy::new(vec![split_path("user")])),
        }],
    )
}

/// Polls until the partition has nothing to give; returns the records and dead letters.
fn drain(p: &mut ReplayPartition, max: usize) -> (Vec<Record>, Vec<DeadLetter>) {
    let (mut out, mut dead) = (Vec::new(), Vec::new());
    loop {
        let before = out.len() + dead.len();
        let poll = p.poll(&mut out, &mut dead, max).expect("poll");
        if poll == Poll::Pending && out.len() + dead.len() == before {
            return (out, dead);
        }
    }
}

#[test]
fn replayed_records_enter_at_their_step_with_their_time_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    submit(
        &storage(&dir),
        header("steps[2] udf enrich"),
        &[envelope(1, Some("k1")), envelope(2, None)],
    )
    .expect("submit");
    let mut p = partition(&dir);
    assert!(p.is_auxiliary());
    let (out, dead) = drain(&mut p, 10);
    assert!(dead.is_empty());
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].origin.entry_step(), Some(2));
    assert_eq!(out[0].origin.source, 1, "its source, by name");
    assert_eq!(out[0].origin.offset, 1);
    assert_eq!(out[0].time, 1);
    assert_eq!(out[0].key, Some(Value::from("k1")), "the envelope's key");
    assert_eq!(
        out[1].key,
        Some(Value::from("u2")),
        "no key in the envelope: the key_by before the step makes it"
    );
    assert_eq!(
        p.position(),
        Position {
            offset: 2,
            records: 0
        }
    );
}

#[test]
fn a_restart_resumes_inside_a_request_and_never_sends_an_envelope_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = storage(&dir);
    submit(
        &s,
        header("steps[2] udf enrich"),
        &[envelope(1, None), envelope(2, None), envelope(3, None)],
    )
    .expect("first");
    // A second request that repeats envelope 3 (two operators asked at the same moment).
    submit(
        &s,
        header("steps[2] udf enrich"),
        &[envelope(3, None), envelope(4, None)],
    )
    .expect("second");
    let mut p = partition(&dir);
    let (mut out, mut dead) = (Vec::new(), Vec::new());
    p.poll(&mut out, &mut dead, 2).expect("poll");
    assert_eq!(out.len(), 2);
    let checkpointed = p.position();
    assert_eq!(
        checkpointed,
        Position {
            offset: 1,
            records: 2
        }
    );
    // The run crashes; the next one resumes at the checkpoint.
    let mut again = partition(&dir);
    again.seek(checkpointed).expect("seek");
    let (rest, dead) = drain(&mut again, 10);
    assert!(dead.is_empty());
    let offsets: Vec<u64> = rest.iter().map(|r| r.origin.offset).collect();
    assert_eq!(
        offsets,
        vec![3, 4],
        "3 once, then the second request without it"
    );
    assert_eq!(
        again.position(),
        Position {
            offset: 3,
            records: 0
        }
    );
    // Resuming inside the second request still knows the first one's envelopes.
    let mut third = partition(&dir);
    third
        .seek(Position {
            offset: 2,
            records: 0,
        })
        .expect("seek");
    let (rest, _) = drain(&mut third, 10);
    assert_eq!(
        rest.iter().map(|r| r.origin.offset).collect::<Vec<_>>(),
        vec![4]
    );
}

#[test]
fn requests_asked_for_later_are_read_and_a_step_that_is_gone_dead_letters_its_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = partition(&dir);
    let (out, dead) = drain(&mut p, 10);
    assert!(out.is_empty() && dead.is_empty());
    submit(
        &storage(&dir),
        header("steps[5] udf gone"),
        &[envelope(7, Some("k"))],
    )
    .expect("submit");
    p.seek(p.position()).expect("look again now");
    let (out, dead) = drain(&mut p, 10);
    assert!(out.is_empty());
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].error.contains("no udf step `steps[5] udf gone`"),
        "{}",
        dead[0].error
    );
    assert_eq!(dead[0].origin.offset, 7, "the record's own origin");
    assert_eq!(dead[0].raw, br#"{"n":7,"user":"u7"}"#.to_vec());
    assert_eq!(
        p.position(),
        Position {
            offset: 2,
            records: 0
        }
    );
}
