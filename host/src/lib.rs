//! Headwater: a stateful stream-processing host.
//!
//! The data path, source to sink: [`sources`] read partitions and decode records at the edge,
//! [`time`] stamps watermarks, [`ops`] run the steps (filter, map, key_by, window, UDF calls
//! through [`udf`]), keyed state lives in [`state`] (RocksDB, keys prefixed by key group), and
//! [`sinks`] write results. [`runtime`] wires it into parallel tasks with bounded channels.
//! Bad records go to the [`dlq`]. See ARCHITECTURE.md for the whole picture.

pub mod checkpoint;
pub mod config;
pub mod connectors;
pub mod dlq;
pub mod expr;
pub mod metrics;
pub mod ops;
pub mod record;
pub mod run_control;
pub mod runtime;
pub mod sinks;
pub mod sources;
pub mod state;
pub mod time;
pub mod udf;
pub mod value;
