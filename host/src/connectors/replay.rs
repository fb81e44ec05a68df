//! The replay partition: dead letters that `headwater dlq replay` sends back into a running
//! pipeline (or its next run), read from the requests in its checkpoint storage
//! (`dlq::requests`). Each record re-enters at the step that gave up on it
//! ([`crate::record::Origin::entry`]) with the value, event time and key it had there.
//!
//! Its position (the next request's number, the envelopes read of it) is checkpointed like
//! a file's offset, so a request's records enter exactly once across crashes and restarts.
//! It is an auxiliary partition: it never holds the watermark back (replayed records keep
//! their event times and may be late for a window after their step) and it ends with its
//! task's other partitions.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::checkpoint::storage::CheckpointStorage;
use crate::dlq::requests::{self, Request};
use crate::dlq::{replay, DeadLetter, ErrorClass};
use crate::ops::stateless::KeyBy;
use crate::record::{Origin, Record};
use crate::sources::{Poll, Position, SourceError, SourcePartition};

/// The name of the replay partition, in checkpoints and messages.
pub const NAME: &str = "dlq-replay";

/// How often an idle replay partition looks for new requests.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// A step that replayed records may enter at.
#[derive(Clone, Debug)]
pub struct ReplayEntry {
    /// The step's index in the pipeline.
    pub step: usize,
    /// Its name, as dead letters give it (`steps[2] udf enrich`).
    pub name: String,
    /// The `key_by` before it, to key records whose envelope has no key (written before
    /// envelopes kept keys).
    pub key_by: Option<KeyBy>,
}

/// The request being read.
struct Current {
    request: Request,
    entry: Option<ReplayEntry>,
}

pub struct ReplayPartition {
    storage: CheckpointStorage,
    /// The pipeline's source names, in order (envelopes name their source).
    sources: Vec<String>,
    entries: Vec<ReplayEntry>,
    /// `offset`: the number of the request to read next; `records`: its envelopes read.
    position: Position,
    current: Option<Current>,
    /// Envelopes of the requests before the current one and those read of it (None until
    /// a request is read: then built from the storage).
    delivered: Option<HashSet<u128>>,
    next_look: Instant,
}

impl ReplayPartition {
    pub fn new(
        storage: CheckpointStorage,
        sources: Vec<String>,
        entries: Vec<ReplayEntry>,
    ) -> Self {
        ReplayPartition {
            storage,
            sources,
            entries,
            position: Position {
                offset: 1,
                records: 0,
            },
            current: None,
            delivered: None,
            next_look: Instant::now(),
        }
    }

    fn fail(&self, message: String) -> SourceError {
        SourceError::Replay {
            storage: self.storage.url().to_string(),
            message,
        }
    }

    /// Loads the first request at or after the position, if there is one.
    fn look(&mut self) -> Result<(), SourceError> {
        let now = Instant::now();
        if now < self.next_look {
            return Ok(());
        }
        self.next_look = now + LOOK_EVERY;
        let numbers = match requests::list(&self.storage) {
            Ok(n) => n,
            Err(e) => {
                // The storage may be down for a moment: the requests wait there.
                tracing::warn!("cannot list dead-letter replay requests: {e}");
                return Ok(());
            }
        };
        let Some(&number) = numbers.iter().find(|&&n| n >= self.position.offset) else {
            return Ok(());
        };
        if number != self.position.offset {
            self.position = Position {
                offset: number,
                records: 0,
            };
        }
        let request =
            requests::read(&self.storage, number).map_err(|e| self.fail(e.to_string()))?;
        if self.delivered.is_none() {
            let mut delivered = HashSet::new();
            for earlier in numbers.iter().filter(|&&n| n < number) {
                let r = requests::read(&self.storage, *earlier)
                    .map_err(|e| self.fail(e.to_string()))?;
                delivered.extend(r.envelopes.iter().map(|e| requests::envelope_id(e)));
            }
            let read = (self.position.records as usize).min(request.envelopes.len());
            delivered.extend(
                request.envelopes[..read]
                    .iter()
                    .map(|e| requests::envelope_id(e)),
            );
            self.delivered = Some(delivered);
        }
        let entry = self
            .entries
            .iter()
            .find(|e| e.name == request.header.step)
            .cloned();
        tracing::info!(
            replay = number,
            group = %request.header.fingerprint,
            step = %request.header.step,
            records = request.envelopes.len(),
            "replaying dead letters"
        );
        self.current = Some(Current { request, entry });
        Ok(())
    }
}

/// An envelope as the record that enters `entry`, or the dead letter saying why it cannot.
fn enter(
    envelope: &str,
    entry: Option<&ReplayEntry>,
    header: &requests::Header,
    sources: &[String],
) -> Result<Record, Box<DeadLetter>> {
    let dead = |raw: Vec<u8>, origin: Origin, error: String| {
        Box::new(DeadLetter::new(
            raw,
            origin,
            header.step.clone(),
            ErrorClass::Permanent,
            error,
        ))
    };
    let member = serde_json::from_str::<serde_json::Value>(envelope)
        .map_err(|e| e.to_string())
        .and_then(|env| replay::member(&env, sources));
    let member = match member {
        Ok(m) => m,
        Err(why) => {
            return Err(dead(
                envelope.as_bytes().to_vec(),
                Origin::default(),
                format!(
                    "replay {}: this envelope cannot become a record again: {why}",
                    header.replay
                ),
            ))
        }
    };
    let mut record = member.record;
    let Some(entry) = entry else {
        let mut raw = Vec::new();
        record.write_json(&mut raw);
        let mut dl = dead(
            raw,
            record.origin,
            format!(
                "replay {}: the pipeline has no udf step `{}` now (did its steps change since the replay was asked for?)",
                header.replay, header.step
            ),
        );
        dl.event_time = Some(record.time);
        dl.key = record.key.clone();
        return Err(dl);
    };
    if record.key.is_none() {
        if let Some(key_by) = &entry.key_by {
            record.key = Some(key_by.key_of(record.value()));
        }
    }
    record.origin.entry = u16::try_from(entry.step + 1).unwrap_or(u16::MAX);
    Ok(record)
}

impl SourcePartition for ReplayPartition {
    fn name(&self) -> &str {
        NAME
    }

    fn poll(
        &mut self,
        out: &mut Vec<Record>,
        dead: &mut Vec<DeadLetter>,
        max: usize,
    ) -> Result<Poll, SourceError> {
        if self.current.is_none() {
            self.look()?;
        }
        let Some(current) = &self.current else {
            return Ok(Poll::Pending);
        };
        let delivered = self.delivered.get_or_insert_with(HashSet::new);
        let envelopes = &current.request.envelopes;
        let mut skipped = 0usize;
        while out.len() < max && (self.position.records as usize) < envelopes.len() {
            let envelope = &envelopes[self.position.records as usize];
            self.position.records += 1;
            if !delivered.insert(requests::envelope_id(envelope)) {
                skipped += 1;
                continue;
            }
            match enter(
                envelope,
                current.entry.as_ref(),
                &current.request.header,
                &self.sources,
            ) {
                Ok(record) => out.push(record),
                Err(dl) => dead.push(*dl),
            }
        }
        if skipped > 0 {
            tracing::warn!(
                replay = current.request.header.replay,
                skipped,
                "dead letters an earlier replay already sent were not sent again"
            );
        }
        if self.position.records as usize >= envelopes.len() {
            tracing::info!(
                replay = current.request.header.replay,
                "replay read to its end"
            );
            self.position = Position {
                offset: current.request.header.replay + 1,
                records: 0,
            };
            self.current = None;
            self.next_look = Instant::now();
        }
        Ok(Poll::Ready)
    }

    fn position(&self) -> Position {
        self.position
    }

    fn seek(&mut self, position: Position) -> Result<(), SourceError> {
        self.position = position;
        self.current = None;
        self.delivered = None;
        self.next_look = Instant::now();
        Ok(())
    }

    fn is_auxiliary(&self) -> bool {
        true
    }
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod tests;
