//! State shared by a tree and its snapshots: the page store, the page cache and the
//! allocator's books (free, pending, generations, live snapshots).

use crate::error::Error;
use crate::limits::*;
use crate::page::{self, Node, PageView};
use crate::store::PageStore;
use crate::Config;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

/// A cheap hasher for page ids (a multiply; ids are dense integers, not attacker input).
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;
pub(crate) type IdSet = HashSet<u64, BuildHasherDefault<IdHasher>>;

/// A cached page: a node, or an overflow page's payload.
#[derive(Clone)]
pub(crate) enum Cached {
    Node(Rc<Node>),
    Ovf(Rc<Vec<u8>>),
}

pub(crate) struct Slot {
    pub page: Cached,
    /// Not evictable: dirty, being written, or freed before it was ever written while a
    /// snapshot can still see it.
    pub pinned: bool,
    pub bytes: usize,
    /// Generation the page was allocated in; 0 when unknown (loaded from disk or evicted
    /// and reloaded), which only makes reuse more cautious: such a page counts as visible
    /// to every older snapshot.
    pub gen: u64,
}

/// A page freed by the writer that a snapshot (or the durable checkpoint) may still see.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pending {
    pub id: u64,
    pub alloc_gen: u64,
    pub freed_gen: u64,
}

pub(crate) struct State {
    pub cache: IdMap<Slot>,
    pub cache_bytes: usize,
    /// Every page id is below this.
    pub hw: u64,
    /// Reusable now. Lowest first, so live data drifts toward the start of the file.
    pub free: BTreeSet<u64>,
    pub pending: Vec<Pending>,
    /// The ids in `pending`, for O(1) membership.
    pub pending_ids: IdSet,
    /// Live snapshot generations (the durable and the in-flight checkpoint included).
    pub live: BTreeMap<u64, usize>,
    pub reclaim_due: bool,
    /// Where the reclaim round under way stands in `pending` (see `reclaim_some`).
    pub reclaim_cursor: usize,
    /// A snapshot was dropped while a round was under way: run another round after it.
    pub reclaim_again: bool,
    /// No eviction pass until the cache holds this many bytes (see `evict`).
    pub evict_skip_until: usize,
    /// Eviction passes over the whole cache since open (each costs a scan of every page).
    pub evict_scans: u64,
    /// Pages the next checkpoint must write.
    pub dirty: IdSet,
    /// Long-key overflow runs (first page, pages) of each node page as written on disk.
    pub long_runs: IdMap<Vec<(u64, u64)>>,
    /// The writer's generation: pages allocated in it are private and change in place.
    pub gen: u64,
}

impl State {
    pub fn gen_of(&self, id: u64) -> u64 {
        self.cache.get(&id).map_or(0, |s| s.gen)
    }

    fn visible(&self, alloc_gen: u64, freed_gen: u64) -> bool {
        alloc_gen < freed_gen && self.live.range(alloc_gen..freed_gen).next().is_some()
    }

    /// Examines at most `budget` pending pages, freeing those no live snapshot can see; a
    /// round over the whole list ends when the cursor reaches its end.
    ///
    /// Why in steps: a host that takes a snapshot per write (the partition's readers do)
    /// drops one as often, and a full reclaim at each drop made every write scan every page
    /// freed since the last checkpoint (quadratic between checkpoints: the top of the node's
    /// profile). Reclaiming only when the list had doubled made it amortised O(1) but in
    /// lumps of tens of milliseconds. Steps bound the work per allocation; a page reaches
    /// the free set a little later, never wrongly.
    fn reclaim_some(&mut self, budget: usize) {
        let mut examined = 0;
        while examined < budget && self.reclaim_cursor < self.pending.len() {
            let p = self.pending[self.reclaim_cursor];
            if self.visible(p.alloc_gen, p.freed_gen) {
                self.reclaim_cursor += 1;
            } else {
                // The last page moves into the cursor's place and is examined next.
                self.pending.swap_remove(self.reclaim_cursor);
                self.pending_ids.remove(&p.id);
                self.release(p.id);
            }
            examined += 1;
        }
        if self.reclaim_cursor >= self.pending.len() {
            self.reclaim_cursor = 0;
            // A snapshot dropped during the round may have freed pages already passed.
            self.reclaim_due = std::mem::take(&mut self.reclaim_again);
        }
    }

    /// Moves pending pages that no live snapshot can see to the free set.
    pub fn reclaim(&mut self) {
        self.reclaim_due = false;
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            if self.visible(p.alloc_gen, p.freed_gen) {
                self.pending.push(p);
            } else {
                self.pending_ids.remove(&p.id);
                self.release(p.id);
            }
        }
        self.reclaim_cursor = 0;
        self.reclaim_again = false;
    }

    fn release(&mut self, id: u64) {
        // A node freed before the checkpoint that captured it got to write it gains its
        // long-key runs only then: they go with it.
        if let Some(runs) = self.long_runs.remove(&id) {
            for (first, n) in runs {
                for p in first..first + n {
                    self.release(p);
                }
            }
        }
        if let Some(s) = self.cache.remove(&id) {
            self.cache_bytes -= s.bytes;
        }
        self.free.insert(id);
    }

    pub fn alloc(&mut self) -> u64 {
        if self.reclaim_due {
            self.reclaim_some(RECLAIM_STEP_PAGES);
        }
        match self.free.pop_first() {
            Some(id) => id,
            None => {
                self.hw += 1;
                self.hw - 1
            }
        }
    }

    /// `n` consecutive pages, from the free set if it has such a run, else at the end.
    pub fn alloc_run(&mut self, n: u64) -> u64 {
        if n == 1 {
            return self.alloc();
        }
        if self.reclaim_due {
            self.reclaim_some(RECLAIM_STEP_PAGES);
        }
        let mut start = None;
        let mut run = 0;
        let mut prev = u64::MAX - 1;
        for &id in &self.free {
            if id == prev.wrapping_add(1) {
                run += 1;
            } else {
                run = 1;
            }
            prev = id;
            if run == n {
                start = Some(id + 1 - n);
                break;
            }
        }
        match start {
            Some(s) => {
                for id in s..s + n {
                    self.free.remove(&id);
                }
                s
            }
            None => {
                self.hw += n;
                self.hw - n
            }
        }
    }

    /// Frees a page the writer no longer references: at once if nobody can see it, else
    /// pending until the snapshots that can have gone.
    pub fn free_page(&mut self, id: u64) {
        if let Some(runs) = self.long_runs.remove(&id) {
            for (first, n) in runs {
                for p in first..first + n {
                    self.free_page(p);
                }
            }
        }
        self.dirty.remove(&id);
        let g = self.gen_of(id);
        if self.visible(g, self.gen) {
            self.pending.push(Pending {
                id,
                alloc_gen: g,
                freed_gen: self.gen,
            });
            self.pending_ids.insert(id);
        } else {
            self.release(id);
        }
    }

    pub fn insert_dirty(&mut self, id: u64, page: Cached) {
        let bytes = match &page {
            Cached::Node(n) => n.mem_bytes(),
            Cached::Ovf(v) => v.capacity() + 64,
        };
        self.cache_bytes += bytes;
        if let Some(old) = self.cache.insert(
            id,
            Slot {
                page,
                pinned: true,
                bytes,
                gen: self.gen,
            },
        ) {
            self.cache_bytes -= old.bytes;
        }
        self.dirty.insert(id);
    }

    /// Drops clean pages until the cache is under 7/8 of its budget (leaves and overflow
    /// first: the upper levels are few and on every path).
    pub fn evict(&mut self, budget: usize) {
        if self.cache_bytes <= budget || self.cache_bytes < self.evict_skip_until {
            return;
        }
        self.evict_scans += 1;
        let target = budget / 8 * 7;
        for pass in 0..2 {
            let mut bytes = self.cache_bytes;
            self.cache.retain(|_, s| {
                if bytes <= target || s.pinned {
                    return true;
                }
                let leafy = match &s.page {
                    Cached::Node(n) => n.leaf,
                    Cached::Ovf(_) => true,
                };
                if pass == 0 && !leafy {
                    return true;
                }
                bytes -= s.bytes;
                false
            });
            self.cache_bytes = bytes;
            if bytes <= target {
                break;
            }
        }
        // Mostly pinned (dirty pages beyond the budget before a checkpoint): do not scan the
        // whole cache again on every write, only after it grew by another eighth of the budget.
        self.evict_skip_until = if self.cache_bytes > target {
            self.cache_bytes + budget / 8
        } else {
            0
        };
    }
}

pub(crate) struct Shared<S> {
    pub store: S,
    pub page: usize,
    pub cfg: Config,
    pub st: RefCell<State>,
}

impl<S: PageStore> Shared<S> {
    pub fn cached_node(&self, id: u64) -> Option<Rc<Node>> {
        match &self.st.borrow().cache.get(&id)?.page {
            Cached::Node(n) => Some(n.clone()),
            Cached::Ovf(_) => None,
        }
    }

    /// The node at `id`, from the cache or the store.
    #[inline]
    pub async fn node(&self, id: u64) -> Result<Rc<Node>, Error> {
        if let Some(n) = self.cached_node(id) {
            return Ok(n);
        }
        self.load_node(id).await
    }

    /// Child `idx` of branch `parent` if it is cached (through the weak link when warm);
    /// `None` when it must be read.
    #[inline]
    pub fn cached_child(&self, parent: &Rc<Node>, idx: usize) -> Option<Rc<Node>> {
        if let Some(c) = parent.kid_cache.get(idx) {
            return Some(c);
        }
        let c = self.cached_node(parent.kids[idx])?;
        parent.kid_cache.set(idx, &c, parent.kids.len());
        Some(c)
    }

    /// Child `idx` of branch `parent`: through the parent's weak link when it is warm, else
    /// from the cache or the store (and the link is set).
    #[inline]
    pub async fn child(&self, parent: &Rc<Node>, idx: usize) -> Result<Rc<Node>, Error> {
        if let Some(c) = parent.kid_cache.get(idx) {
            return Ok(c);
        }
        // On a miss, use the loaded node itself: the cache may evict it at once when the
        // budget is small.
        let c = self.node(parent.kids[idx]).await?;
        parent.kid_cache.set(idx, &c, parent.kids.len());
        Ok(c)
    }

    pub async fn read_raw(&self, id: u64) -> Result<Vec<u8>, Error> {
        let mut buf = vec![0u8; self.page];
        self.store.read_page(id, &mut buf).await?;
        Ok(buf)
    }

    async fn load_node(&self, id: u64) -> Result<Rc<Node>, Error> {
        let buf = self.read_raw(id).await?;
        self.install_node(id, &buf).await
    }

    /// Decodes page `id` from `buf` (read from the store), checks its references and caches
    /// it; the cached node wins if someone cached it meanwhile.
    pub async fn install_node(&self, id: u64, buf: &[u8]) -> Result<Rc<Node>, Error> {
        let view = page::decode(buf, id)?;
        let mut long_keys = Vec::new();
        let mut runs = Vec::new();
        let cells: Vec<page::KeyRef<'_>> = match &view {
            PageView::Leaf(c) => c.iter().map(|x| x.0).collect(),
            PageView::Branch(c) => c.iter().map(|x| x.0).collect(),
            _ => {
                return Err(Error::CorruptPage {
                    page_id: id,
                    reason: "expected a leaf or branch page",
                })
            }
        };
        for k in cells {
            if let page::KeyRef::Long { first, len } = k {
                long_keys.push(self.read_run(first, len).await?);
                runs.push((first, page::pages_for(len, self.page)));
            }
        }
        let node = Rc::new(Node::from_view(&view, self.page, &long_keys, id)?);
        let mut st = self.st.borrow_mut();
        // References past the end of the tree are corruption of this page, not an I/O error
        // later on some other page.
        let hw = st.hw;
        let beyond =
            |first: u64, len: usize| first.saturating_add(page::pages_for(len, self.page)) > hw;
        let bad_ref = node.kids.iter().any(|&k| k >= hw)
            || (0..node.len()).any(|i| {
                node.overflow_first(i)
                    .is_some_and(|f| beyond(f, node.ents[i].vlen as usize))
            })
            || runs.iter().any(|&(f, n)| f.saturating_add(n) > hw);
        if bad_ref {
            return Err(Error::CorruptPage {
                page_id: id,
                reason: "page refers past the end of the tree",
            });
        }
        // Only a page the writer still references may gain its runs here: a pending page's
        // runs were freed with it already.
        if !runs.is_empty() && !st.pending_ids.contains(&id) {
            st.long_runs.entry(id).or_insert(runs);
        }
        if let Some(s) = st.cache.get(&id) {
            if let Cached::Node(n) = &s.page {
                return Ok(n.clone());
            }
        }
        let bytes = node.mem_bytes();
        st.cache.insert(
            id,
            Slot {
                page: Cached::Node(node.clone()),
                pinned: false,
                bytes,
                gen: 0,
            },
        );
        st.cache_bytes += bytes;
        let budget = self.cfg.cache_bytes_max;
        st.evict(budget);
        Ok(node)
    }

    /// Reads an overflow run holding `len` bytes.
    pub async fn read_run(&self, first: u64, len: usize) -> Result<Vec<u8>, Error> {
        let per = overflow_payload_bytes(self.page);
        let n = page::pages_for(len, self.page);
        let mut out = Vec::with_capacity(len);
        for k in 0..n {
            let id = first + k;
            let want = per.min(len - k as usize * per);
            let cached = match self.st.borrow().cache.get(&id) {
                Some(Slot {
                    page: Cached::Ovf(v),
                    ..
                }) => Some(v.clone()),
                _ => None,
            };
            match cached {
                Some(v) if v.len() == want => out.extend_from_slice(&v),
                Some(_) => {
                    return Err(Error::CorruptPage {
                        page_id: id,
                        reason: "overflow payload length mismatch",
                    })
                }
                None => {
                    let buf = self.read_raw(id).await?;
                    match page::decode(&buf, id)? {
                        PageView::Overflow(p) if p.len() == want => out.extend_from_slice(p),
                        PageView::Overflow(_) => {
                            return Err(Error::CorruptPage {
                                page_id: id,
                                reason: "overflow payload length mismatch",
                            })
                        }
                        _ => {
                            return Err(Error::CorruptPage {
                                page_id: id,
                                reason: "expected an overflow page",
                            })
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    pub fn register_snapshot(&self) -> u64 {
        let mut st = self.st.borrow_mut();
        let g = st.gen;
        *st.live.entry(g).or_insert(0) += 1;
        st.gen += 1;
        g
    }

    pub fn unregister_snapshot(&self, g: u64) {
        let mut st = self.st.borrow_mut();
        if let Some(c) = st.live.get_mut(&g) {
            *c -= 1;
            if *c == 0 {
                st.live.remove(&g);
                if st.reclaim_cursor > 0 {
                    st.reclaim_again = true;
                }
                st.reclaim_due = true;
            }
        }
    }
}
