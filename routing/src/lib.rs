//! The routing cache's data structure: a crit-bit (Patricia) trie of hash-range starts whose
//! every subtree carries a Merkle hash, and the sans-I/O protocol that brings two such tries
//! together by comparing those hashes from the top down.
//!
//! # What it owns
//!
//! - [`Trie`], keyed by [`Key`] = (table id, range start) in big-endian order
//!   ([`route_key`]), so that one trie holds the routes of every table and a floor query
//!   ([`Trie::floor`]) answers "which partition holds this hash": the greatest range start at
//!   or below it. The caller checks that the table id of the answer is the one it asked for.
//! - The Merkle hashes: a leaf's is xxh3-128(key ‖ [`Digest::digest`] of its value), an inner
//!   node's is xxh3-128(left ‖ right). A crit-bit trie's shape is a function of its key set
//!   alone, so two tries with the same contents have the same hashes at the same places, and
//!   "the subtree under a [`Prefix`]" means the same thing on both sides of a connection.
//! - [`Trie::summary`] and [`Trie::expand`], the server side of the sync, and
//!   [`SyncSession`], its client side: it asks for one level of the remote trie under each
//!   prefix whose hash differs from the local one, and descends only there, so that a router
//!   fetches the routes that changed instead of the whole map.
//! - The conversions between this crate's types and `proto::cluster`'s wire types (keys travel
//!   as `Vec<u8>` there: every length is checked, nothing from the wire can make it panic).
//!
//! # What it never does
//!
//! No I/O, no clock, no runtime, no locks: the metadata service and the router each own a
//! trie inside one core's state and send the sync's messages themselves. Nothing here
//! allocates per lookup; `floor` and `get` walk a few cache lines of a dense arena.
//!
//! # Why it is its own crate
//!
//! Both `meta` (which serves the sync) and `router` (which runs it) keep a trie, and the two
//! must agree bit for bit on keys, hashes and the shape of an expansion; one crate with no
//! dependency beyond `proto` and xxh3 makes that agreement a matter of linking the same code,
//! and lets the trie be tested against a `BTreeMap` model and benchmarked in isolation.

mod digest;
mod limits;
mod sync;
mod trie;
mod wire;

pub use digest::Digest;
pub use limits::{ROUTES_MAX, SYNC_PREFIXES_ASKED_MAX, SYNC_PREFIXES_PER_REQUEST_MAX};
pub use sync::{SyncError, SyncSession, SyncStats};
pub use trie::{
    route_key, split_route_key, table_prefix, CapacityError, Expansion, Iter, Key, Prefix, Trie,
    KEY_BITS, KEY_BYTES,
};
pub use wire::{
    expansion_from_wire, expansion_to_wire, expansions_from_wire, expansions_to_wire,
    prefix_from_wire, prefix_to_wire, prefixes_from_wire, prefixes_to_wire, WireError,
};
