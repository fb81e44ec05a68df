//! Late data: records whose every window is past its allowed lateness.

use crate::dlq::ErrorClass;
use crate::record::Record;
use crate::time::{format_time, TimeWindow};

use super::WindowOp;
use crate::ops::{dead_letter_for, Context};

/// Where records later than the allowed lateness go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LateTarget {
    /// Index of a side-output sink.
    Sink(usize),
    Dlq,
    Drop,
}

impl WindowOp {
    pub(super) fn is_late(&self, w: &TimeWindow) -> bool {
        self.cleanup_time(w) <= self.watermark
    }

    pub(super) fn handle_late(&self, record: &Record, ctx: &mut Context) {
        ctx.late += 1;
        match &self.cfg.late {
            LateTarget::Sink(idx) => ctx.side.push((*idx, record.value().clone())),
            LateTarget::Dlq => {
                ctx.dead_not_an_end += 1;
                ctx.dead.push(dead_letter_for(
                record,
                &self.cfg.step,
                ErrorClass::Permanent,
                format!(
                    "late record: event time {} is past every window's allowed lateness ({} ms) at watermark {}",
                    format_time(record.time),
                    self.cfg.allowed_lateness_ms,
                    format_time(self.watermark)
                ),
            ));
            }
            LateTarget::Drop => {}
        }
    }
}
