//! The per-core write-ahead log, shared by every partition on the core.
//!
//! (Being built under issue 3; see ARCHITECTURE.md.)
