//! The runtime against hand-written guests (`host/tests/wasm/*.wat`): the ABI, failures
//! isolated to their records, the sandbox's limits, refused modules, module replacement and
//! the compiled-module cache. Guests built from the Rust and Go SDKs are tested end to end in
//! `host/tests/wasm_udf.rs`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;
use crate::udf::{KeyedResult, StateUpdate};
use headwater_sdk::ErrorClass;
use shadow::Same;

const HOSTILE: &str = include_str!("../../../tests/wasm/hostile.wat");

fn spec(memory: usize, timeout: Duration) -> WasmSpec {
    WasmSpec {
        module: PathBuf::from("test.wasm"),
        memory,
        timeout,
        allow_clock: false,
        allow_random: false,
    }
}

fn wasm(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).expect("valid WAT")
}

fn hostile() -> WasmRuntime {
    WasmRuntime::from_bytes(
        "hostile",
        &wasm(HOSTILE),
        &spec(4 << 20, Duration::from_millis(200)),
    )
    .expect("loads")
}

fn records(n: usize, bad: &[usize]) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let s = if bad.contains(&i) { "!" } else { "ok" };
            Value::from_json(format!(r#"{{"i":{i},"s":"{s}"}}"#).as_bytes()).expect("json")
        })
        .collect()
}

#[test]
fn a_batch_is_one_call_and_unchanged_outputs_are_the_inputs() {
    let rt = hostile();
    let names: Vec<String> = rt.functions().into_iter().map(|f| f.name).collect();
    assert_eq!(
        names,
        [
            "identity",
            "trap",
            "spin",
            "hog",
            "exit",
            "garbage",
            "oversized"
        ]
    );
    let input = records(300, &[]);
    let out = rt.invoke("identity", input.clone()).expect("runs");
    let got: Vec<Value> = out.into_iter().flat_map(|o| o.expect("ok")).collect();
    assert_eq!(got, input);
    assert_eq!(rt.instances_replaced(), 0);
    assert!(rt.invoke("nope", vec![]).is_err());
}

#[test]
fn a_trap_fails_only_its_record_with_the_trap_and_what_the_module_wrote() {
    let rt = hostile();
    let out = rt.invoke("trap", records(64, &[9, 40])).expect("runs");
    for (i, o) in out.iter().enumerate() {
        if i == 9 || i == 40 {
            let e = o.as_ref().expect_err("trapped");
            assert_eq!(e.class, ErrorClass::Permanent);
            assert!(
                e.message
                    .contains("wasm trap: wasm `unreachable` instruction executed")
                    && e.message.contains("it wrote: about to misbehave"),
                "{}",
                e.message
            );
            assert!(e
                .detail
                .as_deref()
                .unwrap_or("")
                .contains("about to misbehave"));
        } else {
            assert_eq!(o.as_ref().expect("passes").len(), 1, "record {i}");
        }
    }
    assert!(rt.instances_replaced() >= 2);
    // The instances the retries made do not pile up in the pool: one caller, one instance.
    assert_eq!(rt.idle_instances(), 1);
    // The runtime goes on with fresh instances.
    assert!(rt
        .invoke("identity", records(3, &[]))
        .expect("runs")
        .iter()
        .all(Result::is_ok));
}

#[test]
fn an_endless_loop_times_out_as_a_transient_failure_of_its_record() {
    let rt = hostile();
    let started = Instant::now();
    let out = rt.invoke("spin", records(8, &[3])).expect("runs");
    let e = out[3].as_ref().expect_err("timed out");
    assert_eq!(e.class, ErrorClass::Transient);
    assert!(
        e.message
            .contains("did not finish within its 200ms timeout"),
        "{}",
        e.message
    );
    assert_eq!(out.iter().filter(|o| o.is_ok()).count(), 7);
    // One timeout per halving: 8 -> 4 -> 2 -> 1.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn memory_growth_stops_at_the_limit() {
    let rt = hostile();
    let out = rt.invoke("hog", records(4, &[1])).expect("runs");
    let e = out[1].as_ref().expect_err("out of memory");
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(
        e.message.contains("more than its memory limit of 4 MiB"),
        "{}",
        e.message
    );
    assert!(out[0].is_ok() && out[2].is_ok() && out[3].is_ok());
}

#[test]
fn proc_exit_ends_the_instance_and_fails_the_record() {
    let rt = hostile();
    let out = rt.invoke("exit", records(3, &[0])).expect("runs");
    assert!(out[0]
        .as_ref()
        .expect_err("exited")
        .message
        .contains("proc_exit(3)"));
    assert!(out[1].is_ok() && out[2].is_ok());
}

#[test]
fn bad_results_fail_their_batch_and_a_module_failing_everything_is_cut_short() {
    let rt = hostile();
    let out = rt.invoke("garbage", records(40, &[])).expect("runs");
    let messages: Vec<&str> = out
        .iter()
        .map(|o| o.as_ref().expect_err("fails").message.as_str())
        .collect();
    assert!(
        messages[0].contains("outside the module's memory"),
        "{}",
        messages[0]
    );
    // Three records fail alone, then the rest are not run this time (transient: retried).
    assert!(messages[3].starts_with("not run"), "{}", messages[3]);
    assert_eq!(
        out[39].as_ref().expect_err("not run").class,
        ErrorClass::Transient
    );
    assert!(rt.instances_replaced() < 20, "{}", rt.instances_replaced());

    let out = rt.invoke("oversized", records(2, &[])).expect("runs");
    let e = out[0].as_ref().expect_err("malformed");
    assert!(e.message.contains("malformed results"), "{}", e.message);
}

fn refused(wat_or_bytes: &[u8], memory: usize) -> String {
    match WasmRuntime::from_bytes("bad", wat_or_bytes, &spec(memory, Duration::from_secs(1))) {
        Ok(_) => panic!("the module should be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn modules_that_are_not_guests_are_refused_at_start_with_the_reason() {
    let tests = include_str!("../../../tests/wasm/missing_export.wat");
    let e = refused(&wasm(tests), 64 << 20);
    assert!(
        e.contains("does not export `hw_call`")
            && e.contains("`hw_free` has the signature (i32) -> ()"),
        "{e}"
    );
    let e = refused(
        &wasm(include_str!("../../../tests/wasm/wrong_abi.wat")),
        64 << 20,
    );
    assert!(
        e.contains("speaks version 2 of the Headwater Wasm ABI"),
        "{e}"
    );
    let e = refused(
        &wasm(include_str!("../../../tests/wasm/bad_import.wat")),
        64 << 20,
    );
    assert!(
        e.contains("function `env.open_socket`") && e.contains("memory `env.memory`"),
        "{e}"
    );
    let e = refused(
        &wasm(include_str!("../../../tests/wasm/big_memory.wat")),
        64 << 20,
    );
    assert!(
        e.contains("more than its memory limit of 64 MiB (it asked for 128 MiB)"),
        "{e}"
    );
    let e = refused(b"#!/bin/sh\necho hi\n", 64 << 20);
    assert!(
        e.contains("not a WebAssembly module (it starts with 23 21 2f"),
        "{e}"
    );
    let e = refused(&[0, b'a', b's', b'm', 0x0d, 0, 1, 0], 64 << 20);
    assert!(e.contains("component"), "{e}");
    let e = refused(&[0, b'a', b's', b'm', 1, 0, 0, 0, 0xff], 64 << 20);
    assert!(e.contains("does not compile"), "{e}");
    let e = refused(&vec![0u8; MAX_MODULE_BYTES + 1], 64 << 20);
    assert!(
        e.contains("more than the 64 MiB a Wasm UDF module may be"),
        "{e}"
    );
}

#[test]
fn a_replaced_module_serves_the_next_batches() {
    let rt = hostile();
    let before = rt.module_digest();
    let renamed = HOSTILE.replace("\\\"identity\\\"", "\\\"same\\\"");
    let uses = [FunctionInfo {
        name: "identity".into(),
        kind: FunctionKind::Map,
    }];
    let e = rt
        .replace_module(&wasm(&renamed), &uses)
        .expect_err("identity is gone");
    assert!(e.to_string().contains("unknown function `identity`"), "{e}");
    assert_eq!(
        rt.module_digest(),
        before,
        "a refused module changes nothing"
    );
    let uses = [FunctionInfo {
        name: "same".into(),
        kind: FunctionKind::Map,
    }];
    let digest = rt.replace_module(&wasm(&renamed), &uses).expect("replaced");
    assert_ne!(digest, before);
    assert_eq!(rt.module_digest(), digest);
    assert!(rt
        .invoke("same", records(2, &[]))
        .expect("runs")
        .iter()
        .all(Result::is_ok));
    assert!(rt.invoke("identity", records(1, &[])).is_err());
}

#[test]
fn compiled_modules_are_cached_and_a_corrupt_cache_entry_is_recompiled() {
    // A module of its own, so other tests do not race on its cache file.
    let text = HOSTILE.replace("hostile.wat", "cache-test.wat");
    let bytes = wasm(&text);
    let digest = engine::sha256_hex(&bytes);
    let _ = hostile_with(&bytes);
    let entry = std::fs::read_dir(cache_dir())
        .expect("cache folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&digest))
        })
        .expect("a cache entry named by the module's digest");
    let mut cached = std::fs::read(&entry).expect("read");
    let last = cached.len() - 1;
    cached[last] ^= 0xff;
    std::fs::write(&entry, &cached).expect("corrupt it");
    let rt = hostile_with(&bytes);
    assert!(rt.invoke("identity", records(1, &[])).expect("runs")[0].is_ok());
    assert_ne!(std::fs::read(&entry).expect("read"), cached, "rewritten");
}

fn hostile_with(bytes: &[u8]) -> WasmRuntime {
    WasmRuntime::from_bytes("cache", bytes, &spec(4 << 20, Duration::from_secs(1))).expect("loads")
}

#[test]
fn concurrent_tasks_each_get_an_instance_of_their_own() {
    let rt = std::sync::Arc::new(hostile());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let rt = rt.clone();
            std::thread::spawn(move || {
                for round in 0..20 {
                    let input = records(50 + t + round, &[]);
                    let out = rt.invoke("identity", input.clone()).expect("runs");
                    let got: Vec<Value> = out.into_iter().flat_map(|o| o.expect("ok")).collect();
                    assert_eq!(got, input);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("no panic");
    }
    let idle = rt.idle_instances();
    assert!((1..=4).contains(&idle), "{idle} idle instances for 4 tasks");
    assert_eq!(rt.instances_replaced(), 0);
}

fn keyed_result(state: StateUpdate, timers: Vec<i64>) -> KeyedResult {
    KeyedResult {
        outputs: vec![Value::from_json(br#"{"user":1,"total":3}"#).expect("json")],
        state,
        timers,
    }
}

fn set(s: &str) -> StateUpdate {
    StateUpdate::Set(s.as_bytes().to_vec())
}

#[test]
fn a_keyed_difference_is_counted_with_the_key_the_call_and_both_results() {
    let rt = hostile();
    let staged = rt.stage(&wasm(HOSTILE), &[]).expect("staged");
    let shadow = shadow::Shadow::new(staged.version.clone());
    let input = KeyedInput {
        key: Value::Int(3),
        value: Some(Value::from_json(br#"{"n":5}"#).expect("json")),
        time: 5,
        state: Some(br#"{"99":{"total":1,"count":1}}"#.to_vec()),
        timer: None,
    };
    let active = vec![Ok(keyed_result(
        set(r#"{"99":{"total":6,"count":2}}"#),
        vec![99],
    ))];
    let candidate = vec![Ok(keyed_result(
        set(r#"{"99":{"total":5,"count":2}}"#),
        vec![99],
    ))];
    shadow.compare(
        "buckets",
        std::slice::from_ref(&input),
        &active,
        Some(candidate),
    );
    shadow.compare(
        "buckets",
        std::slice::from_ref(&input),
        &active,
        Some(active.clone()),
    );
    let report = shadow.report();
    assert_eq!((report.matched, report.differed, report.failed), (1, 1, 0));
    let sample = &report.samples[0];
    assert!(
        sample.input.contains("key 3:") && sample.input.contains(r#"{"n":5}"#),
        "{sample:?}"
    );
    assert!(
        sample.active.contains(r#""total":6"#) && sample.candidate.contains(r#""total":5"#),
        "{sample:?}"
    );
}

#[test]
fn keyed_results_agree_on_outputs_timers_and_the_state_as_json() {
    let a = keyed_result(
        set(r#"{"99":{"total":1,"count":1},"199":{"total":2,"count":1}}"#),
        vec![99],
    );
    let reordered = keyed_result(
        set(r#"{"199":{"count":1,"total":2},"99":{"total":1,"count":1}}"#),
        vec![99],
    );
    assert!(a.same(&reordered), "field order does not count");
    assert!(!a.same(&keyed_result(
        set(r#"{"99":{"total":1,"count":2}}"#),
        vec![99]
    )));
    assert!(!a.same(&keyed_result(
        set(r#"{"99":{"total":1,"count":1},"199":{"total":2,"count":1}}"#),
        vec![199]
    )));
    assert!(!a.same(&keyed_result(StateUpdate::Keep, vec![99])));
    assert!(keyed_result(set("\u{1}raw"), vec![]).same(&keyed_result(set("\u{1}raw"), vec![])));
    assert!(!keyed_result(set("\u{1}raw"), vec![]).same(&keyed_result(set("\u{1}rav"), vec![])));
}
