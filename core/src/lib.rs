//! pg_clip's core: everything that does not need Postgres. Image preprocessing, tokenising,
//! model folders and ONNX Runtime sessions, each unit-tested with plain `cargo test`.

pub mod error;
pub mod files;
pub mod interrupt;
pub mod learn;
pub mod model;
pub mod onnx_files;
pub mod preprocess;
pub mod reference;
pub mod runtime;
pub mod service;
pub mod thumbnail;
pub mod tokenize;
pub mod vocab;

pub use error::{ClipError, ErrorKind, Result};
pub use interrupt::{Interrupt, CANCELLED};
