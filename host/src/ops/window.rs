//! Keyed windows with built-in aggregates, state in RocksDB.
//!
//! State layout (all keys start with the key group, see [`crate::state`]):
//! - accumulators: `kg | op | 0x01 | key_len | key | start | end` → encoded accumulators
//! - `count_distinct` members: `kg | op | 0x02 | key_len | key | start | end | agg | value`
//!
//! Timers (fire at `end - 1`, clean up at `end - 1 + allowed_lateness`) are kept in an
//! in-memory index derived from the state keys. A window fires once when the watermark
//! reaches its end; a record that arrives after that but within the allowed lateness updates
//! the window and emits the updated result at once. A record all of whose windows are past
//! their lateness is *late* and goes to the step's late-data policy.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use rocksdb::WriteBatch;

use crate::config::spec::{AggregateFn, AggregateSpec};
use crate::dlq::ErrorClass;
use crate::record::{Batch, EventTime, Origin, Record, WATERMARK_START};
use crate::state::store::Entry;
use crate::state::{key_group_of, KeyGroup, StateError, StateStore};
use crate::time::{format_time, TimeWindow, WindowAssigner};
use crate::udf::{AggregateInput, AggregateOp, AggregateOutput, FunctionError, UdfRuntime};
use crate::value::{Object, Str, Value};

use super::aggregate::{decode_all, encode_all, Acc};
use super::{dead_letter_for, Context, OpError, Operator};

const TAG_ACC: u8 = 1;
const TAG_MEMBER: u8 = 2;

/// Where records later than the allowed lateness go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LateTarget {
    /// Index of a side-output sink.
    Sink(usize),
    Dlq,
    Drop,
}

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
    timers: BTreeSet<(EventTime, TimerKind, Vec<u8>)>,
    scratch: Vec<TimeWindow>,
}

struct Cached {
    accs: Vec<Acc>,
    dirty: bool,
}

impl WindowOp {
    pub fn new(cfg: WindowConfig, store: StateStore) -> Self {
        WindowOp {
            cfg,
            store,
            watermark: WATERMARK_START,
            timers: BTreeSet::new(),
            scratch: Vec::new(),
        }
    }

    /// Number of windows with pending timers (for tests and metrics).
    pub fn open_windows(&self) -> usize {
        self.timers
            .iter()
            .filter(|(_, k, _)| *k == TimerKind::Cleanup)
            .count()
    }

    fn state_err(&self, source: StateError) -> OpError {
        OpError::State {
            step: self.cfg.step.clone(),
            source,
        }
    }

    fn is_late(&self, w: &TimeWindow) -> bool {
        w.max_timestamp()
            .saturating_add(self.cfg.allowed_lateness_ms)
            <= self.watermark
    }

    fn register_timers(&mut self, w: &TimeWindow, skey: &[u8]) {
        if self.watermark < w.max_timestamp() {
            self.timers
                .insert((w.max_timestamp(), TimerKind::Fire, skey.to_vec()));
        }
        let cleanup = w
            .max_timestamp()
            .saturating_add(self.cfg.allowed_lateness_ms);
        self.timers
            .insert((cleanup, TimerKind::Cleanup, skey.to_vec()));
    }

    fn remove_timers(&mut self, w: &TimeWindow, skey: &[u8]) {
        self.timers
            .remove(&(w.max_timestamp(), TimerKind::Fire, skey.to_vec()));
        let cleanup = w
            .max_timestamp()
            .saturating_add(self.cfg.allowed_lateness_ms);
        self.timers
            .remove(&(cleanup, TimerKind::Cleanup, skey.to_vec()));
    }

    fn new_accs(&self) -> Vec<Acc> {
        self.cfg
            .aggregates
            .iter()
            .map(|a| Acc::new(a.func))
            .collect()
    }

    fn load(&self, skey: &[u8]) -> Result<Option<Vec<Acc>>, OpError> {
        match self.store.get(skey).map_err(|e| self.state_err(e))? {
            None => Ok(None),
            Some(bytes) => decode_all(&bytes, self.cfg.aggregates.len())
                .map(Some)
                .ok_or_else(|| OpError::State {
                    step: self.cfg.step.clone(),
                    source: StateError::Corrupt(format!(
                        "window accumulator under key {skey:?} cannot be decoded"
                    )),
                }),
        }
    }

    fn handle_late(&self, record: &Record, ctx: &mut Context) {
        ctx.late += 1;
        match &self.cfg.late {
            LateTarget::Sink(idx) => ctx.side.push((*idx, record.value.clone())),
            LateTarget::Dlq => ctx.dead.push(dead_letter_for(
                record,
                &self.cfg.step,
                ErrorClass::Permanent,
                format!(
                    "late record: event time {} is past every window's allowed lateness ({} ms) at watermark {}",
                    format_time(record.time),
                    self.cfg.allowed_lateness_ms,
                    format_time(self.watermark)
                ),
            )),
            LateTarget::Drop => {}
        }
    }

    fn udf_error(&self, e: crate::udf::RuntimeError) -> OpError {
        OpError::Udf {
            step: self.cfg.step.clone(),
            message: e.to_string(),
        }
    }

    /// Folds the records pending in user-defined accumulators into them: one call per
    /// aggregate for all the given windows. A window whose call fails keeps its accumulator
    /// and its records go to the DLQ with the error.
    fn settle(&self, windows: &mut [&mut Vec<Acc>], ctx: &mut Context) -> Result<(), OpError> {
        for (i, udf) in self.cfg.udfs.iter().enumerate() {
            let Some(udf) = udf else { continue };
            let mut which = Vec::new();
            let mut inputs = Vec::new();
            for (j, accs) in windows.iter_mut().enumerate() {
                if let Some(Acc::Udf { acc, pending }) = accs.get_mut(i) {
                    if !pending.is_empty() {
                        which.push(j);
                        inputs.push(AggregateInput {
                            accumulators: if acc.is_empty() {
                                vec![]
                            } else {
                                vec![acc.clone()]
                            },
                            values: std::mem::take(pending),
                        });
                    }
                }
            }
            if inputs.is_empty() {
                continue;
            }
            let outcomes = udf
                .runtime
                .invoke_aggregate(&udf.function, AggregateOp::Add, inputs.clone())
                .map_err(|e| self.udf_error(e))?;
            for ((j, input), outcome) in which.into_iter().zip(inputs).zip(outcomes) {
                match outcome {
                    Ok(AggregateOutput::Accumulator(bytes)) => {
                        if let Some(Acc::Udf { acc, .. }) = windows[j].get_mut(i) {
                            *acc = bytes;
                        }
                    }
                    Ok(AggregateOutput::Result(_)) => {}
                    // Find the record(s) the function fails on: fold the batch in one record
                    // at a time, dead-lettering only those that fail.
                    Err(_) => {
                        let mut acc = input.accumulators.into_iter().next().unwrap_or_default();
                        for value in input.values {
                            acc = self.add_one(udf, acc, value, ctx)?;
                        }
                        if let Some(Acc::Udf { acc: slot, .. }) = windows[j].get_mut(i) {
                            *slot = acc;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Folds one record into `acc`; on failure the record goes to the DLQ and `acc` is kept.
    /// Transient failures are retried with backoff first.
    fn add_one(
        &self,
        udf: &UdfAggregate,
        acc: Vec<u8>,
        value: Value,
        ctx: &mut Context,
    ) -> Result<Vec<u8>, OpError> {
        let retry = super::udf::RetryPolicy::default();
        let mut attempt = 1;
        loop {
            let input = AggregateInput {
                accumulators: if acc.is_empty() {
                    vec![]
                } else {
                    vec![acc.clone()]
                },
                values: vec![value.clone()],
            };
            let outcome = udf
                .runtime
                .invoke_aggregate(&udf.function, AggregateOp::Add, vec![input])
                .map_err(|e| self.udf_error(e))?;
            match outcome.into_iter().next() {
                Some(Ok(AggregateOutput::Accumulator(bytes))) => return Ok(bytes),
                Some(Err(err))
                    if err.class == ErrorClass::Transient && attempt < retry.max_attempts =>
                {
                    attempt += 1;
                    std::thread::sleep(retry.backoff(attempt, u64::from(attempt)));
                }
                Some(Err(err)) => {
                    self.dead_aggregate(ctx, value, &udf.function, &err);
                    return Ok(acc);
                }
                _ => return Ok(acc),
            }
        }
    }

    fn dead_aggregate(&self, ctx: &mut Context, value: Value, function: &str, err: &FunctionError) {
        let record = Record::new(value, WATERMARK_START, Origin::default());
        let mut dl = dead_letter_for(
            &record,
            &self.cfg.step,
            err.class,
            format!("aggregate `{function}`: {}", err.message),
        );
        dl.event_time = None;
        dl.detail = err.detail.clone();
        ctx.dead.push(dl);
    }

    /// Merges `from` into `into` (session merges): built-ins directly, user-defined
    /// accumulators through their function when both hold something.
    fn merge_into(
        &self,
        into: &mut [Acc],
        from: &[Acc],
        record: &Record,
        ctx: &mut Context,
    ) -> Result<(), OpError> {
        for (i, (a, o)) in into.iter_mut().zip(from).enumerate() {
            match (a, o, self.cfg.udfs.get(i).and_then(Option::as_ref)) {
                (Acc::Udf { acc, .. }, Acc::Udf { acc: other, .. }, Some(udf))
                    if !acc.is_empty() && !other.is_empty() =>
                {
                    let input = AggregateInput {
                        accumulators: vec![acc.clone(), other.clone()],
                        values: Vec::new(),
                    };
                    let outcome = udf
                        .runtime
                        .invoke_aggregate(&udf.function, AggregateOp::Merge, vec![input])
                        .map_err(|e| self.udf_error(e))?;
                    match outcome.into_iter().next() {
                        Some(Ok(AggregateOutput::Accumulator(bytes))) => *acc = bytes,
                        // The merged session keeps the first accumulator; the record that
                        // bridged the sessions goes to the DLQ with the error.
                        Some(Err(mut err)) => {
                            err.message = format!("failed to merge sessions: {}", err.message);
                            self.dead_aggregate(ctx, record.value.clone(), &udf.function, &err);
                        }
                        _ => {}
                    }
                }
                (a, o, _) => a.merge(o),
            }
        }
        Ok(())
    }

    /// The window's result record; user-defined aggregates are computed by their function
    /// (`null` and a dead letter if it fails).
    fn output(
        &self,
        key: &Value,
        w: &TimeWindow,
        accs: &[Acc],
        ctx: &mut Context,
    ) -> Result<Record, OpError> {
        let mut record = self.output_builtin(key, w, accs);
        for (i, (spec, acc)) in self.cfg.aggregates.iter().zip(accs).enumerate() {
            let (Some(udf), Acc::Udf { acc, .. }) =
                (self.cfg.udfs.get(i).and_then(Option::as_ref), acc)
            else {
                continue;
            };
            let input = AggregateInput {
                accumulators: if acc.is_empty() {
                    vec![]
                } else {
                    vec![acc.clone()]
                },
                values: Vec::new(),
            };
            // An empty accumulator (every ADD for the window failed) still has a result:
            // create()'s.
            let input = if input.accumulators.is_empty() {
                let created = udf
                    .runtime
                    .invoke_aggregate(&udf.function, AggregateOp::Create, vec![input])
                    .map_err(|e| self.udf_error(e))?;
                match created.into_iter().next() {
                    Some(Ok(AggregateOutput::Accumulator(b))) => AggregateInput {
                        accumulators: vec![b],
                        values: Vec::new(),
                    },
                    Some(Err(err)) => {
                        self.dead_aggregate(ctx, record.value.clone(), &udf.function, &err);
                        continue;
                    }
                    _ => continue,
                }
            } else {
                input
            };
            let outcome = udf
                .runtime
                .invoke_aggregate(&udf.function, AggregateOp::Result, vec![input])
                .map_err(|e| self.udf_error(e))?;
            let value = match outcome.into_iter().next() {
                Some(Ok(AggregateOutput::Result(v))) => v,
                Some(Err(err)) => {
                    self.dead_aggregate(ctx, record.value.clone(), &udf.function, &err);
                    Value::Null
                }
                _ => Value::Null,
            };
            if let Value::Object(obj) = &mut record.value {
                obj.insert(spec.name.as_str(), value);
            }
        }
        Ok(record)
    }

    fn output_builtin(&self, key: &Value, w: &TimeWindow, accs: &[Acc]) -> Record {
        let mut obj = Object::with_capacity(self.cfg.key_names.len() + 2 + accs.len());
        match (self.cfg.key_names.as_slice(), key) {
            ([one], k) => obj.push_unchecked(one.clone(), k.clone()),
            (names, Value::Array(parts)) => {
                for (name, part) in names.iter().zip(parts) {
                    obj.insert(name.clone(), part.clone());
                }
            }
            _ => {}
        }
        obj.insert("window_start", Value::Int(w.start));
        obj.insert("window_end", Value::Int(w.end));
        for (spec, acc) in self.cfg.aggregates.iter().zip(accs) {
            obj.insert(spec.name.as_str(), acc.result());
        }
        Record {
            value: Value::Object(obj),
            time: w.max_timestamp(),
            key: Some(key.clone()),
            origin: Origin::default(),
        }
    }

    /// Adds a record's values to `accs`; distinct members are checked against the store and
    /// the members already added in this batch.
    fn accumulate(
        &self,
        record: &Record,
        skey: &[u8],
        accs: &mut [Acc],
        members: &mut HashSet<Vec<u8>>,
        wb: &mut WriteBatch,
    ) -> Result<(), OpError> {
        for (i, (spec, acc)) in self.cfg.aggregates.iter().zip(accs.iter_mut()).enumerate() {
            let v = spec.field.as_ref().and_then(|p| record.value.get_path(p));
            if spec.func == AggregateFn::CountDistinct {
                let Some(v) = v.filter(|v| !matches!(v, Value::Null)) else {
                    continue;
                };
                let mkey = member_key(skey, i as u8, v);
                if members.contains(&mkey) {
                    continue;
                }
                if self
                    .store
                    .get(&mkey)
                    .map_err(|e| self.state_err(e))?
                    .is_none()
                {
                    wb.put(&mkey, []);
                    if let Acc::Distinct(n) = acc {
                        *n += 1;
                    }
                }
                members.insert(mkey);
            } else if let Acc::Udf { pending, .. } = acc {
                pending.push(record.value.clone());
            } else {
                acc.add(v);
            }
        }
        Ok(())
    }

    fn process_fixed(&mut self, batch: Batch, ctx: &mut Context) -> Result<Batch, OpError> {
        let mut out = Vec::new();
        let mut cache: HashMap<Vec<u8>, Cached> = HashMap::new();
        let mut members = HashSet::new();
        let mut wb = WriteBatch::default();
        let mut key_bytes = Vec::with_capacity(32);
        let mut windows = std::mem::take(&mut self.scratch);
        for record in &batch {
            let key = record.key.clone().unwrap_or(Value::Null);
            key_bytes.clear();
            key.key_bytes(&mut key_bytes);
            let kg = key_group_of(&key_bytes, self.cfg.max_parallelism);
            windows.clear();
            self.cfg.assigner.assign(record.time, &mut windows);
            let mut accepted = false;
            for w in &windows {
                if self.is_late(w) {
                    continue;
                }
                accepted = true;
                let skey = window_key(kg, self.cfg.op_id, &key_bytes, w);
                if !cache.contains_key(&skey) {
                    let accs = match self.load(&skey)? {
                        Some(accs) => accs,
                        None => {
                            self.register_timers(w, &skey);
                            self.new_accs()
                        }
                    };
                    cache.insert(skey.clone(), Cached { accs, dirty: false });
                }
                let Some(entry) = cache.get_mut(&skey) else {
                    continue;
                };
                self.accumulate(record, &skey, &mut entry.accs, &mut members, &mut wb)?;
                entry.dirty = true;
                if self.watermark >= w.max_timestamp() {
                    // A late update: its result is due now.
                    self.settle(&mut [&mut entry.accs], ctx)?;
                    let accs = entry.accs.clone();
                    out.push(self.output(&key, w, &accs, ctx)?);
                }
            }
            if !accepted {
                self.handle_late(record, ctx);
            }
        }
        self.scratch = windows;
        if self.cfg.udfs.iter().any(Option::is_some) {
            let mut dirty: Vec<&mut Vec<Acc>> = cache
                .values_mut()
                .filter(|e| e.dirty)
                .map(|e| &mut e.accs)
                .collect();
            self.settle(&mut dirty, ctx)?;
        }
        for (skey, entry) in cache.into_iter().filter(|(_, e)| e.dirty) {
            wb.put(&skey, encode_all(&entry.accs));
        }
        self.store.write(wb).map_err(|e| self.state_err(e))?;
        Ok(out)
    }

    fn process_session(&mut self, batch: Batch, ctx: &mut Context) -> Result<Batch, OpError> {
        let mut out = Vec::new();
        let mut sessions: HashMap<Vec<u8>, Vec<Entry>> = HashMap::new();
        let mut key_bytes = Vec::with_capacity(32);
        let mut proto = Vec::with_capacity(1);
        let has_distinct = self.has_distinct();
        for record in &batch {
            let key = record.key.clone().unwrap_or(Value::Null);
            key_bytes.clear();
            key.key_bytes(&mut key_bytes);
            let kg = key_group_of(&key_bytes, self.cfg.max_parallelism);
            proto.clear();
            self.cfg.assigner.assign(record.time, &mut proto);
            let Some(&new) = proto.first() else { continue };
            // A session's key holds its start only, so extending its end (the common case)
            // rewrites one value instead of deleting and inserting keys.
            let prefix = key_prefix(kg, self.cfg.op_id, TAG_ACC, &key_bytes);
            // A key's sessions are read from RocksDB once per batch, then kept here as this
            // batch changes them (a read per record costs dearly once checkpoints have
            // flushed the memtable into files).
            let entries = match sessions.remove(&prefix) {
                Some(entries) => entries,
                None => self
                    .store
                    .scan_prefix(&prefix)
                    .map_err(|e| self.state_err(e))?,
            };
            let mut existing: Vec<(TimeWindow, Vec<u8>, Vec<Acc>)> = Vec::new();
            for (k, v) in &entries {
                let (k, v) = (k.clone(), v.clone());
                let (end, accs) = self.decode_session(&k, &v)?;
                let Some(start) = k.get(prefix.len()..).and_then(unordered) else {
                    continue;
                };
                let w = TimeWindow { start, end };
                if w.touches(&new) {
                    existing.push((w, k, accs));
                }
            }
            let merged = existing.iter().fold(new, |acc, (w, _, _)| acc.cover(w));
            if self.is_late(&merged) {
                self.handle_late(record, ctx);
                sessions.insert(prefix, entries);
                continue;
            }
            let mkey = session_key(kg, self.cfg.op_id, &key_bytes, merged.start);
            let mut wb = WriteBatch::default();
            let mut accs = self.new_accs();
            let mut moved = false;
            for (w, k, old) in &existing {
                self.merge_into(&mut accs, old, record, ctx)?;
                self.remove_timers(w, k);
                if *k != mkey {
                    wb.delete(k);
                    if has_distinct {
                        self.move_members(k, &mkey, &mut wb)?;
                        moved = true;
                    }
                }
            }
            self.register_timers(&merged, &mkey);
            // Distinct counts of a merged session are the sizes of the merged member sets.
            if moved {
                self.store
                    .write(std::mem::take(&mut wb))
                    .map_err(|e| self.state_err(e))?;
                for (i, acc) in accs.iter_mut().enumerate() {
                    if let Acc::Distinct(n) = acc {
                        let p = member_prefix(&mkey, i as u8);
                        *n = self
                            .store
                            .scan_prefix(&p)
                            .map_err(|e| self.state_err(e))?
                            .len() as u64;
                    }
                }
            }
            let mut members = HashSet::new();
            self.accumulate(record, &mkey, &mut accs, &mut members, &mut wb)?;
            self.settle(&mut [&mut accs], ctx)?;
            let mut value = merged.end.to_le_bytes().to_vec();
            value.extend_from_slice(&encode_all(&accs));
            wb.put(&mkey, &value);
            self.store.write(wb).map_err(|e| self.state_err(e))?;
            let merged_away: Vec<&Vec<u8>> = existing.iter().map(|(_, k, _)| k).collect();
            let mut entries: Vec<Entry> = entries
                .into_iter()
                .filter(|(k, _)| *k != mkey && !merged_away.contains(&k))
                .collect();
            entries.push((mkey, value));
            entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            sessions.insert(prefix, entries);
            if self.watermark >= merged.max_timestamp() {
                out.push(self.output(&key, &merged, &accs, ctx)?);
            }
        }
        Ok(out)
    }

    fn has_distinct(&self) -> bool {
        self.cfg
            .aggregates
            .iter()
            .any(|a| a.func == AggregateFn::CountDistinct)
    }

    /// A session's value: its end (8 bytes, little-endian) then its accumulators.
    fn decode_session(&self, key: &[u8], value: &[u8]) -> Result<(EventTime, Vec<Acc>), OpError> {
        let corrupt = || OpError::State {
            step: self.cfg.step.clone(),
            source: StateError::Corrupt(format!(
                "session state under key {key:?} cannot be decoded"
            )),
        };
        let end = i64::from_le_bytes(
            value
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(corrupt)?,
        );
        let accs = decode_all(&value[8..], self.cfg.aggregates.len()).ok_or_else(corrupt)?;
        Ok((end, accs))
    }

    fn move_members(&self, from: &[u8], to: &[u8], wb: &mut WriteBatch) -> Result<(), OpError> {
        let mut prefix = from.to_vec();
        prefix[4] = TAG_MEMBER;
        let mut target = to.to_vec();
        target[4] = TAG_MEMBER;
        for (k, _) in self
            .store
            .scan_prefix(&prefix)
            .map_err(|e| self.state_err(e))?
        {
            let mut moved = target.clone();
            moved.extend_from_slice(&k[prefix.len()..]);
            wb.put(&moved, []);
            wb.delete(&k);
        }
        Ok(())
    }

    fn fire(&self, skey: &[u8], ctx: &mut Context) -> Result<Option<Record>, OpError> {
        if self.cfg.assigner.is_session() {
            let Some(value) = self.store.get(skey).map_err(|e| self.state_err(e))? else {
                return Ok(None);
            };
            let (end, accs) = self.decode_session(skey, &value)?;
            let Some((key, start)) = parse_session_key(skey) else {
                return Ok(None);
            };
            return Ok(Some(self.output(
                &key,
                &TimeWindow { start, end },
                &accs,
                ctx,
            )?));
        }
        let Some(accs) = self.load(skey)? else {
            return Ok(None);
        };
        let Some((key, w)) = parse_window_key(skey) else {
            return Ok(None);
        };
        Ok(Some(self.output(&key, &w, &accs, ctx)?))
    }

    fn cleanup(&self, skey: &[u8], wb: &mut WriteBatch) -> Result<(), OpError> {
        wb.delete(skey);
        if self.has_distinct() {
            let mut prefix = skey.to_vec();
            prefix[4] = TAG_MEMBER;
            for (k, _) in self
                .store
                .scan_prefix(&prefix)
                .map_err(|e| self.state_err(e))?
            {
                wb.delete(&k);
            }
        }
        Ok(())
    }
}

impl Operator for WindowOp {
    fn process(&mut self, batch: Batch, ctx: &mut Context) -> Result<Batch, OpError> {
        if self.cfg.assigner.is_session() {
            self.process_session(batch, ctx)
        } else {
            self.process_fixed(batch, ctx)
        }
    }

    fn on_watermark(&mut self, watermark: EventTime, ctx: &mut Context) -> Result<Batch, OpError> {
        if watermark <= self.watermark {
            return Ok(Vec::new());
        }
        self.watermark = watermark;
        let mut out = Vec::new();
        let mut wb = WriteBatch::default();
        while let Some(first) = self.timers.first() {
            if first.0 > watermark {
                break;
            }
            let Some((_, kind, skey)) = self.timers.pop_first() else {
                break;
            };
            match kind {
                TimerKind::Fire => out.extend(self.fire(&skey, ctx)?),
                TimerKind::Cleanup => self.cleanup(&skey, &mut wb)?,
            }
        }
        self.store.write(wb).map_err(|e| self.state_err(e))?;
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
                .for_each_in_prefix(&tag_prefix(kg, self.cfg.op_id, TAG_ACC), |k, v| {
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
                })
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

pub(super) fn ordered(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

pub(super) fn unordered(b: &[u8]) -> Option<i64> {
    let arr: [u8; 8] = b.try_into().ok()?;
    Some((u64::from_be_bytes(arr) ^ (1 << 63)) as i64)
}

/// The prefix of every entry of one kind (`tag`) an operator keeps in a key group.
pub(super) fn tag_prefix(kg: KeyGroup, op: u16, tag: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(5);
    k.extend_from_slice(&kg.to_be_bytes());
    k.extend_from_slice(&op.to_be_bytes());
    k.push(tag);
    k
}

pub(super) fn key_prefix(kg: KeyGroup, op: u16, tag: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key.len() + 16);
    k.extend_from_slice(&kg.to_be_bytes());
    k.extend_from_slice(&op.to_be_bytes());
    k.push(tag);
    k.extend_from_slice(&(key.len() as u32).to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn window_key(kg: KeyGroup, op: u16, key: &[u8], w: &TimeWindow) -> Vec<u8> {
    let mut k = key_prefix(kg, op, TAG_ACC, key);
    k.extend_from_slice(&ordered(w.start));
    k.extend_from_slice(&ordered(w.end));
    k
}

fn member_prefix(window_key: &[u8], agg: u8) -> Vec<u8> {
    let mut k = window_key.to_vec();
    k[4] = TAG_MEMBER;
    k.push(agg);
    k
}

fn member_key(window_key: &[u8], agg: u8, v: &Value) -> Vec<u8> {
    let mut k = member_prefix(window_key, agg);
    v.key_bytes(&mut k);
    k
}

fn window_of_key(k: &[u8], prefix_len: usize) -> Option<TimeWindow> {
    let rest = k.get(prefix_len..)?;
    if rest.len() != 16 {
        return None;
    }
    Some(TimeWindow {
        start: unordered(&rest[..8])?,
        end: unordered(&rest[8..])?,
    })
}

fn session_key(kg: KeyGroup, op: u16, key: &[u8], start: EventTime) -> Vec<u8> {
    let mut k = key_prefix(kg, op, TAG_ACC, key);
    k.extend_from_slice(&ordered(start));
    k
}

/// Splits a session key into the key value and the session's start.
fn parse_session_key(k: &[u8]) -> Option<(Value, EventTime)> {
    let len = u32::from_be_bytes(k.get(5..9)?.try_into().ok()?) as usize;
    let key = Value::from_json(k.get(9..9 + len)?).ok()?;
    Some((key, unordered(k.get(9 + len..)?)?))
}

/// Splits an accumulator key into the key value and the window.
fn parse_window_key(k: &[u8]) -> Option<(Value, TimeWindow)> {
    let len = u32::from_be_bytes(k.get(5..9)?.try_into().ok()?) as usize;
    let key = Value::from_json(k.get(9..9 + len)?).ok()?;
    let w = window_of_key(k, 9 + len)?;
    Some((key, w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::split_path;

    fn store() -> (tempfile::TempDir, StateStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = StateStore::open_fresh(&dir.path().join("state")).expect("open");
        (dir, s)
    }

    fn op(
        store: StateStore,
        assigner: WindowAssigner,
        lateness: i64,
        late: LateTarget,
    ) -> WindowOp {
        WindowOp::new(
            WindowConfig {
                step: "steps[1] window".into(),
                op_id: 1,
                assigner,
                allowed_lateness_ms: lateness,
                aggregates: vec![
                    AggregateSpec {
                        func: AggregateFn::Count,
                        field: None,
                        name: "n".into(),
                        udf: None,
                    },
                    AggregateSpec {
                        func: AggregateFn::Sum,
                        field: Some(split_path("v")),
                        name: "total".into(),
                        udf: None,
                    },
                    AggregateSpec {
                        func: AggregateFn::CountDistinct,
                        field: Some(split_path("u")),
                        name: "users".into(),
                        udf: None,
                    },
                ],
                key_names: vec!["k".into()],
                late,
                max_parallelism: 128,
                udfs: vec![None, None, None],
            },
            store,
        )
    }

    fn rec(key: &str, t: i64, v: i64, u: &str) -> Record {
        let value = Value::from_json(format!(r#"{{"k":"{key}","v":{v},"u":"{u}"}}"#).as_bytes())
            .expect("json");
        Record {
            value,
            time: t,
            key: Some(Value::from(key)),
            origin: Origin::default(),
        }
    }

    fn lines(batch: &Batch) -> Vec<String> {
        let mut v: Vec<String> = batch.iter().map(|r| r.value.to_json_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn tumbling_fires_at_watermark_and_cleans_up() {
        let (_d, s) = store();
        let mut w = op(
            s.clone(),
            WindowAssigner::Tumbling { size: 10 },
            0,
            LateTarget::Drop,
        );
        let mut ctx = Context::default();
        let out = w
            .process(
                vec![
                    rec("a", 1, 2, "x"),
                    rec("a", 5, 3, "x"),
                    rec("a", 12, 1, "y"),
                    rec("b", 3, 1, "z"),
                ],
                &mut ctx,
            )
            .expect("process");
        assert!(out.is_empty());
        assert!(w.on_watermark(8, &mut ctx).expect("wm").is_empty());
        let fired = w.on_watermark(9, &mut ctx).expect("wm");
        assert_eq!(
            lines(&fired),
            [
                r#"{"k":"a","window_start":0,"window_end":10,"n":2,"total":5,"users":1}"#,
                r#"{"k":"b","window_start":0,"window_end":10,"n":1,"total":1,"users":1}"#
            ]
        );
        assert_eq!(fired[0].time, 9);
        // a record for the fired window is late (no allowed lateness)
        let out = w
            .process(vec![rec("a", 2, 1, "q")], &mut ctx)
            .expect("process");
        assert!(out.is_empty());
        assert_eq!(ctx.late, 1);
        assert_eq!(w.open_windows(), 1);
        let fired = w.on_watermark(i64::MAX, &mut ctx).expect("wm");
        assert_eq!(
            lines(&fired),
            [r#"{"k":"a","window_start":10,"window_end":20,"n":1,"total":1,"users":1}"#]
        );
        assert_eq!(w.open_windows(), 0);
        assert!(
            s.scan_prefix(&[]).expect("scan").is_empty(),
            "all state cleaned up"
        );
    }

    #[test]
    fn allowed_lateness_emits_updates_then_sends_late_records_to_policy() {
        let (_d, s) = store();
        let mut w = op(
            s,
            WindowAssigner::Tumbling { size: 10 },
            5,
            LateTarget::Sink(3),
        );
        let mut ctx = Context::default();
        w.process(vec![rec("a", 1, 1, "x")], &mut ctx)
            .expect("process");
        assert_eq!(w.on_watermark(10, &mut ctx).expect("wm").len(), 1);
        let upd = w
            .process(vec![rec("a", 2, 10, "y")], &mut ctx)
            .expect("process");
        assert_eq!(
            lines(&upd),
            [r#"{"k":"a","window_start":0,"window_end":10,"n":2,"total":11,"users":2}"#]
        );
        w.on_watermark(14, &mut ctx).expect("wm");
        let out = w
            .process(vec![rec("a", 3, 1, "z")], &mut ctx)
            .expect("process");
        assert!(out.is_empty());
        assert_eq!(ctx.late, 1);
        assert_eq!(ctx.side.len(), 1);
        assert_eq!(ctx.side[0].0, 3);
    }

    #[test]
    fn late_records_go_to_dlq_when_asked() {
        let (_d, s) = store();
        let mut w = op(s, WindowAssigner::Tumbling { size: 10 }, 0, LateTarget::Dlq);
        let mut ctx = Context::default();
        w.on_watermark(100, &mut ctx).expect("wm");
        w.process(vec![rec("a", 3, 1, "z")], &mut ctx)
            .expect("process");
        assert_eq!(ctx.dead.len(), 1);
        assert!(
            ctx.dead[0].error.starts_with("late record"),
            "{}",
            ctx.dead[0].error
        );
    }

    #[test]
    fn sliding_windows_count_each_record_in_every_window() {
        let (_d, s) = store();
        let mut w = op(
            s,
            WindowAssigner::Sliding { size: 10, slide: 5 },
            0,
            LateTarget::Drop,
        );
        let mut ctx = Context::default();
        w.process(vec![rec("a", 7, 1, "x"), rec("a", 7, 1, "x")], &mut ctx)
            .expect("process");
        let fired = w.on_watermark(i64::MAX, &mut ctx).expect("wm");
        assert_eq!(
            lines(&fired),
            [
                r#"{"k":"a","window_start":0,"window_end":10,"n":2,"total":2,"users":1}"#,
                r#"{"k":"a","window_start":5,"window_end":15,"n":2,"total":2,"users":1}"#
            ]
        );
    }

    #[test]
    fn sessions_merge_and_union_distinct_members() {
        let (_d, s) = store();
        let mut w = op(
            s.clone(),
            WindowAssigner::Session { gap: 10 },
            0,
            LateTarget::Drop,
        );
        let mut ctx = Context::default();
        w.process(vec![rec("a", 0, 1, "x"), rec("a", 30, 1, "y")], &mut ctx)
            .expect("process");
        assert_eq!(w.open_windows(), 2);
        // [15,25) touches neither; [22,32) bridges it with [30,40)
        w.process(vec![rec("a", 15, 1, "x"), rec("a", 22, 1, "z")], &mut ctx)
            .expect("process");
        assert_eq!(w.open_windows(), 2);
        w.process(vec![rec("a", 8, 1, "x")], &mut ctx)
            .expect("process");
        assert_eq!(w.open_windows(), 1);
        let fired = w.on_watermark(i64::MAX, &mut ctx).expect("wm");
        assert_eq!(
            lines(&fired),
            [r#"{"k":"a","window_start":0,"window_end":40,"n":5,"total":5,"users":3}"#]
        );
        assert!(
            s.scan_prefix(&[]).expect("scan").is_empty(),
            "all state cleaned up"
        );
    }

    #[test]
    fn extending_a_session_keeps_its_distinct_count() {
        // Regression: folding the stored accumulator into a fresh one used to reset
        // count_distinct to 0 when a session was extended without a merge.
        let (_d, s) = store();
        let mut w = op(s, WindowAssigner::Session { gap: 7 }, 0, LateTarget::Drop);
        let mut ctx = Context::default();
        w.process(
            vec![
                rec("a", -24, 0, "u0"),
                rec("a", -21, 0, "u0"),
                rec("a", -18, 1, "u1"),
            ],
            &mut ctx,
        )
        .expect("process");
        let fired = w.on_watermark(i64::MAX, &mut ctx).expect("wm");
        assert_eq!(
            lines(&fired),
            [r#"{"k":"a","window_start":-24,"window_end":-11,"n":3,"total":1,"users":2}"#]
        );
    }

    #[test]
    fn window_keys_round_trip_and_sort_by_time() {
        let key = br#""k""#;
        let a = window_key(3, 1, key, &TimeWindow { start: -5, end: 5 });
        let b = window_key(3, 1, key, &TimeWindow { start: 2, end: 12 });
        assert!(a < b);
        assert_eq!(
            parse_window_key(&a),
            Some((Value::from("k"), TimeWindow { start: -5, end: 5 }))
        );
    }
}
