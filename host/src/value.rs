//! The record value model, shared with the Rust SDK so native UDFs see records without copies.

pub use headwater_value::*;
