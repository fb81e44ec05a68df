//! Watermarks: per-partition clocks and the combination of inputs (see ARCHITECTURE.md, "Event time").
//!
//! A watermark `W` says: no more records with event time `<= W` are expected. Each source
//! partition tracks the largest event time it has seen; its watermark is that minus the
//! bounded out-of-orderness, minus 1 ms (the convention of Apache Flink, so a record exactly
//! `bound` behind the maximum is still on time). A partition idle past its timeout stops
//! holding the watermark back; an operator with several inputs takes the minimum over its
//! active inputs. Every watermark that leaves a [`PartitionClock`] or [`InputWatermarks`] is
//! monotonic.

use std::time::{Duration, Instant};

use crate::record::{EventTime, WatermarkStatus, WATERMARK_END, WATERMARK_START};

/// The watermark of one source partition.
#[derive(Debug, Clone)]
pub struct PartitionClock {
    bound_ms: i64,
    idle_timeout: Option<Duration>,
    max_time: EventTime,
    last_activity: Instant,
    ended: bool,
}

impl PartitionClock {
    pub fn new(max_out_of_orderness: Duration, idle_timeout: Option<Duration>) -> Self {
        PartitionClock {
            bound_ms: super::millis(max_out_of_orderness),
            idle_timeout,
            max_time: WATERMARK_START,
            last_activity: Instant::now(),
            ended: false,
        }
    }

    /// Resumes from a checkpoint: the largest event time seen before it.
    pub fn restore(&mut self, max_time: EventTime) {
        self.max_time = self.max_time.max(max_time);
    }

    /// Notes a record's event time.
    pub fn observe(&mut self, time: EventTime, now: Instant) {
        self.max_time = self.max_time.max(time);
        self.last_activity = now;
    }

    /// Notes that the partition made progress without records (e.g. only dead letters).
    pub fn touch(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// The partition is exhausted: it no longer holds the watermark back.
    pub fn end(&mut self) {
        self.ended = true;
    }

    pub fn max_time(&self) -> EventTime {
        self.max_time
    }

    /// The current status: `Active(max - bound - 1)`, `Active(+inf)` once ended, or `Idle`.
    pub fn status(&self, now: Instant) -> WatermarkStatus {
        if self.ended {
            return WatermarkStatus::Active(WATERMARK_END);
        }
        if let Some(timeout) = self.idle_timeout {
            if now.duration_since(self.last_activity) >= timeout {
                return WatermarkStatus::Idle;
            }
        }
        if self.max_time == WATERMARK_START {
            return WatermarkStatus::Active(WATERMARK_START);
        }
        WatermarkStatus::Active(
            self.max_time
                .saturating_sub(self.bound_ms)
                .saturating_sub(1),
        )
    }
}

/// Combines the watermarks of several inputs (partitions of one task, or upstream tasks):
/// the minimum over active inputs, held monotonic.
#[derive(Debug, Clone)]
pub struct InputWatermarks {
    inputs: Vec<WatermarkStatus>,
    current: EventTime,
    last_emitted: Option<WatermarkStatus>,
}

impl InputWatermarks {
    pub fn new(inputs: usize) -> Self {
        InputWatermarks {
            inputs: vec![WatermarkStatus::Active(WATERMARK_START); inputs],
            current: WATERMARK_START,
            last_emitted: None,
        }
    }

    /// Resumes from a checkpoint: every input starts at `watermark`, which counts as
    /// already emitted, so the combined watermark never goes below it.
    pub fn restored(inputs: usize, watermark: EventTime) -> Self {
        InputWatermarks {
            inputs: vec![WatermarkStatus::Active(watermark); inputs],
            current: watermark,
            last_emitted: Some(WatermarkStatus::Active(watermark)),
        }
    }

    /// Records input `idx`'s status. An input's own watermark never goes back: a lower value
    /// than it reported before is ignored.
    pub fn update(&mut self, idx: usize, status: WatermarkStatus) {
        let Some(slot) = self.inputs.get_mut(idx) else {
            return;
        };
        *slot = match (*slot, status) {
            (WatermarkStatus::Active(old), WatermarkStatus::Active(new)) => {
                WatermarkStatus::Active(old.max(new))
            }
            (_, s) => s,
        };
    }

    /// The combined status: the minimum over the active inputs that have not ended, never
    /// below what was returned before; `Idle` when every input that has not ended is idle
    /// (ended inputs do not make idle ones count as done); `+inf` once every input ended.
    pub fn combined(&mut self) -> WatermarkStatus {
        let mut min_active: Option<EventTime> = None;
        let mut any_idle = false;
        for s in &self.inputs {
            match *s {
                WatermarkStatus::Active(WATERMARK_END) => {}
                WatermarkStatus::Active(t) => min_active = Some(min_active.map_or(t, |m| m.min(t))),
                WatermarkStatus::Idle => any_idle = true,
            }
        }
        match min_active {
            None if any_idle => WatermarkStatus::Idle,
            None => WatermarkStatus::Active(WATERMARK_END),
            Some(t) => {
                self.current = self.current.max(t);
                WatermarkStatus::Active(self.current)
            }
        }
    }

    /// The combined status if it changed since the last call that returned `Some`.
    pub fn changed(&mut self) -> Option<WatermarkStatus> {
        let now = self.combined();
        if self.last_emitted == Some(now) {
            return None;
        }
        self.last_emitted = Some(now);
        Some(now)
    }

    /// The combined event-time watermark (ignoring idleness); `-inf` before any.
    pub fn current(&self) -> EventTime {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use WatermarkStatus::{Active, Idle};

    #[test]
    fn partition_watermark_trails_max_by_bound_plus_one() {
        let now = Instant::now();
        let mut c = PartitionClock::new(Duration::from_millis(100), None);
        assert_eq!(c.status(now), Active(WATERMARK_START));
        c.observe(1_000, now);
        c.observe(900, now);
        assert_eq!(c.status(now), Active(899));
        c.end();
        assert_eq!(c.status(now), Active(WATERMARK_END));
    }

    #[test]
    fn partition_goes_idle_after_timeout_and_wakes_on_data() {
        let start = Instant::now();
        let mut c = PartitionClock::new(Duration::ZERO, Some(Duration::from_secs(5)));
        c.observe(10, start);
        assert_eq!(c.status(start + Duration::from_secs(4)), Active(9));
        assert_eq!(c.status(start + Duration::from_secs(5)), Idle);
        c.observe(20, start + Duration::from_secs(6));
        assert_eq!(c.status(start + Duration::from_secs(6)), Active(19));
    }

    #[test]
    fn ended_inputs_do_not_turn_idle_ones_into_the_end() {
        // One input has nothing to read (ended), the others are idle: no watermark yet, not +inf.
        let mut w = InputWatermarks::new(3);
        w.update(2, Active(WATERMARK_END));
        w.update(0, Idle);
        w.update(1, Idle);
        assert_eq!(w.combined(), Idle);
        w.update(0, Active(10));
        assert_eq!(w.combined(), Active(10));
        w.update(0, Active(WATERMARK_END));
        assert_eq!(w.combined(), Idle, "input 1 is idle, not ended");
        w.update(1, Active(WATERMARK_END));
        assert_eq!(w.combined(), Active(WATERMARK_END));
    }

    #[test]
    fn combined_is_min_of_active_and_monotonic() {
        let mut w = InputWatermarks::new(3);
        w.update(0, Active(10));
        w.update(1, Active(5));
        w.update(2, Active(7));
        assert_eq!(w.combined(), Active(5));
        w.update(1, Idle);
        assert_eq!(w.combined(), Active(7));
        // input 1 wakes up behind: the output must not go back
        w.update(1, Active(3));
        assert_eq!(w.combined(), Active(7));
        w.update(0, Idle);
        w.update(1, Idle);
        w.update(2, Idle);
        assert_eq!(w.combined(), Idle);
    }

    #[test]
    fn an_input_cannot_move_its_own_watermark_back() {
        let mut w = InputWatermarks::new(1);
        w.update(0, Active(10));
        w.update(0, Active(4));
        assert_eq!(w.combined(), Active(10));
    }

    #[test]
    fn changed_reports_only_changes() {
        let mut w = InputWatermarks::new(1);
        w.update(0, Active(1));
        assert_eq!(w.changed(), Some(Active(1)));
        assert_eq!(w.changed(), None);
        w.update(0, Active(2));
        assert_eq!(w.changed(), Some(Active(2)));
    }
}
