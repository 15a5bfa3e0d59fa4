//! Every bound a replica enforces, in one place, with units last in the names.
//!
//! The `const _: () = assert!(..)` lines state how they relate to the limits of the crates
//! underneath (`proto`, `btree`), so that changing one number cannot silently make another
//! impossible.

/// Writes proposed to one partition and not yet applied (answered). Over it a write gets
/// `proto::Error::Throttled` at once instead of joining a queue: a core serves thousands of
/// writes across its partitions, and one hot partition must not hold an unbounded share of
/// its memory. 256 is ~5 ms of a partition's peak rate, far more than one group commit needs.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 256;

/// Command bytes proposed to one partition and not yet applied. Bounds memory when items are
/// large (256 x 400 KiB would be 100 MiB). A write is always admitted when nothing else is in
/// flight, so one command of the largest size can never be refused for ever.
pub const PROPOSAL_BYTES_IN_FLIGHT_MAX: usize = 8 * 1024 * 1024;

/// The retry hint a throttled write carries: about one group commit plus one apply, after
/// which in-flight slots have been freed.
pub const THROTTLE_RETRY_AFTER_MS: u32 = 2;

/// Committed entry bytes handed to one apply round (raft-rs's `max_committed_size_per_ready`):
/// bounds how long the driver holds the tree between two looks at new work.
pub const APPLY_BYTES_PER_READY_MAX: u64 = 4 * 1024 * 1024;

/// Bytes of raft-rs's append messages to one follower (`max_size_per_msg`); used once
/// replication lands.
pub const RAFT_MESSAGE_BYTES_MAX: u64 = 1024 * 1024;

/// Append messages in flight to one follower (`max_inflight_msgs`); used once replication lands.
pub const RAFT_MESSAGES_IN_FLIGHT_MAX: usize = 256;

/// Ticks without a heartbeat before a follower campaigns (raft-rs's `election_tick`). The host
/// ticks every `TICK_INTERVAL_MS_DEFAULT`, so an election starts after about a second.
pub const ELECTION_TICKS: usize = 10;

/// Ticks between a leader's heartbeats (raft-rs's `heartbeat_tick`).
pub const HEARTBEAT_TICKS: usize = 1;

/// How often the host should call `Replica::tick`, in milliseconds (a suggestion: the
/// election timeout is `ELECTION_TICKS` of these).
pub const TICK_INTERVAL_MS_DEFAULT: u64 = 100;

/// Bytes a tree value adds in front of the item's value: its version, a `u64`.
pub const VERSION_BYTES: usize = 8;

/// The bytes an item key adds to the partition and sort keys in the tree: the tag byte, the
/// 16-byte partition-key hash and the partition key's 2-byte length.
pub const ITEM_KEY_OVERHEAD_BYTES: usize = 1 + 16 + 2;

/// The largest item value the tree can hold once the version is in front of it.
pub const VALUE_BYTES_MAX: usize = btree::limits::VALUE_BYTES_MAX - VERSION_BYTES;

// The longest item key fits the tree's key limit.
const _: () = assert!(
    ITEM_KEY_OVERHEAD_BYTES
        + proto::limits::PARTITION_KEY_BYTES_MAX
        + proto::limits::SORT_KEY_BYTES_MAX
        <= btree::limits::KEY_BYTES_MAX
);
// The partition key's length is stored as a u16.
const _: () = assert!(proto::limits::PARTITION_KEY_BYTES_MAX <= u16::MAX as usize);
// Batches are counted in a u16 in the command format.
const _: () = assert!(proto::limits::BATCH_WRITES_MAX <= u16::MAX as usize);
// One command of the largest item always fits the byte budget of a partition.
const _: () = assert!(proto::limits::ITEM_BYTES_MAX < PROPOSAL_BYTES_IN_FLIGHT_MAX);
