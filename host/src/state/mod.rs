//! Keyed state: key groups and the RocksDB store.
//!
//! Every state key starts with its key group (2 bytes, big-endian), then the operator id
//! (2 bytes), so one key group's state is a contiguous range that can be scanned, moved and
//! restored on its own when parallelism changes.

pub mod keygroup;
pub mod store;

pub use keygroup::{key_group_of, task_of_key_group, KeyGroup};
pub use store::{StateError, StateStore};
