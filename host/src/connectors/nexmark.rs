//! The Nexmark auction event generator (the `nexmark` crate) as a source.
//!
//! Partition `i` of `n` generates events `i, i+n, i+2n, ...`, so the partitions together
//! produce exactly the single generator's stream. Each event becomes a flat object whose first
//! field is `event_type` (`person`, `auction` or `bid`), followed by the event's fields;
//! its event time is `date_time` (ms).

use std::time::Instant;

use nexmark::config::NexmarkConfig;
use nexmark::event::{Event, EventType};
use nexmark::EventGenerator;

use crate::config::spec::{NexmarkEventKind, NexmarkSpec};
use crate::dlq::DeadLetter;
use crate::record::{Origin, Record};
use crate::sources::{Poll, Position, SourceError, SourcePartition};
use crate::value::{Object, Str, Value};

pub struct NexmarkPartition {
    name: String,
    generator: EventGenerator,
    origin: Origin,
    /// Events this partition still has to produce (None = unbounded).
    remaining: Option<u64>,
    /// Events per second for this partition (None = as fast as possible).
    rate: Option<f64>,
    started: Option<Instant>,
    produced: u64,
    /// Events the partition produces in all (None = unbounded).
    total: Option<u64>,
    /// The generator's settings, to rebuild it at a position.
    config: NexmarkConfig,
    offset_of_first: u64,
    step: u64,
    only: Option<NexmarkEventKind>,
    /// Events produced before the rate limit's clock started (a resumed run).
    rate_base: u64,
}

/// Builds the partitions of a Nexmark source.
pub fn partitions(spec: &NexmarkSpec, source: u16) -> Vec<NexmarkPartition> {
    let n = u64::from(spec.partitions.max(1));
    let config = NexmarkConfig {
        base_time: u64::try_from(spec.base_time).unwrap_or(0),
        ..NexmarkConfig::default()
    };
    (0..n)
        .map(|i| {
            // Partition i produces the global events i, i+n, ... below the total.
            let remaining = spec
                .events
                .map(|total| total / n + u64::from(i < total % n));
            NexmarkPartition {
                name: format!("nexmark[{}/{}]", i, n),
                generator: generator(&config, i, n, spec.only),
                origin: Origin {
                    source,
                    partition: i as u32,
                    offset: 0,
                    entry: 0,
                },
                remaining,
                rate: spec.rate.map(|r| r as f64 / n as f64),
                started: None,
                produced: 0,
                total: remaining,
                config: config.clone(),
                offset_of_first: i,
                step: n,
                only: spec.only,
                rate_base: 0,
            }
        })
        .collect()
}

fn generator(
    config: &NexmarkConfig,
    offset: u64,
    step: u64,
    only: Option<NexmarkEventKind>,
) -> EventGenerator {
    let mut generator = EventGenerator::new(config.clone())
        .with_offset(offset)
        .with_step(step);
    if let Some(kind) = only {
        generator = generator.with_type_filter(match kind {
            NexmarkEventKind::Person => EventType::Person,
            NexmarkEventKind::Auction => EventType::Auction,
            NexmarkEventKind::Bid => EventType::Bid,
        });
    }
    generator
}

impl SourcePartition for NexmarkPartition {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(
        &mut self,
        out: &mut Vec<Record>,
        _dead: &mut Vec<DeadLetter>,
        max: usize,
    ) -> Result<Poll, SourceError> {
        let mut budget = max as u64;
        if let Some(remaining) = self.remaining {
            if remaining == 0 {
                return Ok(Poll::End);
            }
            budget = budget.min(remaining);
        }
        if let Some(rate) = self.rate {
            let started = *self.started.get_or_insert_with(Instant::now);
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            let allowed = due.saturating_sub(self.produced - self.rate_base);
            if allowed == 0 {
                return Ok(Poll::Pending);
            }
            budget = budget.min(allowed);
        }
        for _ in 0..budget {
            self.origin.offset = self.generator.offset();
            let Some(event) = self.generator.next() else {
                break;
            };
            let time = event.timestamp() as i64;
            out.push(Record::new(to_value(event), time, self.origin));
        }
        self.produced += budget;
        if let Some(remaining) = self.remaining.as_mut() {
            *remaining -= budget;
        }
        Ok(Poll::Ready)
    }

    fn position(&self) -> Position {
        Position {
            offset: self.generator.offset(),
            records: self.produced,
        }
    }

    fn seek(&mut self, position: Position) -> Result<(), SourceError> {
        let aligned = position.offset >= self.offset_of_first
            && (position.offset - self.offset_of_first) % self.step == 0;
        if !aligned || self.total.is_some_and(|t| position.records > t) {
            return Err(SourceError::Seek {
                source_name: self.name.clone(),
                partition: self.name.clone(),
                position: format!("offset {}", position.offset),
                message:
                    "the checkpoint was taken with other generator settings (partitions or events)"
                        .into(),
            });
        }
        self.generator = generator(&self.config, position.offset, self.step, self.only);
        self.produced = position.records;
        self.remaining = self.total.map(|t| t - position.records);
        // A rate limit restarts from the resumed position.
        self.started = None;
        self.rate_base = position.records;
        Ok(())
    }
}

fn int(v: impl TryInto<i64>) -> Value {
    Value::Int(v.try_into().unwrap_or(i64::MAX))
}

fn string(s: String) -> Value {
    Value::Str(Str::from(s))
}

/// Converts an event to a flat record without a JSON round trip.
pub fn to_value(event: Event) -> Value {
    let mut o = Object::with_capacity(10);
    match event {
        Event::Bid(b) => {
            o.push_unchecked("event_type", Value::from("bid"));
            o.push_unchecked("auction", int(b.auction));
            o.push_unchecked("bidder", int(b.bidder));
            o.push_unchecked("price", int(b.price));
            o.push_unchecked("channel", string(b.channel));
            o.push_unchecked("url", string(b.url));
            o.push_unchecked("date_time", int(b.date_time));
            o.push_unchecked("extra", string(b.extra));
        }
        Event::Auction(a) => {
            o.push_unchecked("event_type", Value::from("auction"));
            o.push_unchecked("id", int(a.id));
            o.push_unchecked("item_name", string(a.item_name));
            o.push_unchecked("description", string(a.description));
            o.push_unchecked("initial_bid", int(a.initial_bid));
            o.push_unchecked("reserve", int(a.reserve));
            o.push_unchecked("date_time", int(a.date_time));
            o.push_unchecked("expires", int(a.expires));
            o.push_unchecked("seller", int(a.seller));
            o.push_unchecked("category", int(a.category));
            o.push_unchecked("extra", string(a.extra));
        }
        Event::Person(p) => {
            o.push_unchecked("event_type", Value::from("person"));
            o.push_unchecked("id", int(p.id));
            o.push_unchecked("name", string(p.name));
            o.push_unchecked("email_address", string(p.email_address));
            o.push_unchecked("credit_card", string(p.credit_card));
            o.push_unchecked("city", string(p.city));
            o.push_unchecked("state", string(p.state));
            o.push_unchecked("date_time", int(p.date_time));
            o.push_unchecked("extra", string(p.extra));
        }
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec(
        events: Option<u64>,
        partitions: u32,
        only: Option<NexmarkEventKind>,
        rate: Option<u64>,
    ) -> NexmarkSpec {
        NexmarkSpec {
            events,
            rate,
            partitions,
            only,
            base_time: 1_704_067_200_000,
        }
    }

    fn drain(p: &mut NexmarkPartition) -> Vec<Record> {
        let (mut out, mut dead) = (Vec::new(), Vec::new());
        while p.poll(&mut out, &mut dead, 100).expect("poll") != Poll::End {}
        out
    }

    #[test]
    fn partitions_split_a_bounded_count_exactly() {
        let mut all = Vec::new();
        for mut p in partitions(&spec(Some(1000), 3, None, None), 0) {
            all.extend(drain(&mut p));
        }
        assert_eq!(all.len(), 1000);
        let mut offsets: Vec<u64> = all.iter().map(|r| r.origin.offset).collect();
        offsets.sort();
        offsets.dedup();
        assert_eq!(offsets.len(), 1000, "every event number once");
        assert!(all.iter().all(|r| r.time >= 1_704_067_200_000));
        let kinds: std::collections::HashSet<_> = all
            .iter()
            .filter_map(|r| {
                r.value()
                    .as_object()?
                    .get("event_type")?
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(kinds.len(), 3, "persons, auctions and bids: {kinds:?}");
    }

    #[test]
    fn bid_only_source_produces_bids_with_their_fields() {
        let mut p = partitions(&spec(Some(50), 1, Some(NexmarkEventKind::Bid), None), 0).remove(0);
        let out = drain(&mut p);
        assert_eq!(out.len(), 50);
        for r in &out {
            let o = r.value().as_object().expect("object");
            assert_eq!(o.get("event_type"), Some(&Value::from("bid")));
            assert_eq!(o.get("date_time"), Some(&Value::Int(r.time)));
            assert!(o.get("price").and_then(Value::as_f64).is_some());
        }
    }

    #[test]
    fn rate_limit_returns_pending_when_ahead_of_schedule() {
        let mut p = partitions(&spec(None, 1, Some(NexmarkEventKind::Bid), Some(10)), 0).remove(0);
        let (mut out, mut dead) = (Vec::new(), Vec::new());
        assert_eq!(
            p.poll(&mut out, &mut dead, 1000).expect("poll"),
            Poll::Pending
        );
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            p.poll(&mut out, &mut dead, 1000).expect("poll"),
            Poll::Ready
        );
        assert!(
            (1..=3).contains(&out.len()),
            "about 2 events after 250ms at 10/s, got {}",
            out.len()
        );
    }
}
