//! Every limit of the crate, in one place, with why it has the value it has.

/// The most routes one trie holds. A route is one partition; `proto` caps a table at
/// `TABLE_PARTITIONS_MAX` (4,096) partitions, so this is 256 tables at that cap, or far more
/// tables of ordinary size, and keeps a router's cache of `proto::cluster::Route`s (a few
/// hundred bytes each) within a few hundred MiB. The arena's u32 indices (one bit taken as
/// the leaf tag) would allow 2^31: the limit is about memory, not the encoding.
pub const ROUTES_MAX: usize = 1 << 20;

/// The most prefixes one `SyncExpand` request carries. Each answer is at most one route (a
/// table name of up to 255 bytes, a few placements) or two prefixes with hashes, so a reply
/// stays around 128 KiB, far below `proto`'s 16 MiB frame limit, and a round trip stays short
/// enough that the router's refresh keeps its constant rate.
pub const SYNC_PREFIXES_PER_REQUEST_MAX: usize = 256;

/// The most prefixes one sync session asks in all. An honest remote with `n` routes makes a
/// session ask at most `2n - 1` prefixes (one per node of its trie); twice [`ROUTES_MAX`]
/// bounds that, so a remote that keeps answering with ever more splits (a bug, or a map that
/// changes faster than it is read) ends the session with an error instead of looping.
pub const SYNC_PREFIXES_ASKED_MAX: usize = 2 * ROUTES_MAX;

/// A leaf's arena index and an inner node's share a u32; the top bit tells them apart.
pub(crate) const LEAF_TAG: u32 = 1 << 31;

const _: () = assert!(ROUTES_MAX < LEAF_TAG as usize);
const _: () = assert!(SYNC_PREFIXES_PER_REQUEST_MAX >= 2);
const _: () = assert!(SYNC_PREFIXES_ASKED_MAX >= 2 * ROUTES_MAX);
