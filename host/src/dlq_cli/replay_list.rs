//! `headwater dlq replays`: the replays asked of a pipeline and how far its newest checkpoint
//! has read each.

use std::path::Path;
use std::process::ExitCode;

use headwater::checkpoint::storage::CheckpointStorage;
use headwater::connectors::replay::NAME;
use headwater::dlq::requests;
use headwater::sources::Position;

use super::super::{load, EXIT_FAILED};

/// How far a replay is.
#[derive(Debug, PartialEq)]
enum Progress {
    Waiting,
    Reading { read: u64 },
    Done,
}

/// Where request `number` of `records` stands when the checkpoint's replay position is
/// `at` (None: no checkpoint has read any replay).
fn progress(number: u64, records: u64, at: Option<Position>) -> Progress {
    match at {
        Some(p) if p.offset > number => Progress::Done,
        Some(p) if p.offset == number && p.records >= records => Progress::Done,
        Some(p) if p.offset == number && p.records > 0 => Progress::Reading { read: p.records },
        _ => Progress::Waiting,
    }
}

pub fn list(pipeline: &Path, json: bool) -> ExitCode {
    let spec = match load(pipeline) {
        Ok(spec) => spec,
        Err(code) => return code,
    };
    let fail = |message: String| {
        eprintln!("error: {message}");
        ExitCode::from(EXIT_FAILED)
    };
    let storage = match CheckpointStorage::open(&spec.checkpoint.location) {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot open the checkpoint storage: {e}")),
    };
    let numbers = match requests::list(&storage) {
        Ok(n) => n,
        Err(e) => return fail(e.to_string()),
    };
    // The newest checkpoint's position of the replay partition.
    let newest = storage
        .list_checkpoints()
        .ok()
        .and_then(|ids| ids.last().copied());
    let at = newest
        .and_then(|id| storage.read_manifest(id).ok())
        .and_then(|m| {
            m.sources
                .iter()
                .find(|p| p.source == NAME)
                .map(|p| p.position)
        });
    let mut rows = Vec::new();
    for number in numbers {
        let request = match requests::read(&storage, number) {
            Ok(r) => r,
            Err(e) => return fail(e.to_string()),
        };
        let h = request.header;
        let state = progress(number, h.records as u64, at);
        rows.push((h, state));
    }
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|(h, state)| {
                let (name, read) = match state {
                    Progress::Waiting => ("waiting", 0),
                    Progress::Reading { read } => ("reading", *read),
                    Progress::Done => ("done", h.records as u64),
                };
                serde_json::json!({
                    "replay": h.replay, "group": h.fingerprint, "step": h.step,
                    "records": h.records, "requested_at": h.requested_at, "code": h.code,
                    "forced": h.forced, "state": name, "read": read,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "checkpoint": newest, "replays": list })
        );
        return ExitCode::SUCCESS;
    }
    if rows.is_empty() {
        println!("no replays were asked of pipeline `{}`", spec.name);
        return ExitCode::SUCCESS;
    }
    println!(
        "replays of pipeline `{}` (as of {}):",
        spec.name,
        newest.map_or("no checkpoint yet".to_string(), |id| format!(
            "checkpoint {id}"
        ))
    );
    for (h, state) in rows {
        let state = match state {
            Progress::Waiting => "waiting".to_string(),
            Progress::Reading { read } => format!("reading ({read} of {})", h.records),
            Progress::Done => "done".to_string(),
        };
        println!(
            "  {:>4}  {:<18}  {:>7} record(s)  {}  {}  {}{}",
            h.replay,
            h.fingerprint,
            h.records,
            h.step,
            h.requested_at,
            state,
            if h.forced { "  (forced)" } else { "" }
        );
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_is_done_once_a_checkpoint_read_all_of_it() {
        let at = |offset, records| Some(Position { offset, records });
        assert_eq!(progress(1, 5, None), Progress::Waiting);
        assert_eq!(progress(2, 5, at(1, 3)), Progress::Waiting);
        assert_eq!(progress(2, 5, at(2, 3)), Progress::Reading { read: 3 });
        assert_eq!(progress(2, 5, at(3, 0)), Progress::Done);
        assert_eq!(progress(1, 5, at(3, 0)), Progress::Done);
    }
}
