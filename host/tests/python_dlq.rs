//! Python UDFs and failed records end to end, with real worker processes: remediation (on
//! udf and keyed steps), records reaching a first udf step as their source's bytes, and
//! `dlq replay --dry-run` against fixed code.

use std::collections::BTreeMap;

mod common;
use common::python_case::*;
use common::udf::*;

/// Tier 2: the step's remediation gets each record the step gives up on, with its error; a
/// repaired record goes through the step again and takes its place, a dropped one is
/// counted, and what the remediation gives up on goes to the DLQ with the reason.
#[test]
fn a_remediation_repairs_drops_or_gives_up_on_failed_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(
        dir.path(),
        1000,
        "  - { udf: enrich_fixable, remediate: fix }\n",
        "  enrich_fixable: { runtime: python, module: my_udfs, function: enrich_fixable }\n  fix: { runtime: python, module: my_udfs, function: fix, kind: flat_map }\n",
    );
    let stderr = run_for_stderr(dir.path(), &["run", "pipeline.yaml", "--fresh"]);
    let failing: Vec<i64> = (0..1000).filter(|n| n % 97 == 13).collect();
    let repaired: Vec<i64> = failing.iter().copied().filter(|n| n % 2 == 0).collect();
    let dropped: Vec<i64> = failing
        .iter()
        .copied()
        .filter(|n| n % 2 == 1 && n % 3 == 0)
        .collect();
    let gave_up: Vec<i64> = failing
        .iter()
        .copied()
        .filter(|n| !repaired.contains(n) && !dropped.contains(n))
        .collect();
    assert!(!repaired.is_empty() && !dropped.is_empty() && !gave_up.is_empty());
    assert!(
        stderr.contains(&format!(
            "remediated               {}  repaired, {} dropped",
            repaired.len(),
            dropped.len()
        )),
        "{stderr}"
    );
    let text = headwater::connectors::files::read_committed(&dir.path().join("out.jsonl"))
        .expect("output");
    let mut ns = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let n = v["n"].as_i64().expect("n");
        assert_eq!(v["fixed"] == true, repaired.contains(&n), "{v}");
        ns.push(n);
    }
    ns.sort();
    let expected: Vec<i64> = (0..1000)
        .filter(|n| !dropped.contains(n) && !gave_up.contains(n))
        .collect();
    assert_eq!(ns, expected);
    let dead = dlq(dir.path());
    let mut dead_ns: Vec<i64> = dead
        .iter()
        .map(|d| {
            let detail = d["detail"].as_str().unwrap_or("");
            assert!(
                detail.contains("the remediation udf `fix` gave up: ValueError: cannot fix"),
                "{d}"
            );
            // The code version the worker reported: a digest of the functions' module.
            assert_eq!(
                (&d["tier"], &d["udf_version"]),
                (
                    &serde_json::json!("remediation"),
                    &serde_json::json!(python_code_version())
                ),
                "{d}"
            );
            assert_eq!(
                d["correlation_id"],
                format!("s0-p0-o{}", d["offset"]),
                "the record's position: {d}"
            );
            d["error"]
                .as_str()
                .and_then(|e| e.strip_prefix("ValueError: bad record "))
                .and_then(|n| n.parse().ok())
                .expect("the step's own error")
        })
        .collect();
    dead_ns.sort();
    assert_eq!(dead_ns, gave_up, "only what the remediation gave up on");
}

/// A keyed process step's remediation: a repaired record goes through the function with its
/// key's state in its place; what the remediation gives up on is dead-lettered, and the
/// buckets hold exactly the other records.
#[test]
fn a_keyed_step_s_remediation_repairs_records_in_key_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = 3000u64;
    write_case(
        dir.path(),
        records,
        "  - map: { compute: { user: \"n % 7\" } }\n  - key_by: user\n  - { udf: strict, remediate: fix_keyed }\n",
        "  strict: { runtime: python, module: my_udfs, function: strict_buckets, kind: keyed_process }\n  fix_keyed: { runtime: python, module: my_udfs, function: fix_keyed, kind: flat_map }\n",
    );
    let stderr = run_for_stderr(dir.path(), &["run", "pipeline.yaml", "--fresh"]);
    let repaired = (0..records).filter(|n| n % 100 == 7).count();
    let gave_up: Vec<i64> = (0..records as i64).filter(|n| n % 100 == 57).collect();
    assert!(
        stderr.contains(&format!(
            "remediated    {repaired:>12}  repaired, 0 dropped"
        )),
        "{stderr}"
    );
    let mut expected: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for n in (0..records as i64).filter(|n| !gave_up.contains(n)) {
        let e = expected.entry((n % 7, n / 100 * 100 + 99)).or_default();
        e.0 += n;
        e.1 += 1;
    }
    assert_eq!(committed_buckets(dir.path()), expected);
    let dead = dlq(dir.path());
    let mut dead_ns: Vec<i64> = dead
        .iter()
        .map(|d| {
            assert_eq!(d["tier"], "remediation", "{d}");
            assert_eq!(d["step"], "steps[2] udf strict", "{d}");
            let raw: serde_json::Value =
                serde_json::from_str(d["raw"].as_str().expect("raw")).expect("raw json");
            raw["n"].as_i64().expect("n")
        })
        .collect();
    dead_ns.sort_unstable();
    assert_eq!(dead_ns, gave_up);
    // Their group cannot be replayed yet, and says why (not "no such step").
    let group = dead[0]["fingerprint"].as_str().expect("fingerprint");
    let out = dlq_replay(dir.path(), group, &["--dry-run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`steps[2] udf strict` is a keyed process step"),
        "{stderr}"
    );
}

/// A udf step that comes before any step changing values gets each record as the bytes the
/// source read (not the host's value encoded again): a number beyond 64 bits arrives exact,
/// and a failed record's envelope holds the original line.
#[test]
fn a_first_udf_gets_records_as_the_source_read_them() {
    for runtime in ["python", "python-inproc"] {
        let dir = tempfile::tempdir().expect("tempdir");
        write_case(
            dir.path(),
            0,
            "  - filter: \"m >= 0\"\n  - udf: exact\n",
            &format!("  exact: {{ runtime: {runtime}, module: my_udfs, function: exact }}\n"),
        );
        let lines = [
            r#"{"ts": 1, "m": 1, "big": 18446744073709551615}"#,
            r#"{ "ts": 2,  "m": 2, "big": 18446744073709551615, "fail": true }"#,
            r#"{"ts":3,"m":3,"big":18446744073709551615}"#,
        ];
        std::fs::write(dir.path().join("input.jsonl"), lines.join("\n")).expect("input");
        run_ok(dir.path());
        let out = output_lines(dir.path());
        assert_eq!(out.len(), 2, "{runtime}: {out:?}");
        assert!(
            out.iter().all(|v| v["exact"] == true),
            "{runtime}: the UDF saw the number exactly: {out:?}"
        );
        let dead = dlq(dir.path());
        assert_eq!(dead.len(), 1, "{runtime}");
        assert_eq!(
            dead[0]["raw"], lines[1],
            "{runtime}: the line as it was read"
        );
    }
}

/// `dlq replay --dry-run` runs a group's dead letters through the step's current code and
/// reports, writing nothing: with the code unchanged they all fail again (and it says the code
/// is unchanged); once the module is fixed, they would all succeed under the new version.
#[test]
fn a_dry_run_replay_tells_whether_the_fixed_code_takes_a_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(dir.path(), 1000, "  - udf: enrich\n", "");
    run_ok(dir.path());
    let dead = dlq(dir.path());
    let failing = (0..1000).filter(|n| n % 97 == 13).count();
    assert_eq!(dead.len(), failing);
    let group = dead[0]["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string();
    let dlq_before = std::fs::read(dir.path().join(".headwater/py/dlq.jsonl")).expect("dlq");
    let replay = |extra: &[&str]| {
        let mut args = vec!["dlq", "replay", "pipeline.yaml", "--group", group.as_str()];
        args.extend_from_slice(extra);
        headwater(dir.path()).args(&args).output().expect("replay")
    };
    let report = |extra: &[&str]| -> serde_json::Value {
        let out = replay(extra);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json report")
    };

    let old = python_code_version();
    let r = report(&["--dry-run", "--json"]);
    assert_eq!(r["step"], "steps[0] udf enrich");
    assert_eq!(r["failed_with"][0]["udf_version"], old.as_str());
    assert_eq!(
        (&r["code_now"], &r["code_unchanged"]),
        (&serde_json::json!(old), &serde_json::json!(true))
    );
    assert_eq!(
        (r["records"].as_u64(), r["would_succeed"].as_u64()),
        (Some(failing as u64), Some(0))
    );
    assert_eq!(
        (
            &r["would_fail"][0]["fingerprint"],
            r["would_fail"][0]["count"].as_u64()
        ),
        (&serde_json::json!(group), Some(failing as u64)),
        "they fail again for the same cause"
    );

    // The fix: the module no longer raises.
    let fixed = UDFS.replace(
        "raise ValueError(f\"bad record {r['n']}\")",
        "return {\"n\": r[\"n\"], \"square\": 0}",
    );
    assert_ne!(fixed, UDFS);
    std::fs::write(dir.path().join("my_udfs.py"), &fixed).expect("fix");
    let r = report(&["--dry-run", "--json"]);
    assert_eq!(r["code_unchanged"], false);
    assert_ne!(r["code_now"], old.as_str());
    assert_eq!(
        (r["would_succeed"].as_u64(), r["outputs"].as_u64()),
        (Some(failing as u64), Some(failing as u64))
    );
    let text = String::from_utf8_lossy(&replay(&["--dry-run"]).stdout).into_owned();
    assert!(
        text.contains(&format!(
            "dry run: {failing} of {failing} would now succeed"
        )),
        "{text}"
    );
    assert!(text.contains("nothing was written"), "{text}");

    // Nothing written: not the DLQ, not a replay request.
    let dlq_after = std::fs::read(dir.path().join(".headwater/py/dlq.jsonl")).expect("dlq");
    assert_eq!(dlq_before, dlq_after);
    assert!(!dir
        .path()
        .join(".headwater/py/checkpoints/replays")
        .exists());
    // An unknown group names the ones there are.
    let out = dlq_replay(dir.path(), "nope", &["--dry-run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&group), "{stderr}");
}
