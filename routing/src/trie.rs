//! The crit-bit trie with Merkle hashes.
//!
//! # Memory layout
//!
//! Nodes live in arenas indexed by u32; a child reference with its top bit set
//! ([`LEAF_TAG`]) names a leaf, otherwise an inner node. What a lookup touches is kept apart
//! from what only a mutation or a sync touches, so that the descent reads 16 bytes per level
//! (four nodes to a cache line) and a floor finds its answer in a node it has already read:
//!
//! ```text
//! inner:      [Inner { child: [u32; 2], left_last: u32, bit: u16, byte: u8, shift: u8 }]  16 B
//! inner_sum:  [Summary { hash: u128, count: u64, last: u32 }]  the Merkle side, the greatest leaf
//! leaves:     [Leaf { key: [u8; 24], value: Option<V> }]                  None = a free slot
//! leaf_hash:  [u128]
//! ```
//!
//! An inner node's `bit` is its critical bit (0 = the most significant bit of byte 0): the
//! first bit at which the keys of its two subtrees differ. Below it, bits strictly increase;
//! every key of `child[b]` has bit `b` there. Removed slots go on free lists and are reused.

use std::fmt;

use xxhash_rust::xxh3::xxh3_128;

use crate::digest::Digest;
use crate::limits::{LEAF_TAG, ROUTES_MAX};

/// Bytes in a trie key: a table id (8) and a range start (16).
pub const KEY_BYTES: usize = 24;

/// Bits in a trie key; a [`Prefix`] has at most this many.
pub const KEY_BITS: u32 = (KEY_BYTES * 8) as u32;

/// A trie key: (table id, range start), both big-endian, so byte order is (table, start)
/// order ([`route_key`]).
pub type Key = [u8; KEY_BYTES];

/// The trie key of the range of `table_id` starting at hash `start`.
///
/// Big-endian, so that one trie holds every table and [`Trie::floor`] stays within a table
/// as long as the caller checks the table id of what it gets back.
pub fn route_key(table_id: u64, start: u128) -> Key {
    let mut key = [0u8; KEY_BYTES];
    key[..8].copy_from_slice(&table_id.to_be_bytes());
    key[8..].copy_from_slice(&start.to_be_bytes());
    key
}

/// The (table id, range start) a [`route_key`] was made of.
pub fn split_route_key(key: &Key) -> (u64, u128) {
    let mut table = [0u8; 8];
    table.copy_from_slice(&key[..8]);
    let mut start = [0u8; 16];
    start.copy_from_slice(&key[8..]);
    (u64::from_be_bytes(table), u128::from_be_bytes(start))
}

/// The prefix holding every route of one table (its first 64 bits).
pub fn table_prefix(table_id: u64) -> Prefix {
    Prefix {
        key: route_key(table_id, 0),
        bits: 64,
    }
}

/// A set of keys sharing their first `bits` bits: the unit the Merkle sync compares.
///
/// Canonical form: `bits <= KEY_BITS` and every bit of `key` past `bits` is zero (what
/// [`Prefix::of`] builds and the wire conversion insists on). The trie's methods read only
/// the first `min(bits, KEY_BITS)` bits, so a non-canonical prefix cannot make them fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    /// The key bytes; bits past `bits` are zero.
    pub key: Key,
    /// How many leading bits count.
    pub bits: u32,
}

impl Prefix {
    /// The empty prefix: every key.
    pub const ROOT: Prefix = Prefix {
        key: [0; KEY_BYTES],
        bits: 0,
    };

    /// The first `bits` bits of `key` (at most [`KEY_BITS`]), the rest zeroed.
    pub fn of(key: &Key, bits: u32) -> Prefix {
        let bits = bits.min(KEY_BITS);
        let mut out = [0u8; KEY_BYTES];
        let whole = (bits / 8) as usize;
        out[..whole].copy_from_slice(&key[..whole]);
        let rest = bits % 8;
        if rest != 0 {
            out[whole] = key[whole] & (0xffu8 << (8 - rest));
        }
        Prefix { key: out, bits }
    }

    /// Whether `key` starts with this prefix.
    #[inline]
    pub fn contains(&self, key: &Key) -> bool {
        match first_diff_bit(key, &self.key) {
            None => true,
            Some(d) => d >= self.bits.min(KEY_BITS),
        }
    }

    /// Whether the prefix is in canonical form (see the type's doc).
    pub fn is_canonical(&self) -> bool {
        self.bits <= KEY_BITS && Prefix::of(&self.key, self.bits) == *self
    }

    /// The prefix one bit longer, with `bit` (0 or 1) appended.
    fn child(&self, bit: usize) -> Prefix {
        debug_assert!(self.bits < KEY_BITS && self.is_canonical());
        let mut out = *self;
        if bit == 1 {
            out.key[(self.bits / 8) as usize] |= 0x80 >> (self.bits % 8);
        }
        out.bits += 1;
        out
    }
}

/// What a trie holds under one prefix, one level down: the server side of the sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expansion<V> {
    /// No key under the prefix.
    Empty,
    /// Exactly one key, with its value.
    Leaf(Key, V),
    /// More than one: the two halves at the first bit where they differ, each with its
    /// Merkle hash and number of keys. Both prefixes are one bit longer than the keys' common
    /// prefix and differ only in their last bit (0 on the left, 1 on the right).
    Split {
        /// The keys with a 0 at the critical bit.
        left: (Prefix, u128, u64),
        /// The keys with a 1 there.
        right: (Prefix, u128, u64),
    },
}

/// The trie already holds [`ROUTES_MAX`] keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapacityError {
    /// How many keys it holds.
    pub len: usize,
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the routing trie holds {} routes, its limit (ROUTES_MAX = {ROUTES_MAX})",
            self.len
        )
    }
}

impl std::error::Error for CapacityError {}

/// The part of an inner node a descent reads.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Inner {
    /// Children by the key's value at the critical bit.
    child: [u32; 2],
    /// The leaf index of `child[0]`'s greatest key (kept by `rehash`): the floor of a key
    /// that turns right here, or left here and right ever after, is found in a node the
    /// descent already read, never by a walk down a right spine.
    left_last: u32,
    /// The critical bit (0 = the most significant bit of byte 0).
    bit: u16,
    /// `bit / 8`: the byte to test.
    byte: u8,
    /// `7 - bit % 8`: how far to shift that byte right.
    shift: u8,
}

impl Inner {
    fn new(bit: u32, child: [u32; 2]) -> Inner {
        debug_assert!(bit < KEY_BITS);
        Inner {
            child,
            left_last: 0,
            bit: bit as u16,
            byte: (bit / 8) as u8,
            shift: (7 - bit % 8) as u8,
        }
    }

    /// The side of this node `key` falls on.
    #[inline(always)]
    fn side(&self, key: &Key) -> usize {
        ((key[self.byte as usize] >> self.shift) & 1) as usize
    }
}

/// A leaf: its key and value side by side, so that the key a lookup compares and the
/// value it returns share a cache line (or the next one).
#[derive(Clone, Debug)]
#[repr(C)]
struct Leaf<V> {
    key: Key,
    /// `None` marks a free slot.
    value: Option<V>,
}

/// The part of an inner node the Merkle sync reads: its subtree's hash and key count.
#[derive(Clone, Copy, Debug, Default)]
struct Summary {
    hash: u128,
    count: u64,
    /// The leaf index of the subtree's greatest key.
    last: u32,
}

/// The deepest a descent goes: one inner node per critical bit at most, since they strictly
/// increase downwards.
const DEPTH_MAX: usize = KEY_BITS as usize;

/// The inner nodes from the root down to where a descent stopped.
struct Path {
    nodes: [u32; DEPTH_MAX],
    len: usize,
}

impl Path {
    fn new() -> Path {
        Path {
            nodes: [0; DEPTH_MAX],
            len: 0,
        }
    }

    #[inline(always)]
    fn push(&mut self, node: u32) {
        debug_assert!(self.len < DEPTH_MAX, "crit bits must strictly increase");
        self.nodes[self.len] = node;
        self.len += 1;
    }

    fn pop(&mut self) -> Option<u32> {
        self.len = self.len.checked_sub(1)?;
        Some(self.nodes[self.len])
    }

    fn last(&self) -> Option<u32> {
        self.len.checked_sub(1).map(|i| self.nodes[i])
    }

    fn as_slice(&self) -> &[u32] {
        &self.nodes[..self.len]
    }
}

/// The first bit (0 = most significant of byte 0) at which `a` and `b` differ.
#[inline(always)]
pub(crate) fn first_diff_bit(a: &Key, b: &Key) -> Option<u32> {
    for word in 0..KEY_BYTES / 8 {
        let x = load_be_u64(a, word) ^ load_be_u64(b, word);
        if x != 0 {
            return Some(word as u32 * 64 + x.leading_zeros());
        }
    }
    None
}

#[inline(always)]
fn load_be_u64(key: &Key, word: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&key[word * 8..word * 8 + 8]);
    u64::from_be_bytes(bytes)
}

/// The bit of `key` at `bit`, as 0 or 1.
#[inline(always)]
fn bit_at(key: &Key, bit: u32) -> usize {
    ((key[(bit / 8) as usize] >> (7 - bit % 8)) & 1) as usize
}

/// No node: a sentinel that is never a valid reference (leaf indices stay below
/// [`ROUTES_MAX`], inner ones below twice that).
const NO_NODE: u32 = u32::MAX;

#[inline(always)]
fn is_leaf(node: u32) -> bool {
    node & LEAF_TAG != 0
}

#[inline(always)]
fn leaf_index(node: u32) -> usize {
    (node & !LEAF_TAG) as usize
}

/// A leaf's Merkle hash: xxh3-128(key ‖ digest), the digest big-endian.
pub(crate) fn leaf_hash(key: &Key, digest: u128) -> u128 {
    let mut bytes = [0u8; KEY_BYTES + 16];
    bytes[..KEY_BYTES].copy_from_slice(key);
    bytes[KEY_BYTES..].copy_from_slice(&digest.to_be_bytes());
    xxh3_128(&bytes)
}

/// An inner node's Merkle hash: xxh3-128(left ‖ right), both big-endian.
fn inner_hash(left: u128, right: u128) -> u128 {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(&left.to_be_bytes());
    bytes[16..].copy_from_slice(&right.to_be_bytes());
    xxh3_128(&bytes)
}

/// A crit-bit (Patricia) trie from [`Key`] to `V`, with a Merkle hash on every subtree.
///
/// ```
/// use routing::{route_key, Trie};
/// let mut trie: Trie<u64> = Trie::new();
/// trie.insert(route_key(1, 0), 10);
/// trie.insert(route_key(1, 1 << 127), 11);
/// let (_, v) = trie.floor(&route_key(1, 5)).unwrap();
/// assert_eq!(*v, 10);
/// ```
#[derive(Clone)]
pub struct Trie<V> {
    root: Option<u32>,
    inner: Vec<Inner>,
    inner_sum: Vec<Summary>,
    inner_free: Vec<u32>,
    leaves: Vec<Leaf<V>>,
    leaf_hash: Vec<u128>,
    leaf_free: Vec<u32>,
    len: usize,
}

impl<V> Default for Trie<V> {
    fn default() -> Self {
        Trie {
            root: None,
            inner: Vec::new(),
            inner_sum: Vec::new(),
            inner_free: Vec::new(),
            leaves: Vec::new(),
            leaf_hash: Vec::new(),
            leaf_free: Vec::new(),
            len: 0,
        }
    }
}

impl<V: fmt::Debug> fmt::Debug for Trie<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(Iter::from(self, self.root)).finish()
    }
}

impl<V: Clone + Digest> Trie<V> {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Inserts or replaces `key`'s value, returning the previous one.
    ///
    /// # Panics
    ///
    /// If the trie already holds [`ROUTES_MAX`] keys and `key` is new: callers that take keys
    /// from outside (the sync does) use [`Trie::try_insert`].
    pub fn insert(&mut self, key: Key, value: V) -> Option<V> {
        match self.try_insert(key, value) {
            Ok(old) => old,
            Err(e) => panic!("{e}"),
        }
    }

    /// Inserts or replaces `key`'s value, returning the previous one, or fails if `key` is
    /// new and the trie already holds [`ROUTES_MAX`] keys.
    pub fn try_insert(&mut self, key: Key, value: V) -> Result<Option<V>, CapacityError> {
        let hash = leaf_hash(&key, value.digest());
        let Some(root) = self.root else {
            let leaf = self.alloc_leaf(key, value, hash);
            self.root = Some(leaf);
            self.len = 1;
            return Ok(None);
        };
        // Down to the leaf that shares the longest prefix with `key`, remembering the way.
        let mut path = Path::new();
        let mut node = root;
        while !is_leaf(node) {
            path.push(node);
            let inner = &self.inner[node as usize];
            node = inner.child[inner.side(&key)];
        }
        let best = leaf_index(node);
        let Some(diff) = first_diff_bit(&key, &self.leaves[best].key) else {
            let old = self.leaves[best].value.replace(value);
            self.leaf_hash[best] = hash;
            self.rehash(path.as_slice());
            return Ok(old);
        };
        if self.len >= ROUTES_MAX {
            return Err(CapacityError { len: self.len });
        }
        // The new inner node goes above the first node whose critical bit comes after
        // `diff`: everything below it shares the best leaf's bits up to `diff`.
        let at = path
            .as_slice()
            .iter()
            .position(|&n| u32::from(self.inner[n as usize].bit) > diff)
            .unwrap_or(path.len);
        let displaced = if at < path.len { path.nodes[at] } else { node };
        path.len = at;
        let side = bit_at(&key, diff);
        let leaf = self.alloc_leaf(key, value, hash);
        let mut child = [displaced; 2];
        child[side] = leaf;
        let fresh = self.alloc_inner(Inner::new(diff, child));
        self.replace_child(path.last(), &key, fresh);
        path.push(fresh);
        self.rehash(path.as_slice());
        self.len += 1;
        Ok(None)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &Key) -> Option<V> {
        let root = self.root?;
        let mut path = Path::new();
        let mut node = root;
        while !is_leaf(node) {
            path.push(node);
            let inner = &self.inner[node as usize];
            node = inner.child[inner.side(key)];
        }
        let leaf = leaf_index(node);
        if self.leaves[leaf].key != *key {
            return None;
        }
        let value = self.free_leaf(leaf);
        self.len -= 1;
        match path.pop() {
            None => self.root = None,
            Some(parent) => {
                let inner = self.inner[parent as usize];
                let sibling = inner.child[1 - inner.side(key)];
                self.free_inner(parent);
                self.replace_child(path.last(), key, sibling);
                self.rehash(path.as_slice());
            }
        }
        value
    }

    /// The value under `key`.
    #[inline]
    pub fn get(&self, key: &Key) -> Option<&V> {
        let leaf = self.best_leaf(key)?;
        if self.leaves[leaf].key == *key {
            self.leaves[leaf].value.as_ref()
        } else {
            None
        }
    }

    /// The greatest key at or below `key`, with its value.
    ///
    /// The crit-bit descent finds the leaf sharing the longest prefix with `key`; if it is
    /// not `key` itself, their first differing bit `d` says on which side of `key` the whole
    /// subtree hanging at `d` lies: below it (answer: that subtree's greatest key) or above
    /// it (answer: the greatest key of the nearest left sibling on the way down).
    #[inline]
    pub fn floor(&self, key: &Key) -> Option<(&Key, &V)> {
        let root = self.root?;
        let mut node = root;
        while !is_leaf(node) {
            let inner = &self.inner[node as usize];
            node = inner.child[inner.side(key)];
        }
        let best = leaf_index(node);
        let Some(diff) = first_diff_bit(key, &self.leaves[best].key) else {
            return self.entry(best);
        };
        // Walk the same way again (through cached nodes) down to the subtree S hanging at
        // `diff`. If `key` has a 1 there, all of S is below it and the answer is S's greatest
        // key: S lies on the right spine of the left child of the last left turn, so it is
        // that turn's `left_last` (the whole trie's last key if there was none). If `key` has
        // a 0, all of S is above it and the answer is the greatest key left of the path: the
        // last right turn's `left_last`. The sides are random, so both are picked without a
        // branch to mispredict.
        let mut node = root;
        let mut left_of_path = NO_NODE;
        let mut spine_end = NO_NODE;
        while !is_leaf(node) {
            let inner = &self.inner[node as usize];
            debug_assert_ne!(u32::from(inner.bit), diff);
            if u32::from(inner.bit) > diff {
                break;
            }
            let side = inner.side(key);
            left_of_path = [left_of_path, inner.left_last][side];
            spine_end = [inner.left_last, spine_end][side];
            node = inner.child[side];
        }
        let answer = if bit_at(key, diff) == 1 {
            if spine_end == NO_NODE {
                self.last_leaf(root)
            } else {
                spine_end as usize
            }
        } else if left_of_path == NO_NODE {
            return None;
        } else {
            left_of_path as usize
        };
        self.entry(answer)
    }

    /// Removes every key under `prefix`, returning how many there were.
    pub fn remove_prefix(&mut self, prefix: &Prefix) -> usize {
        let mut path = Path::new();
        let Some(top) = self.subtree(prefix, &mut path) else {
            return 0;
        };
        let removed = self.count_of(top) as usize;
        self.free_subtree(top);
        self.len -= removed;
        match path.pop() {
            None => self.root = None,
            Some(parent) => {
                let inner = self.inner[parent as usize];
                let sibling = inner.child[1 - inner.side(&prefix.key)];
                debug_assert_eq!(inner.child[inner.side(&prefix.key)], top);
                self.free_inner(parent);
                self.replace_child(path.last(), &prefix.key, sibling);
                self.rehash(path.as_slice());
            }
        }
        removed
    }

    /// Lays the arenas out again in depth-first order (a node, then its left subtree, then
    /// its right one; leaves in key order), dropping free slots.
    ///
    /// After inserts in random order, the nodes of one path sit anywhere in the arena and a
    /// lookup's descent takes a cache miss at nearly every level below the few that stay
    /// cached. Depth-first order keeps each small subtree in a few adjacent cache lines, so
    /// the bottom levels of a descent share lines. O(len) time and one copy of the arenas:
    /// call it after a bulk load or a sync that changed many keys, not per mutation. The
    /// contents, hashes and behaviour do not change.
    pub fn compact(&mut self) {
        let Some(root) = self.root else {
            *self = Trie::default();
            return;
        };
        let mut out = Trie {
            root: None,
            inner: Vec::with_capacity(self.len.saturating_sub(1)),
            inner_sum: Vec::with_capacity(self.len.saturating_sub(1)),
            inner_free: Vec::new(),
            leaves: Vec::with_capacity(self.len),
            leaf_hash: Vec::with_capacity(self.len),
            leaf_free: Vec::new(),
            len: self.len,
        };
        out.root = Some(self.copy_depth_first(root, &mut out));
        *self = out;
    }

    /// Copies the subtree at `node` into `out` depth-first, returning its new reference.
    /// Recursion is bounded by the trie's depth (at most [`KEY_BITS`] inner nodes).
    fn copy_depth_first(&mut self, node: u32, out: &mut Trie<V>) -> u32 {
        if is_leaf(node) {
            let leaf = leaf_index(node);
            let fresh = out.leaves.len() as u32;
            out.leaves.push(Leaf {
                key: self.leaves[leaf].key,
                value: self.leaves[leaf].value.take(),
            });
            out.leaf_hash.push(self.leaf_hash[leaf]);
            return fresh | LEAF_TAG;
        }
        let inner = self.inner[node as usize];
        let fresh = out.inner.len();
        out.inner.push(inner);
        out.inner_sum.push(self.inner_sum[node as usize]);
        let left = self.copy_depth_first(inner.child[0], out);
        let right = self.copy_depth_first(inner.child[1], out);
        out.inner[fresh].child = [left, right];
        out.inner[fresh].left_last = out.last_leaf(left) as u32;
        out.inner_sum[fresh].last = out.last_leaf(right) as u32;
        fresh as u32
    }

    /// Every key and value, in key order.
    pub fn iter(&self) -> Iter<'_, V> {
        Iter::from(self, self.root)
    }

    /// Every key and value under `prefix`, in key order.
    pub fn iter_prefix(&self, prefix: &Prefix) -> Iter<'_, V> {
        let top = self.subtree(prefix, &mut Path::new());
        Iter::from(self, top)
    }

    /// The Merkle hash of the whole trie and its number of keys; `(0, 0)` when empty.
    pub fn root(&self) -> (u128, u64) {
        self.root.map_or((0, 0), |r| self.summary_of(r))
    }

    /// The Merkle hash and number of the keys under `prefix`; `(0, 0)` when there are none.
    ///
    /// Equal to what a trie holding only those keys would give as its [`Trie::root`].
    pub fn summary(&self, prefix: &Prefix) -> (u128, u64) {
        self.subtree(prefix, &mut Path::new())
            .map_or((0, 0), |n| self.summary_of(n))
    }

    /// What the trie holds under `prefix`, one level down (see [`Expansion`]).
    pub fn expand(&self, prefix: &Prefix) -> Expansion<V> {
        let Some(top) = self.subtree(prefix, &mut Path::new()) else {
            return Expansion::Empty;
        };
        if is_leaf(top) {
            let leaf = leaf_index(top);
            let value = self.leaves[leaf].value.clone();
            debug_assert!(value.is_some(), "a reachable leaf holds a value");
            return match value {
                Some(v) => Expansion::Leaf(self.leaves[leaf].key, v),
                None => Expansion::Empty,
            };
        }
        let inner = self.inner[top as usize];
        let bit = u32::from(inner.bit);
        let common = Prefix::of(&self.leaves[self.first_leaf(top)].key, bit);
        let half = |side: usize| {
            let (hash, count) = self.summary_of(inner.child[side]);
            (common.child(side), hash, count)
        };
        Expansion::Split {
            left: half(0),
            right: half(1),
        }
    }

    /// Checks every structural invariant, panicking with what is wrong: for tests and debug
    /// builds (it visits every node).
    ///
    /// Critical bits strictly increase downwards; every key below an inner node agrees with
    /// the node's other keys on the bits above its critical bit and has the side's bit at it;
    /// every hash and count matches a recomputation; `len` matches; every arena slot is either
    /// reachable exactly once or on a free list.
    pub fn check_invariants(&self) {
        let mut inner_seen = vec![false; self.inner.len()];
        let mut leaf_seen = vec![false; self.leaves.len()];
        let Some(root) = self.root else {
            assert_eq!(self.len, 0, "an empty trie has len 0");
            assert_eq!(
                self.inner_free.len(),
                self.inner.len(),
                "inner slots leaked"
            );
            assert_eq!(self.leaf_free.len(), self.leaves.len(), "leaf slots leaked");
            return;
        };
        let (_, count) = self.check_node(root, None, &mut inner_seen, &mut leaf_seen);
        assert_eq!(count as usize, self.len, "len matches the leaves reachable");
        for &free in &self.inner_free {
            assert!(
                !inner_seen[free as usize],
                "inner {free} both free and in use"
            );
            inner_seen[free as usize] = true;
        }
        for &free in &self.leaf_free {
            assert!(
                !leaf_seen[free as usize],
                "leaf {free} both free and in use"
            );
            assert!(
                self.leaves[free as usize].value.is_none(),
                "a free leaf holds no value"
            );
            leaf_seen[free as usize] = true;
        }
        assert!(
            inner_seen.iter().all(|&s| s),
            "an inner slot is neither used nor free"
        );
        assert!(
            leaf_seen.iter().all(|&s| s),
            "a leaf slot is neither used nor free"
        );
        // Key order of the iteration is what floor relies on.
        let keys: Vec<&Key> = self.iter().map(|(k, _)| k).collect();
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "iteration in key order"
        );
    }

    /// Checks the subtree at `node`, below a parent with critical bit `above`; returns its
    /// recomputed hash and count.
    fn check_node(
        &self,
        node: u32,
        above: Option<u32>,
        inner_seen: &mut [bool],
        leaf_seen: &mut [bool],
    ) -> (u128, u64) {
        if is_leaf(node) {
            let leaf = leaf_index(node);
            assert!(!leaf_seen[leaf], "leaf {leaf} reachable twice");
            leaf_seen[leaf] = true;
            let value = self.leaves[leaf]
                .value
                .as_ref()
                .expect("a reachable leaf holds a value");
            let hash = leaf_hash(&self.leaves[leaf].key, value.digest());
            assert_eq!(self.leaf_hash[leaf], hash, "leaf {leaf}'s hash");
            return (hash, 1);
        }
        let index = node as usize;
        assert!(!inner_seen[index], "inner {index} reachable twice");
        inner_seen[index] = true;
        let inner = self.inner[index];
        let bit = u32::from(inner.bit);
        assert!(bit < KEY_BITS, "crit bit in range");
        assert_eq!(u32::from(inner.byte), bit / 8, "byte of bit {bit}");
        assert_eq!(u32::from(inner.shift), 7 - bit % 8, "shift of bit {bit}");
        if let Some(above) = above {
            assert!(
                bit > above,
                "crit bits increase downwards ({above} then {bit})"
            );
        }
        let common = Prefix::of(&self.leaves[self.first_leaf(node)].key, bit);
        for side in 0..2 {
            let half = common.child(side);
            for (key, _) in Iter::from(self, Some(inner.child[side])) {
                assert!(
                    half.contains(key),
                    "key {key:?} under inner {index} side {side}"
                );
            }
        }
        let (l_hash, l_count) = self.check_node(inner.child[0], Some(bit), inner_seen, leaf_seen);
        let (r_hash, r_count) = self.check_node(inner.child[1], Some(bit), inner_seen, leaf_seen);
        let spine_end = |mut node: u32| {
            while !is_leaf(node) {
                node = self.inner[node as usize].child[1];
            }
            leaf_index(node)
        };
        let sum = self.inner_sum[index];
        assert_eq!(
            inner.left_last as usize,
            spine_end(inner.child[0]),
            "inner {index}'s left child's last leaf"
        );
        assert_eq!(
            sum.last as usize,
            spine_end(inner.child[1]),
            "inner {index}'s last leaf"
        );
        assert_eq!(sum.hash, inner_hash(l_hash, r_hash), "inner {index}'s hash");
        assert_eq!(sum.count, l_count + r_count, "inner {index}'s count");
        (sum.hash, sum.count)
    }
}

/// Internals that need no bound on `V`.
impl<V> Trie<V> {
    /// The leaf a descent by `key` reaches.
    #[inline(always)]
    fn best_leaf(&self, key: &Key) -> Option<usize> {
        let mut node = self.root?;
        while !is_leaf(node) {
            let inner = &self.inner[node as usize];
            node = inner.child[inner.side(key)];
        }
        Some(leaf_index(node))
    }

    #[inline(always)]
    fn entry(&self, leaf: usize) -> Option<(&Key, &V)> {
        Some((&self.leaves[leaf].key, self.leaves[leaf].value.as_ref()?))
    }

    /// The greatest leaf under `node`.
    #[inline(always)]
    fn last_leaf(&self, node: u32) -> usize {
        if is_leaf(node) {
            leaf_index(node)
        } else {
            self.inner_sum[node as usize].last as usize
        }
    }

    /// The least leaf under `node`.
    fn first_leaf(&self, mut node: u32) -> usize {
        while !is_leaf(node) {
            node = self.inner[node as usize].child[0];
        }
        leaf_index(node)
    }

    /// The node whose subtree is exactly the keys under `prefix`, with the inner nodes above
    /// it in `path`; `None` when no key is under `prefix`.
    fn subtree(&self, prefix: &Prefix, path: &mut Path) -> Option<u32> {
        let bits = prefix.bits.min(KEY_BITS);
        let mut node = self.root?;
        while !is_leaf(node) {
            let inner = &self.inner[node as usize];
            if u32::from(inner.bit) >= bits {
                break;
            }
            path.push(node);
            node = inner.child[inner.side(&prefix.key)];
        }
        // Every key below `node` shares the bits above its critical bit, so one of them
        // tells whether they all start with `prefix`.
        prefix
            .contains(&self.leaves[self.first_leaf(node)].key)
            .then_some(node)
    }

    fn summary_of(&self, node: u32) -> (u128, u64) {
        if is_leaf(node) {
            (self.leaf_hash[leaf_index(node)], 1)
        } else {
            let sum = self.inner_sum[node as usize];
            (sum.hash, sum.count)
        }
    }

    fn count_of(&self, node: u32) -> u64 {
        self.summary_of(node).1
    }

    /// Recomputes the hash and count of each node of `path`, bottom up.
    fn rehash(&mut self, path: &[u32]) {
        for &node in path.iter().rev() {
            let inner = self.inner[node as usize];
            let (l_hash, l_count) = self.summary_of(inner.child[0]);
            let (r_hash, r_count) = self.summary_of(inner.child[1]);
            self.inner[node as usize].left_last = self.last_leaf(inner.child[0]) as u32;
            self.inner_sum[node as usize] = Summary {
                hash: inner_hash(l_hash, r_hash),
                count: l_count + r_count,
                last: self.last_leaf(inner.child[1]) as u32,
            };
        }
    }

    /// Points `parent`'s child on `key`'s side (or the root, when `parent` is `None`) at
    /// `node`.
    fn replace_child(&mut self, parent: Option<u32>, key: &Key, node: u32) {
        match parent {
            None => self.root = Some(node),
            Some(p) => {
                let inner = &mut self.inner[p as usize];
                let side = inner.side(key);
                inner.child[side] = node;
            }
        }
    }

    fn alloc_leaf(&mut self, key: Key, value: V, hash: u128) -> u32 {
        let index = match self.leaf_free.pop() {
            Some(free) => {
                let i = free as usize;
                self.leaves[i] = Leaf {
                    key,
                    value: Some(value),
                };
                self.leaf_hash[i] = hash;
                free
            }
            None => {
                let i = self.leaves.len() as u32;
                self.leaves.push(Leaf {
                    key,
                    value: Some(value),
                });
                self.leaf_hash.push(hash);
                i
            }
        };
        debug_assert!(index < LEAF_TAG);
        index | LEAF_TAG
    }

    fn free_leaf(&mut self, leaf: usize) -> Option<V> {
        self.leaf_free.push(leaf as u32);
        self.leaves[leaf].value.take()
    }

    fn alloc_inner(&mut self, inner: Inner) -> u32 {
        match self.inner_free.pop() {
            Some(free) => {
                self.inner[free as usize] = inner;
                free
            }
            None => {
                let i = self.inner.len() as u32;
                debug_assert!(i < LEAF_TAG);
                self.inner.push(inner);
                self.inner_sum.push(Summary::default());
                i
            }
        }
    }

    fn free_inner(&mut self, node: u32) {
        self.inner_free.push(node);
    }

    /// Frees every node of the subtree at `top` (which the caller unlinks).
    fn free_subtree(&mut self, top: u32) {
        let mut stack = vec![top];
        while let Some(node) = stack.pop() {
            if is_leaf(node) {
                self.free_leaf(leaf_index(node));
            } else {
                let inner = self.inner[node as usize];
                stack.extend_from_slice(&inner.child);
                self.free_inner(node);
            }
        }
    }
}

/// The keys and values of a trie (or of one subtree) in key order.
pub struct Iter<'a, V> {
    trie: &'a Trie<V>,
    /// Subtrees still to visit, the next on top.
    stack: Vec<u32>,
}

impl<'a, V> Iter<'a, V> {
    fn from(trie: &'a Trie<V>, top: Option<u32>) -> Self {
        // A path is at most DEPTH_MAX deep, and each level leaves one right sibling behind.
        let mut stack = Vec::with_capacity(if top.is_some() { 32 } else { 0 });
        stack.extend(top);
        Iter { trie, stack }
    }
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a Key, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let node = self.stack.pop()?;
            if is_leaf(node) {
                let leaf = leaf_index(node);
                if let Some(value) = self.trie.leaves[leaf].value.as_ref() {
                    return Some((&self.trie.leaves[leaf].key, value));
                }
                debug_assert!(false, "a reachable leaf holds a value");
            } else {
                let inner = &self.trie.inner[node as usize];
                self.stack.push(inner.child[1]);
                self.stack.push(inner.child[0]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Key {
        route_key(1, u128::from(n) << 120)
    }

    #[test]
    fn prefix_of_zeroes_the_rest() {
        let k = [0xffu8; KEY_BYTES];
        let p = Prefix::of(&k, 11);
        assert_eq!(p.key[0], 0xff);
        assert_eq!(p.key[1], 0xe0);
        assert!(p.key[2..].iter().all(|&b| b == 0));
        assert!(p.is_canonical());
        assert!(p.contains(&k));
        assert_eq!(Prefix::of(&k, 500).bits, KEY_BITS);
        assert!(!Prefix { key: k, bits: 3 }.is_canonical());
    }

    #[test]
    fn route_key_round_trips_and_orders() {
        let k = route_key(0x0102_0304_0506_0708, 99);
        assert_eq!(split_route_key(&k), (0x0102_0304_0506_0708, 99));
        assert!(route_key(1, u128::MAX) < route_key(2, 0));
        assert!(table_prefix(5).contains(&route_key(5, 77)));
        assert!(!table_prefix(5).contains(&route_key(6, 0)));
    }

    #[test]
    fn floor_between_and_before() {
        let mut t: Trie<u64> = Trie::new();
        for n in [10u8, 20, 30, 200] {
            t.insert(key(n), n as u64);
            t.check_invariants();
        }
        assert_eq!(t.floor(&key(5)), None);
        assert_eq!(t.floor(&key(10)).map(|(_, v)| *v), Some(10));
        assert_eq!(t.floor(&key(25)).map(|(_, v)| *v), Some(20));
        assert_eq!(t.floor(&key(199)).map(|(_, v)| *v), Some(30));
        assert_eq!(t.floor(&key(255)).map(|(_, v)| *v), Some(200));
        assert_eq!(t.floor(&route_key(0, u128::MAX)), None);
        assert_eq!(t.floor(&route_key(9, 0)).map(|(_, v)| *v), Some(200));
    }

    #[test]
    fn equal_contents_equal_hashes_whatever_the_order() {
        let mut a: Trie<u64> = Trie::new();
        let mut b: Trie<u64> = Trie::new();
        for n in 0..50u8 {
            a.insert(key(n.wrapping_mul(37)), n as u64);
        }
        for n in (0..50u8).rev() {
            b.insert(key(n.wrapping_mul(37)), n as u64);
        }
        b.insert(key(251), 0);
        b.remove(&key(251));
        a.check_invariants();
        b.check_invariants();
        assert_eq!(a.root(), b.root());
        assert_eq!(a.root().1, 50);
    }

    #[test]
    fn summary_of_a_prefix_is_the_root_of_its_keys_alone() {
        let mut all: Trie<u64> = Trie::new();
        let mut ones: Trie<u64> = Trie::new();
        for n in 0..=255u8 {
            all.insert(key(n), n as u64);
            if n >> 6 == 1 {
                ones.insert(key(n), n as u64);
            }
        }
        let p = Prefix::of(&key(0x40), 64 + 2);
        assert_eq!(all.summary(&p), ones.root());
        assert_eq!(all.summary(&Prefix::ROOT), all.root());
        assert_eq!(all.summary(&table_prefix(2)), (0, 0));
        assert_eq!(all.remove_prefix(&p), 64);
        all.check_invariants();
        assert_eq!(all.len(), 192);
        assert!(all.iter().all(|(k, _)| !p.contains(k)));
    }

    #[test]
    fn expand_splits_at_the_crit_bit() {
        let mut t: Trie<u64> = Trie::new();
        t.insert(key(0b0100_0000), 1);
        t.insert(key(0b0110_0000), 2);
        match t.expand(&Prefix::ROOT) {
            Expansion::Split { left, right } => {
                assert_eq!(left.0.bits, 64 + 3);
                assert_eq!(right.0.bits, 64 + 3);
                assert!(left.0.contains(&key(0b0100_0000)));
                assert!(right.0.contains(&key(0b0110_0000)));
                assert_eq!((left.1, left.2), t.summary(&left.0));
                assert_eq!(left.2 + right.2, 2);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            t.expand(&Prefix::of(&key(0b0110_0000), 64 + 3)),
            Expansion::Leaf(key(0b0110_0000), 2)
        );
        assert_eq!(t.expand(&table_prefix(3)), Expansion::Empty);
    }
}
