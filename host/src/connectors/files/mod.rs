//! Files and the standard streams: JSON-lines sources reading files (a glob, one partition per
//! file) or stdin, and sinks writing a file, per-checkpoint part files, or stdout.

pub mod line_reader;
pub mod lines;
pub mod parts;
mod sink;

pub use parts::read_committed;
pub use sink::{FileSink, StdoutSink};
