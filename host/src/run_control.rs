//! Stop and cancel requests shared by everything a run starts: tasks, sinks, the checkpoint
//! coordinator, the control API. Below every other layer, so any of them may hold one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared run state: stop (drain and finish) and cancel (abort) requests.
#[derive(Debug, Default)]
pub struct RunControl {
    stop: AtomicBool,
    cancel: AtomicBool,
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
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}
