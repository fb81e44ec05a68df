//! Keyed state: key groups, the key layout, the RocksDB store and timer indexes.
//!
//! `state/` owns how state is laid out and written; operators build keys with [`layout`],
//! collect writes in a [`StateBatch`] and keep pending timers in a [`TimerIndex`], and never
//! name the storage engine. Every state key starts with its key group (2 bytes, big-endian),
//! then the operator id (2 bytes) and a [`Tag`], so one key group's state is a contiguous
//! range that can be scanned, moved and restored on its own when parallelism changes.

pub mod batch;
pub mod keygroup;
pub mod layout;
pub mod store;
pub mod timers;

pub use batch::StateBatch;
pub use keygroup::{key_group_of, task_of_key_group, KeyGroup};
pub use layout::Tag;
pub use store::{StateError, StateStore};
pub use timers::TimerIndex;

/// A time in state keys and timers: milliseconds since the Unix epoch, the same numbers as
/// event times (`record::EventTime`), named here so `state/` depends on no other module.
pub type Millis = i64;
