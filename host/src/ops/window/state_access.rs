//! How a window step reads and writes its state: accumulators, `count_distinct` members and
//! sessions, under the keys [`crate::state::layout`] defines.

use std::collections::HashSet;

use crate::config::spec::AggregateFn;
use crate::record::{EventTime, Record};
use crate::state::{key_group_of, layout, KeyGroup, StateBatch, StateError};
use crate::time::TimeWindow;
use crate::value::Value;

use super::WindowOp;
use crate::ops::aggregate::{decode_all, Acc};
use crate::ops::{Context, OpError};

impl WindowOp {
    /// A record's key, its encoding (into `key_bytes`) and its key group.
    pub(super) fn key_of(&self, record: &Record, key_bytes: &mut Vec<u8>) -> (Value, KeyGroup) {
        let key = record.key.clone().unwrap_or(Value::Null);
        key_bytes.clear();
        key.key_bytes(key_bytes);
        (key, key_group_of(key_bytes, self.cfg.max_parallelism))
    }

    pub(super) fn new_accs(&self) -> Vec<Acc> {
        self.cfg
            .aggregates
            .iter()
            .map(|a| Acc::new(a.func))
            .collect()
    }

    pub(super) fn load(&self, skey: &[u8]) -> Result<Option<Vec<Acc>>, OpError> {
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

    /// Adds a record's values to `accs`; distinct members are checked against the store and
    /// the members already added in this batch.
    pub(super) fn accumulate(
        &self,
        record: &Record,
        skey: &[u8],
        accs: &mut [Acc],
        members: &mut HashSet<Vec<u8>>,
        wb: &mut StateBatch,
    ) -> Result<(), OpError> {
        let mut member = Vec::new();
        for (i, (spec, acc)) in self.cfg.aggregates.iter().zip(accs.iter_mut()).enumerate() {
            let v = spec.field.as_ref().and_then(|p| record.value().get_path(p));
            if spec.func == AggregateFn::CountDistinct {
                let Some(v) = v.filter(|v| !matches!(v, Value::Null)) else {
                    continue;
                };
                member.clear();
                v.key_bytes(&mut member);
                let mkey = layout::member_key(skey, i as u8, &member);
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
                pending.push(record.value().clone());
            } else {
                acc.add(v);
            }
        }
        Ok(())
    }

    pub(super) fn has_distinct(&self) -> bool {
        self.cfg
            .aggregates
            .iter()
            .any(|a| a.func == AggregateFn::CountDistinct)
    }

    /// A session's value: its end (8 bytes, little-endian) then its accumulators.
    pub(super) fn decode_session(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> Result<(EventTime, Vec<Acc>), OpError> {
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

    /// Moves a merged-away session's members under the session it merged into.
    pub(super) fn move_members(
        &self,
        from: &[u8],
        to: &[u8],
        wb: &mut StateBatch,
    ) -> Result<(), OpError> {
        let prefix = layout::members_prefix(from);
        let target = layout::members_prefix(to);
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

    pub(super) fn fire(&self, skey: &[u8], ctx: &mut Context) -> Result<Option<Record>, OpError> {
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

    /// Deletes a window whose allowed lateness is over, members included.
    pub(super) fn cleanup(&self, skey: &[u8], wb: &mut StateBatch) -> Result<(), OpError> {
        wb.delete(skey);
        if self.has_distinct() {
            let prefix = layout::members_prefix(skey);
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

/// The accumulator key of a tumbling or sliding window.
pub(super) fn window_key(kg: KeyGroup, op: u16, key: &[u8], w: &TimeWindow) -> Vec<u8> {
    layout::window_key(kg, op, key, w.start, w.end)
}

/// Splits a session key into the key value and the session's start.
pub(super) fn parse_session_key(k: &[u8]) -> Option<(Value, EventTime)> {
    let (key, start) = layout::parse_session_key(k)?;
    Some((Value::from_json(key).ok()?, start))
}

/// Splits an accumulator key into the key value and the window.
pub(super) fn parse_window_key(k: &[u8]) -> Option<(Value, TimeWindow)> {
    let (key, start, end) = layout::parse_window_key(k)?;
    Some((Value::from_json(key).ok()?, TimeWindow { start, end }))
}
