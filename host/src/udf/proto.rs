//! Rust code generated from `proto/headwater/udf/v1/worker.proto` at build time.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("headwater.udf.v1");
