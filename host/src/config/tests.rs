use std::time::Duration;

use super::spec::*;
use super::*;

/// The configuration knows no UDF runtime itself: these tests give it one, `native`, without
/// options (the real runtimes read theirs in `udf/`, and are tested with it there).
struct TestRuntimes;

impl RuntimeCatalog for TestRuntimes {
    fn names(&self) -> Vec<&'static str> {
        vec!["native"]
    }

    fn read_options(&self, name: &str, _: &mut OptionsReader<'_, '_>) -> Option<UdfRuntimeSpec> {
        (name == "native").then(|| UdfRuntimeSpec::new("native", ()))
    }
}

fn load_str(text: &str, file: &str) -> Result<PipelineSpec, ConfigErrors> {
    super::load_str(text, file, &TestRuntimes)
}

fn load(path: &std::path::Path) -> Result<PipelineSpec, ConfigErrors> {
    super::load(path, &TestRuntimes)
}

const FULL: &str = r#"
name: hot-items
parallelism: 2
max_parallelism: 64
sources:
  clicks:
    type: file
    path: "input/*.jsonl"
    event_time:
      field: user.ts
      max_out_of_orderness: 2s
      idle_timeout: 30s
  bids:
    type: nexmark
    events: 1000
    rate: 500
    partitions: 4
    only: bid
    base_time: 2024-01-01T00:00:00Z
steps:
  - filter: "price > 100"
  - map:
      compute: { total: "price * qty" }
      rename: { old: new }
      select: [a, b]
      drop: [c]
  - key_by: [user.id, region]
  - window:
      type: sliding
      size: 10s
      slide: 5s
      allowed_lateness: 1s
      aggregates: { n: count(), total: sum(price), who: count_distinct(user) }
      late: { sink: late }
  - udf: enrich
sinks:
  results: { type: file, path: out/results.jsonl }
  late: { type: stdout }
output: [results]
udfs:
  enrich: { runtime: native, function: geohash, kind: map }
state: { dir: /tmp/state }
dlq: { path: dlq.jsonl }
checkpoint: { interval: 10s, location: "file:///tmp/ckpt" }
tuning: { batch_size: 10, channel_capacity: 2, progress_interval: 0s }
"#;

#[test]
fn a_full_pipeline_decodes() {
    let spec = load_str(FULL, "/p/pipeline.yaml").expect("valid");
    assert_eq!(spec.name, "hot-items");
    assert_eq!((spec.parallelism, spec.max_parallelism), (2, 64));
    assert_eq!(
        spec.sources[0].kind,
        SourceKind::Files {
            glob: "/p/input/*.jsonl".into(),
            max_line_bytes: 16 << 20,
        }
    );
    assert_eq!(
        spec.sources[0].event_time.max_out_of_orderness,
        Duration::from_secs(2)
    );
    assert_eq!(
        spec.sources[0].event_time.idle_timeout,
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        spec.sources[1].kind,
        SourceKind::Nexmark(NexmarkSpec {
            events: Some(1000),
            rate: Some(500),
            partitions: 4,
            only: Some(NexmarkEventKind::Bid),
            base_time: 1_704_067_200_000
        })
    );
    assert_eq!(spec.steps.len(), 5);
    let StepKind::Window(w) = &spec.steps[3].kind else {
        panic!("window expected")
    };
    assert_eq!(
        w.kind,
        WindowKind::Sliding {
            size: Duration::from_secs(10),
            slide: Duration::from_secs(5)
        }
    );
    assert_eq!(w.late, LatePolicy::Sink("late".into()));
    assert_eq!(w.aggregates.len(), 3);
    assert_eq!(w.aggregates[2].func, AggregateFn::CountDistinct);
    assert_eq!(spec.steps[3].location.line, 28);
    assert_eq!(
        spec.sinks[0].kind,
        SinkKind::File {
            path: "/p/out/results.jsonl".into()
        }
    );
    assert_eq!(spec.state.dir, std::path::PathBuf::from("/tmp/state"));
    assert_eq!(spec.dlq.path, std::path::PathBuf::from("/p/dlq.jsonl"));
    assert_eq!(spec.tuning.batch_size, 10);
    assert!(spec.checkpoint.enabled);
    assert_eq!(spec.checkpoint.location, "file:///tmp/ckpt");
}

#[test]
fn defaults_fill_what_is_omitted() {
    let text = "name: p\nsources:\n  s: { type: stdin, event_time: { field: ts } }\nsinks:\n  o: { type: stdout }\noutput: o\n";
    let spec = load_str(text, "dir/p.yaml").expect("valid");
    assert_eq!(spec.max_parallelism, 128);
    assert!(spec.parallelism >= 1);
    assert_eq!(
        spec.state.dir,
        std::path::PathBuf::from("dir/.headwater/p/state")
    );
    assert_eq!(
        spec.dlq.path,
        std::path::PathBuf::from("dir/.headwater/p/dlq.jsonl")
    );
    assert_eq!(spec.tuning, TuningSpec::default());
    assert_eq!(
        spec.sources[0].event_time.max_out_of_orderness,
        Duration::ZERO
    );
}

#[test]
fn checkpoints_are_on_by_default_and_their_settings_are_checked() {
    let base = "name: p\nsources:\n  s: { type: stdin, event_time: { field: ts } }\nsinks:\n  o: { type: stdout }\noutput: o\n";
    let spec = load_str(base, "/dir/p.yaml").expect("valid");
    let c = &spec.checkpoint;
    assert!(c.enabled);
    assert_eq!(c.interval, Duration::from_secs(10));
    assert_eq!(c.retain, 3);
    assert_eq!(c.location, "file:///dir/.headwater/p/checkpoints");
    assert_eq!(c.mode, CheckpointMode::Aligned);

    let spec = load_str(
        &format!("{base}checkpoint: {{ enabled: false, location: ckpt, retain: 5, min_pause: 1s, timeout: 1m }}\n"),
        "/dir/p.yaml",
    )
    .expect("valid");
    assert!(!spec.checkpoint.enabled);
    assert_eq!(spec.checkpoint.location, "file:///dir/ckpt");
    assert_eq!(spec.checkpoint.retain, 5);
    assert_eq!(spec.checkpoint.min_pause, Duration::from_secs(1));
    assert_eq!(spec.checkpoint.timeout, Duration::from_secs(60));

    let e = errors(&format!(
        "{base}checkpoint: {{ retain: 0, location: \"ftp://x/y\", mode: sideways, intervall: 1s }}\n"
    ))
    .to_string();
    assert!(e.contains("retain must be at least 1"), "{e}");
    assert!(e.contains("only `file://` and `s3://`"), "{e}");
    assert!(e.contains("`sideways` is not one of the choices"), "{e}");
    assert!(e.contains("did you mean `interval`?"), "{e}");

    let spec = load_str(
        &format!("{base}checkpoint: {{ mode: unaligned, aligned_timeout: 500ms }}\n"),
        "/dir/p.yaml",
    )
    .expect("valid");
    assert_eq!(spec.checkpoint.mode, CheckpointMode::Unaligned);
    assert_eq!(spec.checkpoint.aligned_timeout, Duration::from_millis(500));
    let e = errors(&format!("{base}checkpoint: {{ aligned_timeout: 1s }}\n")).to_string();
    assert!(
        e.contains("aligned_timeout applies to unaligned checkpoints only")
            && e.contains("add `mode: unaligned`"),
        "{e}"
    );
}

fn errors(text: &str) -> ConfigErrors {
    load_str(text, "p.yaml").expect_err("invalid")
}

#[test]
fn every_problem_is_reported_at_once_with_lines() {
    let text = "name: p\nsources:\n  s:\n    type: file\n    path: x\n    event_time: { field: ts, max_out_of_orderness: fast }\nsteps:\n  - windw: {}\n  - filter: \"a >\"\nsinks:\n  o: { type: stdout, colour: red }\noutput: [o, nope]\n";
    let e = errors(text);
    let lines: Vec<usize> = e.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![6, 8, 9, 11, 12], "{e}");
    let rendered = e.to_string();
    assert!(
        rendered.contains("p.yaml:8:5: error: unknown step kind `windw`"),
        "{rendered}"
    );
    assert!(rendered.contains("did you mean `window`?"), "{rendered}");
    assert!(rendered.contains("unknown key `colour`"), "{rendered}");
    assert!(
        rendered.contains("sink `nope` is not declared"),
        "{rendered}"
    );
    assert!(rendered.contains("`fast` is not a duration"), "{rendered}");
    assert!(
        rendered.ends_with("5 problems found in p.yaml"),
        "{rendered}"
    );
}

#[test]
fn wrong_types_and_missing_keys_are_explained() {
    let e = errors("name: p\nparallelism: many\nsources: [a]\nsinks:\n  o: { type: stdout }\n");
    let r = e.to_string();
    assert!(
        r.contains("p.yaml:2:14: error: parallelism: expected a whole number"),
        "{r}"
    );
    assert!(r.contains("sources: expected a mapping"), "{r}");
    assert!(r.contains("missing required key `output`"), "{r}");
}

#[test]
fn window_rules_are_checked() {
    let base = "name: p\nsources:\n  s: { type: stdin, event_time: { field: ts } }\nsinks:\n  o: { type: stdout }\noutput: o\nsteps:\n";
    let e = errors(&format!(
        "{base}  - window: {{ type: tumbling, size: 1m, aggregates: {{ n: count() }} }}\n"
    ));
    assert!(
        e.to_string().contains("needs a `key_by` step before it"),
        "{e}"
    );
    let e = errors(&format!("{base}  - key_by: k\n  - window: {{ type: sliding, size: 10s, slide: 3s, aggregates: {{ n: count(x), s: total(v), m: max() }} }}\n"));
    let r = e.to_string();
    assert!(r.contains("must be a multiple of slide"), "{r}");
    assert!(r.contains("takes no field"), "{r}");
    assert!(r.contains("unknown aggregate `total`"), "{r}");
    assert!(r.contains("`max` needs a field"), "{r}");
    let e = errors(&format!("{base}  - key_by: k\n  - window: {{ type: session, gap: 0s, aggregates: {{ n: count() }}, late: {{ sink: missing }} }}\n"));
    let r = e.to_string();
    assert!(r.contains("must be longer than 0"), "{r}");
    assert!(r.contains("sink `missing` is not declared"), "{r}");
}

#[test]
fn yaml_syntax_errors_have_a_location() {
    let e = errors("name: p\nsources: {a: [1, 2}\n");
    assert_eq!(e.errors.len(), 1);
    assert_eq!(e.errors[0].line, 2, "{e}");
    assert!(e.errors[0].message.starts_with("invalid YAML"), "{e}");
}

#[test]
fn expression_errors_point_into_the_expression() {
    let e = errors("name: p\nsources:\n  s: { type: stdin, event_time: { field: ts } }\nsinks:\n  o: { type: stdout }\noutput: o\nsteps:\n  - filter: lowr(x) == 'a'\n");
    assert_eq!((e.errors[0].line, e.errors[0].col), (8, 13), "{e}");
    assert!(
        e.errors[0].hint.as_deref().unwrap_or("").contains("lower"),
        "{e}"
    );
}

#[test]
fn missing_file_is_a_clear_error() {
    let e = load(std::path::Path::new("/definitely/not/here.yaml")).expect_err("missing");
    assert!(
        e.to_string().contains("cannot read the pipeline file"),
        "{e}"
    );
}

const KAFKA: &str = r#"
name: surge
sources:
  rides:
    type: kafka
    topics: [rides, drivers]
    brokers: 127.0.0.1:19092
    group: surge-readers
    format: raw
    start: latest
    until: end
    properties: { "security.protocol": SSL, "fetch.min.bytes": "1" }
    event_time: { max_out_of_orderness: 2s, idle_timeout: 5s }
steps:
  - key_by: key
sinks:
  out:
    type: kafka
    topic: surge
    brokers: 127.0.0.1:19092
    key: geo.hash
    delivery: at_least_once
    transactional_id: surge-tx
  dead: { type: kafka, topic: surge-dlq, brokers: 127.0.0.1:19092 }
output: out
dlq: { sink: dead }
"#;

#[test]
fn kafka_sources_and_sinks_decode() {
    let spec = load_str(KAFKA, "/p/pipeline.yaml").expect("valid");
    assert_eq!(
        spec.sources[0].kind,
        SourceKind::Kafka(KafkaSourceSpec {
            topics: vec!["rides".into(), "drivers".into()],
            brokers: "127.0.0.1:19092".into(),
            group: Some("surge-readers".into()),
            format: KafkaFormat::Raw,
            start: KafkaStart::Latest,
            until_end: true,
            max_record_bytes: 1 << 20,
            properties: vec![
                ("security.protocol".into(), "SSL".into()),
                ("fetch.min.bytes".into(), "1".into())
            ],
        })
    );
    // Kafka sources need no time field: the message timestamp is the default.
    assert_eq!(spec.sources[0].event_time.field, None);
    assert_eq!(
        spec.sinks[0].kind,
        SinkKind::Kafka(KafkaSinkSpec {
            topic: "surge".into(),
            brokers: "127.0.0.1:19092".into(),
            key: Some(vec!["geo".into(), "hash".into()]),
            delivery: Delivery::AtLeastOnce,
            transactional_id: Some("surge-tx".into()),
            commit_topic: "headwater.commits".into(),
            properties: vec![],
        })
    );
    match &spec.sinks[1].kind {
        SinkKind::Kafka(k) => {
            assert_eq!(k.delivery, Delivery::ExactlyOnce);
            assert_eq!(k.transactional_id, None);
        }
        other => panic!("expected a kafka sink, got {other:?}"),
    }
    assert_eq!(spec.dlq.sink.as_deref(), Some("dead"));
}

#[test]
fn kafka_mistakes_are_explained() {
    let text = KAFKA
        .replace("    brokers: 127.0.0.1:19092\n    group", "    group")
        .replace("delivery: at_least_once", "delivery: exactly-once")
        .replace("dlq: { sink: dead }", "dlq: { sink: daed }");
    let err = load_str(&text, "/p/pipeline.yaml")
        .expect_err("invalid")
        .to_string();
    assert!(err.contains("missing required key `brokers`"), "{err}");
    assert!(err.contains("did you mean `exactly_once`"), "{err}");
    assert!(err.contains("did you mean `dead`"), "{err}");
}

#[test]
fn checkpoint_storage_failures_are_tolerated_three_times_by_default() {
    let base = "name: p\nsources:\n  s: { type: stdin, event_time: { field: ts } }\nsinks:\n  o: { type: stdout }\noutput: o\n";
    let spec = load_str(base, "/dir/p.yaml").expect("valid");
    assert_eq!(spec.checkpoint.tolerable_failures, 3);
    let spec = load_str(
        &format!("{base}checkpoint: {{ tolerable_failures: 0 }}\n"),
        "/dir/p.yaml",
    )
    .expect("valid");
    assert_eq!(spec.checkpoint.tolerable_failures, 0);
    let e = errors(&format!("{base}checkpoint: {{ tolerable_failures: -1 }}\n")).to_string();
    assert!(e.contains("checkpoint tolerable_failures"), "{e}");
}

#[test]
fn udf_runtimes_and_references_are_checked() {
    let e = errors("name: p\nsources:\n  s: { type: stdin, event_time: { field: ts } }\nsinks:\n  o: { type: stdout }\noutput: o\nudfs:\n  f: { runtime: natve, function: x }\n  h: { function: x, module: m }\nsteps:\n  - udf: g\n");
    let r = e.to_string();
    assert!(r.contains("`natve` is not one of the choices"), "{r}");
    assert!(r.contains("did you mean `native`"), "{r}");
    assert!(r.contains("udf `h`: missing required key `runtime`"), "{r}");
    assert!(r.contains("hint: set `runtime: native`"), "{r}");
    assert!(r.contains("unknown key `module` in udf `h`"), "{r}");
    assert!(r.contains("udf `g` is not declared"), "{r}");
}

const RETRY_HEAD: &str = "name: p\nsources:\n  s: { type: stdin, event_time: { field: ts } }\nsinks:\n  o: { type: stdout }\noutput: o\n";

#[test]
fn retry_is_set_for_the_pipeline_and_overridden_key_by_key_per_udf() {
    let text = format!(
        "{RETRY_HEAD}retry: {{ max_attempts: 6, initial_backoff: 50ms }}\nudfs:\n  plain: {{ runtime: native, function: a }}\n  patient: {{ runtime: native, function: b, retry: {{ max_backoff: 30s }} }}\n  once: {{ runtime: native, function: c, retry: {{ max_attempts: 1 }} }}\n"
    );
    let spec = load_str(&text, "p.yaml").expect("valid");
    let pipeline = RetrySpec {
        max_attempts: 6,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(2),
        breaker: BreakerSpec::default(),
    };
    assert_eq!(spec.retry, pipeline);
    let of = |name: &str| {
        spec.udfs
            .iter()
            .find(|u| u.name == name)
            .map(|u| u.retry)
            .expect("udf")
    };
    assert_eq!(of("plain"), pipeline);
    assert_eq!(
        of("patient"),
        RetrySpec {
            max_backoff: Duration::from_secs(30),
            ..pipeline
        }
    );
    assert_eq!(
        of("once"),
        RetrySpec {
            max_attempts: 1,
            ..pipeline
        }
    );
    // Without `retry:` anywhere: 4 attempts, 20ms doubling up to 2s.
    let spec = load_str(
        &format!("{RETRY_HEAD}udfs:\n  f: {{ runtime: native, function: a }}\n"),
        "p.yaml",
    )
    .expect("valid");
    assert_eq!(spec.retry, RetrySpec::default());
    assert_eq!(spec.udfs[0].retry.max_attempts, 4);
    assert_eq!(
        spec.udfs[0].retry.initial_backoff,
        Duration::from_millis(20)
    );
    assert_eq!(spec.udfs[0].retry.max_backoff, Duration::from_secs(2));
}

#[test]
fn retry_mistakes_are_explained_where_they_are() {
    let e = errors(&format!(
        "{RETRY_HEAD}retry: {{ max_attempts: 0, backoff: 1s }}\nudfs:\n  f: {{ runtime: native, function: a, retry: {{ initial_backoff: 5s, max_backoff: 1s }} }}\n  g: {{ runtime: native, function: b, retry: {{ max_backoff: soon }} }}\n"
    ));
    let r = e.to_string();
    assert!(
        r.contains("p.yaml:7:")
            && r.contains("retry max_attempts must be between 1 and 100, not 0"),
        "{r}"
    );
    assert!(r.contains("`1` turns retries off"), "{r}");
    assert!(r.contains("unknown key `backoff`"), "{r}");
    assert!(
        r.contains("p.yaml:9:")
            && r.contains("udf `f` retry: max_backoff (1s) is shorter than initial_backoff (5s)"),
        "{r}"
    );
    assert!(
        r.contains("p.yaml:10:") && r.contains("`soon` is not a duration"),
        "{r}"
    );
}

#[test]
fn the_circuit_breaker_is_on_by_default_and_set_or_turned_off_per_udf() {
    let spec = load_str(
        &format!("{RETRY_HEAD}retry: {{ breaker: {{ failure_percent: 80, cool_down: 250ms }} }}\nudfs:\n  a: {{ runtime: native, function: a }}\n  b: {{ runtime: native, function: b, retry: {{ breaker: off }} }}\n  c: {{ runtime: native, function: c, retry: {{ breaker: {{ max_pause: 0s, min_records: 5 }} }} }}\n"),
        "p.yaml",
    )
    .expect("valid");
    let of = |name: &str| {
        spec.udfs
            .iter()
            .find(|u| u.name == name)
            .map(|u| u.retry.breaker)
            .expect("udf")
    };
    let a = of("a");
    assert!(a.enabled);
    assert_eq!(
        (a.failure_percent, a.cool_down, a.min_records),
        (80, Duration::from_millis(250), 20)
    );
    assert!(!of("b").enabled);
    let c = of("c");
    assert!(c.enabled && c.failure_percent == 80 && c.min_records == 5 && c.max_pause.is_zero());
    // The documented defaults.
    let d = RetrySpec::default().breaker;
    assert_eq!(
        (
            d.enabled,
            d.failure_percent,
            d.min_records,
            d.cool_down.as_secs(),
            d.max_pause.as_secs()
        ),
        (true, 50, 20, 5, 600)
    );
    let e = errors(&format!("{RETRY_HEAD}retry: {{ breaker: {{ failure_percent: 0, cool_down: 0s, min_records: 500, trip: 1 }} }}\n"));
    let r = e.to_string();
    assert!(
        r.contains("retry breaker failure_percent must be between 1 and 100, not 0"),
        "{r}"
    );
    assert!(
        r.contains("retry breaker cool_down: must be longer than 0"),
        "{r}"
    );
    assert!(r.contains("min_records must be between 1 and 100"), "{r}");
    assert!(r.contains("unknown key `trip`"), "{r}");
}

#[test]
fn a_udf_step_names_its_remediation_beside_it() {
    let text = format!(
        "{RETRY_HEAD}udfs:\n  enrich: {{ runtime: native, function: a }}\n  fix: {{ runtime: native, function: b, kind: flat_map }}\nsteps:\n  - {{ udf: enrich, remediate: fix }}\n  - udf: enrich\n"
    );
    let spec = load_str(&text, "p.yaml").expect("valid");
    let remediations: Vec<Option<&str>> = spec
        .steps
        .iter()
        .map(|s| match &s.kind {
            StepKind::Udf { remediate, .. } => remediate.as_deref(),
            _ => None,
        })
        .collect();
    assert_eq!(remediations, vec![Some("fix"), None]);
}

#[test]
fn remediation_mistakes_are_explained_where_they_are() {
    let e = errors(&format!(
        "{RETRY_HEAD}udfs:\n  enrich: {{ runtime: native, function: a }}\n  keep: {{ runtime: native, function: b, kind: filter }}\nsteps:\n  - {{ udf: enrich, remediate: fixx }}\n  - {{ udf: enrich, remediate: keep }}\n  - {{ udf: enrich, remediate: enrich }}\n  - {{ filter: \"a > 1\", remediate: enrich }}\n"
    ));
    let r = e.to_string();
    assert!(
        r.contains("p.yaml:11:") && r.contains("remediation udf `fixx` is not declared in `udfs`"),
        "{r}"
    );
    assert!(
        r.contains("p.yaml:12:")
            && r.contains("remediation udf `keep` is a filter function; it must be a `map`"),
        "{r}"
    );
    assert!(
        r.contains("p.yaml:13:") && r.contains("udf `enrich` cannot remediate its own failures"),
        "{r}"
    );
    assert!(
        r.contains("p.yaml:14:") && r.contains("`remediate` belongs to a `udf` step"),
        "{r}"
    );
}
