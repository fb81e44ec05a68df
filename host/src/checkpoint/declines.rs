//! Checkpoints that could not be written to the storage (S3 unreachable, disk full): each is
//! *declined* — nothing is committed for it, its local snapshots are dropped, and the sinks'
//! pending output stays pending, so the next checkpoint commits it — and the run goes on. Only
//! when more than `checkpoint.tolerable_failures` checkpoints in a row fail does the run stop,
//! with the storage and the last cause in the error.

use std::time::{Duration, Instant};

use super::{CheckpointError, CheckpointId};

/// The count of checkpoints declined in a row, and when the next may start.
#[derive(Debug)]
pub struct Declines {
    tolerable: u32,
    in_a_row: u32,
    /// After a decline, no checkpoint starts before this (not even a stop's or a savepoint's).
    retry_at: Option<Instant>,
    pause: Duration,
}

impl Declines {
    /// `tolerable` failures in a row are survived; after a decline the next checkpoint waits
    /// `pause`.
    pub fn new(tolerable: u32, pause: Duration) -> Declines {
        Declines {
            tolerable,
            in_a_row: 0,
            retry_at: None,
            pause,
        }
    }

    /// A checkpoint completed: the count starts over.
    pub fn completed(&mut self) {
        self.in_a_row = 0;
        self.retry_at = None;
    }

    /// Whether a checkpoint may start at `now`.
    pub fn may_start(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| now >= at)
    }

    /// How long until a checkpoint may start.
    pub fn wait(&self, now: Instant) -> Duration {
        self.retry_at
            .map(|at| at.saturating_duration_since(now))
            .unwrap_or_default()
    }

    /// Checkpoint `id` could not be written to `storage` because of `cause`: logs it, and
    /// returns the error that stops the run once too many failed in a row.
    pub fn declined(
        &mut self,
        id: CheckpointId,
        storage: &str,
        cause: CheckpointError,
    ) -> Result<(), CheckpointError> {
        self.in_a_row += 1;
        self.retry_at = Some(Instant::now() + self.pause);
        if self.in_a_row > self.tolerable {
            return Err(CheckpointError::TooManyFailures {
                url: storage.to_string(),
                failures: self.in_a_row,
                tolerable: self.tolerable,
                cause: Box::new(cause),
            });
        }
        tracing::warn!(
            checkpoint = id,
            failures_in_a_row = self.in_a_row,
            tolerable = self.tolerable,
            "checkpoint {id} declined: writing it to {storage} failed: {cause}; nothing was committed for it, and the next checkpoint takes its data (the run stops after {} failures in a row)",
            self.tolerable + 1
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cause() -> CheckpointError {
        CheckpointError::Store {
            url: "s3://b/p/shared/x".into(),
            message: "connection refused".into(),
        }
    }

    #[test]
    fn the_run_stops_only_after_more_than_the_tolerated_failures_in_a_row() {
        let mut d = Declines::new(2, Duration::ZERO);
        d.declined(1, "s3://b/p", cause()).expect("first tolerated");
        d.declined(2, "s3://b/p", cause())
            .expect("second tolerated");
        d.completed();
        d.declined(4, "s3://b/p", cause())
            .expect("the count started over");
        d.declined(5, "s3://b/p", cause()).expect("tolerated");
        let e = d
            .declined(6, "s3://b/p", cause())
            .expect_err("third in a row");
        let text = e.to_string();
        assert!(
            text.contains("3 checkpoints in a row could not be written to `s3://b/p`")
                && text.contains("tolerable_failures is 2")
                && text.contains("connection refused"),
            "{text}"
        );
        let mut strict = Declines::new(0, Duration::ZERO);
        assert!(strict.declined(1, "file:///c", cause()).is_err());
    }

    #[test]
    fn after_a_decline_the_next_checkpoint_waits() {
        let mut d = Declines::new(3, Duration::from_secs(60));
        let now = Instant::now();
        assert!(d.may_start(now));
        d.declined(1, "s3://b/p", cause()).expect("tolerated");
        assert!(!d.may_start(Instant::now()));
        assert!(d.wait(Instant::now()) > Duration::from_secs(50));
        d.completed();
        assert!(d.may_start(Instant::now()));
    }
}
