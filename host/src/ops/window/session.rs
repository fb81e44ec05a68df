//! Session windows: a record opens a session of `gap`, merged with every session of its key
//! it touches.

use std::collections::{HashMap, HashSet};

use crate::record::Batch;
use crate::state::layout::{self, Tag};
use crate::state::store::Entry;
use crate::state::StateBatch;
use crate::time::TimeWindow;

use super::WindowOp;
use crate::ops::aggregate::{encode_all, Acc};
use crate::ops::{Context, OpError};

impl WindowOp {
    /// Adds a batch to its keys' sessions, merging the sessions a record bridges; returns
    /// the updated results of sessions already fired.
    pub(super) fn process_session(
        &mut self,
        batch: Batch,
        ctx: &mut Context,
    ) -> Result<Batch, OpError> {
        let mut out = Vec::new();
        let mut sessions: HashMap<Vec<u8>, Vec<Entry>> = HashMap::new();
        let mut key_bytes = Vec::with_capacity(32);
        let mut proto = Vec::with_capacity(1);
        let has_distinct = self.has_distinct();
        for record in &batch {
            let (key, kg) = self.key_of(record, &mut key_bytes);
            proto.clear();
            self.cfg.assigner.assign(record.time, &mut proto);
            let Some(&new) = proto.first() else { continue };
            // A session's key holds its start only, so extending its end (the common case)
            // rewrites one value instead of deleting and inserting keys.
            let prefix = layout::key_prefix(kg, self.cfg.op_id, Tag::WindowAccumulator, &key_bytes);
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
                let Some(start) = k.get(prefix.len()..).and_then(layout::decode_time) else {
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
            let mkey = layout::session_key(kg, self.cfg.op_id, &key_bytes, merged.start);
            let mut wb = StateBatch::new();
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
                        let p = layout::member_prefix(&mkey, i as u8);
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
}
