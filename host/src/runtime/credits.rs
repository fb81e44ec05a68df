//! Credits: per sender, how many of its messages a receiver (a stage task or a sink
//! instance) has handled. In unaligned checkpoints a sender keeps at most a window of
//! unhandled messages per receiver (`outputs::wait_for_credit`), so captures of in-flight
//! data stay bounded; a receiver that goes away releases senders waiting for its credit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Per sender, how many of its messages a receiver (stage task or sink) has handled; and
/// whether the receiver has gone (a sender waiting for credit then gives up).
pub struct CreditCounters {
    pub handled: Vec<AtomicU64>,
    /// Per sender: the `handled` count at which to wake it (`u64::MAX`: not waiting).
    pub(super) wake_at: Vec<AtomicU64>,
    pub(super) waiters: Vec<std::sync::Mutex<Option<std::thread::Thread>>>,
    pub(super) closed: std::sync::atomic::AtomicBool,
}

impl CreditCounters {
    pub fn new(senders: usize) -> Credits {
        Arc::new(CreditCounters {
            handled: (0..senders).map(|_| AtomicU64::new(0)).collect(),
            wake_at: (0..senders).map(|_| AtomicU64::new(u64::MAX)).collect(),
            waiters: (0..senders).map(|_| std::sync::Mutex::new(None)).collect(),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The receiver handled one more message from `sender`.
    pub fn handled_one(&self, sender: usize) {
        let Some(h) = self.handled.get(sender) else {
            return;
        };
        let now = h.fetch_add(1, Ordering::SeqCst) + 1;
        if self.wake_at[sender].load(Ordering::SeqCst) <= now {
            self.wake(sender);
        }
    }

    fn wake(&self, sender: usize) {
        self.wake_at[sender].store(u64::MAX, Ordering::SeqCst);
        if let Ok(mut w) = self.waiters[sender].lock() {
            if let Some(t) = w.take() {
                t.unpark();
            }
        }
    }
}

/// Per sender: how many of its messages a receiver has handled.
pub type Credits = Arc<CreditCounters>;

/// Held by a receiver: when it goes (however it ends), senders waiting for its credit stop
/// waiting.
pub struct CloseCreditsOnDrop(pub Credits);

impl Drop for CloseCreditsOnDrop {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::SeqCst);
        for sender in 0..self.0.waiters.len() {
            self.0.wake(sender);
        }
    }
}
