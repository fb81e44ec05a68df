//! Tumbling and sliding windows: each record is added to every window it falls in.

use std::collections::{HashMap, HashSet};

use crate::record::Batch;
use crate::state::StateBatch;

use super::state_access::window_key;
use super::WindowOp;
use crate::ops::aggregate::{encode_all, Acc};
use crate::ops::{Context, OpError};

/// A window's accumulators while a batch updates them.
struct Cached {
    accs: Vec<Acc>,
    dirty: bool,
}

impl WindowOp {
    /// Adds a batch to its windows; returns the updated results of windows already fired.
    pub(super) fn process_fixed(
        &mut self,
        batch: Batch,
        ctx: &mut Context,
    ) -> Result<Batch, OpError> {
        let mut out = Vec::new();
        let mut cache: HashMap<Vec<u8>, Cached> = HashMap::new();
        let mut members = HashSet::new();
        let mut wb = StateBatch::new();
        let mut key_bytes = Vec::with_capacity(32);
        let mut windows = std::mem::take(&mut self.scratch);
        for record in &batch {
            let (key, kg) = self.key_of(record, &mut key_bytes);
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
}
