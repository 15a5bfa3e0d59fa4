//! percore-meta: the metadata service (placeholder essay, rewritten below).
pub mod limits;
pub mod records;
pub mod state;
