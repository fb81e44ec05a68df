//! `headwater dlq inspect`: a dead-letter file read back and grouped by cause, the biggest and
//! newest groups first, so the engineer on call sees what broke, where, how often and since
//! when, with sample records to look at.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};

use super::fingerprint;

/// Failures to read a dead-letter file.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the dead-letter file `{path}`: {source}")]
pub struct InspectError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Where a sample dead letter came from and what it held.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// `source partition_name` and the offset (the 1-based line for files).
    pub origin: String,
    /// The start of its original bytes.
    pub raw: String,
}

/// Dead letters that share a fingerprint.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub fingerprint: String,
    pub step: String,
    pub error_type: String,
    pub error_class: String,
    /// The first member's error message.
    pub error: String,
    pub count: u64,
    pub first_failed_at: String,
    pub last_failed_at: String,
    pub max_attempts: u64,
    /// Dead letters per `udf_version` (the code that failed), in order of appearance;
    /// envelopes without one are not counted here.
    pub udf_versions: Vec<(String, u64)>,
    /// Dead letters per `tier` that gave up (`retry`, `remediation`), likewise.
    pub tiers: Vec<(String, u64)>,
    pub samples: Vec<Sample>,
}

/// Adds one to `key`'s count in `counts` (kept in order of appearance).
fn count_in(counts: &mut Vec<(String, u64)>, key: &str) {
    match counts.iter_mut().find(|(k, _)| k == key) {
        Some((_, n)) => *n += 1,
        None => counts.push((key.to_string(), 1)),
    }
}

/// A dead-letter file, grouped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub total: u64,
    /// Most dead letters first, then the newest failure.
    pub groups: Vec<Group>,
    /// Lines that are not envelopes (1-based line, why).
    pub unreadable: Vec<(usize, String)>,
}

/// How much of a sample's bytes is shown.
const SAMPLE_CHARS: usize = 160;

/// Reads and groups the dead letters in `path`, keeping `samples` samples per group.
pub fn inspect(path: &Path, samples: usize) -> Result<Report, InspectError> {
    let text = std::fs::read_to_string(path).map_err(|source| InspectError {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(group(&text, samples))
}

/// What an envelope failed on: its step, error, error type and fingerprint.
pub struct Cause {
    pub step: String,
    pub error: String,
    pub error_type: String,
    pub fingerprint: String,
}

/// An envelope's cause; envelopes written before fingerprints existed are fingerprinted from
/// their step and error, like new ones.
pub fn cause(env: &Json) -> Cause {
    let text_of = |key: &str| env[key].as_str().unwrap_or("").to_string();
    let step = text_of("step");
    let error = text_of("error");
    let error_type = env["error_type"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| fingerprint::error_type(&step, &error));
    let fingerprint = env["fingerprint"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| fingerprint::fingerprint(&step, &error_type, &error));
    Cause {
        step,
        error,
        error_type,
        fingerprint,
    }
}

/// Groups the envelopes of a dead-letter file's text. Envelopes written before fingerprints
/// existed are fingerprinted from their step and error, like new ones.
pub fn group(text: &str, samples: usize) -> Report {
    let mut report = Report::default();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let env: Json = match serde_json::from_str(line) {
            Ok(v @ Json::Object(_)) => v,
            Ok(_) => {
                report.unreadable.push((n + 1, "not a JSON object".into()));
                continue;
            }
            Err(e) => {
                report.unreadable.push((n + 1, e.to_string()));
                continue;
            }
        };
        let text_of = |key: &str| env[key].as_str().unwrap_or("").to_string();
        let Cause {
            step,
            error,
            error_type,
            fingerprint: print,
        } = cause(&env);
        let failed_at = text_of("failed_at");
        // The first attempt's failure, when the envelope has it, starts the group's span.
        let first_failed_at = env["first_failed_at"]
            .as_str()
            .map_or_else(|| failed_at.clone(), str::to_string);
        report.total += 1;
        let at = *index.entry(print.clone()).or_insert_with(|| {
            report.groups.push(Group {
                fingerprint: print,
                step,
                error_type,
                error_class: text_of("error_class"),
                error,
                count: 0,
                first_failed_at: first_failed_at.clone(),
                last_failed_at: failed_at.clone(),
                max_attempts: 0,
                udf_versions: Vec::new(),
                tiers: Vec::new(),
                samples: Vec::new(),
            });
            report.groups.len() - 1
        });
        let g = &mut report.groups[at];
        g.count += 1;
        // RFC 3339 times with the same precision and zone order as text.
        if first_failed_at < g.first_failed_at {
            g.first_failed_at = first_failed_at;
        }
        if let Some(v) = env["udf_version"].as_str() {
            count_in(&mut g.udf_versions, v);
        }
        if let Some(t) = env["tier"].as_str() {
            count_in(&mut g.tiers, t);
        }
        if failed_at > g.last_failed_at {
            g.last_failed_at = failed_at;
        }
        g.max_attempts = g.max_attempts.max(env["attempts"].as_u64().unwrap_or(1));
        if g.samples.len() < samples {
            g.samples.push(sample(&env));
        }
    }
    report.groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| b.last_failed_at.cmp(&a.last_failed_at))
    });
    report
}

fn sample(env: &Json) -> Sample {
    let source = env["source"].as_str().unwrap_or("?");
    let partition = env["partition_name"].as_str().unwrap_or("?");
    let offset = env["offset"].as_u64().map_or("?".into(), |o| o.to_string());
    let raw = match (env["raw"].as_str(), env["raw_base64"].as_str()) {
        (Some(raw), _) => raw.to_string(),
        (None, Some(b64)) => format!("(base64) {b64}"),
        _ => String::new(),
    };
    let mut shown: String = raw.chars().take(SAMPLE_CHARS).collect();
    if shown.len() < raw.len() {
        shown.push('…');
    }
    Sample {
        origin: format!("{source} {partition}:{offset}"),
        raw: shown,
    }
}

impl Report {
    /// The report as JSON (`headwater dlq inspect --json`).
    pub fn to_json(&self, path: &Path) -> Json {
        json!({
            "file": path.display().to_string(),
            "dead_letters": self.total,
            "groups": self.groups.iter().map(|g| json!({
                "fingerprint": g.fingerprint,
                "count": g.count,
                "step": g.step,
                "error_type": g.error_type,
                "error_class": g.error_class,
                "error": g.error,
                "first_failed_at": g.first_failed_at,
                "last_failed_at": g.last_failed_at,
                "max_attempts": g.max_attempts,
                "udf_versions": g.udf_versions.iter().map(|(v, n)| json!({"udf_version": v, "count": n})).collect::<Vec<_>>(),
                "tiers": g.tiers.iter().map(|(t, n)| json!({"tier": t, "count": n})).collect::<Vec<_>>(),
                "samples": g.samples.iter().map(|s| json!({"origin": s.origin, "raw": s.raw})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "unreadable_lines": self.unreadable.iter().map(|(n, why)| json!({"line": n, "error": why})).collect::<Vec<_>>(),
        })
    }

    /// The report for a terminal.
    pub fn render(&self, path: &Path) -> String {
        let mut out = format!(
            "{} dead letter{} in {} group{} ({})\n",
            self.total,
            if self.total == 1 { "" } else { "s" },
            self.groups.len(),
            if self.groups.len() == 1 { "" } else { "s" },
            path.display()
        );
        for (i, g) in self.groups.iter().enumerate() {
            out.push_str(&format!(
                "\n#{}  {} × {}  {} ({})  fingerprint {}\n",
                i + 1,
                g.count,
                g.step,
                g.error_type,
                g.error_class,
                g.fingerprint
            ));
            out.push_str(&format!("    error:   {}\n", first_line(&g.error)));
            out.push_str(&format!(
                "    failed:  {} .. {}, up to {} attempt{}\n",
                g.first_failed_at,
                g.last_failed_at,
                g.max_attempts,
                if g.max_attempts == 1 { "" } else { "s" }
            ));
            let counts = |counts: &[(String, u64)]| {
                counts
                    .iter()
                    .map(|(k, n)| format!("{k} ×{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if !g.udf_versions.is_empty() {
                out.push_str(&format!("    code:    {}\n", counts(&g.udf_versions)));
            }
            if !g.tiers.is_empty() {
                out.push_str(&format!("    gave up: {}\n", counts(&g.tiers)));
            }
            for s in &g.samples {
                out.push_str(&format!("    sample:  {}  {}\n", s.origin, s.raw));
            }
        }
        if !self.unreadable.is_empty() {
            out.push_str(&format!(
                "\n{} line(s) are not envelopes and were skipped, first: line {}: {}\n",
                self.unreadable.len(),
                self.unreadable[0].0,
                self.unreadable[0].1
            ));
        }
        out
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(step: &str, error: &str, offset: u64, at: &str, attempts: u64) -> String {
        json!({"envelope_version":1,"source":"orders","partition":0,"partition_name":"in/o.jsonl",
            "offset":offset,"step":step,"error_class":"permanent","error":error,"detail":null,
            "attempts":attempts,"event_time":null,"failed_at":at,"raw":format!("{{\"n\":{offset}}}")})
        .to_string()
    }

    #[test]
    fn dead_letters_group_by_cause_biggest_first_with_samples() {
        let text = [
            envelope(
                "decode",
                "EOF while parsing a value at line 1 column 7",
                3,
                "2026-12-07T10:00:03.000Z",
                1,
            ),
            envelope(
                "steps[1] udf enrich",
                "ValueError: bad record 13",
                13,
                "2026-12-07T10:00:13.000Z",
                1,
            ),
            envelope(
                "steps[1] udf enrich",
                "ValueError: bad record 110",
                110,
                "2026-12-07T10:01:50.000Z",
                1,
            ),
            "not json at all".to_string(),
            envelope(
                "steps[1] udf enrich",
                "ValueError: bad record 207",
                207,
                "2026-12-07T10:00:01.000Z",
                4,
            ),
        ]
        .join("\n");
        let r = group(&text, 2);
        assert_eq!(r.total, 4);
        assert_eq!(r.unreadable.len(), 1);
        assert_eq!(r.unreadable[0].0, 4);
        assert_eq!(r.groups.len(), 2);
        let g = &r.groups[0];
        assert_eq!((g.count, g.step.as_str()), (3, "steps[1] udf enrich"));
        assert_eq!(g.error_type, "ValueError");
        assert_eq!(g.error, "ValueError: bad record 13");
        assert_eq!(g.first_failed_at, "2026-12-07T10:00:01.000Z");
        assert_eq!(g.last_failed_at, "2026-12-07T10:01:50.000Z");
        assert_eq!(g.max_attempts, 4);
        assert_eq!(
            g.samples,
            vec![
                Sample {
                    origin: "orders in/o.jsonl:13".into(),
                    raw: "{\"n\":13}".into()
                },
                Sample {
                    origin: "orders in/o.jsonl:110".into(),
                    raw: "{\"n\":110}".into()
                },
            ]
        );
        assert_eq!(
            (r.groups[1].count, r.groups[1].error_type.as_str()),
            (1, "decode")
        );
        let shown = r.render(Path::new("dlq.jsonl"));
        assert!(
            shown.starts_with("4 dead letters in 2 groups (dlq.jsonl)"),
            "{shown}"
        );
        assert!(
            shown.contains("#1  3 × steps[1] udf enrich  ValueError (permanent)"),
            "{shown}"
        );
        assert!(shown.contains("line 4:"), "{shown}");
        let j = r.to_json(Path::new("dlq.jsonl"));
        assert_eq!(j["groups"][0]["count"], 3);
        assert_eq!(j["groups"][0]["fingerprint"], g.fingerprint.as_str());
    }

    #[test]
    fn groups_count_the_code_versions_and_tiers_that_gave_up() {
        let with = |version: &str, tier: &str, first: &str, at: &str| {
            let mut v: Json =
                serde_json::from_str(&envelope("steps[0] udf f", "ValueError: bad 1", 1, at, 3))
                    .expect("json");
            v["udf_version"] = json!(version);
            v["tier"] = json!(tier);
            v["first_failed_at"] = json!(first);
            v.to_string()
        };
        let text = [
            with(
                "wasm:sha256:aa",
                "retry",
                "2026-01-01T00:00:01.000Z",
                "2026-01-01T00:00:02.000Z",
            ),
            with(
                "wasm:sha256:bb",
                "remediation",
                "2026-01-01T00:00:00.500Z",
                "2026-01-01T00:00:03.000Z",
            ),
            with(
                "wasm:sha256:aa",
                "retry",
                "2026-01-01T00:00:04.000Z",
                "2026-01-01T00:00:05.000Z",
            ),
        ]
        .join("\n");
        let report = group(&text, 0);
        let g = &report.groups[0];
        assert_eq!(
            g.udf_versions,
            vec![
                ("wasm:sha256:aa".to_string(), 2),
                ("wasm:sha256:bb".to_string(), 1)
            ]
        );
        assert_eq!(
            g.tiers,
            vec![("retry".to_string(), 2), ("remediation".to_string(), 1)]
        );
        assert_eq!(
            g.first_failed_at, "2026-01-01T00:00:00.500Z",
            "the first attempt's failure"
        );
        assert_eq!(g.last_failed_at, "2026-01-01T00:00:05.000Z");
        let shown = report.render(Path::new("dlq.jsonl"));
        assert!(
            shown.contains("    code:    wasm:sha256:aa ×2, wasm:sha256:bb ×1\n"),
            "{shown}"
        );
        assert!(
            shown.contains("    gave up: retry ×2, remediation ×1\n"),
            "{shown}"
        );
        let json = report.to_json(Path::new("dlq.jsonl"));
        assert_eq!(json["groups"][0]["udf_versions"][0]["count"], 2);
        assert_eq!(json["groups"][0]["tiers"][1]["tier"], "remediation");
    }

    #[test]
    fn a_written_fingerprint_is_used_and_an_old_envelope_gets_the_same_one() {
        let dl = super::super::DeadLetter::new(
            b"{}".to_vec(),
            crate::record::Origin::default(),
            "steps[0] udf f".into(),
            super::super::ErrorClass::Permanent,
            "KeyError: 'price'".into(),
        );
        let new = dl.to_envelope(&super::super::Names::default());
        let mut old = new.clone();
        if let Json::Object(o) = &mut old {
            o.remove("fingerprint");
            o.remove("error_type");
        }
        let r = group(&format!("{new}\n{old}\n"), 0);
        assert_eq!(r.groups.len(), 1, "{r:?}");
        assert_eq!(r.groups[0].count, 2);
        assert_eq!(
            r.groups[0].fingerprint,
            new["fingerprint"].as_str().unwrap_or("")
        );
    }
}
