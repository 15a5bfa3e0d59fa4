//! The glommio-backed devices: where percore's storage traits meet io_uring.
//!
//! `btree` and `wal` are written against small async traits (a page store, a block device)
//! and never import glommio, so that tests can run them in memory or in a seeded simulator.
//! This crate holds the production implementations of those traits on glommio DMA files
//! (O_DIRECT, io_uring), and the workarounds for glommio's traps that
//! `../shared/GLOMMIO-NOTES.md` lists, in one place that every daemon shares.

pub mod block_device;
pub mod dma;
pub mod page_store;
