//! The validated pipeline, as the runtime consumes it. Built by [`super::load`] from a
//! pipeline file; every field here has already been checked.

use std::any::Any;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::value::Str;

/// Where a construct was written in the pipeline file (1-based), for runtime messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Location {
    pub line: usize,
    pub col: usize,
}

/// A whole pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineSpec {
    pub name: String,
    /// Number of parallel tasks; default: number of CPU cores.
    pub parallelism: usize,
    /// Number of key groups (fixed for the life of the pipeline's state); default 128.
    pub max_parallelism: u32,
    pub sources: Vec<SourceSpec>,
    pub steps: Vec<StepSpec>,
    pub sinks: Vec<SinkSpec>,
    /// Names of the sinks that receive the main output of the last step.
    pub output: Vec<String>,
    pub udfs: Vec<UdfSpec>,
    /// How transient UDF failures are retried unless a UDF says otherwise (`retry:`).
    pub retry: RetrySpec,
    pub state: StateSpec,
    pub dlq: DlqSpec,
    /// Exactly-once checkpoints (on by default).
    pub checkpoint: CheckpointSpec,
    pub tuning: TuningSpec,
    /// The folder of the pipeline file (relative paths in it are relative to this).
    pub base_dir: PathBuf,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SourceSpec {
    pub name: String,
    pub kind: SourceKind,
    pub event_time: EventTimeSpec,
    pub location: Location,
}

/// Longest line a file or stdin source reads by default (`max_line_bytes`).
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 << 20;

#[derive(Clone, Debug, PartialEq)]
pub enum SourceKind {
    /// JSON-lines files matching a glob; each file is one partition; bounded. Lines longer
    /// than `max_line_bytes` are dead letters.
    Files { glob: String, max_line_bytes: usize },
    /// The Nexmark auction event generator.
    Nexmark(NexmarkSpec),
    /// JSON lines on standard input; one partition; bounded by end of input.
    Stdin { max_line_bytes: usize },
    /// Apache Kafka topics; each topic partition is one source partition.
    Kafka(KafkaSourceSpec),
}

/// A Kafka source: offsets live in the checkpoint (the source of truth) and are also committed
/// to the consumer group after each checkpoint, for lag tools.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaSourceSpec {
    pub topics: Vec<String>,
    /// `bootstrap.servers`.
    pub brokers: String,
    /// `group.id` offsets are committed under (default `headwater-<pipeline>`).
    pub group: Option<String>,
    pub format: KafkaFormat,
    /// Where a partition the checkpoint does not know starts.
    pub start: KafkaStart,
    /// Stop at the end offsets seen when the run starts (a bounded run); default: read forever.
    pub until_end: bool,
    /// Largest message decoded; larger ones are dead letters (default 1 MiB).
    pub max_record_bytes: usize,
    /// librdkafka client settings passed through (`security.protocol`, `sasl.mechanism`, ...).
    pub properties: Vec<(String, String)>,
}

/// How a Kafka message's bytes become a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KafkaFormat {
    /// The value is a JSON object.
    Json,
    /// `{key, value, topic, partition, offset, timestamp}` with key and value as UTF-8 text
    /// (invalid UTF-8 is replaced; use it for text payloads and envelopes).
    Raw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KafkaStart {
    Earliest,
    Latest,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NexmarkSpec {
    /// Total events to generate across all partitions; None = unbounded.
    pub events: Option<u64>,
    /// Events per second across all partitions; None = as fast as possible.
    pub rate: Option<u64>,
    pub partitions: u32,
    /// Generate only this kind of event (fast path for bid-only queries); None = all kinds.
    pub only: Option<NexmarkEventKind>,
    /// Event time of the first event (ms since epoch).
    pub base_time: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NexmarkEventKind {
    Person,
    Auction,
    Bid,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EventTimeSpec {
    /// Dotted path of the timestamp field (ms since epoch as a number, or an RFC 3339
    /// string). None for sources with built-in time (Nexmark: `date_time`; Kafka: the
    /// message timestamp).
    pub field: Option<Vec<Str>>,
    /// Bounded out-of-orderness: the watermark trails the largest event time by this much.
    pub max_out_of_orderness: Duration,
    /// A partition with no records for this long stops holding the watermark back.
    pub idle_timeout: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StepSpec {
    pub kind: StepKind,
    pub location: Location,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StepKind {
    /// Keep records for which the expression is truthy.
    Filter {
        expr: String,
    },
    Map(MapSpec),
    /// Key the stream by one or more field paths.
    KeyBy {
        fields: Vec<Vec<Str>>,
    },
    Window(WindowSpec),
    /// Call a function declared in `udfs`.
    Udf {
        function: String,
        /// A `map` or `flat_map` UDF that gets each record the step would dead-letter, with
        /// its error, and repairs it (sent through the function once more), drops it (no
        /// output) or gives up (an error: the record goes to the DLQ).
        remediate: Option<String>,
    },
}

/// Field edits applied in this order: compute, rename, select, drop.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct MapSpec {
    /// (target field path, expression)
    pub compute: Vec<(Vec<Str>, String)>,
    /// (from field, to field)
    pub rename: Vec<(String, String)>,
    /// Keep only these top-level fields (in this order); None = keep all.
    pub select: Option<Vec<String>>,
    /// Remove these top-level fields.
    pub drop: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WindowSpec {
    pub kind: WindowKind,
    pub allowed_lateness: Duration,
    pub aggregates: Vec<AggregateSpec>,
    pub late: LatePolicy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling { size: Duration },
    Sliding { size: Duration, slide: Duration },
    Session { gap: Duration },
}

#[derive(Clone, Debug, PartialEq)]
pub struct AggregateSpec {
    pub func: AggregateFn,
    /// Field path the aggregate reads; None only for `count`.
    pub field: Option<Vec<Str>>,
    /// Output field name.
    pub name: String,
    /// For `udf(name)`: the declared UDF (a window aggregate function).
    pub udf: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregateFn {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    CountDistinct,
    /// A user-defined window aggregate (create / add / merge / result) over whole records.
    Udf,
}

/// Where records later than `allowed_lateness` go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LatePolicy {
    /// A named sink (side output).
    Sink(String),
    Dlq,
    Drop,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SinkSpec {
    pub name: String,
    pub kind: SinkKind,
    pub location: Location,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SinkKind {
    /// JSON lines appended to a file (parent folders created).
    File { path: PathBuf },
    /// JSON lines on standard output.
    Stdout,
    /// Discards records (benchmarks).
    Blackhole,
    /// A Kafka topic, exactly once through transactions by default.
    Kafka(KafkaSinkSpec),
}

#[derive(Clone, Debug, PartialEq)]
pub struct KafkaSinkSpec {
    pub topic: String,
    pub brokers: String,
    /// Field whose value becomes the message key (its JSON text, or the string itself).
    pub key: Option<Vec<Str>>,
    pub delivery: Delivery,
    /// Prefix of the producers' `transactional.id`s (default `headwater-<pipeline>-<sink>`);
    /// stable across runs, so a restarted or second host fences the old one.
    pub transactional_id: Option<String>,
    /// Compacted topic recording the last committed epoch per sink (default
    /// `headwater.commits`); recovery reads it to finish an interrupted commit exactly once.
    pub commit_topic: String,
    pub properties: Vec<(String, String)>,
}

/// A Kafka sink's guarantee.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Transactions committed with the checkpoints; read_committed consumers see every result
    /// once (needs checkpoints).
    ExactlyOnce,
    /// The idempotent producer, flushed at each checkpoint: nothing lost, duplicates possible
    /// after a crash; results are visible at once.
    AtLeastOnce,
}

#[derive(Clone, Debug, PartialEq)]
pub struct UdfSpec {
    pub name: String,
    pub runtime: UdfRuntimeSpec,
    /// The function's name inside its runtime (for `native`, a registered function).
    pub function: String,
    pub kind: UdfKind,
    /// How this UDF's transient failures are retried: the pipeline's `retry:` with the UDF's
    /// own `retry:` keys over it.
    pub retry: RetrySpec,
    pub location: Location,
}

/// A UDF's runtime: its name as written in the file and the options that runtime read from
/// the UDF's entry. The options belong to the runtime's plug-in (`udf::registry`); the
/// configuration holds them without knowing their type.
#[derive(Clone, Debug)]
pub struct UdfRuntimeSpec {
    name: &'static str,
    options: Arc<dyn RuntimeOptions>,
}

impl UdfRuntimeSpec {
    pub fn new(name: &'static str, options: impl RuntimeOptions) -> Self {
        UdfRuntimeSpec {
            name,
            options: Arc::new(options),
        }
    }

    /// The runtime's name as written in pipeline files.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The options, when they are of type `T` (the runtime's own options type).
    pub fn options<T: RuntimeOptions>(&self) -> Option<&T> {
        let any: &dyn Any = self.options.as_ref();
        any.downcast_ref()
    }
}

impl PartialEq for UdfRuntimeSpec {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.options.same_as(other.options.as_ref())
    }
}

/// The options of one runtime (any `Debug + PartialEq` type of its own).
pub trait RuntimeOptions: Any + fmt::Debug + Send + Sync {
    /// Whether `other` holds the same options.
    fn same_as(&self, other: &dyn RuntimeOptions) -> bool;
}

impl<T: Any + fmt::Debug + PartialEq + Send + Sync> RuntimeOptions for T {
    fn same_as(&self, other: &dyn RuntimeOptions) -> bool {
        let other: &dyn Any = other;
        other.downcast_ref::<T>() == Some(self)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdfKind {
    Map,
    Filter,
    FlatMap,
    /// Keyed process function: needs a `key_by` before it; its state lives in the host.
    KeyedProcess,
    /// Window aggregate: used as `udf(name)` among a `window` step's aggregates.
    WindowAggregate,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StateSpec {
    /// Folder for local RocksDB state; default `.headwater/<pipeline name>/state`.
    pub dir: PathBuf,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DlqSpec {
    /// JSON-lines file of DLQ envelopes; default `.headwater/<pipeline name>/dlq.jsonl`.
    pub path: PathBuf,
    /// A declared sink that takes the envelopes instead of the file (e.g. a Kafka topic).
    pub sink: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointSpec {
    /// False only when the file says `enabled: false` (at-least-once, nothing kept).
    pub enabled: bool,
    /// Time between the starts of two checkpoints (default 10s).
    pub interval: Duration,
    /// A checkpoint not complete after this long is abandoned (default 10m).
    pub timeout: Duration,
    /// Least time between the end of one checkpoint and the start of the next (default 0).
    pub min_pause: Duration,
    /// Complete checkpoints kept (default 3); older ones and unreferenced files are deleted.
    pub retain: usize,
    /// Object-store URL (`file:///...`, `s3://bucket/prefix`); default
    /// `file://<pipeline folder>/.headwater/<name>/checkpoints`.
    pub location: String,
    pub mode: CheckpointMode,
    /// Unaligned mode: each checkpoint starts aligned and switches to unaligned at a task or
    /// sink whose alignment takes longer than this (zero: unaligned from the first barrier).
    pub aligned_timeout: Duration,
    /// Checkpoints in a row that may fail to be written to the storage (each is declined, the
    /// next one covers its data) before the run stops (default 3; 0: the first failure stops
    /// it).
    pub tolerable_failures: u32,
}

/// How barriers pass an operator with several inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointMode {
    /// An input that delivered the barrier waits for the others (no in-flight data stored).
    Aligned,
    /// The first barrier is forwarded at once; data still queued from inputs whose barrier
    /// has not arrived is stored with the snapshot (bounded checkpoint time under backpressure).
    Unaligned,
}

/// How a UDF call that failed transiently (a crashed worker, a timeout, an error the function
/// marked retriable) is tried again before its records become dead letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetrySpec {
    /// Attempts in all, the first included (1: no retry). Default 4.
    pub max_attempts: u32,
    /// The wait before the second attempt; it doubles for each attempt after that. Default 20ms.
    pub initial_backoff: Duration,
    /// No wait is longer than this (before jitter). Default 2s.
    pub max_backoff: Duration,
    /// When most calls fail transiently (an outage), pause instead of dead-lettering.
    pub breaker: BreakerSpec,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(2),
            breaker: BreakerSpec::default(),
        }
    }
}

/// A UDF's circuit breaker: when at least `failure_percent` of its last records (and at least
/// `min_records` of them) failed transiently, records whose retries are used up are held
/// instead of dead-lettered: calls pause for `cool_down`, then the held records are tried
/// again, until the function recovers or the outage has lasted `max_pause` (then they go to
/// the DLQ as before).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerSpec {
    /// Off: transient failures are dead-lettered once their retries are used up.
    pub enabled: bool,
    /// 1-100; default 50.
    pub failure_percent: u32,
    /// Default 20.
    pub min_records: u32,
    /// Default 5s.
    pub cool_down: Duration,
    /// Default 10m.
    pub max_pause: Duration,
}

impl Default for BreakerSpec {
    fn default() -> Self {
        BreakerSpec {
            enabled: true,
            failure_percent: 50,
            min_records: 20,
            cool_down: Duration::from_secs(5),
            max_pause: Duration::from_secs(600),
        }
    }
}

/// Knobs with sensible defaults; rarely changed.
#[derive(Clone, Debug, PartialEq)]
pub struct TuningSpec {
    /// Records per batch between operators (default 1024).
    pub batch_size: usize,
    /// Batches a channel holds before the sender blocks (default 8).
    pub channel_capacity: usize,
    /// How often the progress line is printed (default 5s; 0 disables).
    pub progress_interval: Duration,
}

impl Default for TuningSpec {
    fn default() -> Self {
        TuningSpec {
            batch_size: 1024,
            channel_capacity: 8,
            progress_interval: Duration::from_secs(5),
        }
    }
}
