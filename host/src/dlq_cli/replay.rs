//! `headwater dlq replay`: a group's dead letters through the step's current code (the dry
//! run), then, unless `--dry-run`, sent back into the pipeline exactly once by a replay
//! request in its checkpoint storage.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use headwater::checkpoint::storage::CheckpointStorage;
use headwater::config::spec::PipelineSpec;
use headwater::dlq::replay::{self, Member, Selected};
use headwater::dlq::requests::{self, Header};
use headwater::runtime::dry_run::{self, DryRun};

use super::super::{load, EXIT_FAILED, EXIT_INVALID};
use super::read_dlq;

/// What `dlq replay` was asked to do.
pub struct Mode {
    /// Only run the records through the current code.
    pub dry_run: bool,
    /// Also send records that failed with the code the step runs now.
    pub force: bool,
}

/// How the group's dead letters were sorted for a replay.
#[derive(Default)]
struct Sorted {
    /// Sent in this replay.
    send: Vec<String>,
    /// Sent by an earlier replay, with its number.
    replayed: Vec<u64>,
    /// Failed with the code the step runs now (left out without `--force`).
    unchanged: usize,
}

/// What was queued.
struct Queued {
    number: u64,
    sorted: Sorted,
}

pub fn replay(pipeline: &Path, fingerprint: &str, mode: Mode, json: bool) -> ExitCode {
    let spec = match load(pipeline) {
        Ok(spec) => spec,
        Err(code) => return code,
    };
    let fail = |code: u8, message: String| {
        eprintln!("error: {message}");
        ExitCode::from(code)
    };
    if !mode.dry_run && !spec.checkpoint.enabled {
        return fail(
            EXIT_INVALID,
            format!(
                "pipeline `{}` runs without checkpoints (`checkpoint: {{ enabled: false }}`), and a replay enters a pipeline exactly once only through them; `--dry-run` still shows what the current code does with the records",
                spec.name
            ),
        );
    }
    let sources: Vec<String> = spec.sources.iter().map(|s| s.name.clone()).collect();
    let (place, text) = match read_dlq(&spec) {
        Ok(Some(found)) => found,
        Ok(None) => (spec.dlq.path.clone(), String::new()),
        Err(code) => return code,
    };
    let selected = match replay::select_in(&text, &place, fingerprint, &sources) {
        Ok(s) => s,
        Err(e) => return fail(EXIT_FAILED, e.to_string()),
    };
    let records = selected.members.iter().map(|m| m.record.clone()).collect();
    let run = match dry_run::dry_run(&spec, &selected.step, records) {
        Ok(run) => run,
        Err(e) => return fail(EXIT_FAILED, e.to_string()),
    };
    let versions = selected.versions();
    let unchanged = versions.len() == 1 && versions[0].0 == run.code;
    let queued = match mode.dry_run {
        true => None,
        false => match queue(&spec, &selected, &run.code, mode.force) {
            Ok(q) => Some(q),
            Err(message) => {
                if json {
                    println!("{}", report_json(&selected, &run, unchanged, None));
                } else {
                    print!("{}", render(&selected, &run, unchanged, None));
                }
                return fail(EXIT_FAILED, message);
            }
        },
    };
    if json {
        println!(
            "{}",
            report_json(&selected, &run, unchanged, queued.as_ref())
        );
    } else {
        print!("{}", render(&selected, &run, unchanged, queued.as_ref()));
    }
    ExitCode::SUCCESS
}

/// Sorts the group against the ledger and the code now, and writes the request; the error
/// says why nothing was sent.
fn queue(
    spec: &PipelineSpec,
    selected: &Selected,
    code: &str,
    force: bool,
) -> Result<Queued, String> {
    let storage = CheckpointStorage::open(&spec.checkpoint.location)
        .map_err(|e| format!("cannot open the checkpoint storage: {e}"))?;
    let ledger = requests::ledger(&storage).map_err(|e| e.to_string())?;
    let sorted = sort(&selected.members, &ledger, code, force);
    if sorted.send.is_empty() {
        let group = &selected.fingerprint;
        return Err(match (sorted.replayed.first(), sorted.unchanged) {
            (Some(_), 0) => format!(
                "group {group}: every one of its {} dead letter(s) was sent back already ({}); a replay sends a dead letter once (records that fail again get new envelopes, which a later replay sends)",
                sorted.replayed.len(),
                numbers(&sorted.replayed)
            ),
            _ => format!(
                "group {group}: the step's code is unchanged since its records failed ({code}), so they would fail again; fix the code first (the dry run above shows what it does now), or send them anyway with --force"
            ),
        });
    }
    let header = Header {
        replay: 0,
        fingerprint: selected.fingerprint.clone(),
        step: selected.step.clone(),
        records: 0,
        requested_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        code: code.to_string(),
        forced: force && sorted.unchanged > 0,
    };
    let number = requests::submit(&storage, header, &sorted.send).map_err(|e| e.to_string())?;
    Ok(Queued { number, sorted })
}

/// Which members to send: not those an earlier replay sent, and not those that failed with
/// the code now unless `force` (members that do not say their code are sent).
fn sort(members: &[Member], ledger: &HashMap<u128, u64>, code: &str, force: bool) -> Sorted {
    let mut sorted = Sorted::default();
    for m in members {
        if let Some(&n) = ledger.get(&requests::envelope_id(&m.envelope)) {
            sorted.replayed.push(n);
        } else if m.udf_version.as_deref() == Some(code) {
            sorted.unchanged += 1;
            if force {
                sorted.send.push(m.envelope.clone());
            }
        } else {
            sorted.send.push(m.envelope.clone());
        }
    }
    sorted
}

/// `replay 1, 3`: the distinct replay numbers.
fn numbers(of: &[u64]) -> String {
    let mut n = of.to_vec();
    n.sort_unstable();
    n.dedup();
    let list: Vec<String> = n.iter().map(u64::to_string).collect();
    format!("replay {}", list.join(", "))
}

fn render(s: &Selected, run: &DryRun, unchanged: bool, queued: Option<&Queued>) -> String {
    let mut out = format!(
        "group {}: {} dead letter(s) at `{}` ({})\n",
        s.fingerprint,
        s.members.len() + s.unusable.len(),
        s.step,
        s.error
    );
    for (version, n) in s.versions() {
        out += &format!("  failed with  {version} ({n})\n");
    }
    out += &format!(
        "  code now     {}{}\n",
        run.code,
        if unchanged {
            "  (unchanged since they failed: fix the code first)"
        } else {
            ""
        }
    );
    out += &format!(
        "dry run: {} of {} would now succeed ({} output record(s))",
        run.succeeded, run.records, run.outputs
    );
    if run.dropped > 0 {
        out += &format!(", {} dropped by the remediation", run.dropped);
    }
    let again: usize = run.failed.iter().map(|f| f.count).sum();
    if again > 0 {
        out += &format!(", {again} would fail again:");
        for f in &run.failed {
            out += &format!("\n  {:>10}  {}  ({})", f.count, f.fingerprint, f.error);
        }
    }
    out.push('\n');
    for (line, why) in &s.unusable {
        out += &format!("  line {line} of the DLQ cannot be run again: {why}\n");
    }
    match queued {
        None => out += "nothing was written\n",
        Some(q) => {
            out += &format!(
                "queued replay {}: {} record(s) enter `{}` once; the running pipeline reads them within a second, a stopped one when it next runs (`headwater dlq replays` shows how far it is)\n",
                q.number,
                q.sorted.send.len(),
                s.step
            );
            if !q.sorted.replayed.is_empty() {
                out += &format!(
                    "  left out: {} sent back already ({})\n",
                    q.sorted.replayed.len(),
                    numbers(&q.sorted.replayed)
                );
            }
            if q.sorted.unchanged > 0 && q.sorted.send.len() < s.members.len() {
                out += &format!(
                    "  left out: {} that failed with the code the step runs now (--force sends them)\n",
                    q.sorted.unchanged
                );
            }
        }
    }
    out
}

fn report_json(
    s: &Selected,
    run: &DryRun,
    unchanged: bool,
    queued: Option<&Queued>,
) -> serde_json::Value {
    serde_json::json!({
        "fingerprint": s.fingerprint,
        "step": s.step,
        "error_type": s.error_type,
        "dead_letters": s.members.len() + s.unusable.len(),
        "failed_with": s.versions().iter().map(|(v, n)| serde_json::json!({"udf_version": v, "count": n})).collect::<Vec<_>>(),
        "code_now": run.code,
        "code_unchanged": unchanged,
        "records": run.records,
        "would_succeed": run.succeeded,
        "outputs": run.outputs,
        "dropped": run.dropped,
        "would_fail": run.failed.iter().map(|f| serde_json::json!({"fingerprint": f.fingerprint, "error": f.error, "count": f.count})).collect::<Vec<_>>(),
        "unusable": s.unusable.iter().map(|(l, w)| serde_json::json!({"line": l, "why": w})).collect::<Vec<_>>(),
        "queued": queued.map(|q| serde_json::json!({
            "replay": q.number,
            "records": q.sorted.send.len(),
            "already_replayed": q.sorted.replayed.len(),
            "failed_with_code_now": q.sorted.unchanged,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use headwater::record::{Origin, Record};
    use headwater::value::Value;

    fn member(n: i64, version: &str) -> Member {
        Member {
            record: Record::new(Value::Int(n), n, Origin::default()),
            udf_version: Some(version.to_string()),
            envelope: format!(r#"{{"n":{n},"v":"{version}"}}"#),
        }
    }

    #[test]
    fn a_replay_leaves_out_what_was_sent_and_what_failed_with_the_code_now() {
        let members = vec![member(1, "old"), member(2, "new"), member(3, "old")];
        let ledger = HashMap::from([(requests::envelope_id(&members[2].envelope), 4)]);
        let sorted = sort(&members, &ledger, "new", false);
        assert_eq!(sorted.send, vec![members[0].envelope.clone()]);
        assert_eq!(sorted.replayed, vec![4]);
        assert_eq!(sorted.unchanged, 1);
        let forced = sort(&members, &ledger, "new", true);
        assert_eq!(forced.send.len(), 2, "--force sends the unchanged one too");
        assert_eq!(forced.replayed, vec![4], "but never one sent before");
    }
}
