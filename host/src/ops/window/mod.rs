//! Keyed windows with built-in aggregates, state in RocksDB.
//!
//! State (keys from [`crate::state::layout`]): one accumulator entry per key and window
//! ([`Tag::WindowAccumulator`], the encoded accumulators; a session's value starts with its
//! end), and one entry per `count_distinct` member ([`Tag::WindowMember`]).
//!
//! Timers (fire at `end - 1`, clean up at `end - 1 + allowed_lateness`) are kept in an
//! in-memory index derived from the state keys. A window fires once when the watermark
//! reaches its end; a record that arrives after that but within the allowed lateness updates
//! the window and emits the updated result at once. A record all of whose windows are past
//! their lateness is *late* and goes to the step's late-data policy.
//!
//! The step is spread over: `fixed` (tumbling and sliding windows), `session` (session
//! windows and their merges), `state_access` (reading and writing the state), `output` (result
//! records), `late` (the late-data policy) and `udf_aggregates` (user-defined aggregates).

mod fixed;
mod late;
mod output;
mod session;
mod state_access;
mod udf_aggregates;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::config::spec::AggregateSpec;
use crate::record::{Batch, EventTime, WATERMARK_START};
use crate::state::layout::{self, Tag};
use crate::state::{StateBatch, StateError, StateStore, TimerIndex};
use crate::time::{TimeWindow, WindowAssigner};
use crate::udf::UdfRuntime;
use crate::value::Str;

use super::retry::{CancelSignal, RetryPolicy};
use super::{Context, OpError, Operator};
use state_access::{parse_session_key, parse_window_key};

pub use late::LateTarget;

/// What a window timer does. Fire sorts before Cleanup, so at the same time a window fires
/// before it is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Fire,
    Cleanup,
}

/// A user-defined aggregate: the function and the runtime that serves it.
#[derive(Clone)]
pub struct UdfAggregate {
    pub runtime: Arc<dyn UdfRuntime>,
    pub function: String,
    /// How a failing ADD is retried (the UDF's `retry:`).
    pub retry: RetryPolicy,
    /// The UDF's circuit breaker (see [`super::breaker`]), if it has one.
    pub breaker: Option<Arc<super::breaker::Breaker>>,
}

impl std::fmt::Debug for UdfAggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UdfAggregate({} {})", self.runtime.name(), self.function)
    }
}

/// Everything a window step needs besides its state store.
#[derive(Clone, Debug)]
pub struct WindowConfig {
    pub step: String,
    pub op_id: u16,
    pub assigner: WindowAssigner,
    pub allowed_lateness_ms: i64,
    pub aggregates: Vec<AggregateSpec>,
    /// Output field names for the key (one per `key_by` field).
    pub key_names: Vec<Str>,
    pub late: LateTarget,
    pub max_parallelism: u32,
    /// Per aggregate (same order): the function of a `udf(...)` aggregate.
    pub udfs: Vec<Option<UdfAggregate>>,
}

pub struct WindowOp {
    cfg: WindowConfig,
    store: StateStore,
    watermark: EventTime,
    /// Pending timers: (time, (kind, accumulator key)); derived from the state on restore.
    timers: TimerIndex<(TimerKind, Vec<u8>)>,
    scratch: Vec<TimeWindow>,
    /// Wakes a wait between attempts when the run is cancelled.
    cancel: CancelSignal,
}

impl WindowOp {
    pub fn new(cfg: WindowConfig, store: StateStore) -> Self {
        WindowOp {
            cfg,
            store,
            watermark: WATERMARK_START,
            timers: TimerIndex::new(),
            scratch: Vec::new(),
            cancel: CancelSignal::default(),
        }
    }

    /// Waits between attempts end early when `cancel` fires (the run is being cancelled).
    pub fn with_cancel(mut self, cancel: CancelSignal) -> Self {
        self.cancel = cancel;
        self
    }

    /// Number of windows with pending timers (for tests and metrics).
    pub fn open_windows(&self) -> usize {
        self.timers
            .iter()
            .filter(|(_, (k, _))| *k == TimerKind::Cleanup)
            .count()
    }

    pub(super) fn state_err(&self, source: StateError) -> OpError {
        OpError::State {
            step: self.cfg.step.clone(),
            source,
        }
    }

    pub(super) fn register_timers(&mut self, w: &TimeWindow, skey: &[u8]) {
        if self.watermark < w.max_timestamp() {
            self.timers
                .insert(w.max_timestamp(), (TimerKind::Fire, skey.to_vec()));
        }
        self.timers
            .insert(self.cleanup_time(w), (TimerKind::Cleanup, skey.to_vec()));
    }

    pub(super) fn remove_timers(&mut self, w: &TimeWindow, skey: &[u8]) {
        self.timers
            .remove(w.max_timestamp(), (TimerKind::Fire, skey.to_vec()));
        self.timers
            .remove(self.cleanup_time(w), (TimerKind::Cleanup, skey.to_vec()));
    }

    /// When a window is deleted: its allowed lateness after it fired.
    fn cleanup_time(&self, w: &TimeWindow) -> EventTime {
        w.max_timestamp()
            .saturating_add(self.cfg.allowed_lateness_ms)
    }
}

impl Operator for WindowOp {
    fn process(&mut self, batch: Batch, ctx: &mut Context) -> Result<Batch, OpError> {
        // Every record is either taken into a window or late (see `handle_late`).
        let (records, late_before) = (batch.len() as u64, ctx.late);
        let out = if self.cfg.assigner.is_session() {
            self.process_session(batch, ctx)?
        } else {
            self.process_fixed(batch, ctx)?
        };
        ctx.absorbed += records - (ctx.late - late_before);
        ctx.created += out.len() as u64;
        Ok(out)
    }

    fn on_watermark(&mut self, watermark: EventTime, ctx: &mut Context) -> Result<Batch, OpError> {
        if watermark <= self.watermark {
            return Ok(Vec::new());
        }
        self.watermark = watermark;
        let mut out = Vec::new();
        let mut wb = StateBatch::new();
        while let Some((_, (kind, skey))) = self.timers.pop_due(watermark) {
            match kind {
                TimerKind::Fire => out.extend(self.fire(&skey, ctx)?),
                TimerKind::Cleanup => self.cleanup(&skey, &mut wb)?,
            }
        }
        self.store.write(wb).map_err(|e| self.state_err(e))?;
        ctx.created += out.len() as u64;
        Ok(out)
    }

    fn restore(&mut self, key_groups: (u16, u16), watermark: EventTime) -> Result<(), OpError> {
        self.watermark = watermark;
        self.timers.clear();
        let store = self.store.clone();
        for kg in key_groups.0..=key_groups.1 {
            let mut windows: Vec<(Vec<u8>, TimeWindow)> = Vec::new();
            let mut bad: Option<Vec<u8>> = None;
            store
                .for_each_in_prefix(
                    &layout::tag_prefix(kg, self.cfg.op_id, Tag::WindowAccumulator),
                    |k, v| {
                        let window = if self.cfg.assigner.is_session() {
                            let start = parse_session_key(k).map(|(_, s)| s);
                            match (start, self.decode_session(k, v)) {
                                (Some(start), Ok((end, _))) => Some(TimeWindow { start, end }),
                                _ => None,
                            }
                        } else {
                            parse_window_key(k).map(|(_, w)| w)
                        };
                        match window {
                            Some(w) => windows.push((k.to_vec(), w)),
                            None => bad = Some(k.to_vec()),
                        }
                        Ok(())
                    },
                )
                .map_err(|e| self.state_err(e))?;
            if let Some(k) = bad {
                return Err(self.state_err(StateError::Corrupt(format!(
                    "window state key {k:?} cannot be decoded"
                ))));
            }
            for (k, w) in windows {
                self.register_timers(&w, &k);
            }
        }
        Ok(())
    }
}
