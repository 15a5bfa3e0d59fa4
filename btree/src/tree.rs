//! The tree: the writer's handle (`Tree`), read-only views (`Snapshot`), range cursors,
//! checkpoints and space management.

use crate::error::{Error, InvariantError};
use crate::limits::*;
use crate::page::{self, Node, PageView, NO_PAGE};
use crate::shared::{Cached, Shared, State};
use crate::store::PageStore;
use crate::Config;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::ops::{Bound, RangeBounds};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// Which way a range cursor walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Ascending keys.
    Forward,
    /// Descending keys.
    Reverse,
}

/// One operation of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Insert or replace.
    Put(Vec<u8>, Vec<u8>),
    /// Remove if present.
    Delete(Vec<u8>),
}

/// Puts and deletes applied together by `Tree::apply`: all or nothing, visible together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a put.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> &mut Self {
        self.ops.push(BatchOp::Put(key.to_vec(), value.to_vec()));
        self
    }
    /// Adds a delete.
    pub fn delete(&mut self, key: &[u8]) -> &mut Self {
        self.ops.push(BatchOp::Delete(key.to_vec()));
        self
    }
    /// The operations, in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }
    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    /// Removes every operation, keeping the allocation.
    pub fn clear(&mut self) {
        self.ops.clear();
    }
}

/// What a completed checkpoint did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// The checkpoint's transaction number (0: nothing to do, no I/O).
    pub txn: u64,
    /// Pages written, meta slot included.
    pub pages_written: u64,
    /// The file's length in pages after it.
    pub page_count: u64,
}

/// Where a sliced checkpoint stands after a `checkpoint_step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointProgress {
    /// More steps needed.
    InProgress {
        /// Pages written so far.
        pages_written: u64,
        /// Pages still to write (before the freelist and the meta slot).
        pages_left: u64,
    },
    /// Durable.
    Done(CheckpointStats),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Data,
    Freelist,
    SyncData,
    Meta,
    SyncMeta,
}

struct Ckpt {
    /// The high-water mark the meta slot records: read when the freelist is built, so that
    /// pages the writer allocates while the job's writes are in flight stay beyond it.
    hw_end: u64,
    gen: u64,
    txn: u64,
    root: u64,
    depth: u32,
    count: u64,
    hw_start: u64,
    captured: Vec<u64>,
    writes: Vec<(u64, Cached)>,
    next: usize,
    /// Pages the checkpoint allocated for itself (long-key runs, freelist pages).
    allocated: Vec<u64>,
    freelist: Vec<u64>,
    pages_written: u64,
    phase: Phase,
    /// Every page written, with its crc32 (for a single-sync meta slot).
    written: Vec<(u64, u32)>,
    single_sync: bool,
    /// Small checkpoint: hold the page writes back and issue them with the meta slot.
    defer: bool,
    deferred: Vec<(u64, Vec<u8>)>,
    /// `writes[..unpinned]` are written and may be evicted.
    unpinned: std::cell::Cell<usize>,
}

/// The writer's handle on a copy-on-write B+tree over a [`PageStore`].
///
/// One per partition, owned by its core. Reads take `&self`; writes `&mut self`. For reads
/// that must outlive writes, take a [`Snapshot`].
pub struct Tree<S: PageStore> {
    sh: Rc<Shared<S>>,
    root: u64,
    depth: u32,
    count: u64,
    /// Transaction of the durable checkpoint.
    txn: u64,
    durable_gen: u64,
    /// The durable checkpoint's freelist pages: free once a newer checkpoint is durable.
    durable_extra: Vec<u64>,
    /// Root/depth/count of the durable checkpoint, to skip empty checkpoints.
    durable_root: u64,
    ckpt: Option<Ckpt>,
    /// A [`CheckpointJob`] is out: no other checkpoint may start until it is finished.
    job_out: bool,
    poisoned: bool,
    force_ckpt: bool,
}

/// A checkpoint's I/O, detached from its tree (see [`Tree::checkpoint_begin`]).
///
/// It holds the pages the tree had dirty when it began (shared, copy-on-write: later writes
/// to the tree copy them again) and writes them, then the freelist and the meta slot, with
/// the syncs between, a budget of pages per [`CheckpointJob::step`].
pub struct CheckpointJob<S: PageStore> {
    sh: Rc<Shared<S>>,
    ck: Ckpt,
    durable: bool,
    failed: bool,
}

impl<S: PageStore> CheckpointJob<S> {
    /// Writes at most `page_budget` data pages (then the freelist, meta slot and syncs once
    /// the data pages are out). Returns true once the checkpoint is durable.
    pub async fn step(&mut self, page_budget: usize) -> Result<bool, Error> {
        if self.failed {
            return Err(Error::Poisoned);
        }
        if self.durable {
            return Ok(true);
        }
        match Tree::run_checkpoint(&self.sh, &mut self.ck, page_budget.max(1)).await {
            Ok(durable) => {
                self.durable = durable;
                Ok(durable)
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Pages written so far.
    pub fn pages_written(&self) -> u64 {
        self.ck.pages_written
    }

    /// Data pages still to write (before the freelist and the meta slot).
    pub fn pages_left(&self) -> u64 {
        (self.ck.writes.len() - self.ck.next) as u64
    }
}

fn boxed<'a, T>(f: impl Future<Output = T> + 'a) -> Pin<Box<dyn Future<Output = T> + 'a>> {
    Box::pin(f)
}

type WriteFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + 'a>>;
/// A page to visit in the invariant walk: id, level, lower bound (incl.), upper (excl.).
type Visit = (u64, u32, Option<Vec<u8>>, Option<Vec<u8>>);

/// Polls several futures on the current task until all finish or one fails.
struct JoinAll<'a> {
    futs: Vec<Option<WriteFuture<'a>>>,
}

impl Future for JoinAll<'_> {
    type Output = Result<(), Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut pending = false;
        for slot in self.futs.iter_mut() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(Ok(())) => *slot = None,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }
}

fn inv(page_id: Option<u64>, what: impl Into<String>) -> Error {
    Error::Invariant(InvariantError {
        page_id,
        what: what.into(),
    })
}

impl<S: PageStore> Tree<S> {
    /// Opens the tree in `store`: a new empty tree if the store is empty, else the newest
    /// valid checkpoint.
    pub async fn open(store: S, config: Config) -> Result<Self, Error> {
        let page = config.page_size_bytes;
        if !(PAGE_BYTES_MIN..=PAGE_BYTES_MAX).contains(&page) || !page.is_power_of_two() {
            return Err(Error::BadConfig {
                reason: "page size must be a power of two in 4096..=65536",
            });
        }
        if store.page_size() != page {
            return Err(Error::BadConfig {
                reason: "store page size differs from the config's",
            });
        }
        let mut metas = [None, None];
        let mut why = ["beyond the end of the store", "beyond the end of the store"];
        for slot in 0..META_SLOT_COUNT {
            if slot >= store.page_count() {
                continue;
            }
            let mut buf = vec![0u8; page];
            store.read_page(slot, &mut buf).await?;
            match page::decode(&buf, slot) {
                Ok(PageView::Meta(m)) => metas[slot as usize] = Some(m),
                Ok(_) => why[slot as usize] = "not a meta page",
                Err(Error::CorruptPage { reason, .. }) => why[slot as usize] = reason,
                Err(e) => return Err(e),
            }
        }
        // Newest first; a single-sync slot counts only if every page it wrote is on disk
        // with the crc it lists (a crash before its one sync may have lost or torn some).
        let mut cands: Vec<(usize, page::MetaSlot)> = metas
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.clone().map(|m| (i, m)))
            .collect();
        cands.sort_by_key(|c| std::cmp::Reverse(c.1.txn));
        let mut best = None;
        for (slot, m) in cands {
            match verify_written(&store, page, &m).await? {
                None => {
                    best = Some(m);
                    break;
                }
                Some(reason) => why[slot] = reason,
            }
        }
        let st = State {
            cache: Default::default(),
            cache_bytes: 0,
            hw: 0,
            free: BTreeSet::new(),
            pending: Vec::new(),
            pending_ids: Default::default(),
            live: BTreeMap::from([(0, 1)]),
            reclaim_due: false,
            reclaim_cursor: 0,
            reclaim_again: false,
            evict_skip_until: 0,
            evict_scans: 0,
            dirty: Default::default(),
            long_runs: Default::default(),
            gen: 1,
        };
        let sh = Rc::new(Shared {
            store,
            page,
            cfg: config,
            st: RefCell::new(st),
        });
        let Some(meta) = best else {
            // A crash while creating leaves at most the two meta slots and the first root.
            if sh.store.page_count() > META_SLOT_COUNT + 1 {
                return Err(Error::NoValidMeta {
                    slot0: why[0],
                    slot1: why[1],
                });
            }
            return Self::create(sh).await;
        };
        let mut tree = Tree {
            sh: sh.clone(),
            root: meta.root,
            depth: meta.depth,
            count: meta.item_count,
            txn: meta.txn,
            durable_gen: 0,
            durable_extra: Vec::new(),
            durable_root: meta.root,
            ckpt: None,
            job_out: false,
            poisoned: false,
            force_ckpt: false,
        };
        let mut next = meta.freelist_head;
        let mut free = BTreeSet::new();
        let mut seen = 0;
        while next != NO_PAGE {
            seen += 1;
            if seen > meta.freelist_pages || next >= meta.high_water || next < META_SLOT_COUNT {
                return Err(Error::CorruptPage {
                    page_id: next,
                    reason: "freelist chain longer than the meta says",
                });
            }
            let buf = sh.read_raw(next).await?;
            let PageView::Freelist { next: n, ranges } = page::decode(&buf, next)? else {
                return Err(Error::CorruptPage {
                    page_id: next,
                    reason: "expected a freelist page",
                });
            };
            tree.durable_extra.push(next);
            for (s, l) in ranges {
                if s < META_SLOT_COUNT || s + l > meta.high_water {
                    return Err(Error::CorruptPage {
                        page_id: next,
                        reason: "free range outside the file",
                    });
                }
                free.extend(s..s + l);
            }
            next = n;
        }
        {
            let mut st = sh.st.borrow_mut();
            st.hw = meta.high_water;
            st.free = free;
        }
        // The root must decode: a bad root is reported here, not at the first get.
        sh.node(meta.root).await?;
        Ok(tree)
    }

    async fn create(sh: Rc<Shared<S>>) -> Result<Self, Error> {
        let root = META_SLOT_COUNT;
        let mut buf = vec![0u8; sh.page];
        Node::new(true).encode(&mut buf, root, 1, &[]);
        sh.store.write_page(root, &buf).await?;
        sh.store.sync().await?;
        let meta = page::MetaSlot {
            txn: 1,
            page_size: sh.page as u32,
            root,
            depth: 1,
            high_water: root + 1,
            item_count: 0,
            freelist_head: NO_PAGE,
            freelist_pages: 0,
            verify: Vec::new(),
        };
        page::encode_meta(&mut buf, 1, &meta);
        sh.store.write_page(1, &buf).await?;
        sh.store.sync().await?;
        sh.st.borrow_mut().hw = root + 1;
        Ok(Tree {
            sh,
            root,
            depth: 1,
            count: 0,
            txn: 1,
            durable_gen: 0,
            durable_extra: Vec::new(),
            durable_root: root,
            ckpt: None,
            job_out: false,
            poisoned: false,
            force_ckpt: false,
        })
    }

    /// The page store underneath.
    pub fn store(&self) -> &S {
        &self.sh.store
    }

    /// Items in the tree.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True if the tree holds no item.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Height of the tree (1: the root is a leaf).
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Bytes of pages changed since the last checkpoint began (what the next one writes).
    pub fn dirty_bytes(&self) -> u64 {
        self.sh.st.borrow().dirty.len() as u64 * self.sh.page as u64
    }

    /// Bytes the page cache holds now.
    pub fn cache_bytes(&self) -> u64 {
        self.sh.st.borrow().cache_bytes as u64
    }

    /// Eviction passes over the whole page cache since open: each scans every cached page,
    /// so this should grow far more slowly than writes do (a metric for the node to export).
    pub fn cache_eviction_scans(&self) -> u64 {
        self.sh.st.borrow().evict_scans
    }

    fn live(&self) -> Result<(), Error> {
        if self.poisoned {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    /// The value under `key`, copied out.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.live()?;
        get_with(&self.sh, self.root, key, |v| v.map(<[u8]>::to_vec)).await
    }

    /// Calls `f` with the value under `key`, borrowed from the cache (no copy for values
    /// that live in their leaf).
    pub async fn get_with<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, Error> {
        self.live()?;
        get_with(&self.sh, self.root, key, f).await
    }

    /// [`Tree::get_with`] without waiting: `Ok(None)` (and `f` not called) when a page on
    /// the way, or the value's overflow run, is not in the cache.
    ///
    /// Reading the live tree needs no snapshot, and a snapshot is not free: each one starts a
    /// new generation, so the next write copies its whole path again (measured: with reads
    /// and writes interleaved, every write re-copied root to leaf). Callers on one core that
    /// read between writes use this first and take a snapshot only for what must wait.
    pub fn get_cached_with<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<Option<R>, Error> {
        self.live()?;
        Ok(get_cached_with(&self.sh, self.root, key, f))
    }

    /// The smallest item.
    pub async fn first(&self) -> Result<Option<(Vec<u8>, Vec<u8>)>, Error> {
        self.live()?;
        self.snapshot().first().await
    }

    /// The largest item.
    pub async fn last(&self) -> Result<Option<(Vec<u8>, Vec<u8>)>, Error> {
        self.live()?;
        self.snapshot().last().await
    }

    /// A read-only view of the tree exactly as it is now, valid however long it lives.
    pub fn snapshot(&self) -> Snapshot<S> {
        let gen = self.sh.register_snapshot();
        Snapshot {
            sh: self.sh.clone(),
            root: self.root,
            count: self.count,
            depth: self.depth,
            gen,
        }
    }

    /// A cursor over the keys in `bounds`, walking in `direction`. It reads a snapshot taken
    /// now, so it may outlive later writes.
    pub async fn range<R: RangeBounds<[u8]>>(
        &self,
        bounds: R,
        direction: Direction,
    ) -> Result<Cursor<S>, Error> {
        self.live()?;
        self.snapshot().into_range(bounds, direction).await
    }

    /// Inserts or replaces `key`'s value.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.live()?;
        check_sizes(key, value)?;
        let r = self.put_inner(key, value).await;
        self.after_write(r).await
    }

    /// Removes `key`; true if it was there.
    pub async fn delete(&mut self, key: &[u8]) -> Result<bool, Error> {
        self.live()?;
        if key.len() > KEY_BYTES_MAX {
            return Err(Error::KeyTooLarge {
                len: key.len(),
                max: KEY_BYTES_MAX,
            });
        }
        let r = self.delete_inner(key).await;
        self.after_write(r).await
    }

    /// Applies a batch atomically: every operation or (on error) none. Sizes are checked
    /// before anything changes; an I/O failure half-way poisons the tree, so that nothing of
    /// the batch is ever checkpointed (reopen to continue from the last checkpoint).
    pub async fn apply(&mut self, batch: &WriteBatch) -> Result<(), Error> {
        self.live()?;
        for op in &batch.ops {
            match op {
                BatchOp::Put(k, v) => check_sizes(k, v)?,
                BatchOp::Delete(k) if k.len() > KEY_BYTES_MAX => {
                    return Err(Error::KeyTooLarge {
                        len: k.len(),
                        max: KEY_BYTES_MAX,
                    })
                }
                BatchOp::Delete(_) => {}
            }
        }
        let r = async {
            for op in &batch.ops {
                match op {
                    BatchOp::Put(k, v) => self.put_inner(k, v).await?,
                    BatchOp::Delete(k) => {
                        self.delete_inner(k).await?;
                    }
                }
            }
            Ok(())
        }
        .await;
        self.after_write(r).await
    }

    async fn after_write<T>(&mut self, r: Result<T, Error>) -> Result<T, Error> {
        if r.is_err() {
            self.poisoned = true;
            return r;
        }
        {
            let mut st = self.sh.st.borrow_mut();
            let budget = self.sh.cfg.cache_bytes_max;
            st.evict(budget);
        }
        #[cfg(debug_assertions)]
        if self.count <= self.sh.cfg.invariant_check_items_max {
            // I/O faults while checking are not the write's fault; broken rules are.
            if let Err(Error::Invariant(e)) = self.check_invariants().await {
                return Err(Error::Invariant(e));
            }
        }
        r
    }

    async fn put_inner(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let page = self.sh.page;
        let ovf = Node::cell_disk(true, page, key.len(), value.len()) > cell_bytes_max(page);
        if ovf {
            let first = self.write_overflow(value);
            self.insert(key, &first.to_le_bytes(), value.len(), true)
                .await
        } else {
            self.insert(key, value, value.len(), false).await
        }
    }

    fn write_overflow(&mut self, value: &[u8]) -> u64 {
        let page = self.sh.page;
        let per = overflow_payload_bytes(page);
        let n = page::pages_for(value.len(), page);
        let mut st = self.sh.st.borrow_mut();
        let first = st.alloc_run(n);
        for (k, chunk) in value.chunks(per).enumerate() {
            st.insert_dirty(first + k as u64, Cached::Ovf(Rc::new(chunk.to_vec())));
        }
        first
    }

    /// Makes page `id` writable by this generation: itself if private, else a copy at a new
    /// id (the old one is freed, pending while snapshots see it).
    async fn writable(&mut self, id: u64) -> Result<u64, Error> {
        {
            let st = self.sh.st.borrow();
            if st.cache.get(&id).is_some_and(|s| s.gen == st.gen) {
                return Ok(id);
            }
        }
        let node = self.sh.node(id).await?;
        let mut st = self.sh.st.borrow_mut();
        let new = st.alloc();
        let copy = (*node).clone();
        copy.stale.set(false);
        st.insert_dirty(new, Cached::Node(Rc::new(copy)));
        st.free_page(id);
        Ok(new)
    }

    fn with_mut<R>(&self, id: u64, f: impl FnOnce(&mut Node) -> R) -> R {
        let mut st = self.sh.st.borrow_mut();
        let st = &mut *st;
        let slot = st
            .cache
            .get_mut(&id)
            .expect("a writable page is pinned in the cache");
        let Cached::Node(rc) = &mut slot.page else {
            unreachable!("writable pages are nodes")
        };
        if Rc::strong_count(rc) > 1 {
            // Someone still holds this content (make_mut is about to copy it): links to
            // the old copy must not be followed any more.
            rc.stale.set(true);
        }
        // With only weak links left, make_mut moves the node and the links stop upgrading.
        let node = Rc::make_mut(rc);
        node.stale.set(false);
        let r = f(node);
        node.kid_cache.clear();
        let bytes = node.mem_bytes();
        st.cache_bytes = st.cache_bytes + bytes - slot.bytes;
        slot.bytes = bytes;
        r
    }

    fn new_node(&mut self, node: Node) -> u64 {
        let mut st = self.sh.st.borrow_mut();
        let id = st.alloc();
        st.insert_dirty(id, Cached::Node(Rc::new(node)));
        id
    }

    /// Walks from the root to `key`'s leaf, making every page on the way writable.
    async fn cow_path(&mut self, key: &[u8]) -> Result<(u64, Vec<(u64, usize)>), Error> {
        self.root = self.writable(self.root).await?;
        let mut path = Vec::with_capacity(self.depth as usize);
        let mut id = self.root;
        loop {
            // Steady state: two lookups per level (this node, and whether its child is
            // already private to this generation).
            let (idx, child, private) = {
                let st = self.sh.st.borrow();
                let Some(Cached::Node(node)) = st.cache.get(&id).map(|s| &s.page) else {
                    unreachable!("a writable page is pinned in the cache")
                };
                if node.leaf {
                    return Ok((id, path));
                }
                let idx = node.child_index(key);
                let child = node.kids[idx];
                (
                    idx,
                    child,
                    st.cache.get(&child).is_some_and(|s| s.gen == st.gen),
                )
            };
            let w = if private {
                child
            } else {
                self.writable(child).await?
            };
            if w != child {
                self.with_mut(id, |n| n.kids[idx] = w);
            }
            path.push((id, idx));
            id = w;
        }
    }

    fn free_run(&mut self, first: u64, len: usize) {
        let n = page::pages_for(len, self.sh.page);
        let mut st = self.sh.st.borrow_mut();
        for id in first..first + n {
            st.free_page(id);
        }
    }

    async fn insert(
        &mut self,
        key: &[u8],
        stored: &[u8],
        vlen: usize,
        ovf: bool,
    ) -> Result<(), Error> {
        let page = self.sh.page;
        let (leaf, mut path) = self.cow_path(key).await?;
        let (added, old) = self.with_mut(leaf, |n| n.leaf_put(page, key, stored, vlen, ovf));
        if added {
            self.count += 1;
        }
        if let Some((first, len)) = old {
            self.free_run(first, len);
        }
        let mut id = leaf;
        // The key just added to `id` (none when the put replaced a value): if it is the
        // node's last, keys are arriving in order and the split keeps the left node full.
        let mut added_key = added.then_some(Cow::Borrowed(key));
        loop {
            let appended = {
                let node = self.sh.cached_node(id).expect("writable");
                if node.disk <= page {
                    return Ok(());
                }
                added_key
                    .as_deref()
                    .is_some_and(|k| node.key(node.len() - 1) == k)
            };
            let (sep, right) = self.with_mut(id, |n| n.split(page, appended));
            let rid = self.new_node(right);
            match path.pop() {
                Some((pid, idx)) => {
                    self.with_mut(pid, |p| p.branch_insert(page, idx + 1, &sep, rid));
                    added_key = Some(Cow::Owned(sep));
                    id = pid;
                }
                None => {
                    let mut r = Node::new(false);
                    r.branch_insert(page, 0, &[], id);
                    r.branch_insert(page, 1, &sep, rid);
                    self.root = self.new_node(r);
                    self.depth += 1;
                    return Ok(());
                }
            }
        }
    }

    async fn delete_inner(&mut self, key: &[u8]) -> Result<bool, Error> {
        if !get_with(&self.sh, self.root, key, |v| v.is_some()).await? {
            return Ok(false);
        }
        let page = self.sh.page;
        let (leaf, mut path) = self.cow_path(key).await?;
        let old = self.with_mut(leaf, |n| match n.search(key) {
            Ok(i) => n.remove(i, page),
            Err(_) => unreachable!("the key was found a moment ago"),
        });
        self.count -= 1;
        if let Some((first, len)) = old {
            self.free_run(first, len);
        }
        // Merge underfull nodes upward while the union fits a page (never borrow: a merge
        // cannot make a parent grow, so a delete never splits).
        let mut id = leaf;
        while let Some(&(pid, idx)) = path.last() {
            let node = self.sh.cached_node(id).expect("writable");
            if node.len() == 0 {
                self.with_mut(pid, |p| p.branch_remove(page, idx));
                self.sh.st.borrow_mut().free_page(id);
                path.pop();
                id = pid;
                continue;
            }
            if node.disk >= page / 4 {
                break;
            }
            let parent = self.sh.cached_node(pid).expect("writable");
            let mut merged = false;
            let sibs = [
                idx.checked_sub(1),
                (idx + 1 < parent.len()).then_some(idx + 1),
            ];
            for sib in sibs.into_iter().flatten() {
                let sid = parent.kids[sib];
                let snode = self.sh.node(sid).await?;
                let (li, ri) = (idx.min(sib), idx.max(sib));
                let (l, r) = if sib < idx {
                    (&snode, &node)
                } else {
                    (&node, &snode)
                };
                let sep = parent.key(ri);
                if l.merged_disk(page, sep, r) > page {
                    continue;
                }
                let m = l.merged(page, sep, r);
                let nid = self.new_node(m);
                let (lid, rid) = (parent.kids[li], parent.kids[ri]);
                drop(parent);
                self.with_mut(pid, |p| {
                    p.kids[li] = nid;
                    p.branch_remove(page, ri);
                });
                {
                    let mut st = self.sh.st.borrow_mut();
                    st.free_page(lid);
                    st.free_page(rid);
                }
                merged = true;
                break;
            }
            if !merged {
                break;
            }
            path.pop();
            id = pid;
        }
        // A root branch with one child hands the root down.
        loop {
            let root = self.sh.node(self.root).await?;
            if root.leaf || root.len() != 1 {
                break;
            }
            let child = root.kids[0];
            self.sh.st.borrow_mut().free_page(self.root);
            self.root = child;
            self.depth -= 1;
        }
        Ok(true)
    }

    /// Makes every change so far durable; returns when it is.
    pub async fn checkpoint(&mut self) -> Result<CheckpointStats, Error> {
        self.live()?;
        if self.ckpt.is_some() {
            loop {
                if let CheckpointProgress::Done(_) = self.checkpoint_step(usize::MAX).await? {
                    break;
                }
            }
        }
        loop {
            match self.checkpoint_step(usize::MAX).await? {
                CheckpointProgress::Done(s) => return Ok(s),
                CheckpointProgress::InProgress { .. } => {}
            }
        }
    }

    /// Advances a checkpoint by at most `page_budget` page writes (starting one if none is
    /// under way), so that a core never stalls on a whole checkpoint. Writes may go on
    /// between steps; the checkpoint captures the tree as of the step that started it.
    pub async fn checkpoint_step(
        &mut self,
        page_budget: usize,
    ) -> Result<CheckpointProgress, Error> {
        self.live()?;
        if self.job_out {
            // Refused before anything is touched: the tree stays usable.
            return Err(Error::CheckpointBusy);
        }
        let r = self.checkpoint_step_inner(page_budget.max(1)).await;
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    async fn checkpoint_step_inner(&mut self, budget: usize) -> Result<CheckpointProgress, Error> {
        if self.ckpt.is_none() {
            if self.nothing_to_checkpoint() {
                let page_count = self.sh.store.page_count();
                return Ok(CheckpointProgress::Done(CheckpointStats {
                    txn: 0,
                    pages_written: 0,
                    page_count,
                }));
            }
            self.force_ckpt = false;
            self.start_checkpoint();
        }
        let page = self.sh.page;
        let mut ck = self.ckpt.take().expect("started above");
        let r = Self::run_checkpoint(&self.sh, &mut ck, budget).await;
        match r {
            Ok(true) => {
                self.finish_checkpoint(&ck);
                Ok(CheckpointProgress::Done(CheckpointStats {
                    txn: ck.txn,
                    pages_written: ck.pages_written,
                    page_count: self.sh.store.page_count().max(self.sh.st.borrow().hw),
                }))
            }
            Ok(false) => {
                let left = (ck.writes.len() - ck.next) as u64;
                let written = ck.pages_written;
                self.ckpt = Some(ck);
                let _ = page;
                Ok(CheckpointProgress::InProgress {
                    pages_written: written,
                    pages_left: left,
                })
            }
            Err(e) => {
                self.ckpt = Some(ck);
                Err(e)
            }
        }
    }

    /// Whether a checkpoint would write nothing: no dirty page, the durable root is current,
    /// and none is forced.
    fn nothing_to_checkpoint(&self) -> bool {
        let clean = self.sh.st.borrow().dirty.is_empty() && self.root == self.durable_root;
        clean && !self.force_ckpt
    }

    /// Starts a checkpoint of the tree as of now and hands its I/O to a [`CheckpointJob`]
    /// that runs without the tree, so that writes go on while its pages are written (a
    /// stepped checkpoint holds `&mut Tree` across its writes). `None` if there is nothing
    /// to write. Finish it with [`Tree::checkpoint_finish`]; until then no other checkpoint
    /// starts ([`Error::CheckpointBusy`]).
    pub fn checkpoint_begin(&mut self) -> Result<Option<CheckpointJob<S>>, Error> {
        self.live()?;
        if self.job_out || self.ckpt.is_some() {
            return Err(Error::CheckpointBusy);
        }
        if self.nothing_to_checkpoint() {
            return Ok(None);
        }
        self.force_ckpt = false;
        self.start_checkpoint();
        let ck = self.ckpt.take().expect("just started");
        self.job_out = true;
        Ok(Some(CheckpointJob {
            sh: self.sh.clone(),
            ck,
            durable: false,
            failed: false,
        }))
    }

    /// Makes a durable job's checkpoint the tree's durable state and lets the cache shed the
    /// pages it wrote. A job that failed, or is handed back before it is durable, poisons
    /// the tree (its pages are neither durable nor free): reopen it.
    pub fn checkpoint_finish(&mut self, job: CheckpointJob<S>) -> Result<CheckpointStats, Error> {
        assert!(
            Rc::ptr_eq(&self.sh, &job.sh),
            "a checkpoint job belongs to the tree that began it"
        );
        self.job_out = false;
        if job.failed || !job.durable {
            self.poisoned = true;
            return Err(Error::Poisoned);
        }
        self.finish_checkpoint(&job.ck);
        Ok(CheckpointStats {
            txn: job.ck.txn,
            pages_written: job.ck.pages_written,
            page_count: self.sh.store.page_count().max(self.sh.st.borrow().hw),
        })
    }

    fn start_checkpoint(&mut self) {
        let mut st = self.sh.st.borrow_mut();
        st.reclaim();
        let gen = st.gen;
        *st.live.entry(gen).or_insert(0) += 1;
        st.gen += 1;
        let dirty: Vec<u64> = st.dirty.drain().collect();
        let mut writes = Vec::with_capacity(dirty.len());
        for id in dirty {
            let slot = st
                .cache
                .get(&id)
                .expect("dirty pages are pinned in the cache");
            writes.push((id, slot.page.clone()));
        }
        // Writing in id order helps the device and keeps the file's tail clear.
        writes.sort_unstable_by_key(|w| w.0);
        let writes_len = writes.len();
        let mut captured: Vec<u64> = st.free.iter().copied().collect();
        captured.extend(st.pending.iter().map(|p| p.id));
        // Long-key runs a checkpoint gave a node after the writer had freed it are pending
        // with that node (see `State::release`).
        for p in &st.pending {
            if let Some(runs) = st.long_runs.get(&p.id) {
                captured.extend(runs.iter().flat_map(|&(f, n)| f..f + n));
            }
        }
        captured.extend(self.durable_extra.iter().copied());
        self.ckpt = Some(Ckpt {
            hw_end: 0,
            gen,
            txn: self.txn + 1,
            root: self.root,
            depth: self.depth,
            count: self.count,
            hw_start: st.hw,
            captured,
            writes,
            next: 0,
            allocated: Vec::new(),
            freelist: Vec::new(),
            pages_written: 0,
            phase: Phase::Data,
            written: Vec::new(),
            single_sync: false,
            // Room for the freelist pages and a long key or two.
            defer: writes_len + 8 <= SINGLE_SYNC_PAGES_MAX,
            deferred: Vec::new(),
            unpinned: std::cell::Cell::new(0),
        });
    }

    /// Writes pages in flight-limited waves. Returns true when the checkpoint is durable.
    async fn run_checkpoint(
        sh: &Shared<S>,
        ck: &mut Ckpt,
        mut budget: usize,
    ) -> Result<bool, Error> {
        let page = sh.page;
        let window = sh.cfg.checkpoint_writes_in_flight_max.max(1);
        loop {
            match ck.phase {
                Phase::Data => {
                    if ck.next == ck.writes.len() {
                        ck.phase = Phase::Freelist;
                        continue;
                    }
                    if budget == 0 {
                        return Ok(false);
                    }
                    let wave = window.saturating_mul(CHECKPOINT_RUN_PAGES_MAX).min(budget);
                    let end = (ck.next + wave).min(ck.writes.len());
                    // Runs of consecutive ids, each one `write_pages` call.
                    let mut bufs: Vec<(u64, Vec<u8>)> = Vec::new();
                    for (id, cached) in &ck.writes[ck.next..end] {
                        let mut buf = vec![0u8; page];
                        match cached {
                            Cached::Ovf(p) => page::encode_overflow(&mut buf, *id, ck.txn, p),
                            Cached::Node(n) => {
                                let mut runs = Vec::new();
                                for i in n.long_key_indices(page) {
                                    let key = n.key(i);
                                    let cnt = page::pages_for(key.len(), page);
                                    let first = sh.st.borrow_mut().alloc_run(cnt);
                                    let mut kb = vec![0u8; page * cnt as usize];
                                    for (k, chunk) in
                                        key.chunks(overflow_payload_bytes(page)).enumerate()
                                    {
                                        let pid = first + k as u64;
                                        let slot = &mut kb[k * page..(k + 1) * page];
                                        page::encode_overflow(slot, pid, ck.txn, chunk);
                                        ck.allocated.push(pid);
                                    }
                                    bufs.push((first, kb));
                                    runs.push((first, cnt));
                                }
                                let firsts: Vec<u64> = runs.iter().map(|r| r.0).collect();
                                n.encode(&mut buf, *id, ck.txn, &firsts);
                                if !runs.is_empty() {
                                    sh.st.borrow_mut().long_runs.insert(*id, runs);
                                }
                            }
                        }
                        match bufs.last_mut() {
                            Some((first, b))
                                if *first + (b.len() / page) as u64 == *id
                                    && b.len() / page < CHECKPOINT_RUN_PAGES_MAX =>
                            {
                                b.extend_from_slice(&buf)
                            }
                            _ => bufs.push((*id, buf)),
                        }
                    }
                    record_written(&mut ck.written, &bufs, page);
                    ck.pages_written += bufs.iter().map(|b| (b.1.len() / page) as u64).sum::<u64>();
                    budget = budget.saturating_sub(end - ck.next);
                    ck.next = end;
                    if ck.defer {
                        ck.deferred.extend(bufs);
                    } else {
                        Self::write_all(sh, &bufs, window).await?;
                        Self::unpin_written(sh, ck);
                    }
                }
                Phase::Freelist => {
                    let ranges_per = page::freelist_ranges_per_page(page);
                    let hw_now = sh.st.borrow().hw;
                    // Sorted vectors, not a set: this runs without a yield, over every page
                    // freed since the last checkpoint (hundreds of thousands after a busy
                    // interval), and a BTreeSet here stalled the core for tens of ms.
                    let mut free: Vec<u64> = ck.captured.clone();
                    free.extend(ck.hw_start..hw_now);
                    free.sort_unstable();
                    free.dedup();
                    let mut taken = ck.allocated.clone();
                    taken.sort_unstable();
                    remove_sorted(&mut free, &taken);
                    let mut pages: Vec<u64> = Vec::new();
                    let ranges = loop {
                        let ranges = to_ranges(&free);
                        let need = ranges.len().div_ceil(ranges_per);
                        if need <= pages.len() {
                            break ranges;
                        }
                        // Take the whole shortfall at once: each page taken splits at most
                        // one range, so this converges in a few rounds, not one per page.
                        let mut more: Vec<u64> = (pages.len()..need)
                            .map(|_| sh.st.borrow_mut().alloc())
                            .collect();
                        more.sort_unstable();
                        remove_sorted(&mut free, &more);
                        pages.extend(more);
                    };
                    let mut bufs = Vec::with_capacity(pages.len());
                    let chunks: Vec<&[(u64, u64)]> = ranges.chunks(ranges_per.max(1)).collect();
                    for (i, &id) in pages.iter().enumerate() {
                        let mut buf = vec![0u8; page];
                        let next = pages.get(i + 1).copied().unwrap_or(NO_PAGE);
                        let rs = chunks.get(i).copied().unwrap_or(&[]);
                        page::encode_freelist(&mut buf, id, ck.txn, next, rs);
                        bufs.push((id, buf));
                    }
                    record_written(&mut ck.written, &bufs, page);
                    ck.pages_written += bufs.len() as u64;
                    ck.freelist = pages;
                    // No await since `hw_now` was read: the writer has allocated nothing
                    // since, so every page up to here is either in use by this checkpoint's
                    // tree, in its freelist, or one of its freelist pages.
                    ck.hw_end = sh.st.borrow().hw;
                    if ck.defer {
                        ck.deferred.extend(bufs);
                    } else {
                        Self::write_all(sh, &bufs, window).await?;
                    }
                    ck.phase = Phase::SyncData;
                }
                Phase::SyncData => {
                    // A small checkpoint skips this sync: its meta slot lists every page it
                    // wrote with its crc, and open verifies them before trusting the slot.
                    ck.single_sync = ck.written.len() <= SINGLE_SYNC_PAGES_MAX;
                    if !ck.single_sync {
                        if !ck.deferred.is_empty() {
                            let bufs = std::mem::take(&mut ck.deferred);
                            Self::write_all(sh, &bufs, window).await?;
                            Self::unpin_written(sh, ck);
                        }
                        sh.store.sync().await?;
                    }
                    ck.phase = Phase::Meta;
                }
                Phase::Meta => {
                    let meta = page::MetaSlot {
                        txn: ck.txn,
                        page_size: page as u32,
                        root: ck.root,
                        depth: ck.depth,
                        high_water: ck.hw_end,
                        item_count: ck.count,
                        freelist_head: ck.freelist.first().copied().unwrap_or(NO_PAGE),
                        freelist_pages: ck.freelist.len() as u64,
                        verify: if ck.single_sync {
                            ck.written.clone()
                        } else {
                            Vec::new()
                        },
                    };
                    let slot = ck.txn % META_SLOT_COUNT;
                    let mut buf = vec![0u8; page];
                    page::encode_meta(&mut buf, slot, &meta);
                    ck.pages_written += 1;
                    if ck.single_sync {
                        // Pages and meta slot in one wave: the one sync after it orders
                        // nothing among them, and open checks the list.
                        let mut bufs = std::mem::take(&mut ck.deferred);
                        bufs.push((slot, buf));
                        let n = bufs.len();
                        Self::write_all(sh, &bufs, n).await?;
                        Self::unpin_written(sh, ck);
                    } else {
                        sh.store.write_page(slot, &buf).await?;
                    }
                    ck.phase = Phase::SyncMeta;
                }
                Phase::SyncMeta => {
                    sh.store.sync().await?;
                    return Ok(true);
                }
            }
        }
    }

    /// Lets the cache evict the captured pages written so far (`ck.writes[..ck.next]`).
    fn unpin_written(sh: &Shared<S>, ck: &Ckpt) {
        let mut st = sh.st.borrow_mut();
        let st = &mut *st;
        for (id, cached) in &ck.writes[ck.unpinned.get()..ck.next] {
            if let Some(slot) = st.cache.get_mut(id) {
                let same = match (&slot.page, cached) {
                    (Cached::Node(a), Cached::Node(b)) => Rc::ptr_eq(a, b),
                    (Cached::Ovf(a), Cached::Ovf(b)) => Rc::ptr_eq(a, b),
                    _ => false,
                };
                if same && !st.dirty.contains(id) {
                    slot.pinned = false;
                }
            }
        }
        ck.unpinned.set(ck.next);
    }

    /// Writes runs of pages, at most `window` writes in flight at once.
    async fn write_all(
        sh: &Shared<S>,
        bufs: &[(u64, Vec<u8>)],
        window: usize,
    ) -> Result<(), Error> {
        let store = &sh.store;
        for wave in bufs.chunks(window.max(1)) {
            let futs = wave
                .iter()
                .map(|(id, b)| {
                    Some(boxed(async move {
                        store.write_pages(*id, b).await.map_err(Error::from)
                    }))
                })
                .collect();
            JoinAll { futs }.await?;
        }
        Ok(())
    }

    fn finish_checkpoint(&mut self, ck: &Ckpt) {
        let old_gen = self.durable_gen;
        self.sh.unregister_snapshot(old_gen);
        let mut st = self.sh.st.borrow_mut();
        for id in self.durable_extra.drain(..) {
            st.free.insert(id);
        }
        self.durable_extra = ck.freelist.clone();
        self.durable_gen = ck.gen;
        self.durable_root = ck.root;
        self.txn = ck.txn;
        st.reclaim_due = true;
        // Written pages are clean now: the cache may shed them.
        st.evict_skip_until = 0;
        st.evict(self.sh.cfg.cache_bytes_max);
    }

    /// Gives free space at the end of the file back to the filesystem: moves live pages
    /// toward the start, checkpoints, and truncates. Returns the bytes given back.
    pub async fn shrink(&mut self) -> Result<u64, Error> {
        self.live()?;
        let before = self.sh.store.page_count();
        self.checkpoint().await?;
        let target = {
            let mut st = self.sh.st.borrow_mut();
            st.reclaim();
            st.hw - st.free.len() as u64
        };
        let root = self.root;
        let r = self.relocate(root, target).await;
        if let Ok(root) = r {
            self.root = root;
        }
        self.after_write(r).await?;
        // Twice: the first makes the moved pages durable, the second frees the old places.
        self.force_ckpt = true;
        self.checkpoint().await?;
        self.force_ckpt = true;
        self.checkpoint().await?;
        let new_hw = {
            let mut st = self.sh.st.borrow_mut();
            st.reclaim();
            let mut hw = st.hw;
            while hw > META_SLOT_COUNT + 1 && st.free.contains(&(hw - 1)) {
                hw -= 1;
            }
            let cut: Vec<u64> = st.free.range(hw..).copied().collect();
            for id in cut {
                st.free.remove(&id);
            }
            st.hw = hw;
            hw
        };
        if new_hw < before {
            let r = self.sh.store.truncate(new_hw).await;
            if r.is_err() {
                self.poisoned = true;
            }
            r?;
            // Record the shorter file in a checkpoint, so that open never looks past it.
            self.force_ckpt = true;
            self.checkpoint().await?;
        }
        let after = self.sh.store.page_count();
        Ok(before.saturating_sub(after) * self.sh.page as u64)
    }

    fn relocate<'a>(
        &'a mut self,
        id: u64,
        target: u64,
    ) -> Pin<Box<dyn Future<Output = Result<u64, Error>> + 'a>> {
        Box::pin(async move {
            let page = self.sh.page;
            let node = self.sh.node(id).await?;
            let mut id = id;
            if id >= target
                || self
                    .sh
                    .st
                    .borrow()
                    .long_runs
                    .get(&id)
                    .is_some_and(|r| r.iter().any(|x| x.0 + x.1 > target))
            {
                id = self.writable(id).await?;
            }
            if !node.leaf {
                for i in 0..node.len() {
                    let c = node.kids[i];
                    let nc = self.relocate(c, target).await?;
                    if nc != c {
                        id = self.writable(id).await?;
                        self.with_mut(id, |n| n.kids[i] = nc);
                    }
                }
            } else {
                for i in 0..node.len() {
                    let Some(first) = node.overflow_first(i) else {
                        continue;
                    };
                    let len = node.ents[i].vlen as usize;
                    if first + page::pages_for(len, page) <= target {
                        continue;
                    }
                    let value = self.sh.read_run(first, len).await?;
                    let nf = self.write_overflow(&value);
                    id = self.writable(id).await?;
                    let key = node.key(i).to_vec();
                    let (_, old) =
                        self.with_mut(id, |n| n.leaf_put(page, &key, &nf.to_le_bytes(), len, true));
                    if let Some((f, l)) = old {
                        self.free_run(f, l);
                    }
                }
            }
            Ok(id)
        })
    }

    /// Checks every structural rule: key order, separators, fill, equal leaf depth, item
    /// count, and that every page id is exactly one of: meta slot, reachable, free, pending,
    /// or owned by a checkpoint (its freelist).
    pub async fn check_invariants(&self) -> Result<(), Error> {
        let page = self.sh.page;
        let mut reachable: HashSet<u64> = HashSet::new();
        let mut items = 0u64;
        // (page, level, lower bound incl., upper bound excl.)
        let mut stack: Vec<Visit> = vec![(self.root, self.depth, None, None)];
        while let Some((id, level, lo, hi)) = stack.pop() {
            if !reachable.insert(id) {
                return Err(inv(Some(id), "page reachable twice"));
            }
            let node = self.sh.node(id).await?;
            if node.disk > page {
                return Err(inv(Some(id), "node larger than a page"));
            }
            if id != self.root && node.len() == 0 {
                return Err(inv(Some(id), "non-root node without entries"));
            }
            node.check_heads().map_err(|why| inv(Some(id), why))?;
            if node.leaf != (level == 1) {
                return Err(inv(Some(id), "leaves not all at the same depth"));
            }
            let first = if node.leaf { 0 } else { 1 };
            for i in first..node.len() {
                let k = node.key(i);
                if i > first && node.key(i - 1) >= k {
                    return Err(inv(Some(id), "keys out of order"));
                }
                if lo.as_deref().is_some_and(|l| k < l) || hi.as_deref().is_some_and(|h| k >= h) {
                    return Err(inv(Some(id), "key outside its separators"));
                }
            }
            if let Some(runs) = self.sh.st.borrow().long_runs.get(&id) {
                for &(f, n) in runs {
                    for p in f..f + n {
                        if !reachable.insert(p) {
                            return Err(inv(Some(p), "long-key page reachable twice"));
                        }
                    }
                }
            }
            if node.leaf {
                items += node.len() as u64;
                for i in 0..node.len() {
                    if let Some(f) = node.overflow_first(i) {
                        for p in f..f + page::pages_for(node.ents[i].vlen as usize, page) {
                            if !reachable.insert(p) {
                                return Err(inv(Some(p), "overflow page reachable twice"));
                            }
                        }
                    }
                }
            } else {
                for i in 0..node.len() {
                    let clo = if i == 0 {
                        lo.clone()
                    } else {
                        Some(node.key(i).to_vec())
                    };
                    let chi = if i + 1 < node.len() {
                        Some(node.key(i + 1).to_vec())
                    } else {
                        hi.clone()
                    };
                    stack.push((node.kids[i], level - 1, clo, chi));
                }
            }
        }
        if items != self.count {
            return Err(inv(
                None,
                format!("item count {} but {} items reachable", self.count, items),
            ));
        }
        let st = self.sh.st.borrow();
        let mut pending: HashSet<u64> = st.pending.iter().map(|p| p.id).collect();
        if pending.len() != st.pending.len() {
            return Err(inv(None, "a page pending twice"));
        }
        // A node freed before its checkpoint wrote it got its long-key runs afterwards:
        // they are pending with it.
        for p in &st.pending {
            if let Some(runs) = st.long_runs.get(&p.id) {
                for &(f, n) in runs {
                    for q in f..f + n {
                        if !pending.insert(q) {
                            return Err(inv(Some(q), "long-key page pending twice"));
                        }
                    }
                }
            }
        }
        let mut owned: HashSet<u64> = self.durable_extra.iter().copied().collect();
        if let Some(ck) = &self.ckpt {
            owned.extend(ck.freelist.iter().copied());
        }
        for id in 0..st.hw {
            let n = (id < META_SLOT_COUNT) as u32
                + reachable.contains(&id) as u32
                + st.free.contains(&id) as u32
                + pending.contains(&id) as u32
                + owned.contains(&id) as u32;
            if n != 1 {
                return Err(inv(
                    Some(id),
                    format!(
                        "page is in {n} of meta/reachable/free/pending/checkpoint (r{} f{} p{} c{})",
                        reachable.contains(&id),
                        st.free.contains(&id),
                        pending.contains(&id),
                        owned.contains(&id)
                    ),
                ));
            }
        }
        if let Some(&id) = st.free.range(st.hw..).next() {
            return Err(inv(Some(id), "free page beyond the high-water mark"));
        }
        for id in &st.dirty {
            if !reachable.contains(id) {
                return Err(inv(Some(*id), "dirty page not reachable"));
            }
        }
        Ok(())
    }
}

/// Notes each page of `bufs` (runs of consecutive pages) with its crc, while the list is
/// still short enough to matter for a single-sync meta slot.
fn record_written(written: &mut Vec<(u64, u32)>, bufs: &[(u64, Vec<u8>)], page: usize) {
    for (first, b) in bufs {
        for (k, p) in b.chunks(page).enumerate() {
            if written.len() > SINGLE_SYNC_PAGES_MAX {
                return;
            }
            written.push((first + k as u64, page::rd_u32(p, 0)));
        }
    }
}

/// Removes from sorted `from` every id in sorted `ids`, in one pass.
fn remove_sorted(from: &mut Vec<u64>, ids: &[u64]) {
    if ids.is_empty() {
        return;
    }
    let mut k = 0;
    from.retain(|id| {
        while k < ids.len() && ids[k] < *id {
            k += 1;
        }
        !(k < ids.len() && ids[k] == *id)
    });
}

/// Runs of consecutive ids in sorted, duplicate-free `ids`, as (first, length).
fn to_ranges(ids: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &id in ids {
        match out.last_mut() {
            Some((s, l)) if *s + *l == id => *l += 1,
            _ => out.push((id, 1)),
        }
    }
    out
}

/// Checks a single-sync meta slot's pages: None if all are there, else why not.
async fn verify_written<S: PageStore>(
    store: &S,
    page: usize,
    m: &page::MetaSlot,
) -> Result<Option<&'static str>, Error> {
    let mut buf = vec![0u8; page];
    for &(id, crc) in &m.verify {
        if id >= store.page_count() {
            return Ok(Some("a page of its single-sync checkpoint is missing"));
        }
        store.read_page(id, &mut buf).await?;
        if page::open_header(&buf, id).is_err() || page::rd_u32(&buf, 0) != crc {
            return Ok(Some("a page of its single-sync checkpoint is not on disk"));
        }
    }
    Ok(None)
}

fn check_sizes(key: &[u8], value: &[u8]) -> Result<(), Error> {
    if key.len() > KEY_BYTES_MAX {
        return Err(Error::KeyTooLarge {
            len: key.len(),
            max: KEY_BYTES_MAX,
        });
    }
    if value.len() > VALUE_BYTES_MAX {
        return Err(Error::ValueTooLarge {
            len: value.len(),
            max: VALUE_BYTES_MAX,
        });
    }
    Ok(())
}

/// The leaf that holds (or would hold) `key` and where in it, if every page on the way is
/// cached; `None` when one must be read.
fn find_cached<S: PageStore>(
    sh: &Shared<S>,
    root: u64,
    key: &[u8],
) -> Option<(Rc<Node>, Result<usize, usize>)> {
    let mut node = sh.cached_node(root)?;
    while !node.leaf {
        let idx = node.child_index(key);
        node = sh.cached_child(&node, idx)?;
    }
    let at = node.search(key);
    Some((node, at))
}

fn get_cached_with<S: PageStore, R>(
    sh: &Shared<S>,
    root: u64,
    key: &[u8],
    f: impl FnOnce(Option<&[u8]>) -> R,
) -> Option<R> {
    let (leaf, at) = find_cached(sh, root, key)?;
    match at {
        Err(_) => Some(f(None)),
        // A value in an overflow run is read by the waiting path.
        Ok(i) if leaf.overflow_first(i).is_some() => None,
        Ok(i) => Some(f(Some(leaf.val_raw(i)))),
    }
}

async fn get_with<S: PageStore, R>(
    sh: &Shared<S>,
    root: u64,
    key: &[u8],
    f: impl FnOnce(Option<&[u8]>) -> R,
) -> Result<R, Error> {
    // The hot path: per level one binary search, and a weak link to the child instead of a
    // hash lookup once the path is warm. No copy.
    let mut node = match sh.cached_node(root) {
        Some(n) => n,
        None => sh.node(root).await?,
    };
    let leaf = loop {
        if node.leaf {
            break node;
        }
        let idx = node.child_index(key);
        let child = sh.child(&node, idx).await?;
        node = child;
    };
    match leaf.search(key) {
        Err(_) => Ok(f(None)),
        Ok(i) => match leaf.overflow_first(i) {
            None => Ok(f(Some(leaf.val_raw(i)))),
            Some(first) => {
                let v = sh.read_run(first, leaf.ents[i].vlen as usize).await?;
                Ok(f(Some(&v)))
            }
        },
    }
}

/// A read-only view of the tree as of the moment it was taken.
///
/// Pages it can see are neither changed in place nor reused while it lives, however long
/// that is (a long-lived snapshot holds space: the file grows until it is dropped).
pub struct Snapshot<S: PageStore> {
    sh: Rc<Shared<S>>,
    root: u64,
    count: u64,
    /// Levels from the root to the leaves (1: the root is a leaf).
    depth: u32,
    gen: u64,
}

impl<S: PageStore> Clone for Snapshot<S> {
    fn clone(&self) -> Self {
        *self.sh.st.borrow_mut().live.entry(self.gen).or_insert(0) += 1;
        Snapshot {
            sh: self.sh.clone(),
            root: self.root,
            count: self.count,
            depth: self.depth,
            gen: self.gen,
        }
    }
}

impl<S: PageStore> Drop for Snapshot<S> {
    fn drop(&mut self) {
        self.sh.unregister_snapshot(self.gen);
    }
}

impl<S: PageStore> Snapshot<S> {
    /// Items in the snapshot.
    pub fn len(&self) -> u64 {
        self.count
    }
    /// True if it holds no item.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// The value under `key`, copied out.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        get_with(&self.sh, self.root, key, |v| v.map(<[u8]>::to_vec)).await
    }
    /// The id of the snapshot's root page: where a warm-up ([`Snapshot::warm_run`]) starts.
    pub fn root_page(&self) -> u64 {
        self.root
    }
    /// Levels from the root to the leaves (1: the root is a leaf).
    pub fn depth(&self) -> u32 {
        self.depth
    }
    /// Brings the pages `ids` of this snapshot into the page cache and returns their
    /// children's ids, none for leaves. The pages not cached yet come in one read, from the
    /// first of them to the last (pages between them that are not asked for are read and
    /// dropped); when all are cached, nothing is read.
    ///
    /// The step of a cache warm-up that the caller drives level by level from
    /// [`Snapshot::root_page`], with as many steps in flight as the device likes: after a
    /// restart the cache is empty, and a node under load otherwise fills it one random read
    /// per request. Read in runs of neighbouring ids, the lower levels (nearly every page)
    /// cost a fraction of one random read per page. The snapshot keeps every page it reaches
    /// from being reused, so an id from an earlier step is never another page's. Overflow
    /// runs are not read. `ids` must be ascending and span at most
    /// [`crate::limits::WARM_RUN_PAGES_MAX`] pages.
    pub async fn warm_run(&self, ids: &[u64]) -> Result<Vec<u64>, Error> {
        let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
            return Ok(Vec::new());
        };
        let spans_too_far = last
            .checked_sub(first)
            .is_none_or(|d| d >= crate::limits::WARM_RUN_PAGES_MAX as u64);
        if spans_too_far || ids.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::WarmRun { first, last });
        }
        let cached: Vec<Option<Rc<Node>>> = ids.iter().map(|&id| self.sh.cached_node(id)).collect();
        let uncached = |(&id, c): (&u64, &Option<Rc<Node>>)| c.is_none().then_some(id);
        let from = ids.iter().zip(&cached).find_map(uncached);
        let to = ids.iter().zip(&cached).rev().find_map(uncached);
        let page = self.sh.page;
        let mut buf = Vec::new();
        if let (Some(from), Some(to)) = (from, to) {
            buf = vec![0u8; (to - from + 1) as usize * page];
            self.sh.store.read_pages(from, &mut buf).await?;
        }
        let mut kids = Vec::new();
        for (&id, node) in ids.iter().zip(cached) {
            let node = match node {
                Some(n) => n,
                None => {
                    let at = (id - from.unwrap_or(id)) as usize * page;
                    self.sh.install_node(id, &buf[at..at + page]).await?
                }
            };
            kids.extend_from_slice(&node.kids);
        }
        Ok(kids)
    }
    /// Bytes the tree's page cache holds now (all snapshots and the tree share it).
    pub fn cache_bytes(&self) -> u64 {
        self.sh.st.borrow().cache_bytes as u64
    }
    /// The page cache's budget in bytes (`Config::cache_bytes_max`).
    pub fn cache_bytes_max(&self) -> u64 {
        self.sh.cfg.cache_bytes_max as u64
    }
    /// [`Snapshot::get_with`] without waiting: `None` (and `f` not called) when a page must
    /// be read (see [`Tree::get_cached_with`]).
    pub fn get_cached_with<R>(&self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
        get_cached_with(&self.sh, self.root, key, f)
    }
    /// Calls `f` with the value under `key`, borrowed.
    pub async fn get_with<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, Error> {
        get_with(&self.sh, self.root, key, f).await
    }
    /// The smallest item.
    pub async fn first(&self) -> Result<Option<(Vec<u8>, Vec<u8>)>, Error> {
        self.range::<(Bound<&[u8]>, Bound<&[u8]>)>(
            (Bound::Unbounded, Bound::Unbounded),
            Direction::Forward,
        )
        .await?
        .next()
        .await
    }
    /// The largest item.
    pub async fn last(&self) -> Result<Option<(Vec<u8>, Vec<u8>)>, Error> {
        self.range::<(Bound<&[u8]>, Bound<&[u8]>)>(
            (Bound::Unbounded, Bound::Unbounded),
            Direction::Reverse,
        )
        .await?
        .next()
        .await
    }
    /// A cursor over the keys in `bounds`.
    pub async fn range<R: RangeBounds<[u8]>>(
        &self,
        bounds: R,
        direction: Direction,
    ) -> Result<Cursor<S>, Error> {
        self.clone().into_range(bounds, direction).await
    }

    /// Like `range`, consuming the snapshot.
    pub async fn into_range<R: RangeBounds<[u8]>>(
        self,
        bounds: R,
        direction: Direction,
    ) -> Result<Cursor<S>, Error> {
        let own = |b: Bound<&[u8]>| match b {
            Bound::Included(k) => Bound::Included(k.to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut c = Cursor {
            lo: own(bounds.start_bound()),
            hi: own(bounds.end_bound()),
            snap: self,
            stack: Vec::new(),
            dir: direction,
            done: false,
        };
        c.seek().await?;
        Ok(c)
    }
}

/// An async iterator over a key range of a snapshot.
pub struct Cursor<S: PageStore> {
    snap: Snapshot<S>,
    /// Root-to-leaf: (node, child index taken / position in the leaf).
    stack: Vec<(Rc<Node>, isize)>,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    dir: Direction,
    done: bool,
}

impl<S: PageStore> Cursor<S> {
    async fn seek(&mut self) -> Result<(), Error> {
        let sh = self.snap.sh.clone();
        let mut node = sh.node(self.snap.root).await?;
        let fwd = self.dir == Direction::Forward;
        let bound = if fwd { &self.lo } else { &self.hi };
        loop {
            if node.leaf {
                let n = node.len() as isize;
                let pos = match (fwd, bound) {
                    (true, Bound::Unbounded) => 0,
                    (false, Bound::Unbounded) => n - 1,
                    (true, Bound::Included(k)) => node.search(k).unwrap_or_else(|i| i) as isize,
                    (true, Bound::Excluded(k)) => match node.search(k) {
                        Ok(i) => i as isize + 1,
                        Err(i) => i as isize,
                    },
                    (false, Bound::Included(k)) => match node.search(k) {
                        Ok(i) => i as isize,
                        Err(i) => i as isize - 1,
                    },
                    (false, Bound::Excluded(k)) => {
                        node.search(k).unwrap_or_else(|i| i) as isize - 1
                    }
                };
                self.stack.push((node, pos));
                return Ok(());
            }
            let idx = match bound {
                Bound::Unbounded if fwd => 0,
                Bound::Unbounded => node.len() - 1,
                Bound::Included(k) | Bound::Excluded(k) => node.child_index(k),
            };
            let child = sh.child(&node, idx).await?;
            self.stack.push((node, idx as isize));
            node = child;
        }
    }

    /// The next item, or None at the end of the range.
    pub async fn next(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>, Error> {
        let fwd = self.dir == Direction::Forward;
        let step: isize = if fwd { 1 } else { -1 };
        loop {
            if self.done {
                return Ok(None);
            }
            let (leaf, pos) = self.stack.last_mut().expect("the leaf is on the stack");
            if *pos >= 0 && (*pos as usize) < leaf.len() {
                let i = *pos as usize;
                let k = leaf.key(i);
                let inside = if fwd {
                    match &self.hi {
                        Bound::Included(h) => k <= h.as_slice(),
                        Bound::Excluded(h) => k < h.as_slice(),
                        Bound::Unbounded => true,
                    }
                } else {
                    match &self.lo {
                        Bound::Included(l) => k >= l.as_slice(),
                        Bound::Excluded(l) => k > l.as_slice(),
                        Bound::Unbounded => true,
                    }
                };
                if !inside {
                    self.done = true;
                    return Ok(None);
                }
                *pos += step;
                let key = k.to_vec();
                let value = match leaf.overflow_first(i) {
                    None => leaf.val_raw(i).to_vec(),
                    Some(first) => {
                        let len = leaf.ents[i].vlen as usize;
                        let sh = self.snap.sh.clone();
                        sh.read_run(first, len).await?
                    }
                };
                return Ok(Some((key, value)));
            }
            // Leaf exhausted: climb to the next branch with a sibling, then descend.
            self.stack.pop();
            let sh = self.snap.sh.clone();
            let child = loop {
                let Some((node, idx)) = self.stack.last_mut() else {
                    self.done = true;
                    return Ok(None);
                };
                let ni = *idx + step;
                if ni >= 0 && (ni as usize) < node.len() {
                    *idx = ni;
                    break (node.clone(), ni as usize);
                }
                self.stack.pop();
            };
            let mut node = sh.child(&child.0, child.1).await?;
            loop {
                let at = if fwd { 0 } else { node.len() as isize - 1 };
                if node.leaf {
                    self.stack.push((node, at));
                    break;
                }
                let next = sh.child(&node, at as usize).await?;
                self.stack.push((node, at));
                node = next;
            }
        }
    }
}
