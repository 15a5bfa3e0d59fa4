//! Page formats (bytes on disk) and the in-memory node a page decodes into.
//!
//! See DESIGN.md for the byte diagrams. Decoding checks everything it reads (checksum, kind,
//! id, bounds, lengths, key order) and returns `Error::CorruptPage` naming the page; it never
//! panics on any input (a fuzz target and a proptest hold it to that).

use crate::error::Error;
use crate::limits::*;

/// Page kinds, byte 4 of the header.
pub const KIND_META: u8 = 1;
/// A leaf: keys and values.
pub const KIND_LEAF: u8 = 2;
/// A branch: separator keys and child page ids.
pub const KIND_BRANCH: u8 = 3;
/// An overflow page: a slice of a long value or key.
pub const KIND_OVERFLOW: u8 = 4;
/// A freelist page: ranges of free page ids, chained.
pub const KIND_FREELIST: u8 = 5;
/// On-disk format version, byte 5 of the header.
pub const FORMAT_VERSION: u8 = 1;
/// Meta slot magic, "PCBTREE1".
pub const META_MAGIC: u64 = u64::from_le_bytes(*b"PCBTREE1");
/// "No page" in a page-id field.
pub const NO_PAGE: u64 = u64::MAX;

/// Cell flag: the key lives in overflow pages.
pub const FLAG_LONG_KEY: u8 = 1;
/// Cell flag: the value lives in overflow pages.
pub const FLAG_OVERFLOW_VALUE: u8 = 2;

pub(crate) fn rd_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
pub(crate) fn rd_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
pub(crate) fn rd_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn wr_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn wr_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn wr_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The fields of the 32-byte header every page starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Page kind (`KIND_*`).
    pub kind: u8,
    /// The page's own id (catches misdirected writes).
    pub page_id: u64,
    /// The checkpoint transaction that wrote the page.
    pub txn: u64,
    /// Cells (leaf, branch), ranges (freelist), 0 (meta, overflow).
    pub count: u32,
    /// Payload bytes (overflow); 0 otherwise.
    pub aux: u32,
}

/// Writes `h` into `buf` and seals the page with its crc32 (over bytes 4..).
pub fn seal(buf: &mut [u8], h: Header) {
    buf[4] = h.kind;
    buf[5] = FORMAT_VERSION;
    wr_u16(buf, 6, 0);
    wr_u64(buf, 8, h.page_id);
    wr_u64(buf, 16, h.txn);
    wr_u32(buf, 24, h.count);
    wr_u32(buf, 28, h.aux);
    let crc = crc32fast::hash(&buf[4..]);
    wr_u32(buf, 0, crc);
}

/// Checks a page's size, checksum, version and id; returns its header.
pub fn open_header(buf: &[u8], page_id: u64) -> Result<Header, Error> {
    let bad = |reason| Error::CorruptPage { page_id, reason };
    if buf.len() < PAGE_BYTES_MIN || buf.len() > PAGE_BYTES_MAX || !buf.len().is_power_of_two() {
        return Err(bad("page length is not a valid page size"));
    }
    if rd_u32(buf, 0) != crc32fast::hash(&buf[4..]) {
        return Err(bad("checksum mismatch"));
    }
    if buf[5] != FORMAT_VERSION {
        return Err(bad("unknown format version"));
    }
    let h = Header {
        kind: buf[4],
        page_id: rd_u64(buf, 8),
        txn: rd_u64(buf, 16),
        count: rd_u32(buf, 24),
        aux: rd_u32(buf, 28),
    };
    if h.page_id != page_id {
        return Err(bad("page id in header differs from its location"));
    }
    if !(KIND_META..=KIND_FREELIST).contains(&h.kind) {
        return Err(bad("unknown page kind"));
    }
    Ok(h)
}

/// A key as a page holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRef<'a> {
    /// In the cell.
    Inline(&'a [u8]),
    /// In `pages_for(len)` overflow pages starting at `first`.
    Long {
        /// First overflow page.
        first: u64,
        /// Key length in bytes.
        len: usize,
    },
}

/// A value as a leaf holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValRef<'a> {
    /// In the cell.
    Inline(&'a [u8]),
    /// In overflow pages starting at `first`.
    Overflow {
        /// First overflow page.
        first: u64,
        /// Value length in bytes.
        len: usize,
    },
}

/// A meta slot's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaSlot {
    /// The checkpoint's transaction number (the newer valid slot wins).
    pub txn: u64,
    /// Page size the file was made with.
    pub page_size: u32,
    /// Root page.
    pub root: u64,
    /// Tree height (1 = the root is a leaf).
    pub depth: u32,
    /// Pages in use: every page id is below it.
    pub high_water: u64,
    /// Items in the tree.
    pub item_count: u64,
    /// First freelist page (NO_PAGE: none).
    pub freelist_head: u64,
    /// Freelist pages in the chain.
    pub freelist_pages: u64,
    /// A single-sync checkpoint's pages (id, crc32): open accepts the slot only if every one
    /// of them is on disk with that crc. Empty for a checkpoint that synced before its meta.
    pub verify: Vec<(u64, u32)>,
}

/// A decoded page, borrowing the page's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageView<'a> {
    /// A meta slot.
    Meta(MetaSlot),
    /// A leaf's cells, in key order.
    Leaf(Vec<(KeyRef<'a>, ValRef<'a>)>),
    /// A branch's cells: (separator, child); the first separator is empty.
    Branch(Vec<(KeyRef<'a>, u64)>),
    /// An overflow page's payload.
    Overflow(&'a [u8]),
    /// A freelist page: the next page in the chain and its ranges (start, length).
    Freelist {
        /// Next freelist page, or NO_PAGE.
        next: u64,
        /// Free ranges.
        ranges: Vec<(u64, u64)>,
    },
}

/// Pages an overflow run of `len` bytes takes.
pub fn pages_for(len: usize, page_size: usize) -> u64 {
    len.div_ceil(overflow_payload_bytes(page_size)) as u64
}

/// Decodes any page, checking every field against `page_id` and the page size (= `buf.len()`).
pub fn decode(buf: &[u8], page_id: u64) -> Result<PageView<'_>, Error> {
    let h = open_header(buf, page_id)?;
    let bad = |reason| Error::CorruptPage { page_id, reason };
    let page = buf.len();
    let count = h.count as usize;
    match h.kind {
        KIND_META => {
            let b = PAGE_HEADER_BYTES;
            if rd_u64(buf, b) != META_MAGIC {
                return Err(bad("meta magic missing"));
            }
            let m = MetaSlot {
                txn: h.txn,
                page_size: rd_u32(buf, b + 8),
                depth: rd_u32(buf, b + 12),
                root: rd_u64(buf, b + 16),
                high_water: rd_u64(buf, b + 24),
                item_count: rd_u64(buf, b + 32),
                freelist_head: rd_u64(buf, b + 40),
                freelist_pages: rd_u64(buf, b + 48),
                verify: Vec::new(),
            };
            let n = rd_u32(buf, b + 56) as usize;
            if n > (page - META_VERIFY_OFFSET_BYTES) / META_VERIFY_ENTRY_BYTES {
                return Err(bad("meta verify list too long"));
            }
            let mut m = m;
            for i in 0..n {
                let at = META_VERIFY_OFFSET_BYTES + i * META_VERIFY_ENTRY_BYTES;
                m.verify.push((rd_u64(buf, at), rd_u32(buf, at + 8)));
            }
            if m.page_size as usize != page {
                return Err(bad("meta page size differs from the store's"));
            }
            if m.root < META_SLOT_COUNT || m.root >= m.high_water {
                return Err(bad("meta root out of range"));
            }
            if m.depth == 0 || m.depth > 64 {
                return Err(bad("meta depth out of range"));
            }
            if m.freelist_head != NO_PAGE
                && (m.freelist_head < META_SLOT_COUNT || m.freelist_head >= m.high_water)
            {
                return Err(bad("meta freelist head out of range"));
            }
            if m.verify
                .iter()
                .any(|&(id, _)| id < META_SLOT_COUNT || id >= m.high_water)
            {
                return Err(bad("meta verify list names a page out of range"));
            }
            Ok(PageView::Meta(m))
        }
        KIND_OVERFLOW => {
            let n = h.aux as usize;
            if n == 0 || n > overflow_payload_bytes(page) {
                return Err(bad("overflow payload length out of range"));
            }
            Ok(PageView::Overflow(
                &buf[PAGE_HEADER_BYTES..PAGE_HEADER_BYTES + n],
            ))
        }
        KIND_FREELIST => {
            let at = PAGE_HEADER_BYTES + FREELIST_BODY_HEADER_BYTES;
            if count > (page - at) / FREELIST_RANGE_BYTES {
                return Err(bad("freelist range count too large"));
            }
            let next = rd_u64(buf, PAGE_HEADER_BYTES);
            let mut ranges = Vec::with_capacity(count);
            for i in 0..count {
                let o = at + i * FREELIST_RANGE_BYTES;
                let (start, len) = (rd_u64(buf, o), rd_u64(buf, o + 8));
                if len == 0 || start.checked_add(len).is_none() {
                    return Err(bad("freelist range invalid"));
                }
                ranges.push((start, len));
            }
            Ok(PageView::Freelist { next, ranges })
        }
        KIND_LEAF | KIND_BRANCH => {
            let leaf = h.kind == KIND_LEAF;
            let inline_max = key_inline_bytes_max(page);
            let mut at = PAGE_HEADER_BYTES;
            let mut leaf_cells = Vec::new();
            let mut branch_cells = Vec::new();
            let fixed = if leaf {
                LEAF_CELL_HEADER_BYTES
            } else {
                BRANCH_CELL_HEADER_BYTES
            };
            if count > (page - PAGE_HEADER_BYTES) / fixed {
                return Err(bad("cell count too large"));
            }
            let mut prev: Option<&[u8]> = None;
            for i in 0..count {
                if at + fixed > page {
                    return Err(bad("cell header past the page end"));
                }
                let klen = rd_u16(buf, at) as usize;
                let flags = buf[at + 2];
                if buf[at + 3] != 0 || flags & !(FLAG_LONG_KEY | FLAG_OVERFLOW_VALUE) != 0 {
                    return Err(bad("unknown cell flags"));
                }
                if klen > KEY_BYTES_MAX {
                    return Err(bad("key longer than the limit"));
                }
                let long = flags & FLAG_LONG_KEY != 0;
                if long != (klen > inline_max) {
                    return Err(bad("key placement disagrees with its length"));
                }
                let word = if leaf {
                    rd_u32(buf, at + 4) as u64
                } else {
                    rd_u64(buf, at + 4)
                };
                at += fixed;
                let key = if long {
                    if at + 8 > page {
                        return Err(bad("long key reference past the page end"));
                    }
                    let first = rd_u64(buf, at);
                    at += 8;
                    if first.checked_add(pages_for(klen, page)).is_none() {
                        return Err(bad("long key run out of range"));
                    }
                    KeyRef::Long { first, len: klen }
                } else {
                    if at + klen > page {
                        return Err(bad("key past the page end"));
                    }
                    let k = &buf[at..at + klen];
                    at += klen;
                    if let Some(p) = prev {
                        if p >= k {
                            return Err(bad("keys out of order"));
                        }
                    }
                    prev = Some(k);
                    KeyRef::Inline(k)
                };
                if !leaf {
                    if i == 0 && key != KeyRef::Inline(&[]) {
                        return Err(bad("first branch key is not empty"));
                    }
                    if word == NO_PAGE || word < META_SLOT_COUNT {
                        return Err(bad("child page id out of range"));
                    }
                    branch_cells.push((key, word));
                    continue;
                }
                let vlen = word as usize;
                if vlen > VALUE_BYTES_MAX {
                    return Err(bad("value longer than the limit"));
                }
                let key_disk = if long { OUT_OF_LINE_REF_BYTES } else { klen };
                let ovf = flags & FLAG_OVERFLOW_VALUE != 0;
                if ovf != (LEAF_CELL_HEADER_BYTES + key_disk + vlen > cell_bytes_max(page)) {
                    return Err(bad("value placement disagrees with its length"));
                }
                let val = if ovf {
                    if at + 8 > page {
                        return Err(bad("overflow reference past the page end"));
                    }
                    let first = rd_u64(buf, at);
                    at += 8;
                    if first.checked_add(pages_for(vlen, page)).is_none() {
                        return Err(bad("overflow run out of range"));
                    }
                    ValRef::Overflow { first, len: vlen }
                } else {
                    if at + vlen > page {
                        return Err(bad("value past the page end"));
                    }
                    let v = &buf[at..at + vlen];
                    at += vlen;
                    ValRef::Inline(v)
                };
                leaf_cells.push((key, val));
            }
            if leaf {
                Ok(PageView::Leaf(leaf_cells))
            } else {
                if branch_cells.is_empty() {
                    return Err(bad("branch without children"));
                }
                Ok(PageView::Branch(branch_cells))
            }
        }
        _ => Err(bad("unknown page kind")),
    }
}

/// Decodes a page and, for a node page whose keys are all inline, builds the in-memory node
/// too (the whole load path short of reading long keys). For fuzzing and its proptest twin.
pub fn decode_checked(buf: &[u8], page_id: u64) -> Result<PageView<'_>, Error> {
    let view = decode(buf, page_id)?;
    let long = match &view {
        PageView::Leaf(c) => c.iter().any(|x| matches!(x.0, KeyRef::Long { .. })),
        PageView::Branch(c) => c.iter().any(|x| matches!(x.0, KeyRef::Long { .. })),
        _ => return Ok(view),
    };
    if !long {
        let node = Node::from_view(&view, buf.len(), &[], page_id)?;
        // What decodes must encode back to the same bytes.
        let mut again = vec![0u8; buf.len()];
        node.encode(&mut again, page_id, rd_u64(buf, 16), &[]);
        if again[PAGE_HEADER_BYTES..node.disk] != buf[PAGE_HEADER_BYTES..node.disk] {
            return Err(Error::CorruptPage {
                page_id,
                reason: "page does not re-encode to itself",
            });
        }
    }
    Ok(view)
}

/// One fuzz case: `data` as a page of 4 KiB (padded or cut), decoded as it is, then with
/// its checksum made valid and its id taken from its header. Never panics.
pub fn fuzz_one(data: &[u8]) {
    let mut buf = vec![0u8; PAGE_BYTES_MIN];
    let n = data.len().min(buf.len());
    buf[..n].copy_from_slice(&data[..n]);
    let _ = decode_checked(&buf, 0);
    let id = rd_u64(&buf, 8);
    buf[5] = FORMAT_VERSION;
    fix_checksum(&mut buf);
    let _ = decode_checked(&buf, id);
    // Short or odd-sized buffers are refused, not indexed.
    let _ = decode_checked(&data[..data.len().min(100)], id);
}

/// Makes `buf`'s checksum valid (so that a fuzzer reaches the checks behind it).
pub fn fix_checksum(buf: &mut [u8]) {
    if buf.len() >= 4 {
        let crc = crc32fast::hash(&buf[4..]);
        wr_u32(buf, 0, crc);
    }
}

/// Encodes a meta slot into a page buffer.
pub fn encode_meta(buf: &mut [u8], slot_page: u64, m: &MetaSlot) {
    buf.fill(0);
    let b = PAGE_HEADER_BYTES;
    wr_u64(buf, b, META_MAGIC);
    wr_u32(buf, b + 8, m.page_size);
    wr_u32(buf, b + 12, m.depth);
    wr_u64(buf, b + 16, m.root);
    wr_u64(buf, b + 24, m.high_water);
    wr_u64(buf, b + 32, m.item_count);
    wr_u64(buf, b + 40, m.freelist_head);
    wr_u64(buf, b + 48, m.freelist_pages);
    wr_u32(buf, b + 56, m.verify.len() as u32);
    for (i, &(id, crc)) in m.verify.iter().enumerate() {
        let at = META_VERIFY_OFFSET_BYTES + i * META_VERIFY_ENTRY_BYTES;
        wr_u64(buf, at, id);
        wr_u32(buf, at + 8, crc);
    }
    seal(
        buf,
        Header {
            kind: KIND_META,
            page_id: slot_page,
            txn: m.txn,
            count: 0,
            aux: 0,
        },
    );
}

/// Encodes a freelist page.
pub fn encode_freelist(buf: &mut [u8], page_id: u64, txn: u64, next: u64, ranges: &[(u64, u64)]) {
    buf.fill(0);
    wr_u64(buf, PAGE_HEADER_BYTES, next);
    let at = PAGE_HEADER_BYTES + FREELIST_BODY_HEADER_BYTES;
    for (i, (s, l)) in ranges.iter().enumerate() {
        wr_u64(buf, at + i * FREELIST_RANGE_BYTES, *s);
        wr_u64(buf, at + i * FREELIST_RANGE_BYTES + 8, *l);
    }
    let count = ranges.len() as u32;
    seal(
        buf,
        Header {
            kind: KIND_FREELIST,
            page_id,
            txn,
            count,
            aux: 0,
        },
    );
}

/// Ranges one freelist page holds.
pub fn freelist_ranges_per_page(page: usize) -> usize {
    (page - PAGE_HEADER_BYTES - FREELIST_BODY_HEADER_BYTES) / FREELIST_RANGE_BYTES
}

/// Encodes an overflow page holding `payload`.
pub fn encode_overflow(buf: &mut [u8], page_id: u64, txn: u64, payload: &[u8]) {
    buf[PAGE_HEADER_BYTES..PAGE_HEADER_BYTES + payload.len()].copy_from_slice(payload);
    buf[PAGE_HEADER_BYTES + payload.len()..].fill(0);
    let aux = payload.len() as u32;
    seal(
        buf,
        Header {
            kind: KIND_OVERFLOW,
            page_id,
            txn,
            count: 0,
            aux,
        },
    );
}

/// One entry of a node: where its key (and, in a leaf, its value) sit in the node's buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ent {
    pub off: u32,
    /// Value length (leaf; for an overflow value: the whole value's length).
    pub vlen: u32,
    pub klen: u16,
    /// FLAG_OVERFLOW_VALUE (leaf): the buffer holds the first overflow page id (8 bytes).
    pub flags: u8,
}

/// A node in memory: one page's entries, keys always whole (long keys fetched at load).
///
/// # Memory layout
/// ```text
/// buf:  [key0][val0][key1][val1] ...   (appended; deleted bytes become garbage)
/// ents: [Ent{off,klen,vlen,flags}; n]  (sorted by key: binary search here)
/// kids: [child page id; n]             (branch only; ents[0]'s key is empty)
/// ```
/// Warm reads search this directly; nothing is decoded per read.
#[derive(Debug)]
pub(crate) struct Node {
    pub leaf: bool,
    pub buf: Vec<u8>,
    pub ents: Vec<Ent>,
    /// Each key's first 8 bytes after the node's shared prefix (`skip`), big-endian,
    /// zero-padded (`key_head`), parallel to `ents`: searches probe this dense array and
    /// mostly end there, without touching `ents` or `buf` (a cache miss per probe
    /// otherwise). A branch's first entry (the empty key) has head 0 and no part in the
    /// prefix.
    pub heads: Vec<u64>,
    /// How many leading bytes every key of the node shares (a branch's empty first key
    /// aside), at most [`HEAD_PREFIX_BYTES_MAX`]: `heads` start after them. Keys of real
    /// tables share long prefixes within a page (`user000000000000` under YCSB, a length
    /// and `key:0000` under redis-benchmark), and heads of their first 8 bytes were all
    /// equal, which sent every search through `ents` and `buf`.
    skip: u8,
    /// The shared prefix's bytes (the first `skip` of them), kept here so that a search
    /// checks a key against it without touching `buf`.
    prefix: [u8; HEAD_PREFIX_BYTES_MAX],
    pub kids: Vec<u64>,
    /// Bytes this node takes when encoded, header included.
    pub disk: usize,
    garbage: usize,
    /// Branch: weak links to the children's cached nodes, so a warm get skips the hash
    /// lookup per level. Filled by reads; emptied whenever this node changes; a link that no
    /// longer upgrades, or reaches a node marked stale, falls back to the cache lookup.
    pub kid_cache: KidCache,
    /// Set when the writer replaced this node's content under the same page id while
    /// someone still held it (see `Tree::with_mut`): links to it are no longer the page.
    pub stale: std::cell::Cell<bool>,
}

/// Weak child links of a branch node (see `Node::kid_cache`). Cloning gives an empty cache:
/// a copy is a new page whose links are filled afresh.
#[derive(Debug, Default)]
pub(crate) struct KidCache(std::cell::RefCell<Vec<Option<std::rc::Weak<Node>>>>);

/// Buffer bytes a copied node keeps free: the write that copies a node is about to add a
/// cell to it, and an exact-size copy would at once be reallocated to twice its size (and
/// moved). Measured: with 8 KiB pages and 1 KB values that reallocation, and the page
/// faults of the fresh large allocations, took a quarter of a node's CPU under YCSB-A.
/// 2 KiB covers one cell of a typical item; a larger one grows the buffer once.
const NODE_COPY_HEADROOM_BYTES: usize = 2048;

/// Entries a copied node keeps room for (see [`NODE_COPY_HEADROOM_BYTES`]): a put adds
/// one, a split's separator one.
const NODE_COPY_HEADROOM_ENTRIES: usize = 2;

/// The longest shared key prefix a node's heads skip (see `Node::skip`). Kept in the node
/// itself so that a search never leaves the node's header to check it. 64 bytes cover an
/// item key's tag, hash and length (19 bytes) with a partition key of up to 45 bytes, so
/// that the items of one partition key (a query's range) are told apart by their heads;
/// keys that share more than this within a page search less well, never wrongly.
pub(crate) const HEAD_PREFIX_BYTES_MAX: usize = 64;

impl Clone for Node {
    /// A copy for a write: without the garbage of replaced cells, and with room for the cell
    /// the write is about to add (see [`NODE_COPY_HEADROOM_BYTES`]).
    fn clone(&self) -> Node {
        let mut n = self.compacted(NODE_COPY_HEADROOM_BYTES, NODE_COPY_HEADROOM_ENTRIES);
        n.heads = Vec::with_capacity(self.heads.len() + NODE_COPY_HEADROOM_ENTRIES);
        n.heads.extend_from_slice(&self.heads);
        n.kids = Vec::with_capacity(if self.leaf {
            0
        } else {
            self.kids.len() + NODE_COPY_HEADROOM_ENTRIES
        });
        n.kids.extend_from_slice(&self.kids);
        n.stale.set(self.stale.get());
        n
    }
}

impl Clone for KidCache {
    fn clone(&self) -> Self {
        KidCache::default()
    }
}

impl KidCache {
    /// The live, current node linked at child `i`, if any.
    #[inline]
    pub fn get(&self, i: usize) -> Option<std::rc::Rc<Node>> {
        let v = self.0.borrow();
        let n = v.get(i)?.as_ref()?.upgrade()?;
        (!n.stale.get()).then_some(n)
    }

    pub fn set(&self, i: usize, n: &std::rc::Rc<Node>, kids: usize) {
        let mut v = self.0.borrow_mut();
        if v.len() < kids {
            v.resize(kids, None);
        }
        if let Some(slot) = v.get_mut(i) {
            *slot = Some(std::rc::Rc::downgrade(n));
        }
    }

    pub fn clear(&self) {
        let mut v = self.0.borrow_mut();
        if !v.is_empty() {
            v.clear();
        }
    }
}

impl Node {
    pub fn new(leaf: bool) -> Self {
        Node {
            leaf,
            buf: Vec::new(),
            ents: Vec::new(),
            heads: Vec::new(),
            kids: Vec::new(),
            disk: PAGE_HEADER_BYTES,
            kid_cache: KidCache::default(),
            stale: std::cell::Cell::new(false),
            garbage: 0,
            skip: 0,
            prefix: [0; HEAD_PREFIX_BYTES_MAX],
        }
    }

    /// The first entry whose key takes part in the shared prefix: a branch's first key is
    /// empty.
    #[inline]
    fn first_keyed(&self) -> usize {
        usize::from(!self.leaf)
    }

    /// `key`'s head in this node: its 8 bytes after the shared prefix, or, when it does not
    /// start with that prefix, whether it sorts before or after every key of the node.
    #[inline]
    fn head_in(&self, key: &[u8]) -> Result<u64, std::cmp::Ordering> {
        let skip = self.skip as usize;
        if skip == 0 {
            return Ok(key_head(key));
        }
        let n = skip.min(key.len());
        match key[..n].cmp(&self.prefix[..n]) {
            std::cmp::Ordering::Equal if n == skip => Ok(key_head(&key[skip..])),
            // A proper prefix of the shared prefix sorts before every key that has it.
            std::cmp::Ordering::Equal => Err(std::cmp::Ordering::Less),
            o => Err(o),
        }
    }

    /// The head of `key`, about to be inserted: shrinks the shared prefix first, if needed,
    /// so that it covers `key` too, which recomputes every head (a key from outside the
    /// prefix is rare: keys land in the node of their range).
    fn admit(&mut self, key: &[u8]) -> u64 {
        let skip = self.skip as usize;
        if skip > 0 && !(key.len() >= skip && key[..skip] == self.prefix[..skip]) {
            self.set_skip(common_prefix_len(key, &self.prefix[..skip]));
        }
        key_head(&key[self.skip as usize..])
    }

    /// Sets the shared prefix to the longest one its keys allow (bounded by
    /// [`HEAD_PREFIX_BYTES_MAX`]) and recomputes the heads. For a node built whole: a
    /// decoded page, a split's halves, a merge.
    fn reprefix(&mut self) {
        let (first, n) = (self.first_keyed(), self.len());
        let common = if n > first {
            common_prefix_len(self.key(first), self.key(n - 1))
        } else {
            0
        };
        self.set_skip(common.min(HEAD_PREFIX_BYTES_MAX));
    }

    /// Makes the first `skip` bytes of the keys the shared prefix (they must share them)
    /// and recomputes every head.
    fn set_skip(&mut self, skip: usize) {
        debug_assert!(skip <= HEAD_PREFIX_BYTES_MAX);
        let first = self.first_keyed();
        if skip > 0 {
            let e = self.ents[first];
            let from = e.off as usize;
            self.prefix[..skip].copy_from_slice(&self.buf[from..from + skip]);
        }
        self.skip = skip as u8;
        let Node {
            buf, ents, heads, ..
        } = self;
        heads.clear();
        heads.extend(ents.iter().enumerate().map(|(i, e)| {
            if i < first {
                0
            } else {
                let at = e.off as usize;
                key_head(&buf[at + skip..at + e.klen as usize])
            }
        }));
    }

    /// Checks the heads and the shared prefix against the keys (for the tree's invariant
    /// checks).
    pub fn check_heads(&self) -> Result<(), &'static str> {
        let skip = self.skip as usize;
        if self.heads.len() != self.len() {
            return Err("key heads disagree with the keys");
        }
        if skip > 0 && self.len() <= self.first_keyed() {
            return Err("a node without keys has a shared prefix");
        }
        for i in 0..self.len() {
            let key = self.key(i);
            if i < self.first_keyed() {
                if self.heads[i] != 0 {
                    return Err("a branch's first head is not 0");
                }
                continue;
            }
            if key.len() < skip || key[..skip] != self.prefix[..skip] {
                return Err("a key lacks its node's shared prefix");
            }
            if self.heads[i] != key_head(&key[skip..]) {
                return Err("key heads disagree with the keys");
            }
        }
        Ok(())
    }

    #[inline]
    pub fn key(&self, i: usize) -> &[u8] {
        let e = &self.ents[i];
        &self.buf[e.off as usize..e.off as usize + e.klen as usize]
    }

    /// The stored value bytes: the value itself, or the 8-byte first overflow page id.
    #[inline]
    pub fn val_raw(&self, i: usize) -> &[u8] {
        let e = &self.ents[i];
        let at = e.off as usize + e.klen as usize;
        let n = if e.flags & FLAG_OVERFLOW_VALUE != 0 {
            8
        } else {
            e.vlen as usize
        };
        &self.buf[at..at + n]
    }

    pub fn overflow_first(&self, i: usize) -> Option<u64> {
        (self.ents[i].flags & FLAG_OVERFLOW_VALUE != 0).then(|| rd_u64(self.val_raw(i), 0))
    }

    pub fn len(&self) -> usize {
        self.ents.len()
    }

    /// Leaf: Ok(i) if key i equals `key`, Err(i) where it would go.
    #[inline]
    pub fn search(&self, key: &[u8]) -> Result<usize, usize> {
        let h = match self.head_in(key) {
            Ok(h) => h,
            Err(std::cmp::Ordering::Less) => return Err(0),
            Err(_) => return Err(self.len()),
        };
        let lo = self.heads.partition_point(|&x| x < h);
        // Keys with the same head (a shared 8-byte prefix): compare them whole.
        let hi = lo + self.heads[lo..].partition_point(|&x| x == h);
        if hi - lo <= 1 {
            return match (lo < hi).then(|| self.key(lo).cmp(key)) {
                Some(std::cmp::Ordering::Equal) => Ok(lo),
                Some(std::cmp::Ordering::Less) => Err(lo + 1),
                _ => Err(lo),
            };
        }
        self.ents[lo..hi]
            .binary_search_by(|e| {
                self.buf[e.off as usize..e.off as usize + e.klen as usize].cmp(key)
            })
            .map(|i| i + lo)
            .map_err(|i| i + lo)
    }

    /// Branch: the child whose range holds `key` (the last separator <= key).
    #[inline]
    pub fn child_index(&self, key: &[u8]) -> usize {
        let h = match self.head_in(key) {
            Ok(h) => h,
            Err(std::cmp::Ordering::Less) => return 0,
            Err(_) => return self.len() - 1,
        };
        let heads = &self.heads[1..];
        let lo = heads.partition_point(|&x| x < h);
        let hi = lo + heads[lo..].partition_point(|&x| x == h);
        let ties = &self.ents[1 + lo..1 + hi];
        lo + ties
            .partition_point(|e| &self.buf[e.off as usize..e.off as usize + e.klen as usize] <= key)
    }

    pub fn cell_disk(leaf: bool, page: usize, klen: usize, vstored: usize) -> usize {
        let kd = if klen > key_inline_bytes_max(page) {
            OUT_OF_LINE_REF_BYTES
        } else {
            klen
        };
        if leaf {
            LEAF_CELL_HEADER_BYTES + kd + vstored
        } else {
            BRANCH_CELL_HEADER_BYTES + kd
        }
    }

    fn ent_disk(&self, i: usize, page: usize) -> usize {
        let e = &self.ents[i];
        Node::cell_disk(self.leaf, page, e.klen as usize, self.val_raw(i).len())
    }

    fn push_bytes(&mut self, key: &[u8], val: &[u8]) -> u32 {
        let off = self.buf.len() as u32;
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(val);
        off
    }

    /// Leaf: inserts or replaces; `vlen` is the whole value's length, `stored` what the
    /// cell holds (the value, or its first overflow page id when `ovf`). Returns the old
    /// entry's overflow run first page, if the replaced value had one.
    pub fn leaf_put(
        &mut self,
        page: usize,
        key: &[u8],
        stored: &[u8],
        vlen: usize,
        ovf: bool,
    ) -> (bool, Option<(u64, usize)>) {
        let flags = if ovf { FLAG_OVERFLOW_VALUE } else { 0 };
        let add = Node::cell_disk(true, page, key.len(), stored.len());
        match self.search(key) {
            Ok(i) => {
                let old = self
                    .overflow_first(i)
                    .map(|f| (f, self.ents[i].vlen as usize));
                let old_disk = self.ent_disk(i, page);
                self.garbage += key.len() + self.val_raw(i).len();
                // The same key: its head stays.
                let off = self.push_bytes(key, stored);
                self.ents[i] = Ent {
                    off,
                    vlen: vlen as u32,
                    klen: key.len() as u16,
                    flags,
                };
                self.disk = self.disk - old_disk + add;
                self.maybe_compact();
                (false, old)
            }
            Err(i) => {
                let head = self.admit(key);
                let off = self.push_bytes(key, stored);
                self.heads.insert(i, head);
                self.ents.insert(
                    i,
                    Ent {
                        off,
                        vlen: vlen as u32,
                        klen: key.len() as u16,
                        flags,
                    },
                );
                self.disk += add;
                (true, None)
            }
        }
    }

    /// Removes entry i; returns its overflow run (first page, value length), if any.
    pub fn remove(&mut self, i: usize, page: usize) -> Option<(u64, usize)> {
        let old = if self.leaf {
            self.overflow_first(i)
                .map(|f| (f, self.ents[i].vlen as usize))
        } else {
            None
        };
        self.disk -= self.ent_disk(i, page);
        self.garbage += self.ents[i].klen as usize + self.val_raw(i).len();
        self.heads.remove(i);
        self.ents.remove(i);
        if !self.leaf {
            self.kids.remove(i);
        }
        if self.len() <= self.first_keyed() {
            // No key left to share a prefix: the next one, whatever it is, must fit.
            self.skip = 0;
        }
        self.maybe_compact();
        old
    }

    /// Branch: removes child i; if it was the first, the new first key becomes empty (the
    /// first child of a branch has no lower separator of its own).
    pub fn branch_remove(&mut self, page: usize, i: usize) {
        self.remove(i, page);
        if i == 0 && !self.ents.is_empty() {
            let klen = self.ents[0].klen as usize;
            self.disk -= Node::cell_disk(false, page, klen, 0) - Node::cell_disk(false, page, 0, 0);
            self.garbage += klen;
            self.ents[0].klen = 0;
            self.heads[0] = 0;
        }
    }

    /// Branch: inserts separator `key` with child `kid` at position i.
    pub fn branch_insert(&mut self, page: usize, i: usize, key: &[u8], kid: u64) {
        // Only a new root gets a first entry, its empty key, while it has no others.
        debug_assert!(i > 0 || (key.is_empty() && self.len() == 0));
        let head = if i == 0 { 0 } else { self.admit(key) };
        let off = self.push_bytes(key, &[]);
        self.heads.insert(i, head);
        self.ents.insert(
            i,
            Ent {
                off,
                vlen: 0,
                klen: key.len() as u16,
                flags: 0,
            },
        );
        self.kids.insert(i, kid);
        self.disk += Node::cell_disk(false, page, key.len(), 0);
    }

    fn push_ent_from(&mut self, page: usize, other: &Node, i: usize, key_override: Option<&[u8]>) {
        let key = key_override.unwrap_or_else(|| other.key(i));
        let stored = other.val_raw(i);
        let off = self.push_bytes(key, stored);
        let e = other.ents[i];
        // No head: the node is being built whole, and its builder's `reprefix` computes
        // every head once the prefix is known.
        self.ents.push(Ent {
            off,
            vlen: e.vlen,
            klen: key.len() as u16,
            flags: e.flags,
        });
        if !self.leaf {
            self.kids.push(other.kids[i]);
        }
        self.disk += Node::cell_disk(self.leaf, page, key.len(), stored.len());
    }

    fn maybe_compact(&mut self) {
        if self.garbage > 1024 && self.garbage * 2 > self.buf.len() {
            let mut n = self.compacted(0, 0);
            n.heads = std::mem::take(&mut self.heads);
            n.kids = std::mem::take(&mut self.kids);
            *self = n;
        }
    }

    /// This node's cells and entries without the garbage, with room for `headroom_bytes`
    /// more buffer bytes and `headroom_entries` more entries; `heads` and `kids` are left
    /// empty for the caller.
    fn compacted(&self, headroom_bytes: usize, headroom_entries: usize) -> Node {
        let mut n = Node::new(self.leaf);
        // The same keys: the same shared prefix (the caller moves the heads over).
        n.skip = self.skip;
        n.prefix = self.prefix;
        n.buf
            .reserve_exact(self.buf.len() - self.garbage + headroom_bytes);
        n.ents.reserve_exact(self.len() + headroom_entries);
        for i in 0..self.len() {
            let key = self.key(i);
            let stored = self.val_raw(i);
            let off = n.push_bytes(key, stored);
            n.ents.push(Ent {
                off,
                ..self.ents[i]
            });
        }
        n.disk = self.disk;
        debug_assert_eq!(n.buf.len(), self.buf.len() - self.garbage);
        n
    }

    /// Splits an overfull node near its byte midpoint, or, when `appended` (its last entry
    /// was just added at the end: keys arriving in order), just before that entry, so that
    /// the left node stays full and an in-order load fills its pages instead of leaving
    /// them half empty. Returns the separator (the first key of the right half, shortened
    /// for leaves) and the right half.
    pub fn split(&mut self, page: usize, appended: bool) -> (Vec<u8>, Node) {
        let n = self.len();
        let at = if appended && n >= 2 && self.disk - self.ent_disk(n - 1, page) <= page {
            n - 1
        } else {
            self.midpoint(page)
        };
        let mut left = Node::new(self.leaf);
        let mut right = Node::new(self.leaf);
        for i in 0..at {
            left.push_ent_from(page, self, i, None);
        }
        let sep: Vec<u8> = if self.leaf {
            shortest_separator(self.key(at - 1), self.key(at)).to_vec()
        } else {
            self.key(at).to_vec()
        };
        for i in at..n {
            let ko = (!self.leaf && i == at).then_some(&[][..]);
            right.push_ent_from(page, self, i, ko);
        }
        left.reprefix();
        right.reprefix();
        *self = left;
        (sep, right)
    }

    /// The entry a split starts its right half at: the first past half the node's bytes.
    fn midpoint(&self, page: usize) -> usize {
        let n = self.len();
        let half = (self.disk - PAGE_HEADER_BYTES) / 2;
        let mut acc = 0;
        for i in 0..n {
            acc += self.ent_disk(i, page);
            if acc >= half {
                return (i + 1).min(n - 1).max(1);
            }
        }
        n - 1
    }

    /// Appends `right` after this node; for branches `sep` becomes right's first key.
    pub fn merged(&self, page: usize, sep: &[u8], right: &Node) -> Node {
        let mut m = Node::new(self.leaf);
        for i in 0..self.len() {
            m.push_ent_from(page, self, i, None);
        }
        for i in 0..right.len() {
            let ko = (!self.leaf && i == 0).then_some(sep);
            m.push_ent_from(page, right, i, ko);
        }
        m.reprefix();
        m
    }

    /// The encoded size of `self.merged(..)` without building it.
    pub fn merged_disk(&self, page: usize, sep: &[u8], right: &Node) -> usize {
        let extra = if self.leaf {
            0
        } else {
            Node::cell_disk(false, page, sep.len(), 0) - Node::cell_disk(false, page, 0, 0)
        };
        self.disk + right.disk - PAGE_HEADER_BYTES + extra
    }

    /// Approximate memory the node takes, for the cache budget.
    pub fn mem_bytes(&self) -> usize {
        self.buf.capacity()
            + self.ents.capacity() * std::mem::size_of::<Ent>()
            + self.heads.capacity() * 8
            + self.kids.capacity() * 8
            // The node itself (its inline key prefix included) and the `Rc` around it.
            + std::mem::size_of::<Node>()
            + 2 * std::mem::size_of::<usize>()
    }

    /// Encodes into `out` (one page). `long_runs[j]` is the first overflow page of the j-th
    /// long key, in entry order.
    pub fn encode(&self, out: &mut [u8], page_id: u64, txn: u64, long_runs: &[u64]) {
        let page = out.len();
        let inline_max = key_inline_bytes_max(page);
        out.fill(0);
        let mut at = PAGE_HEADER_BYTES;
        let mut j = 0;
        for i in 0..self.len() {
            let e = self.ents[i];
            let key = self.key(i);
            let long = key.len() > inline_max;
            let flags = (if long { FLAG_LONG_KEY } else { 0 }) | (e.flags & FLAG_OVERFLOW_VALUE);
            wr_u16(out, at, e.klen);
            out[at + 2] = flags;
            if self.leaf {
                wr_u32(out, at + 4, e.vlen);
                at += LEAF_CELL_HEADER_BYTES;
            } else {
                wr_u64(out, at + 4, self.kids[i]);
                at += BRANCH_CELL_HEADER_BYTES;
            }
            if long {
                wr_u64(out, at, long_runs[j]);
                j += 1;
                at += 8;
            } else {
                out[at..at + key.len()].copy_from_slice(key);
                at += key.len();
            }
            if self.leaf {
                let v = self.val_raw(i);
                out[at..at + v.len()].copy_from_slice(v);
                at += v.len();
            }
        }
        debug_assert_eq!(at, self.disk);
        let kind = if self.leaf { KIND_LEAF } else { KIND_BRANCH };
        seal(
            out,
            Header {
                kind,
                page_id,
                txn,
                count: self.len() as u32,
                aux: 0,
            },
        );
    }

    /// Builds a node from decoded cells whose long keys have been fetched (`long_keys`, in
    /// order). Checks key order across long keys too.
    pub fn from_view(
        view: &PageView<'_>,
        page: usize,
        long_keys: &[Vec<u8>],
        page_id: u64,
    ) -> Result<Node, Error> {
        let bad = |reason| Error::CorruptPage { page_id, reason };
        let mut j = 0;
        let mut take_key = |k: &KeyRef<'_>| -> Result<Vec<u8>, Error> {
            Ok(match k {
                KeyRef::Inline(b) => b.to_vec(),
                KeyRef::Long { len, .. } => {
                    let key = long_keys.get(j).ok_or(bad("long key missing"))?.clone();
                    j += 1;
                    if key.len() != *len {
                        return Err(bad("long key length mismatch"));
                    }
                    key
                }
            })
        };
        let mut n;
        match view {
            PageView::Leaf(cells) => {
                n = Node::new(true);
                for (k, v) in cells {
                    let key = take_key(k)?;
                    let (stored, vlen, ovf) = match v {
                        ValRef::Inline(b) => (b.to_vec(), b.len(), false),
                        ValRef::Overflow { first, len } => {
                            (first.to_le_bytes().to_vec(), *len, true)
                        }
                    };
                    let off = n.push_bytes(&key, &stored);
                    let flags = if ovf { FLAG_OVERFLOW_VALUE } else { 0 };
                    n.ents.push(Ent {
                        off,
                        vlen: vlen as u32,
                        klen: key.len() as u16,
                        flags,
                    });
                    n.disk += Node::cell_disk(true, page, key.len(), stored.len());
                }
            }
            PageView::Branch(cells) => {
                n = Node::new(false);
                for (k, kid) in cells {
                    let key = take_key(k)?;
                    let off = n.push_bytes(&key, &[]);
                    n.ents.push(Ent {
                        off,
                        vlen: 0,
                        klen: key.len() as u16,
                        flags: 0,
                    });
                    n.kids.push(*kid);
                    n.disk += Node::cell_disk(false, page, key.len(), 0);
                }
            }
            _ => return Err(bad("not a node page")),
        }
        let first = if n.leaf { 0 } else { 1 };
        for i in first + 1..n.len() {
            if n.key(i - 1) >= n.key(i) {
                return Err(bad("keys out of order"));
            }
        }
        if n.disk > page {
            return Err(bad("cells overflow the page"));
        }
        n.reprefix();
        Ok(n)
    }

    /// The long keys (entry order) this node has.
    pub fn long_key_indices(&self, page: usize) -> impl Iterator<Item = usize> + '_ {
        let max = key_inline_bytes_max(page);
        (0..self.len()).filter(move |&i| self.ents[i].klen as usize > max)
    }
}

/// The first 8 bytes of `key` as a big-endian number, zero-padded. Monotone: head(a) <
/// head(b) implies a < b; equal heads need a full comparison.
#[inline]
pub(crate) fn key_head(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

/// The shortest key s with left < s <= right (suffix truncation for leaf separators).
pub fn shortest_separator<'a>(left: &[u8], right: &'a [u8]) -> &'a [u8] {
    let common = common_prefix_len(left, right);
    &right[..(common + 1).min(right.len())]
}

/// How many leading bytes `a` and `b` share.
fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Keys that share long prefixes, and some that break them: a prefix from a short list
    /// (one longer than `HEAD_PREFIX_BYTES_MAX`) and a few bytes from a small alphabet.
    fn key() -> impl Strategy<Value = Vec<u8>> {
        let long = vec![b'p'; HEAD_PREFIX_BYTES_MAX + 9];
        key_from(vec![
            Vec::new(),
            b"a".to_vec(),
            b"user0000000000000".to_vec(),
            long,
        ])
    }

    /// Keys that mostly share one long prefix, as a page's keys do.
    fn family_key() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            9 => key_from(vec![b"user0000000000000".to_vec()]),
            1 => key(),
        ]
    }

    fn key_from(prefixes: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::sample::select(prefixes),
            proptest::collection::vec(
                proptest::sample::select(vec![0u8, 1, b'0', b'9', 255]),
                0..12,
            ),
        )
            .prop_map(|(mut p, s)| {
                p.extend(s);
                p
            })
    }

    fn linear_search(keys: &[Vec<u8>], k: &[u8]) -> Result<usize, usize> {
        match keys.iter().position(|x| x.as_slice() >= k) {
            Some(i) if keys[i] == k => Ok(i),
            Some(i) => Err(i),
            None => Err(keys.len()),
        }
    }

    fn keys_of(n: &Node) -> Vec<Vec<u8>> {
        (0..n.len()).map(|i| n.key(i).to_vec()).collect()
    }

    fn check_leaf(n: &Node, probes: &[Vec<u8>]) -> Result<(), TestCaseError> {
        prop_assert_eq!(n.check_heads(), Ok(()));
        let keys = keys_of(n);
        for p in probes.iter().chain(&keys) {
            prop_assert_eq!(n.search(p), linear_search(&keys, p), "probe {:?}", p);
        }
        Ok(())
    }

    proptest! {
        /// A leaf's search, through every change of its shared prefix, agrees with a linear
        /// search of its keys; so does a branch's `child_index` built from them.
        #[test]
        fn searches_agree_with_a_linear_search(
            ops in proptest::collection::vec((key(), any::<bool>()), 1..120),
            probes in proptest::collection::vec(key(), 0..40),
        ) {
            searches_agree(&ops, &probes)?;
        }

        /// The same, for keys that mostly share a long prefix (the common case, where the
        /// node has one), probed with keys from outside it too.
        #[test]
        fn searches_agree_with_a_linear_search_within_a_prefix(
            ops in proptest::collection::vec((family_key(), any::<bool>()), 1..120),
            probes in proptest::collection::vec(key(), 0..40),
        ) {
            searches_agree(&ops, &probes)?;
        }
    }

    /// A node whose keys all left keeps no prefix: the next key, sharing only part of the
    /// old one, goes in (for a leaf, and for a branch down to its empty first key).
    #[test]
    fn an_emptied_node_takes_any_key() {
        let page = 4096;
        let mut leaf = Node::new(true);
        for k in [&b"user01"[..], b"user02"] {
            leaf.leaf_put(page, k, b"v", 1, false);
        }
        leaf.reprefix();
        while leaf.len() > 0 {
            leaf.remove(0, page);
        }
        leaf.leaf_put(page, b"user10", b"v", 1, false);
        assert_eq!(leaf.check_heads(), Ok(()));
        assert_eq!(leaf.search(b"user10"), Ok(0));

        let mut branch = Node::new(false);
        branch.branch_insert(page, 0, &[], 0);
        branch.branch_insert(page, 1, b"user01", 1);
        branch.branch_insert(page, 2, b"user02", 2);
        branch.reprefix();
        branch.branch_remove(page, 2);
        branch.branch_remove(page, 1);
        branch.branch_insert(page, 1, b"user10", 3);
        assert_eq!(branch.check_heads(), Ok(()));
        assert_eq!(branch.child_index(b"user10"), 1);
        assert_eq!(branch.child_index(b"user0"), 0);
    }

    fn searches_agree(ops: &[(Vec<u8>, bool)], probes: &[Vec<u8>]) -> Result<(), TestCaseError> {
        {
            let page = 64 * 1024;
            let mut n = Node::new(true);
            for (j, (k, put)) in ops.iter().enumerate() {
                if *put || n.len() == 0 {
                    n.leaf_put(page, k, b"v", 1, false);
                } else if let Ok(i) = n.search(k) {
                    n.remove(i, page);
                }
                check_leaf(&n, probes)?;
                // Now and then, as a page read back or a split's half: the longest prefix
                // its keys allow, which later puts and removes then work from.
                if j % 8 == 7 {
                    n.reprefix();
                    check_leaf(&n, probes)?;
                }
            }
            check_leaf(&n.clone(), probes)?;
            if n.len() >= 2 {
                let mut left = n.clone();
                let (_, right) = left.split(page, false);
                check_leaf(&left, probes)?;
                check_leaf(&right, probes)?;
                check_leaf(&left.merged(page, &[], &right), probes)?;
            }
            // A branch over the same keys (child i holds keys from separator i on), given
            // its shared prefix from the first half of them; the rest, inserted in the
            // order the operations named them, may break it.
            let keys = keys_of(&n);
            let mut b = Node::new(false);
            b.branch_insert(page, 0, &[], 0);
            let half = keys.len() / 2;
            for (i, k) in keys.iter().enumerate().take(half).skip(1) {
                b.branch_insert(page, i, k, 0);
            }
            b.reprefix();
            prop_assert_eq!(b.check_heads(), Ok(()));
            for (k, _) in ops {
                let have = keys_of(&b);
                if keys[half..].contains(k) && !have[1..].contains(k) {
                    let at = have[1..]
                        .iter()
                        .filter(|x| x.as_slice() < k.as_slice())
                        .count();
                    b.branch_insert(page, 1 + at, k, 0);
                    prop_assert_eq!(b.check_heads(), Ok(()));
                }
            }
            let seps = keys_of(&b);
            for p in probes.iter().chain(&keys) {
                let want = seps[1..]
                    .iter()
                    .filter(|k| k.as_slice() <= p.as_slice())
                    .count();
                prop_assert_eq!(b.child_index(p), want, "probe {:?}", p);
            }
        }
        Ok(())
    }
}
