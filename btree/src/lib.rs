//! The copy-on-write B+tree that stores one partition's items.
//!
//! (Being built under issue 2; see ARCHITECTURE.md.)
