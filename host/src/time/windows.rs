//! Window assignment. A window `[start, end)` covers event times `start <= t < end`; it fires
//! when the watermark reaches `end - 1` and is kept for late records until the watermark
//! reaches `end - 1 + allowed_lateness`.

use crate::config::spec::WindowKind;
use crate::record::EventTime;

use super::millis;

/// A half-open interval of event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeWindow {
    pub start: EventTime,
    pub end: EventTime,
}

impl TimeWindow {
    /// The last event time inside the window.
    pub fn max_timestamp(&self) -> EventTime {
        self.end.saturating_sub(1)
    }

    /// Session windows merge when they overlap or touch.
    pub fn touches(&self, other: &TimeWindow) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    pub fn cover(&self, other: &TimeWindow) -> TimeWindow {
        TimeWindow {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// Assigns records to windows, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowAssigner {
    Tumbling { size: i64 },
    Sliding { size: i64, slide: i64 },
    Session { gap: i64 },
}

impl WindowAssigner {
    pub fn from_kind(kind: &WindowKind) -> Self {
        match *kind {
            WindowKind::Tumbling { size } => WindowAssigner::Tumbling {
                size: millis(size).max(1),
            },
            WindowKind::Sliding { size, slide } => WindowAssigner::Sliding {
                size: millis(size).max(1),
                slide: millis(slide).max(1),
            },
            WindowKind::Session { gap } => WindowAssigner::Session {
                gap: millis(gap).max(1),
            },
        }
    }

    pub fn is_session(&self) -> bool {
        matches!(self, WindowAssigner::Session { .. })
    }

    /// Appends the windows a record with event time `t` belongs to, earliest first. For a
    /// session assigner that is the record's own proto-window `[t, t + gap)`.
    pub fn assign(&self, t: EventTime, out: &mut Vec<TimeWindow>) {
        match *self {
            WindowAssigner::Tumbling { size } => {
                let start = t - t.rem_euclid(size);
                out.push(TimeWindow {
                    start,
                    end: start.saturating_add(size),
                });
            }
            WindowAssigner::Sliding { size, slide } => {
                let last_start = t - t.rem_euclid(slide);
                let mut start = last_start - ((size - 1) / slide) * slide;
                while start <= last_start {
                    if t < start.saturating_add(size) {
                        out.push(TimeWindow {
                            start,
                            end: start.saturating_add(size),
                        });
                    }
                    start += slide;
                }
            }
            WindowAssigner::Session { gap } => {
                out.push(TimeWindow {
                    start: t,
                    end: t.saturating_add(gap),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(a: WindowAssigner, t: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        a.assign(t, &mut out);
        out.into_iter().map(|w| (w.start, w.end)).collect()
    }

    #[test]
    fn tumbling_aligns_to_size_including_negative_times() {
        let a = WindowAssigner::Tumbling { size: 10 };
        assert_eq!(windows(a, 0), vec![(0, 10)]);
        assert_eq!(windows(a, 19), vec![(10, 20)]);
        assert_eq!(windows(a, -1), vec![(-10, 0)]);
    }

    #[test]
    fn sliding_assigns_every_covering_window() {
        let a = WindowAssigner::Sliding { size: 10, slide: 5 };
        assert_eq!(windows(a, 7), vec![(0, 10), (5, 15)]);
        assert_eq!(windows(a, 5), vec![(0, 10), (5, 15)]);
        assert_eq!(windows(a, 4), vec![(-5, 5), (0, 10)]);
        let b = WindowAssigner::Sliding { size: 10, slide: 3 };
        for t in -20..20 {
            let ws = windows(b, t);
            assert!(ws
                .iter()
                .all(|&(s, e)| s <= t && t < e && e - s == 10 && s.rem_euclid(3) == 0));
            let expected = (-30..30)
                .filter(|s: &i64| s.rem_euclid(3) == 0 && *s <= t && t < s + 10)
                .count();
            assert_eq!(ws.len(), expected, "t={t}");
        }
    }

    #[test]
    fn session_windows_touching_merge() {
        let a = TimeWindow { start: 0, end: 10 };
        let b = TimeWindow { start: 10, end: 20 };
        let c = TimeWindow { start: 11, end: 20 };
        assert!(a.touches(&b));
        assert!(!a.touches(&c));
        assert_eq!(a.cover(&b), TimeWindow { start: 0, end: 20 });
    }
}
