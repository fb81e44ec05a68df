//! `headwater dlq replay`: one group's dead letters read back as the records they were when
//! their step gave up on them, to run them through the step's current code.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::inspect;
use crate::record::{Origin, Record};
use crate::value::Value;

/// Failures to select a group's records.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read the dead-letter file `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no dead letters have the fingerprint `{fingerprint}` in {path}; {known}")]
    NoGroup {
        fingerprint: String,
        path: PathBuf,
        /// The biggest groups, to pick from.
        known: String,
    },
    #[error("group `{fingerprint}` failed at `{step}`, which is not a udf step: only records a udf step gave up on can run through its code again (decode and event-time failures are bad input; fix the producer and send them again)")]
    NotAUdfStep { fingerprint: String, step: String },
}

/// A dead letter of the group, as a record again.
#[derive(Clone, Debug)]
pub struct Member {
    pub record: Record,
    /// The code that failed it (`python:sha256:...`), when the envelope says.
    pub udf_version: Option<String>,
    /// The envelope's text, as the DLQ holds it: what a replay request carries.
    pub envelope: String,
}

/// The records of one group, and the envelopes of it that cannot become records.
#[derive(Debug)]
pub struct Selected {
    pub fingerprint: String,
    pub step: String,
    pub error_type: String,
    /// The first member's error.
    pub error: String,
    pub members: Vec<Member>,
    /// (1-based line, why) for envelopes of the group that cannot be records again.
    pub unusable: Vec<(usize, String)>,
}

impl Selected {
    /// The code versions the members failed with and how many failed with each, in order of
    /// appearance (envelopes without one are left out).
    pub fn versions(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = Vec::new();
        for v in self.members.iter().filter_map(|m| m.udf_version.as_deref()) {
            match out.iter_mut().find(|(k, _)| k == v) {
                Some((_, n)) => *n += 1,
                None => out.push((v.to_string(), 1)),
            }
        }
        out
    }
}

/// The dead letters of the file `path` with `fingerprint`, as records. `sources` are the
/// pipeline's source names, in order (envelopes name their source; records number it).
pub fn select(path: &Path, fingerprint: &str, sources: &[String]) -> Result<Selected, ReplayError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReplayError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    select_in(&text, path, fingerprint, sources)
}

/// [`select`] on a DLQ's envelopes as text, one per line; `path` names where they are from.
pub fn select_in(
    text: &str,
    path: &Path,
    fingerprint: &str,
    sources: &[String],
) -> Result<Selected, ReplayError> {
    let mut selected: Option<Selected> = None;
    for (n, line) in text.lines().enumerate() {
        let Ok(env @ Json::Object(_)) = serde_json::from_str::<Json>(line) else {
            continue; // `dlq inspect` lists unreadable lines
        };
        let cause = inspect::cause(&env);
        if cause.fingerprint != fingerprint {
            continue;
        }
        let group = selected.get_or_insert_with(|| Selected {
            fingerprint: fingerprint.to_string(),
            step: cause.step.clone(),
            error_type: cause.error_type.clone(),
            error: cause.error.clone(),
            members: Vec::new(),
            unusable: Vec::new(),
        });
        match member(&env, sources) {
            Ok(mut m) => {
                m.envelope = line.to_string();
                group.members.push(m)
            }
            Err(why) => group.unusable.push((n + 1, why)),
        }
    }
    let Some(selected) = selected else {
        let report = inspect::group(text, 0);
        let known = match report.groups.is_empty() {
            true => "the file has no groups".to_string(),
            false => format!(
                "its biggest groups: {} (`headwater dlq inspect` lists them all)",
                report
                    .groups
                    .iter()
                    .take(5)
                    .map(|g| format!("{} ({} at {})", g.fingerprint, g.count, g.step))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        return Err(ReplayError::NoGroup {
            fingerprint: fingerprint.to_string(),
            path: path.to_path_buf(),
            known,
        });
    };
    if !selected.step.contains(" udf ") {
        return Err(ReplayError::NotAUdfStep {
            fingerprint: fingerprint.to_string(),
            step: selected.step,
        });
    }
    Ok(selected)
}

/// An envelope as the record it was when its step gave up on it.
pub fn member(env: &Json, sources: &[String]) -> Result<Member, String> {
    if env["raw_size"].is_u64() {
        return Err("only the start of its bytes was kept (too large)".into());
    }
    let raw = env["raw"]
        .as_str()
        .ok_or("its bytes are not UTF-8 text (`raw_base64`), so not a JSON record")?;
    let value = Value::from_json(raw.as_bytes()).map_err(|e| format!("`raw` is not JSON: {e}"))?;
    let time = env["event_time"].as_i64().ok_or("it has no `event_time`")?;
    let source = env["source"].as_str().unwrap_or("");
    let origin = Origin {
        source: sources
            .iter()
            .position(|s| s == source)
            .and_then(|i| u16::try_from(i).ok())
            .unwrap_or(0),
        partition: env["partition"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0),
        offset: env["offset"].as_u64().unwrap_or(0),
        entry: 0,
    };
    let key = match &env["key"] {
        Json::Null => None,
        key => Some(
            Value::from_json(key.to_string().as_bytes())
                .map_err(|e| format!("`key` is not JSON: {e}"))?,
        ),
    };
    Ok(Member {
        record: Record::new(value, time, origin).with_key(key),
        udf_version: env["udf_version"].as_str().map(str::to_string),
        envelope: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(fingerprint: &str, step: &str, extra: &str) -> String {
        format!(
            r#"{{"envelope_version":1,"source":"orders","partition":1,"offset":7,"step":"{step}","error_class":"permanent","error":"ValueError: bad","error_type":"ValueError","fingerprint":"{fingerprint}","attempts":1,"udf_version":"python:sha256:aa","failed_at":"2026-12-07T10:00:00.000Z"{extra}}}"#
        )
    }

    fn file(lines: &[String]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(f.path(), lines.join("\n")).expect("write");
        f
    }

    #[test]
    fn a_group_s_envelopes_become_its_records_with_their_code_versions() {
        let f = file(&[
            envelope(
                "f1",
                "steps[1] udf enrich",
                r#","event_time":5,"raw":"{\"n\":1}""#,
            ),
            envelope(
                "f2",
                "steps[1] udf enrich",
                r#","event_time":6,"raw":"{\"n\":2}""#,
            ),
            envelope(
                "f1",
                "steps[1] udf enrich",
                r#","event_time":8,"raw":"{\"n\":3}","raw_size":900000"#,
            ),
        ]);
        let sources = ["clicks".to_string(), "orders".to_string()];
        let s = select(f.path(), "f1", &sources).expect("group");
        assert_eq!(s.step, "steps[1] udf enrich");
        assert_eq!(s.members.len(), 1);
        let r = &s.members[0].record;
        assert_eq!(r.value().to_json_string(), r#"{"n":1}"#);
        assert_eq!(r.time, 5);
        assert_eq!(
            r.origin,
            Origin {
                source: 1,
                partition: 1,
                offset: 7,
                entry: 0,
            }
        );
        assert_eq!(s.versions(), [("python:sha256:aa".to_string(), 1)]);
        assert_eq!(s.unusable.len(), 1, "the truncated one");
        assert_eq!(s.unusable[0].0, 3);
    }

    #[test]
    fn an_unknown_group_or_a_step_without_code_is_refused_with_what_to_do() {
        let f = file(&[envelope(
            "d1",
            "decode",
            r#","event_time":null,"raw":"{nope""#,
        )]);
        let e = select(f.path(), "zz", &[]).expect_err("unknown");
        assert!(
            e.to_string()
                .contains("its biggest groups: d1 (1 at decode)"),
            "{e}"
        );
        let e = select(f.path(), "d1", &[]).expect_err("not a udf step");
        assert!(e.to_string().contains("not a udf step"), "{e}");
    }
}
