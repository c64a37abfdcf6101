//! The SQL surface: one file per area, each function validating input and calling the core.

pub mod collection;
pub mod embed;
pub mod identify;
pub mod learn;
pub mod model;
pub mod projection;
pub mod vocab;
