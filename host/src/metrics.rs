//! Run counters shared by all tasks, the progress line and the end-of-run summary.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::record::{EventTime, WATERMARK_START};
use crate::time::format_time;

/// Counters updated by tasks (once per batch, not per record).
#[derive(Debug)]
pub struct Metrics {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub late: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Failed records a step's remediation repaired (sent through the step again).
    pub remediated: AtomicU64,
    /// Failed records a step's remediation dropped.
    pub remediation_dropped: AtomicU64,
    /// The record accounting (see [`Accounting`]): records filtered out, taken into state,
    /// made by steps, and dead-lettered as their end.
    pub filtered: AtomicU64,
    pub absorbed: AtomicU64,
    pub created: AtomicU64,
    pub dead_ends: AtomicU64,
    /// Records an unaligned checkpoint held in flight, sent through their steps again after
    /// the restore.
    pub restored: AtomicU64,
    /// Records read that were dead letters sent back in (`headwater dlq replay`); counted in
    /// `records_in` too.
    pub replayed: AtomicU64,
    /// Nanoseconds tasks spent blocked on full downstream channels (backpressure).
    pub backpressure_ns: AtomicU64,
    /// Largest event time read by any source.
    pub max_event_time: AtomicI64,
    /// Watermark at the sinks: the minimum over the final tasks.
    task_watermarks: Vec<AtomicI64>,
    /// Dead letters per step, for the summary.
    pub dlq_by_step: Mutex<Vec<(String, u64)>>,
    /// The first failure per step: (step, error, detail such as a Python traceback).
    pub first_failures: Mutex<Vec<FirstFailure>>,
    /// Dead letters per cause (fingerprint), at most [`MAX_CAUSES`] of them.
    pub dlq_by_cause: Mutex<Vec<DeadLetterCause>>,
    /// Each UDF's circuit breaker, by UDF name.
    pub breakers: Mutex<Vec<(String, Arc<BreakerStatus>)>>,
    /// Checkpoint counters and the last completed checkpoint.
    pub checkpoints: Mutex<CheckpointStats>,
}

/// A UDF's circuit breaker as the control API reports it (its owner updates it).
#[derive(Debug, Default)]
pub struct BreakerStatus {
    /// Calls are paused: most recent records failed transiently.
    pub open: AtomicBool,
    /// Times it opened in this run.
    pub openings: AtomicU64,
    /// Records held (not dead-lettered) while it was open.
    pub held: AtomicU64,
}

/// Causes tracked per run: a run failing in more distinct ways counts the rest under the
/// last one's step with the fingerprint `other`.
pub const MAX_CAUSES: usize = 50;

/// Dead letters sharing a cause (see `dlq::fingerprint`): how many, since when, until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterCause {
    pub fingerprint: String,
    pub step: String,
    pub error_type: String,
    pub count: u64,
    /// Wall-clock times of the first and the latest, ms since the epoch.
    pub first_ms: i64,
    pub last_ms: i64,
}

/// What the control API and the summary report about checkpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    pub completed: u64,
    pub failed: u64,
    pub last_id: Option<u64>,
    pub last_duration_ms: u64,
    pub last_state_bytes: u64,
    pub last_uploaded_bytes: u64,
    pub last_files: u64,
    /// The checkpoint the run resumed from, if any.
    pub restored_from: Option<u64>,
}

impl Metrics {
    pub fn new(final_tasks: usize) -> Self {
        Metrics {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            late: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            remediated: AtomicU64::new(0),
            remediation_dropped: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            absorbed: AtomicU64::new(0),
            created: AtomicU64::new(0),
            dead_ends: AtomicU64::new(0),
            restored: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            backpressure_ns: AtomicU64::new(0),
            max_event_time: AtomicI64::new(WATERMARK_START),
            task_watermarks: (0..final_tasks)
                .map(|_| AtomicI64::new(WATERMARK_START))
                .collect(),
            dlq_by_step: Mutex::new(Vec::new()),
            first_failures: Mutex::new(Vec::new()),
            dlq_by_cause: Mutex::new(Vec::new()),
            breakers: Mutex::new(Vec::new()),
            checkpoints: Mutex::new(CheckpointStats::default()),
        }
    }

    pub fn checkpoint_stats(&self) -> CheckpointStats {
        self.checkpoints
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    pub fn update_checkpoints(&self, f: impl FnOnce(&mut CheckpointStats)) {
        if let Ok(mut c) = self.checkpoints.lock() {
            f(&mut c);
        }
    }

    pub fn set_task_watermark(&self, task: usize, wm: EventTime) {
        if let Some(slot) = self.task_watermarks.get(task) {
            slot.fetch_max(wm, Ordering::Relaxed);
        }
    }

    /// The output watermark: the minimum over the final tasks.
    pub fn watermark(&self) -> EventTime {
        self.task_watermarks
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .min()
            .unwrap_or(WATERMARK_START)
    }

    pub fn backpressure_seconds(&self) -> f64 {
        self.backpressure_ns.load(Ordering::Relaxed) as f64 / 1e9
    }

    pub fn note_dead_letters(&self, step: &str, n: u64) {
        self.dead_letters.fetch_add(n, Ordering::Relaxed);
        if let Ok(mut by_step) = self.dlq_by_step.lock() {
            match by_step.iter_mut().find(|(s, _)| s == step) {
                Some((_, c)) => *c += n,
                None => by_step.push((step.to_string(), n)),
            }
        }
    }

    /// UDFs whose circuit breaker opened in this run: (udf, openings, records held).
    pub fn outages(&self) -> Vec<(String, u64, u64)> {
        self.breakers
            .lock()
            .map(|b| {
                b.iter()
                    .map(|(udf, s)| {
                        (
                            udf.clone(),
                            s.openings.load(Ordering::Relaxed),
                            s.held.load(Ordering::Relaxed),
                        )
                    })
                    .filter(|(_, openings, _)| *openings > 0)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The UDFs' circuit breakers, for the control API and the summary.
    pub fn register_breakers(&self, breakers: impl Iterator<Item = (String, Arc<BreakerStatus>)>) {
        if let Ok(mut b) = self.breakers.lock() {
            b.extend(breakers);
        }
    }

    /// Counts a dead letter under its cause.
    pub fn note_cause(&self, fingerprint: &str, step: &str, error_type: &str, at_ms: i64) {
        let Ok(mut causes) = self.dlq_by_cause.lock() else {
            return;
        };
        let key =
            if causes.len() >= MAX_CAUSES && !causes.iter().any(|c| c.fingerprint == fingerprint) {
                "other"
            } else {
                fingerprint
            };
        match causes.iter_mut().find(|c| c.fingerprint == key) {
            Some(c) => {
                c.count += 1;
                c.first_ms = c.first_ms.min(at_ms);
                c.last_ms = c.last_ms.max(at_ms);
            }
            None => causes.push(DeadLetterCause {
                fingerprint: key.to_string(),
                step: step.to_string(),
                error_type: if key == "other" { "other" } else { error_type }.to_string(),
                count: 1,
                first_ms: at_ms,
                last_ms: at_ms,
            }),
        }
    }

    /// The causes, most dead letters first.
    pub fn causes(&self) -> Vec<DeadLetterCause> {
        let mut causes = self
            .dlq_by_cause
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        causes.sort_by(|a, b| b.count.cmp(&a.count).then(b.last_ms.cmp(&a.last_ms)));
        causes
    }

    /// Keeps the first failure of each step for the run summary.
    pub fn note_failure(&self, step: &str, error: &str, detail: Option<&str>) {
        if let Ok(mut firsts) = self.first_failures.lock() {
            if !firsts.iter().any(|f| f.step == step) {
                firsts.push(FirstFailure {
                    step: step.to_string(),
                    error: error.to_string(),
                    detail: detail.map(str::to_string),
                });
            }
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            remediated: self.remediated.load(Ordering::Relaxed),
            remediation_dropped: self.remediation_dropped.load(Ordering::Relaxed),
            filtered: self.filtered.load(Ordering::Relaxed),
            absorbed: self.absorbed.load(Ordering::Relaxed),
            created: self.created.load(Ordering::Relaxed),
            dead_ends: self.dead_ends.load(Ordering::Relaxed),
            restored: self.restored.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            watermark: self.watermark(),
            max_event_time: self.max_event_time.load(Ordering::Relaxed),
        }
    }
}

/// A consistent-enough reading of the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub records_in: u64,
    pub records_out: u64,
    pub late: u64,
    pub dead_letters: u64,
    pub remediated: u64,
    pub remediation_dropped: u64,
    pub filtered: u64,
    pub absorbed: u64,
    pub created: u64,
    pub dead_ends: u64,
    pub restored: u64,
    pub replayed: u64,
    pub watermark: EventTime,
    pub max_event_time: EventTime,
}

/// Where every record went: each record read (from a source, or from an unaligned
/// checkpoint's in-flight data after a restore), and each record a step made (a flat map's
/// extra outputs, a fired window, a keyed function's output), ends exactly once as output,
/// filtered, taken into state (a window or a keyed function's state), dead-lettered, late or
/// dropped by a remediation. So `read + made = out + filtered + into_state + dead + late +
/// dropped` once the run is over; while it runs, the difference is what is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accounting {
    pub read: u64,
    /// Of `read`: dead letters sent back in by a replay (not a term of its own).
    pub replayed: u64,
    /// In-flight records of the checkpoint the run restored (unaligned), sent again.
    pub restored: u64,
    pub made: u64,
    pub out: u64,
    pub filtered: u64,
    pub into_state: u64,
    /// Dead letters that are a record's end (not a late record's copy, not a window
    /// aggregate's failure; not bad input, which never became a record).
    pub dead: u64,
    pub late: u64,
    pub dropped: u64,
}

impl Accounting {
    /// Records not accounted for yet: in flight while the run goes on; zero at its end.
    pub fn in_flight(&self) -> i64 {
        let sources = self.read + self.restored + self.made;
        let ends =
            self.out + self.filtered + self.into_state + self.dead + self.late + self.dropped;
        sources as i64 - ends as i64
    }
}

impl Snapshot {
    pub fn accounting(&self) -> Accounting {
        Accounting {
            read: self.records_in,
            replayed: self.replayed,
            restored: self.restored,
            made: self.created,
            out: self.records_out,
            filtered: self.filtered,
            into_state: self.absorbed,
            dead: self.dead_ends,
            late: self.late,
            dropped: self.remediation_dropped,
        }
    }

    /// How far the output watermark trails the newest event time read (event-time lag).
    pub fn lag(&self) -> Option<Duration> {
        if self.watermark == WATERMARK_START || self.max_event_time == WATERMARK_START {
            return None;
        }
        if self.watermark == i64::MAX {
            return Some(Duration::ZERO);
        }
        Some(Duration::from_millis(
            self.max_event_time.saturating_sub(self.watermark).max(0) as u64,
        ))
    }
}

/// Formats a count with thousands separators.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Formats a rate: `812/s`, `45.2k/s`, `1.31M/s`.
pub fn rate(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2}M/s", per_sec / 1e6)
    } else if per_sec >= 1e3 {
        format!("{:.1}k/s", per_sec / 1e3)
    } else {
        format!("{per_sec:.0}/s")
    }
}

/// The one-line progress report printed on long runs.
pub fn progress_line(
    name: &str,
    elapsed: Duration,
    now: &Snapshot,
    prev: &Snapshot,
    interval: Duration,
) -> String {
    let secs = interval.as_secs_f64().max(1e-9);
    let mut line = format!(
        "[{name}] {:>6.1}s  in {} ({})  out {}  late {}  dlq {}  watermark {}",
        elapsed.as_secs_f64(),
        count(now.records_in),
        rate(now.records_in.saturating_sub(prev.records_in) as f64 / secs),
        count(now.records_out),
        count(now.late),
        count(now.dead_letters),
        format_time(now.watermark),
    );
    if let Some(lag) = now.lag() {
        let _ = write!(
            line,
            "  lag {}",
            humantime::format_duration(Duration::from_millis(lag.as_millis() as u64))
        );
    }
    line
}

/// The first record a step dead-lettered, shown in the run summary.
#[derive(Clone, Debug, PartialEq)]
pub struct FirstFailure {
    pub step: String,
    pub error: String,
    pub detail: Option<String>,
}

/// Lines of a traceback the summary shows (its end, where the error is).
const DETAIL_LINES: usize = 12;

/// What a finished run reports.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    pub pipeline: String,
    pub elapsed: Duration,
    pub parallelism: usize,
    pub totals: Snapshot,
    pub dlq_by_step: Vec<(String, u64)>,
    pub first_failures: Vec<FirstFailure>,
    pub dlq_path: String,
    /// Set when the run was stopped by the user before its input ended.
    pub stopped_early: bool,
    /// Checkpoint figures (None when checkpoints are off).
    pub checkpoints: Option<CheckpointStats>,
    /// The stop took a checkpoint and halted; the next run resumes there.
    pub stopped_at_checkpoint: bool,
    /// UDFs whose circuit breaker opened: (udf, openings, records held).
    pub outages: Vec<(String, u64, u64)>,
}

impl RunSummary {
    pub fn render(&self) -> String {
        let t = &self.totals;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut s = format!(
            "pipeline `{}` {} in {:.2}s with {} task(s)\n",
            self.pipeline,
            if self.stopped_early {
                "stopped"
            } else {
                "finished"
            },
            self.elapsed.as_secs_f64(),
            self.parallelism
        );
        let _ = writeln!(
            s,
            "  records in    {:>12}  ({})",
            count(t.records_in),
            rate(t.records_in as f64 / secs)
        );
        let _ = writeln!(s, "  records out   {:>12}", count(t.records_out));
        let _ = writeln!(s, "  late          {:>12}", count(t.late));
        if t.remediated + t.remediation_dropped > 0 {
            let _ = writeln!(
                s,
                "  remediated    {:>12}  repaired, {} dropped",
                count(t.remediated),
                count(t.remediation_dropped)
            );
        }
        let _ = write!(s, "  dead letters  {:>12}", count(t.dead_letters));
        if t.dead_letters > 0 {
            let _ = write!(s, "  -> {}", self.dlq_path);
            for (step, n) in &self.dlq_by_step {
                let _ = write!(s, "\n      {:>10}  {step}", count(*n));
                let Some(first) = self.first_failures.iter().find(|f| &f.step == step) else {
                    continue;
                };
                let _ = write!(s, "\n                  first: {}", first.error);
                if let Some(detail) = &first.detail {
                    let lines: Vec<&str> = detail.trim_end().lines().collect();
                    let skip = lines.len().saturating_sub(DETAIL_LINES);
                    if skip > 0 {
                        let _ = write!(
                            s,
                            "\n                    ... ({skip} more lines in the DLQ)"
                        );
                    }
                    for line in &lines[skip..] {
                        let _ = write!(s, "\n                    {line}");
                    }
                }
            }
        }
        s.push('\n');
        let a = t.accounting();
        let _ = writeln!(
            s,
            "  accounting    {} read{}{} + {} made = {} out + {} filtered + {} into state + {} dead + {} late + {} dropped{}",
            count(a.read),
            match a.replayed {
                0 => String::new(),
                n => format!(" ({} of them dead letters replayed)", count(n)),
            },
            match a.restored {
                0 => String::new(),
                n => format!(" + {} restored in flight", count(n)),
            },
            count(a.made),
            count(a.out),
            count(a.filtered),
            count(a.into_state),
            count(a.dead),
            count(a.late),
            count(a.dropped),
            match a.in_flight() {
                0 => String::new(),
                n if self.stopped_early => format!("; {n} in flight at the stop"),
                n => format!("; UNBALANCED by {n}: please report this as a bug"),
            }
        );
        for (udf, openings, held) in &self.outages {
            let _ = writeln!(
                s,
                "  outages       udf `{udf}`: its circuit breaker opened {openings} time(s); {} record(s) waited instead of going to the DLQ",
                count(*held)
            );
        }
        let _ = write!(s, "  watermark     {}", format_time(t.watermark));
        if let Some(c) = &self.checkpoints {
            let _ = write!(s, "\n  checkpoints   {:>12}", count(c.completed));
            if let Some(id) = c.last_id {
                let _ = write!(
                    s,
                    "  (last: #{id}, {} ms, state {}, uploaded {})",
                    c.last_duration_ms,
                    bytes(c.last_state_bytes),
                    bytes(c.last_uploaded_bytes)
                );
            }
            if c.failed > 0 {
                let _ = write!(s, "; {} abandoned", c.failed);
            }
            if let Some(from) = c.restored_from {
                let _ = write!(s, "\n  resumed from  checkpoint #{from}");
            }
            if self.stopped_at_checkpoint {
                let _ = write!(
                    s,
                    "\n  stopped at checkpoint #{}: run the same command again to resume",
                    c.last_id.unwrap_or_default()
                );
            }
        }
        s
    }
}

/// A byte count for people: `512 B`, `1.5 MB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Prints the progress line every `interval` until `done` is set; returns on its own.
pub fn report_progress(
    name: &str,
    metrics: &Metrics,
    interval: Duration,
    done: &std::sync::atomic::AtomicBool,
) {
    let started = Instant::now();
    let mut prev = metrics.snapshot();
    let mut next = started + interval;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        if now < next {
            continue;
        }
        let snap = metrics.snapshot();
        eprintln!(
            "{}",
            progress_line(name, now - started, &snap, &prev, interval)
        );
        prev = snap;
        next = now + interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_rates_read_well() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(rate(812.0), "812/s");
        assert_eq!(rate(45_200.0), "45.2k/s");
        assert_eq!(rate(1_310_000.0), "1.31M/s");
    }

    #[test]
    fn watermark_is_min_of_final_tasks_and_lag_follows() {
        let m = Metrics::new(2);
        m.set_task_watermark(0, 1_000);
        assert_eq!(m.watermark(), WATERMARK_START);
        m.set_task_watermark(1, 400);
        m.max_event_time.store(1_500, Ordering::Relaxed);
        let s = m.snapshot();
        assert_eq!(s.watermark, 400);
        assert_eq!(s.lag(), Some(Duration::from_millis(1_100)));
    }

    /// The summary of a one-second run of pipeline `p` with these metrics.
    fn summary(m: &Metrics) -> RunSummary {
        RunSummary {
            pipeline: "p".into(),
            elapsed: Duration::from_secs(1),
            parallelism: 1,
            totals: m.snapshot(),
            dlq_by_step: m.dlq_by_step.lock().expect("lock").clone(),
            first_failures: m.first_failures.lock().expect("lock").clone(),
            dlq_path: "dlq.jsonl".into(),
            stopped_early: false,
            checkpoints: None,
            stopped_at_checkpoint: false,
            outages: m.outages(),
        }
    }

    #[test]
    fn the_summary_shows_the_accounting_and_says_when_it_does_not_balance() {
        let m = Metrics::new(1);
        for (counter, n) in [
            (&m.records_in, 10),
            (&m.created, 3),
            (&m.records_out, 4),
            (&m.filtered, 2),
            (&m.absorbed, 5),
            (&m.dead_ends, 1),
            (&m.late, 1),
        ] {
            counter.store(n, Ordering::Relaxed);
        }
        let text = summary(&m).render();
        assert!(
            text.contains("  accounting    10 read + 3 made = 4 out + 2 filtered + 5 into state + 1 dead + 1 late + 0 dropped\n"),
            "{text}"
        );
        assert_eq!(m.snapshot().accounting().in_flight(), 0);
        m.restored.store(2, Ordering::Relaxed);
        let text = summary(&m).render();
        assert!(
            text.contains("10 read + 2 restored in flight + 3 made"),
            "{text}"
        );
        assert!(
            text.contains("; UNBALANCED by 2: please report this as a bug"),
            "{text}"
        );
    }

    #[test]
    fn summary_lists_dead_letters_by_step() {
        let m = Metrics::new(1);
        m.records_in.store(10, Ordering::Relaxed);
        m.note_dead_letters("decode", 2);
        m.note_dead_letters("decode", 1);
        m.note_failure("decode", "not valid JSON", None);
        m.note_failure("decode", "a later error", None);
        m.note_dead_letters("steps[0] udf f", 1);
        m.note_failure(
            "steps[0] udf f",
            "ValueError: bad",
            Some("Traceback (most recent call last):\n  File \"u.py\", line 3, in f\nValueError: bad\n"),
        );
        let s = summary(&m);
        let text = s.render();
        assert!(
            text.contains("dead letters             4  -> dlq.jsonl"),
            "{text}"
        );
        assert!(
            text.contains("3  decode\n                  first: not valid JSON\n"),
            "{text}"
        );
        assert!(!text.contains("a later error"), "{text}");
        assert!(
            text.contains("first: ValueError: bad\n                    Traceback"),
            "{text}"
        );
        assert!(text.contains("File \"u.py\", line 3, in f"), "{text}");
    }

    #[test]
    fn dead_letters_are_counted_per_cause_up_to_a_limit() {
        let m = Metrics::new(1);
        m.note_cause("a", "decode", "decode", 2_000);
        m.note_cause("a", "decode", "decode", 1_000);
        for i in 0..MAX_CAUSES + 5 {
            m.note_cause(&format!("c{i}"), "steps[0] udf f", "ValueError", 3_000);
        }
        m.note_cause("a", "decode", "decode", 4_000);
        let causes = m.causes();
        assert_eq!(causes.len(), MAX_CAUSES + 1, "the rest under `other`");
        let other = causes
            .iter()
            .find(|c| c.fingerprint == "other")
            .expect("other");
        assert_eq!((other.count, other.error_type.as_str()), (6, "other"));
        assert_eq!(causes[0].fingerprint, "other", "most dead letters first");
        let a = causes.iter().find(|c| c.fingerprint == "a").expect("a");
        assert_eq!((a.count, a.first_ms, a.last_ms), (3, 1_000, 4_000));
    }

    #[test]
    fn the_summary_names_udfs_whose_circuit_breaker_opened() {
        let m = Metrics::new(1);
        let calm = Arc::new(BreakerStatus::default());
        let hit = Arc::new(BreakerStatus::default());
        hit.openings.store(2, Ordering::Relaxed);
        hit.held.store(1500, Ordering::Relaxed);
        m.register_breakers(vec![("calm".to_string(), calm), ("geo".to_string(), hit)].into_iter());
        assert_eq!(m.outages(), vec![("geo".to_string(), 2, 1500)]);
        let s = summary(&m);
        let text = s.render();
        assert!(
            text.contains("outages       udf `geo`: its circuit breaker opened 2 time(s); 1,500 record(s) waited instead of going to the DLQ"),
            "{text}"
        );
        assert!(!text.contains("calm"), "{text}");
    }
}
