//! The job runners, one module per kind.

pub mod eval;
pub mod noop;
pub mod self_label;
