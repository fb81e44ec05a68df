//! The pool of transactional producers an exactly-once sink instance writes its epochs with,
//! and its side of the checkpoint commit.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::producer::Producer;

use super::producer::*;
use crate::checkpoint::manifest::{Manifest, SinkCommit};
use crate::checkpoint::participant::CommitParticipant;
use crate::checkpoint::{CheckpointError, CheckpointId};
use crate::config::spec::KafkaSinkSpec;
use crate::sinks::SinkError;

/// Producers per exactly-once sink instance: one epoch being written, one waiting for its
/// checkpoint, and one spare for each checkpoint that may be abandoned or declined in a row
/// (whose data the next checkpoint commits): at least one, at most six.
pub(super) fn pool_size(tolerable_failures: u32) -> usize {
    (tolerable_failures as usize).clamp(1, 6) + 2
}
/// How long the sink waits for a free producer before giving up.
pub(super) const SLOT_WAIT: Duration = Duration::from_secs(300);

/// What a pool producer is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SlotState {
    Free,
    /// Its transaction takes the records of this epoch.
    Open(CheckpointId),
    /// Its transaction holds a whole epoch, flushed, waiting for the checkpoint.
    Prepared(CheckpointId),
}

pub(super) struct Slot {
    pub(super) producer: Producer_,
    pub(super) transactional_id: String,
}

/// The transactional producers of one sink, shared by the sink thread (writes) and the
/// checkpoint coordinator (commits).
pub struct TxnPool {
    pub(super) sink: String,
    pub(super) slots: Vec<Slot>,
    pub(super) states: Mutex<Vec<SlotState>>,
    pub(super) freed: Condvar,
    /// Records files of pre-committed epochs, by epoch.
    pub(super) work_dir: PathBuf,
}

impl TxnPool {
    pub(super) fn set(&self, slot: usize, state: SlotState) {
        if let Ok(mut s) = self.states.lock() {
            s[slot] = state;
        }
        self.freed.notify_all();
    }

    /// A free producer, waiting for a commit if all are busy.
    pub(super) fn take_free(&self, epoch: CheckpointId) -> Result<usize, SinkError> {
        let poisoned = || kafka_err(&self.sink, "internal", "lock poisoned");
        let mut states = self.states.lock().map_err(|_| poisoned())?;
        let deadline = Instant::now() + SLOT_WAIT;
        loop {
            if let Some(i) = states.iter().position(|s| *s == SlotState::Free) {
                states[i] = SlotState::Open(epoch);
                return Ok(i);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SinkError::Kafka {
                    sink: self.sink.clone(),
                    message: format!(
                        "{} epochs are waiting for their checkpoints to complete; checkpoints are failing or too slow",
                        self.slots.len()
                    ),
                });
            }
            states = self
                .freed
                .wait_timeout(states, left)
                .map_err(|_| poisoned())?
                .0;
        }
    }
}

/// The coordinator commits a pre-committed epoch's transaction once the checkpoint's manifest
/// exists. Recovery happens when the sink opens (it needs its producers): initializing the
/// transactional ids fences and aborts what a crashed run left open, and restored epochs not
/// yet committed are produced again from their records files.
impl CommitParticipant for TxnPool {
    fn name(&self) -> &str {
        &self.sink
    }

    fn commit(&self, c: &SinkCommit) -> Result<(), CheckpointError> {
        self.commit_epoch(c.epoch)
            .map_err(|e| CheckpointError::Commit {
                message: e.to_string(),
            })
    }

    fn discard_after(&self, _restored: Option<&Manifest>) -> Result<(), CheckpointError> {
        Ok(())
    }

    fn recovers_when_opened(&self) -> bool {
        true
    }
}

impl TxnPool {
    pub(super) fn commit_epoch(&self, epoch: CheckpointId) -> Result<(), SinkError> {
        let slot = {
            let states = self
                .states
                .lock()
                .map_err(|_| kafka_err(&self.sink, "internal", "lock poisoned"))?;
            states.iter().position(|s| *s == SlotState::Prepared(epoch))
        };
        // Already committed (e.g. by recovery), or an epoch without records.
        let Some(slot) = slot else { return Ok(()) };
        self.slots[slot]
            .producer
            .commit_transaction(REQUEST_TIMEOUT)
            .map_err(|e| {
                kafka_err(
                    &self.sink,
                    &format!(
                        "committing the transaction of checkpoint {epoch} ({}) failed",
                        self.slots[slot].transactional_id
                    ),
                    describe(&self.slots[slot].producer, e),
                )
            })?;
        self.set(slot, SlotState::Free);
        let _ = std::fs::remove_file(records_path(&self.work_dir, epoch));
        Ok(())
    }
}

pub(super) fn records_path(dir: &Path, epoch: CheckpointId) -> PathBuf {
    dir.join(format!("epoch-{epoch:010}.jsonl"))
}

/// Creates a transactional producer and initializes it, which fences every older producer with
/// the same id and aborts what it left open.
pub(super) fn start_producer(
    name: &str,
    spec: &KafkaSinkSpec,
    transactional_id: String,
    txn_timeout: Duration,
) -> Result<Slot, SinkError> {
    let mut c = producer_config(spec);
    c.set("transactional.id", &transactional_id).set(
        "transaction.timeout.ms",
        txn_timeout.as_millis().to_string(),
    );
    let producer: Producer_ = with_properties(c, spec)
        .create_with_context(DeliveryReport::default())
        .map_err(|e| kafka_err(name, "cannot create a Kafka producer", e))?;
    producer.init_transactions(REQUEST_TIMEOUT).map_err(|e| {
        kafka_err(
            name,
            &format!("cannot initialize transactions for `{transactional_id}`"),
            e,
        )
    })?;
    Ok(Slot {
        producer,
        transactional_id,
    })
}
