//! The page-store trait the tree does all its I/O through, and two stores that need no
//! device: [`MemStore`] (plain memory) and [`SimStore`] (a seeded simulator of crashes,
//! torn pages and I/O errors).

use crate::error::StoreError;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Fixed-size pages addressed by id: the only I/O the tree ever does.
///
/// No `Send` bounds: a store belongs to one core, and its futures stay there.
#[allow(async_fn_in_trait)]
pub trait PageStore {
    /// Page size in bytes: a power of two in 4096..=65536.
    fn page_size(&self) -> usize;
    /// Reads page `page_id` into `buf` (exactly one page long).
    async fn read_page(&self, page_id: u64, buf: &mut [u8]) -> Result<(), StoreError>;
    /// Reads consecutive pages from `first_page_id` into `buf` (a whole number of pages).
    /// The default reads them one by one; a store on a device should make it one read.
    async fn read_pages(&self, first_page_id: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        let page = self.page_size();
        check_whole_pages(buf.len(), page)?;
        for (i, chunk) in buf.chunks_mut(page).enumerate() {
            self.read_page(first_page_id + i as u64, chunk).await?;
        }
        Ok(())
    }
    /// Writes `buf` (exactly one page long) at page `page_id`, growing the store if needed.
    /// Several writes may be in flight at once; none is durable before `sync`.
    async fn write_page(&self, page_id: u64, buf: &[u8]) -> Result<(), StoreError>;
    /// Writes consecutive pages from `first_page_id` (`buf` is a whole number of pages).
    /// The default writes them one by one; a store on a device should make it one write.
    async fn write_pages(&self, first_page_id: u64, buf: &[u8]) -> Result<(), StoreError> {
        let page = self.page_size();
        check_whole_pages(buf.len(), page)?;
        for (i, chunk) in buf.chunks(page).enumerate() {
            self.write_page(first_page_id + i as u64, chunk).await?;
        }
        Ok(())
    }
    /// Makes everything written so far durable.
    async fn sync(&self) -> Result<(), StoreError>;
    /// The store's current length in pages.
    fn page_count(&self) -> u64;
    /// Shortens (or lengthens) the store to `page_count` pages, giving space back.
    async fn truncate(&self, page_count: u64) -> Result<(), StoreError>;
}

/// A multi-page buffer's check: a whole number of pages.
fn check_whole_pages(len: usize, page_size: usize) -> Result<(), StoreError> {
    if len % page_size == 0 {
        Ok(())
    } else {
        Err(StoreError::BadBufferLength { len, page_size })
    }
}

fn check_len(len: usize, page_size: usize) -> Result<(), StoreError> {
    if len == page_size {
        Ok(())
    } else {
        Err(StoreError::BadBufferLength { len, page_size })
    }
}

/// Pages by id; None: never written (reads as zeros).
type Pages = Vec<Option<Box<[u8]>>>;

/// An in-memory page store; clones share the same pages (so a test can reopen a tree on it).
#[derive(Clone)]
pub struct MemStore {
    page_size: usize,
    pages: Rc<RefCell<Pages>>,
}

impl MemStore {
    /// An empty store of `page_size`-byte pages.
    pub fn new(page_size: usize) -> Self {
        MemStore {
            page_size,
            pages: Rc::new(RefCell::new(Vec::new())),
        }
    }
}

impl PageStore for MemStore {
    fn page_size(&self) -> usize {
        self.page_size
    }

    async fn read_page(&self, page_id: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        check_len(buf.len(), self.page_size)?;
        let pages = self.pages.borrow();
        match pages.get(page_id as usize) {
            None => Err(StoreError::OutOfRange {
                page_id,
                page_count: pages.len() as u64,
            }),
            Some(None) => {
                buf.fill(0);
                Ok(())
            }
            Some(Some(p)) => {
                buf.copy_from_slice(p);
                Ok(())
            }
        }
    }

    async fn write_page(&self, page_id: u64, buf: &[u8]) -> Result<(), StoreError> {
        check_len(buf.len(), self.page_size)?;
        let mut pages = self.pages.borrow_mut();
        let i = page_id as usize;
        if pages.len() <= i {
            pages.resize(i + 1, None);
        }
        pages[i] = Some(buf.into());
        Ok(())
    }

    async fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn page_count(&self) -> u64 {
        self.pages.borrow().len() as u64
    }

    async fn truncate(&self, page_count: u64) -> Result<(), StoreError> {
        self.pages.borrow_mut().resize(page_count as usize, None);
        Ok(())
    }
}

/// The sector size the simulator tears pages at: a torn page is a mix of old and new
/// 512-byte sectors (see DESIGN.md, "Assumptions about the media").
pub const SIM_SECTOR_BYTES: usize = 512;

/// A seeded simulated disk: writes stay volatile until `sync`; `crash()` loses, keeps or tears
/// each unsynced write; a countdown can make every I/O after the n-th fail.
///
/// Clones share the same disk, so a test keeps one handle to crash it while a tree owns
/// another.
#[derive(Clone)]
pub struct SimStore {
    inner: Rc<RefCell<SimInner>>,
}

struct SimInner {
    page_size: usize,
    durable: Vec<Option<Box<[u8]>>>,
    /// Unsynced writes, newest content per page, and the length they imply.
    volatile: HashMap<u64, Box<[u8]>>,
    volatile_len: u64,
    rng: u64,
    /// I/O operations left before faults start (None: never).
    fail_countdown: Option<u64>,
    ops: u64,
}

impl SimInner {
    fn next_rand(&mut self) -> u64 {
        // splitmix64: one u64 seed replays every choice.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fault(&mut self, op: &'static str) -> Result<(), StoreError> {
        self.ops += 1;
        match &mut self.fail_countdown {
            Some(0) => Err(StoreError::Injected { op }),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl SimStore {
    /// An empty simulated disk whose faults are all chosen by `seed`.
    pub fn new(page_size: usize, seed: u64) -> Self {
        SimStore {
            inner: Rc::new(RefCell::new(SimInner {
                page_size,
                durable: Vec::new(),
                volatile: HashMap::new(),
                volatile_len: 0,
                rng: seed,
                fail_countdown: None,
                ops: 0,
            })),
        }
    }

    /// Power loss: each unsynced write is lost, kept, or torn (a seeded mix of old and new
    /// sectors). Afterwards the disk holds only what survived.
    pub fn crash(&self) {
        let mut s = self.inner.borrow_mut();
        let mut writes: Vec<(u64, Box<[u8]>)> = s.volatile.drain().collect();
        writes.sort_by_key(|w| w.0);
        s.volatile_len = s.durable.len() as u64;
        for (id, new) in writes {
            let choice = s.next_rand() % 3;
            if choice == 0 {
                continue; // lost
            }
            let i = id as usize;
            if s.durable.len() <= i {
                s.durable.resize(i + 1, None);
            }
            let page_size = s.page_size;
            let mut page: Box<[u8]> = match &s.durable[i] {
                Some(old) => old.clone(),
                None => vec![0u8; page_size].into(),
            };
            if choice == 1 {
                page.copy_from_slice(&new);
            } else {
                for sector in 0..page_size / SIM_SECTOR_BYTES {
                    if s.next_rand() % 2 == 0 {
                        let r = sector * SIM_SECTOR_BYTES..(sector + 1) * SIM_SECTOR_BYTES;
                        page[r.clone()].copy_from_slice(&new[r]);
                    }
                }
            }
            s.durable[i] = Some(page);
        }
        s.volatile_len = s.durable.len() as u64;
    }

    /// After `ops` more I/O operations, every operation fails until `clear_faults`.
    pub fn fail_after(&self, ops: u64) {
        self.inner.borrow_mut().fail_countdown = Some(ops);
    }

    /// Stops injecting faults.
    pub fn clear_faults(&self) {
        self.inner.borrow_mut().fail_countdown = None;
    }

    /// I/O operations served so far (to pick a countdown).
    pub fn op_count(&self) -> u64 {
        self.inner.borrow().ops
    }

    /// Overwrites a durable page's byte (a test's bit rot).
    pub fn corrupt_byte(&self, page_id: u64, offset: usize, xor: u8) {
        let mut s = self.inner.borrow_mut();
        if let Some(p) = s.volatile.get_mut(&page_id) {
            p[offset] ^= xor;
        }
        if let Some(Some(p)) = s.durable.get_mut(page_id as usize) {
            p[offset] ^= xor;
        }
    }
}

impl PageStore for SimStore {
    fn page_size(&self) -> usize {
        self.inner.borrow().page_size
    }

    async fn read_page(&self, page_id: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        let mut s = self.inner.borrow_mut();
        check_len(buf.len(), s.page_size)?;
        s.fault("read")?;
        if page_id >= s.volatile_len {
            return Err(StoreError::OutOfRange {
                page_id,
                page_count: s.volatile_len,
            });
        }
        if let Some(p) = s.volatile.get(&page_id) {
            buf.copy_from_slice(p);
        } else if let Some(Some(p)) = s.durable.get(page_id as usize) {
            buf.copy_from_slice(p);
        } else {
            buf.fill(0);
        }
        Ok(())
    }

    async fn write_page(&self, page_id: u64, buf: &[u8]) -> Result<(), StoreError> {
        let mut s = self.inner.borrow_mut();
        check_len(buf.len(), s.page_size)?;
        s.fault("write")?;
        s.volatile.insert(page_id, buf.into());
        s.volatile_len = s.volatile_len.max(page_id + 1);
        Ok(())
    }

    async fn sync(&self) -> Result<(), StoreError> {
        let mut s = self.inner.borrow_mut();
        s.fault("sync")?;
        let writes: Vec<(u64, Box<[u8]>)> = s.volatile.drain().collect();
        let len = s.volatile_len as usize;
        if s.durable.len() < len {
            s.durable.resize(len, None);
        }
        for (id, page) in writes {
            s.durable[id as usize] = Some(page);
        }
        Ok(())
    }

    fn page_count(&self) -> u64 {
        self.inner.borrow().volatile_len
    }

    async fn truncate(&self, page_count: u64) -> Result<(), StoreError> {
        let mut s = self.inner.borrow_mut();
        s.fault("truncate")?;
        // A truncate is a metadata operation: the simulator treats it as durable at once.
        s.durable.truncate(page_count as usize);
        s.volatile.retain(|id, _| *id < page_count);
        s.volatile_len = page_count;
        Ok(())
    }
}
