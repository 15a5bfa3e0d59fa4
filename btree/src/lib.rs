//! The copy-on-write B+tree that stores one partition's items.
//!
//! # What it owns
//! Ordered byte keys (up to 4 KiB) to byte values (up to 400 KiB), in fixed-size pages
//! that are never overwritten while anything can still see them: one writer (the owning
//! core) changes the tree while any number of readers on the same core read snapshots of
//! it. A checkpoint writes the pages changed since the last one to free places, syncs, then
//! flips one of two meta slots and syncs again (a small one writes pages and slot together
//! and syncs once, the slot listing the crc of every page it wrote, which open checks), so a
//! crash at any instant leaves the newest completed checkpoint intact. Freed pages are reused as soon as no snapshot and no
//! durable checkpoint can see them, so a steady overwrite load keeps the file's size
//! steady. A page cache with a byte budget keeps hot pages in memory; the rest are read on
//! demand. The layout on disk and the crash analysis are in `DESIGN.md` next to this crate.
//!
//! # What it never does
//! It never imports glommio or any runtime, never spawns, never reads a clock, and does no
//! I/O except through the [`PageStore`] trait. It never trusts a page it reads: every page
//! is checksummed and checked, and a bad one is an [`Error::CorruptPage`] naming it, never
//! data handed on and never a panic. It takes no locks: one core owns a tree, so sharing is
//! `Rc` and `RefCell`, and futures are `!Send` on purpose.
//!
//! # Why it is its own crate
//! The tree is the product's storage format: it must be testable without a disk (the
//! [`MemStore`] and the seeded [`SimStore`], which loses unsynced writes, tears pages and
//! injects I/O errors), fuzzable (`fuzz/`), and usable under any runtime. The glommio store
//! on real files lives in the `devices` crate.
//!
//! # Example
//! ```
//! # futures_lite_block_on(async {
//! use btree::{Config, MemStore, Tree};
//! let config = Config::test_min();
//! let mut tree = Tree::open(MemStore::new(config.page_size_bytes), config).await.unwrap();
//! tree.put(b"k", b"v").await.unwrap();
//! tree.checkpoint().await.unwrap();
//! assert_eq!(tree.get(b"k").await.unwrap(), Some(b"v".to_vec()));
//! # });
//! # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output { btree::block_on(f) }
//! ```

#![warn(missing_docs)]

pub mod error;
pub mod limits;
pub mod page;
mod shared;
mod ship;
pub mod store;
mod tree;

pub use error::{Error, InvariantError, StoreError};
pub use ship::{ShipReceiver, ShipStream};
pub use store::{MemStore, PageStore, SimStore};
pub use tree::{
    BatchOp, CheckpointJob, CheckpointProgress, CheckpointStats, Cursor, Direction, Snapshot, Tree,
    WriteBatch,
};

/// How a tree is sized and paced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Page size in bytes: a power of two in 4096..=65536; must match the store's.
    pub page_size_bytes: usize,
    /// Page cache budget in bytes. Dirty pages are pinned and may exceed it until the next
    /// checkpoint; clean pages are evicted to stay under it.
    pub cache_bytes_max: usize,
    /// Page writes a checkpoint keeps in flight at once.
    pub checkpoint_writes_in_flight_max: usize,
    /// Debug builds check every invariant after each write while the tree holds at most this
    /// many items (the check walks the whole tree).
    pub invariant_check_items_max: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            page_size_bytes: limits::PAGE_BYTES_DEFAULT,
            cache_bytes_max: limits::CACHE_BYTES_DEFAULT,
            checkpoint_writes_in_flight_max: limits::CHECKPOINT_WRITES_IN_FLIGHT_DEFAULT,
            invariant_check_items_max: 2_000,
        }
    }
}

impl Config {
    /// The smallest sensible tree: 4 KiB pages and a 64 KiB cache, so tests reach splits,
    /// overflow pages, eviction and page reuse within a few hundred items.
    pub fn test_min() -> Self {
        Config {
            page_size_bytes: limits::PAGE_BYTES_MIN,
            cache_bytes_max: 64 * 1024,
            checkpoint_writes_in_flight_max: 4,
            invariant_check_items_max: 2_000,
        }
    }
}

/// Runs a future to completion on the current thread, for stores whose futures complete
/// without a reactor (MemStore, SimStore): tests, examples, tools.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut cx = Context::from_waker(Waker::noop());
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}
