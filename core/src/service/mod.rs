//! The shared inference service: with pg_clip preloaded, one background worker ("pg_clip
//! inference") holds every ONNX Runtime session of the server, and backends send it work over
//! a Unix-domain socket in the data directory: image tensors they decoded and resized
//! themselves (bad images stay their own per-row errors), raw texts (tokenised in the
//! service), and get L2-normalised vectors back. Concurrent callers' requests for one model
//! and tower are run as one batch.
//!
//! Plain Rust, tested without Postgres (core/tests/service.rs); src/service.rs is the glue.

pub mod client;
pub mod server;
pub mod wire;

pub use client::{poll_wait, Client};
pub use server::{start, Config, Handle};
pub use wire::{
    images_per_request, Input, ModelInfo, ModelSpec, Priority, Reply, Request, Tower, SOCKET_NAME,
};
