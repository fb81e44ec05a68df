//! Kafka benchmarks against a real broker: the same pipeline (Kafka source -> map -> Kafka
//! sink, a checkpoint every second) with `delivery: exactly_once` and `delivery:
//! at_least_once`, in one run on one broker.
//!
//! `kafka_source_blackhole`: the same source and map into a blackhole sink (the ceiling the
//! source sets). `kafka_exactly_once` / `kafka_at_least_once`: records/s of a bounded run
//! (`until: end`) over the same input, interleaved rounds, medians; the output topic is read
//! back (read_committed) and must hold every record. `kafka_delivery_ratio`: exactly-once over
//! at-least-once (the target is >= 0.9 with one-second checkpoints).
//!
//! `kafka_latency_*`: the pipeline runs unbounded while a producer sends records at half the
//! measured exactly-once throughput, each stamped with its wall-clock send time; a
//! read_committed consumer on the output topic computes receive time minus send time per
//! record: p50/p99/max for each delivery mode. Exactly-once results become visible when the
//! checkpoint that holds them completes, so its latency follows the checkpoint interval.
//!
//! The broker is `--kafka-brokers` / `HEADWATER_KAFKA_BROKERS`, or one this benchmark starts
//! with `integration/kafka/kafka.sh` on a free port and stops at the end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use headwater::checkpoint::recovery::StartMode;
use headwater::config;
use headwater::runtime::{self, RunControl, RunOptions};

/// Partitions of every topic the benchmark creates.
const PARTITIONS: i32 = 4;
/// Latency runs: once the pipeline is up, records sent during the first seconds at full rate
/// are not measured.
const WARMUP: Duration = Duration::from_secs(3);
/// Records of the unmeasured warm-up runs before the throughput rounds.
const WARMUP_EVENTS: u64 = 10_000;
/// How long the consumer may take to receive the last record after the producer is done.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(60);

pub struct Options {
    pub events: u64,
    pub brokers: Option<String>,
    /// Seconds of measured load per latency run (after the warm-up).
    pub latency_secs: u64,
    /// Records/s for the latency runs (default: half the exactly-once throughput).
    pub latency_rate: Option<f64>,
    pub parallelism: usize,
    /// Interleaved throughput rounds per variant.
    pub rounds: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Kafka source -> map -> blackhole.
    Blackhole,
    ExactlyOnce,
    AtLeastOnce,
}

impl Mode {
    fn tag(self) -> &'static str {
        match self {
            Mode::Blackhole => "blackhole",
            Mode::ExactlyOnce => "exactly_once",
            Mode::AtLeastOnce => "at_least_once",
        }
    }
}

/// Runs every Kafka benchmark; prints JSON lines through `emit`.
pub fn run(work: &Path, opts: &Options, emit: &dyn Fn(serde_json::Value)) -> Result<()> {
    let given = opts
        .brokers
        .clone()
        .or_else(|| std::env::var("HEADWATER_KAFKA_BROKERS").ok())
        .filter(|b| !b.trim().is_empty());
    // Dropped at the end of this function, on success or error: stops the broker it started.
    let own = match given {
        Some(_) => None,
        None => Some(OwnBroker::start(work)?),
    };
    let brokers = match (&given, &own) {
        (Some(b), _) => b.trim().to_string(),
        (None, Some(o)) => o.address.clone(),
        (None, None) => bail!("no Kafka broker"),
    };
    if opts.events == 0 || opts.latency_secs == 0 || opts.latency_rate.is_some_and(|r| r <= 0.0) {
        bail!("--kafka-events, --kafka-latency-secs and --kafka-latency-rate must be above 0");
    }
    let bench = Bench {
        work: work.join("kafka"),
        brokers,
        run_id: format!("{}-{}", std::process::id(), epoch_ms()),
        parallelism: opts.parallelism,
        rounds: opts.rounds.max(1),
        created: Default::default(),
    };
    std::fs::create_dir_all(&bench.work).context("creating the Kafka benchmark folder")?;
    let result = bench.run_all(opts, emit);
    let _ = std::fs::remove_dir_all(&bench.work);
    if own.is_none() {
        // Someone else's broker: leave it as it was.
        bench.delete_topics();
    }
    drop(own);
    result
}

struct Bench {
    work: PathBuf,
    brokers: String,
    /// Makes topic, pipeline (hence transactional id and consumer group) names unique.
    run_id: String,
    parallelism: usize,
    rounds: usize,
    /// Topics this run created.
    created: std::sync::Mutex<Vec<String>>,
}

impl Bench {
    fn run_all(&self, opts: &Options, emit: &dyn Fn(serde_json::Value)) -> Result<()> {
        let eos = self
            .throughput(opts.events, emit)
            .context("Kafka throughput")?;
        let (rate, load) = match opts.latency_rate {
            Some(r) => (r, "--kafka-latency-rate"),
            None => (eos / 2.0, "half the exactly-once throughput"),
        };
        for mode in [Mode::ExactlyOnce, Mode::AtLeastOnce] {
            let line = self
                .latency(mode, rate, load, opts.latency_secs)
                .with_context(|| format!("Kafka latency, {}", mode.tag()))?;
            emit(line);
        }
        Ok(())
    }

    fn topic(&self, what: &str) -> String {
        format!("hw-bench-{}-{what}", self.run_id)
    }

    fn create_topics(&self, names: &[&str]) -> Result<()> {
        if let Ok(mut created) = self.created.lock() {
            created.extend(names.iter().map(|n| n.to_string()));
        }
        create_topics(&self.brokers, names)
    }

    /// Deletes the topics this run created (best effort).
    fn delete_topics(&self) {
        let names = self.created.lock().map(|c| c.clone()).unwrap_or_default();
        if names.is_empty() {
            return;
        }
        let admin: Result<AdminClient<DefaultClientContext>, _> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create();
        let Ok(admin) = admin else { return };
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let deleted = futures::executor::block_on(admin.delete_topics(
            &names,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ));
        if let Err(e) = deleted {
            eprintln!("kafka: could not delete the benchmark topics: {e}");
        }
    }

    /// Blackhole, exactly-once and at-least-once, interleaved; returns the exactly-once median
    /// (records/s).
    fn throughput(&self, events: u64, emit: &dyn Fn(serde_json::Value)) -> Result<f64> {
        let input = self.topic("in");
        self.create_topics(&[&input])?;
        let started = Instant::now();
        let bytes = produce_bulk(&self.brokers, &input, events)?;
        let produce_secs = started.elapsed().as_secs_f64();
        emit(json!({
            "name": "kafka_input",
            "events": events,
            "partitions": PARTITIONS,
            "record_bytes": (bytes as f64 / events.max(1) as f64).round(),
            "produce_seconds": round3(produce_secs),
            "produce_records_per_sec": (events as f64 / produce_secs).round(),
            "brokers": self.brokers,
        }));
        // Warm-up, not measured: the first transaction on a fresh broker creates its
        // transaction log (50 partitions), the first exactly-once sink its commit topic.
        let warmup = self.topic("warmup");
        self.create_topics(&[&warmup])?;
        produce_bulk(&self.brokers, &warmup, WARMUP_EVENTS)?;
        for mode in [Mode::ExactlyOnce, Mode::AtLeastOnce] {
            self.bounded(mode, "warmup", &warmup, WARMUP_EVENTS)
                .with_context(|| format!("the {} warm-up run", mode.tag()))?;
        }
        let modes = [Mode::Blackhole, Mode::ExactlyOnce, Mode::AtLeastOnce];
        let mut runs: Vec<Vec<Bounded>> = vec![Vec::new(); modes.len()];
        for round in 0..self.rounds {
            for (i, &mode) in modes.iter().enumerate() {
                let run = self
                    .bounded(mode, &format!("r{round}"), &input, events)
                    .with_context(|| format!("the {} run of round {round}", mode.tag()))?;
                runs[i].push(run);
            }
        }
        let wall: Vec<f64> = runs
            .iter()
            .map(|r| median(r.iter().map(|b| b.wall).collect()))
            .collect();
        let median_of = |f: fn(&Bounded) -> Option<f64>| -> Vec<Option<f64>> {
            runs.iter()
                .map(|r| {
                    let s: Vec<f64> = r.iter().filter_map(f).collect();
                    (s.len() == r.len()).then(|| median(s))
                })
                .collect()
        };
        let steady = median_of(|b| b.steady);
        let first_output = median_of(|b| b.first_output);
        let round0 = |x: Option<f64>| x.map(f64::round);
        for (i, &mode) in modes.iter().enumerate() {
            let name = match mode {
                Mode::Blackhole => "kafka_source_blackhole".to_string(),
                m => format!("kafka_{}", m.tag()),
            };
            emit(json!({
                "name": name,
                "events": events,
                "rounds": self.rounds,
                "events_per_sec_rounds": runs[i].iter().map(|b| b.wall.round()).collect::<Vec<_>>(),
                "committed_events_per_sec": wall[i].round(),
                "into_sink_events_per_sec_steady": round0(steady[i]),
                "seconds_to_first_output": first_output[i].map(round3),
                "ratio_to_source_blackhole": (mode != Mode::Blackhole).then(|| round3(wall[i] / wall[0])),
                "checkpoint_interval_s": 1,
                "checkpoints_in_last_run": runs[i].last().map_or(0, |b| b.checkpoints),
                "parallelism": self.parallelism,
            }));
        }
        // The headline is committed throughput: each run ends when its last transaction is
        // committed, and every record was found in the output topic by a read_committed
        // consumer. The steady figures count records handed to the sink (not yet committed)
        // and are shown for the shape of the run only.
        emit(json!({
            "name": "kafka_delivery_ratio",
            "events": events,
            "exactly_once_committed_events_per_sec": wall[1].round(),
            "at_least_once_committed_events_per_sec": wall[2].round(),
            "ratio_committed": round3(wall[1] / wall[2]),
            "target": 0.9,
            "exactly_once_into_sink_events_per_sec_steady": round0(steady[1]),
            "at_least_once_into_sink_events_per_sec_steady": round0(steady[2]),
            "ratio_into_sink_steady": steady[1].zip(steady[2]).map(|(e, a)| round3(e / a)),
            "checkpoint_interval_s": 1,
        }));
        Ok(wall[1])
    }

    /// One bounded run of `mode` over `input`: records/s over the wall time of
    /// `runtime::run`, and while the run is between 10% and 90% of its output (start-up and
    /// the end left out), from the control API's counters.
    fn bounded(&self, mode: Mode, round: &str, input: &str, events: u64) -> Result<Bounded> {
        let name = format!("{}-{round}", mode.tag());
        let output = self.topic(&format!("out-{name}"));
        if mode != Mode::Blackhole {
            self.create_topics(&[&output])?;
        }
        let yaml = self.pipeline(&name, mode, input, &output, true);
        let spec = config::load_str(&yaml, "kafka-bench.yaml", headwater::udf::runtimes())
            .map_err(|e| anyhow!("the benchmark pipeline is invalid: {e}"))?;
        let address = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .context("picking a port for the control API")?;
        let sampler = Sampler::spawn(address);
        let started = Instant::now();
        let summary = runtime::run(
            &spec,
            RunControl::new(),
            RunOptions {
                control: Some(address),
                ..fresh()
            },
        )
        .context("running the pipeline");
        let secs = started.elapsed().as_secs_f64();
        let samples = sampler.finish();
        let summary = summary?;
        if summary.totals.records_in != events || summary.totals.records_out != events {
            bail!(
                "read {} and wrote {} records, expected {events} (dead letters: {})",
                summary.totals.records_in,
                summary.totals.records_out,
                summary.totals.dead_letters
            );
        }
        if mode != Mode::Blackhole {
            let found = count_records(&self.brokers, &output)?;
            if found != events {
                bail!(
                    "the output topic `{output}` holds {found} records (read_committed), expected {events}"
                );
            }
        }
        Ok(Bounded {
            wall: events as f64 / secs,
            steady: steady_rate(&samples, events),
            first_output: samples
                .iter()
                .find(|(_, n)| *n > 0)
                .map(|(t, _)| t.duration_since(started).as_secs_f64()),
            checkpoints: summary.checkpoints.map_or(0, |c| c.completed),
        })
    }

    fn pipeline(&self, name: &str, mode: Mode, input: &str, output: &str, bounded: bool) -> String {
        let dir = self.work.join(name);
        let sink = match mode {
            Mode::Blackhole => "{ type: blackhole }".to_string(),
            m => format!(
                "{{ type: kafka, topic: {output}, brokers: '{}', key: user, delivery: {} }}",
                self.brokers,
                m.tag()
            ),
        };
        format!(
            "name: kafka-bench-{run}-{name}
parallelism: {parallelism}
sources:
  events:
    type: kafka
    topic: {input}
    brokers: '{brokers}'
{until}    event_time: {{ field: ts, max_out_of_orderness: 1s }}
steps:
  - map:
      compute: {{ v2: \"v * 2\" }}
sinks:
  out: {sink}
output: out
state: {{ dir: '{state}' }}
dlq: {{ path: '{dlq}' }}
checkpoint: {{ interval: 1s, location: 'file://{checkpoints}' }}
tuning: {{ progress_interval: 0s }}
",
            run = self.run_id,
            parallelism = self.parallelism,
            brokers = self.brokers,
            until = if bounded { "    until: end\n" } else { "" },
            state = dir.join("state").display(),
            dlq = dir.join("dlq.jsonl").display(),
            checkpoints = dir.join("checkpoints").display(),
        )
    }

    /// The unbounded pipeline under `rate` records/s: the latency of each record from its
    /// send to its arrival at a read_committed consumer of the output topic.
    fn latency(&self, mode: Mode, rate: f64, load: &str, secs: u64) -> Result<serde_json::Value> {
        let name = format!("latency-{}", mode.tag());
        let (input, output) = (
            self.topic(&format!("in-{name}")),
            self.topic(&format!("out-{name}")),
        );
        self.create_topics(&[&input, &output])?;
        let yaml = self.pipeline(&name, mode, &input, &output, false);
        let spec = config::load_str(&yaml, "kafka-bench.yaml", headwater::udf::runtimes())
            .map_err(|e| anyhow!("the benchmark pipeline is invalid: {e}"))?;
        let control = RunControl::new();
        let pipeline = {
            let control = control.clone();
            std::thread::spawn(move || runtime::run(&spec, control, fresh()))
        };
        let done = Arc::new(AtomicBool::new(false));
        let measure_from = Arc::new(AtomicU64::new(u64::MAX));
        // The output, and the input itself: the floor the broker and the clients set.
        let out = Reader::spawn(&self.brokers, &output, &measure_from, &done);
        let floor = Reader::spawn(&self.brokers, &input, &measure_from, &done);
        let produced = self.load(&input, rate, secs, &out, &measure_from, &pipeline);
        // The producer is done (or failed): wait for the output to hold every record, unless
        // the pipeline ended by itself (an error).
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut caught_up = false;
        if let Ok(n) = &produced {
            while Instant::now() < deadline && !pipeline.is_finished() {
                if out.received() >= *n {
                    caught_up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        control.request_stop();
        let received = out.received();
        done.store(true, Ordering::Relaxed);
        let summary = pipeline
            .join()
            .map_err(|_| anyhow!("the pipeline panicked"))?
            .context("running the unbounded pipeline")?;
        let out = out.join()?;
        let floor = floor.join()?;
        let produced = produced?;
        if !caught_up {
            bail!(
                "the output topic received {received} of {produced} records within {}s after the producer finished",
                DRAIN_TIMEOUT.as_secs()
            );
        }
        let out = Percentiles::of(out).context("the output topic")?;
        let floor = Percentiles::of(floor).context("the input topic")?;
        Ok(json!({
            "name": format!("kafka_latency_{}", mode.tag()),
            "rate_records_per_sec": rate.round(),
            "load": load,
            "seconds_measured": secs,
            "records_produced": produced,
            "records_measured": out.n,
            "p50_ms": out.p50,
            "p99_ms": out.p99,
            "max_ms": out.max,
            "input_topic_p50_ms": floor.p50,
            "input_topic_p99_ms": floor.p99,
            "checkpoint_interval_s": 1,
            "checkpoints": summary.checkpoints.map(|c| c.completed).unwrap_or(0),
            "parallelism": self.parallelism,
        }))
    }

    /// The latency run's input. First a probe, a record every 10 ms until the output shows
    /// one (the pipeline is up; exactly-once: its first transaction is committed), so start-up
    /// does not count; then `rate` records/s for the warm-up and `secs`, measuring records
    /// sent after the warm-up. Returns the records sent.
    fn load(
        &self,
        input: &str,
        rate: f64,
        secs: u64,
        out: &Reader,
        measure_from: &AtomicU64,
        pipeline: &std::thread::JoinHandle<impl Sized>,
    ) -> Result<u64> {
        let producer = producer(&self.brokers, "1")?;
        let mut stamped = Stamped::default();
        let deadline = Instant::now() + TIMEOUT;
        while out.received() == 0 {
            if pipeline.is_finished() {
                bail!("the pipeline ended before producing output");
            }
            if Instant::now() > deadline {
                bail!(
                    "no output within {}s of starting the pipeline",
                    TIMEOUT.as_secs()
                );
            }
            stamped.send(&producer, input)?;
            producer.flush(TIMEOUT).context("flushing a probe record")?;
            std::thread::sleep(Duration::from_millis(10));
        }
        measure_from.store(epoch_us() + WARMUP.as_micros() as u64, Ordering::Relaxed);
        let load = WARMUP + Duration::from_secs(secs);
        let started = Instant::now();
        let mut sent = 0u64;
        loop {
            let elapsed = started.elapsed();
            if elapsed >= load {
                break;
            }
            let due = (elapsed.as_secs_f64() * rate) as u64;
            while sent < due {
                stamped.send(&producer, input)?;
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        producer
            .flush(TIMEOUT)
            .context("flushing the latency input")?;
        Ok(stamped.n)
    }
}

/// Sends records stamped with their send time (`sent_us`), round-robin over the partitions.
#[derive(Default)]
struct Stamped {
    n: u64,
    buf: Vec<u8>,
}

impl Stamped {
    fn send(
        &mut self,
        producer: &ThreadedProducer<DefaultProducerContext>,
        topic: &str,
    ) -> Result<()> {
        let now = epoch_us();
        record(&mut self.buf, self.n, now / 1000, Some(now));
        send(
            producer,
            topic,
            (self.n % PARTITIONS as u64) as i32,
            &self.buf,
        )?;
        self.n += 1;
        Ok(())
    }
}

#[derive(Clone)]
struct Bounded {
    /// Records/s over the whole run.
    wall: f64,
    /// Records/s between 10% and 90% of the output.
    steady: Option<f64>,
    /// Seconds from the start of the run to its first output (start-up).
    first_output: Option<f64>,
    checkpoints: u64,
}

/// Polls a run's control API (`GET /status`) every 20 ms for its output count.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Instant, u64)>>,
}

impl Sampler {
    fn spawn(address: SocketAddr) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Some(n) = records_out(address) {
                    samples.push((Instant::now(), n));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> Vec<(Instant, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// `records_out` from the control API's `/status`; None while it is not up.
fn records_out(address: SocketAddr) -> Option<u64> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let body = response.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let status: serde_json::Value = serde_json::from_slice(&response[body..]).ok()?;
    status["records_out"].as_u64()
}

/// Records/s between the first samples at or above 10% and 90% of `events`.
fn steady_rate(samples: &[(Instant, u64)], events: u64) -> Option<f64> {
    let at = |share: u64| samples.iter().find(|(_, n)| *n * 10 >= events * share);
    let ((t0, n0), (t1, n1)) = (at(1)?, at(9)?);
    let secs = t1.duration_since(*t0).as_secs_f64();
    (secs > 0.0 && n1 > n0).then(|| (n1 - n0) as f64 / secs)
}

struct Percentiles {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    /// From latencies in µs, in ms.
    fn of(mut samples: Vec<u64>) -> Result<Percentiles> {
        if samples.is_empty() {
            bail!("no record was measured");
        }
        samples.sort_unstable();
        let ms = |us: u64| round3(us as f64 / 1000.0);
        let pct =
            |p: f64| ms(samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)]);
        Ok(Percentiles {
            n: samples.len(),
            p50: pct(0.50),
            p99: pct(0.99),
            max: ms(samples[samples.len() - 1]),
        })
    }
}

fn fresh() -> RunOptions {
    RunOptions {
        start: StartMode::Fresh,
        ..RunOptions::default()
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn epoch_ms() -> u64 {
    epoch_us() / 1000
}

/// One input record of about 100 bytes.
fn record(buf: &mut Vec<u8>, i: u64, ts_ms: u64, sent_us: Option<u64>) {
    buf.clear();
    let _ = write!(
        buf,
        "{{\"ts\":{ts_ms},\"user\":\"u{:05}\",\"v\":{},\"page\":\"/items/{:04}/reviews?sort=newest\",\"ok\":true",
        i % 50_000,
        i % 1_000_003,
        i % 9973
    );
    if let Some(us) = sent_us {
        let _ = write!(buf, ",\"sent_us\":{us}");
    }
    buf.push(b'}');
}

fn create_topics(brokers: &str, names: &[&str]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("creating a Kafka admin client")?;
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, PARTITIONS, TopicReplication::Fixed(-1)))
        .collect();
    let results = futures::executor::block_on(admin.create_topics(
        &topics,
        &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
    ))
    .with_context(|| format!("creating topics on {brokers}"))?;
    for r in results {
        if let Err((t, code)) = r {
            bail!("creating topic `{t}`: {code}");
        }
    }
    Ok(())
}

fn producer(brokers: &str, linger_ms: &str) -> Result<ThreadedProducer<DefaultProducerContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", linger_ms)
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "lz4")
        .set("enable.idempotence", "true")
        .create()
        .context("creating a Kafka producer")
}

/// Sends one message to `partition`, waiting while the producer's queue is full.
fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partition: i32,
    payload: &[u8],
) -> Result<()> {
    let mut record: BaseRecord<'_, [u8], [u8]> =
        BaseRecord::to(topic).partition(partition).payload(payload);
    let started = Instant::now();
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                if started.elapsed() < TIMEOUT =>
            {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => bail!("producing to `{topic}`: {e}"),
        }
    }
}

/// Produces `n` records round-robin over the partitions; returns the payload bytes.
fn produce_bulk(brokers: &str, topic: &str, n: u64) -> Result<u64> {
    let producer = producer(brokers, "20")?;
    let base = epoch_ms();
    let (mut buf, mut bytes) = (Vec::with_capacity(128), 0u64);
    for i in 0..n {
        // Event time advances 1 ms per 100 records, in order within each partition.
        record(&mut buf, i, base + i / 100, None);
        bytes += buf.len() as u64;
        send(&producer, topic, (i % PARTITIONS as u64) as i32, &buf)?;
    }
    producer
        .flush(Duration::from_secs(300))
        .context("flushing the benchmark input")?;
    Ok(bytes)
}

/// A read_committed consumer of every partition of `topic`, from the beginning.
fn reader(brokers: &str, topic: &str, eof: bool) -> Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("hw-bench-reader-{}", epoch_us()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", if eof { "true" } else { "false" })
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "20")
        .create()
        .context("creating a Kafka consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .with_context(|| format!("reading the metadata of `{topic}`"))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .context("assigning a partition")?;
        }
    }
    if tpl.count() == 0 {
        bail!("topic `{topic}` has no partitions");
    }
    consumer.assign(&tpl).context("assigning partitions")?;
    Ok(consumer)
}

/// The records a read_committed consumer finds in `topic` now.
fn count_records(brokers: &str, topic: &str) -> Result<u64> {
    let consumer = reader(brokers, topic, true)?;
    let mut open = consumer
        .assignment()
        .context("reading the assignment")?
        .count();
    let mut n = 0u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while open > 0 {
        if Instant::now() > deadline {
            bail!("reading `{topic}` back timed out after {n} records");
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(_)) => n += 1,
            Some(Err(KafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(e)) => bail!("reading `{topic}`: {e}"),
            None => {}
        }
    }
    Ok(n)
}

/// The `sent_us` field of an output record.
fn sent_us(payload: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sent_us\":";
    let at = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = payload[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&payload[at..at + len])
        .ok()?
        .parse()
        .ok()
}

/// A thread reading `topic` (read_committed) until told to stop: counts every record and
/// keeps the latency (µs, receive time minus `sent_us`) of each sent at or after
/// `measure_from` (µs since the epoch; `u64::MAX`: none yet).
struct Reader {
    received: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<Result<Vec<u64>>>,
}

impl Reader {
    fn spawn(
        brokers: &str,
        topic: &str,
        measure_from: &Arc<AtomicU64>,
        done: &Arc<AtomicBool>,
    ) -> Reader {
        let received = Arc::new(AtomicU64::new(0));
        let (brokers, topic, measure_from, done, counter) = (
            brokers.to_string(),
            topic.to_string(),
            measure_from.clone(),
            done.clone(),
            received.clone(),
        );
        let thread = std::thread::spawn(move || {
            let consumer = reader(&brokers, &topic, false)?;
            let mut samples = Vec::with_capacity(1 << 20);
            while !done.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        let now = epoch_us();
                        let sent = m
                            .payload()
                            .and_then(sent_us)
                            .with_context(|| format!("a record without `sent_us` in `{topic}`"))?;
                        let measure_from_us = measure_from.load(Ordering::Relaxed);
                        if sent >= measure_from_us {
                            samples.push(now.saturating_sub(sent));
                        }
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Err(e)) => bail!("reading `{topic}`: {e}"),
                    None => {}
                }
            }
            Ok(samples)
        });
        Reader { received, thread }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn join(self) -> Result<Vec<u64>> {
        self.thread
            .join()
            .map_err(|_| anyhow!("a latency consumer panicked"))?
    }
}

/// A broker started by `integration/kafka/kafka.sh` for this run; stopped (and its data
/// deleted) when dropped.
struct OwnBroker {
    address: String,
    port: u16,
    dir: PathBuf,
}

fn kafka_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../integration/kafka/kafka.sh")
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

impl OwnBroker {
    fn start(work: &Path) -> Result<OwnBroker> {
        let first = 23000 + (std::process::id() % 500) as u16 * 2;
        let port = (0..50u16)
            .map(|i| 23000 + (first - 23000 + 2 * i) % 1000)
            .find(|&p| port_free(p) && port_free(p + 1))
            .context("no free port pair for a Kafka broker in 23000..24000")?;
        let dir = work.join("kafka-broker");
        eprintln!("kafka: starting a broker on 127.0.0.1:{port} (integration/kafka/kafka.sh)");
        // Dropped before `start` returns if starting fails: stops whatever did start.
        let mut broker = OwnBroker {
            address: String::new(),
            port,
            dir,
        };
        let out = broker
            .script("start")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
            .context("running integration/kafka/kafka.sh start")?;
        if !out.status.success() {
            bail!("integration/kafka/kafka.sh start failed ({})", out.status);
        }
        broker.address = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if broker.address.is_empty() {
            bail!("integration/kafka/kafka.sh start printed no address");
        }
        // Also stop it if this process dies without unwinding (a signal).
        let _ = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "while kill -0 {pid} 2>/dev/null; do sleep 1; done; [ -d '{dir}' ] && KAFKA_PORT={port} HEADWATER_KAFKA_DIR='{dir}' bash '{script}' stop >/dev/null 2>&1; rm -rf '{dir}'",
                pid = std::process::id(),
                dir = broker.dir.display(),
                script = kafka_script().display(),
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        Ok(broker)
    }

    fn script(&self, command: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(kafka_script())
            .arg(command)
            .env("KAFKA_PORT", self.port.to_string())
            .env("HEADWATER_KAFKA_DIR", &self.dir)
            .stdin(Stdio::null());
        c
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        eprintln!("kafka: stopping the broker on 127.0.0.1:{}", self.port);
        let _ = self
            .script("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
