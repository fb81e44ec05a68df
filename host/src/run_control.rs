//! Stop and cancel requests shared by everything a run starts: tasks, sinks, the checkpoint
//! coordinator, the control API. Below every other layer, so any of them may hold one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

/// Shared run state: stop (drain and finish) and cancel (abort) requests.
#[derive(Debug, Default)]
pub struct RunControl {
    stop: AtomicBool,
    cancel: AtomicBool,
    /// Fired on cancel: wakes operators waiting between retry attempts.
    cancel_signal: CancelSignal,
}

impl RunControl {
    pub fn new() -> Arc<Self> {
        Arc::new(RunControl::default())
    }

    /// Ends every source as if its input were exhausted: open windows fire, output is
    /// flushed, the run returns its summary.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Aborts the run after a fatal error.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
        self.cancel_signal.cancel();
    }

    /// What operators wait on between retry attempts, so a cancel wakes them at once.
    pub fn cancel_signal(&self) -> CancelSignal {
        self.cancel_signal.clone()
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// Fires once when the run is cancelled; operators waiting between attempts wake at once.
/// Clones share the signal. A fresh signal never fires unless [`CancelSignal::cancel`] is
/// called, so an operator built without one waits its full backoff, as before.
#[derive(Clone, Debug, Default)]
pub struct CancelSignal {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl CancelSignal {
    pub fn new() -> Self {
        CancelSignal::default()
    }

    /// Fires the signal: every current and later wait returns at once.
    pub fn cancel(&self) {
        let (flag, woken) = &*self.inner;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        woken.notify_all();
    }

    pub fn is_cancelled(&self) -> bool {
        *self.inner.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `deadline` unless the signal fires first; true if it fired.
    pub fn wait_until(&self, deadline: Instant) -> bool {
        let (flag, woken) = &*self.inner;
        let mut cancelled = flag.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if *cancelled {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            if left.is_zero() {
                return false;
            }
            cancelled = woken
                .wait_timeout(cancelled, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}
