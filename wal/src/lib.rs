//! The per-core write-ahead log: every write is durable here before it is acknowledged.
//!
//! # What it owns
//!
//! One log per core, shared by every partition (consensus group) on that core, so that one
//! durable write commits the records of many partitions at once — the way TiKV's raft-engine
//! and ScyllaDB's commitlog work. A record belongs to a *stream* (one partition's raft log)
//! and carries the stream's own index, a kind and a payload; the log gives it an LSN, frames
//! it with its length and a crc32, and packs it with its neighbours into a *batch* that is
//! written, and made durable, as one. Batches go into preallocated, zero-filled *segments*
//! that are recycled once every stream has released what they hold.
//!
//! The crate is built in two layers, like raft-rs's `RawNode` and its host:
//!
//! - [`Batcher`] is the group-commit state machine. It does no I/O and reads no clock: it
//!   takes appends and I/O completions and says which bytes to write where and which LSNs
//!   are durable. [`Recovery`] is its counterpart at start-up: it takes a segment's bytes
//!   and says what the log holds. Both are tested exhaustively without any runtime.
//! - [`Wal`] drives them through the [`BlockDevice`] trait: `append` resolves when the record
//!   is durable; [`Wal::run`] is the flusher future the host spawns next to its other tasks.
//!
//! The host (the shard, one per core) holds one `Rc<Wal>` shared by all its tasks:
//!
//! - [`Wal::open`] recovers (or creates) the log and reports what each stream holds;
//! - [`Wal::append`] (or [`Wal::enqueue`] then [`Wal::wait_durable`], to persist a raft
//!   `Ready`'s entries together) writes a record and resolves once it is durable;
//! - [`Wal::read`] returns a stream's records `[from, to)`, from the tail cache or the disk;
//! - [`Wal::release`] says a stream's tree has checkpointed below an index, so segments can
//!   be recycled; [`Wal::stats`] names a stream that holds the log back;
//! - [`Wal::run`] must be spawned once on the same core; [`Wal::close`] makes it finish.
//!
//! Byte layouts, the crash analysis of a group commit and the assumptions about the media
//! are in `wal/DESIGN.md`.
//!
//! # What it never does
//!
//! - It never imports glommio or any other runtime, and never spawns or sleeps: the host
//!   spawns [`Wal::run`], and a device implements [`BlockDevice`]. The glommio (io_uring,
//!   O_DIRECT, O_DSYNC) device lives in the `devices` crate; [`MemDevice`] and the seeded
//!   [`SimDevice`] (which loses writes in flight and tears sectors on a crash) live here.
//! - It never acknowledges a record that recovery could fail to find: acknowledgements
//!   follow the LSN order, and each batch starts on a fresh block so that no later write
//!   can touch an acknowledged byte (the crash analysis is in `DESIGN.md`).
//! - It never retries a failed write: the outcome of a failed durable write is unknown, so
//!   the log fails for good ([`WalError::Failed`]) and the host restarts and recovers.
//! - It never hands on bytes it has not verified: every batch and record is checked against
//!   its crc32, and damage before acknowledged data is an error naming where it is.
//!
//! # Why its own crate
//!
//! The log is the one piece of the storage engine whose bugs lose acknowledged writes. As a
//! leaf crate with no runtime it can be driven by property tests, a fuzzer and a simulator
//! with crashes at any point, and it compiles and tests in seconds.

#![warn(missing_docs)]

mod batcher;
mod cache;
mod device;
pub mod format;
pub mod limits;
mod recovery;
pub mod sim;
mod wal;

pub use batcher::{Action, AppendRefused, Batcher, BatcherStats, IoId};
pub use device::{BlockDevice, MemDevice};
pub use recovery::{recover, IndexRange, Recovered, RecoveredSegment, Recovery};
pub use sim::SimDevice;
pub use wal::{Record, RecoveryReport, StreamReport, Wal};

use limits::*;

/// A log sequence number: a record's position in the whole log, from 1, strictly increasing.
pub type Lsn = u64;

/// Names one segment file on a [`BlockDevice`].
pub type FileId = u64;

/// The knobs of one log; [`Config::default`] for production, [`Config::test_min`] for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Size of each segment file (a multiple of the block size).
    pub segment_bytes: u64,
    /// A batch closes when the next record would take it past this many bytes.
    pub batch_bytes_target: usize,
    /// Batch writes in flight at once.
    pub batches_in_flight_max: usize,
    /// The largest payload accepted (at most [`limits::RECORD_PAYLOAD_BYTES_MAX`]).
    pub record_payload_bytes_max: usize,
    /// Zero-filled spare segment files kept ready.
    pub spare_segments: usize,
    /// Retired segment files kept for reuse, beyond which they are deleted (at least
    /// `spare_segments` are kept whatever this says).
    pub recycled_segments_max: usize,
    /// Bytes of recent payloads kept in memory for [`Wal::read`].
    pub tail_cache_bytes: usize,
    /// A stream holding back this many segments is logged (once) and counted.
    pub segments_held_warn: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            batch_bytes_target: BATCH_BYTES_TARGET_DEFAULT,
            batches_in_flight_max: BATCHES_IN_FLIGHT_DEFAULT,
            record_payload_bytes_max: RECORD_PAYLOAD_BYTES_MAX,
            spare_segments: SPARE_SEGMENTS_DEFAULT,
            recycled_segments_max: RECYCLED_SEGMENTS_DEFAULT,
            tail_cache_bytes: TAIL_CACHE_BYTES_DEFAULT,
            segments_held_warn: SEGMENTS_HELD_WARN_DEFAULT,
        }
    }
}

impl Config {
    /// Tiny segments, batches and cache, so that tests hit segment wrap-around, recycling,
    /// back-pressure and disk reads within a few hundred records.
    pub fn test_min() -> Config {
        Config {
            segment_bytes: SEGMENT_BYTES_MIN,
            batch_bytes_target: 2 * BLOCK_BYTES,
            batches_in_flight_max: 4,
            record_payload_bytes_max: 2 * BLOCK_BYTES,
            spare_segments: 1,
            recycled_segments_max: 1,
            tail_cache_bytes: 18 * BLOCK_BYTES,
            segments_held_warn: 2,
        }
    }

    /// Checks the knobs against the limits and each other.
    pub fn validate(&self) -> Result<(), WalError> {
        let largest_batch = format::batch_bytes(
            self.batch_bytes_target
                .max(format::frame_bytes(self.record_payload_bytes_max)),
        );
        let problem = if self.segment_bytes % BLOCK_BYTES as u64 != 0 {
            "segment_bytes must be a multiple of the block size"
        } else if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            "segment_bytes out of range"
        } else if self.record_payload_bytes_max > RECORD_PAYLOAD_BYTES_MAX {
            "record_payload_bytes_max above RECORD_PAYLOAD_BYTES_MAX"
        } else if self.batch_bytes_target > BATCH_BYTES_MAX
            || self.batch_bytes_target < BATCH_HEADER_BYTES
        {
            "batch_bytes_target out of range"
        } else if (BLOCK_BYTES + largest_batch) as u64 > self.segment_bytes {
            "a segment must hold its header and the largest batch"
        } else if !(1..=BATCHES_IN_FLIGHT_MAX).contains(&self.batches_in_flight_max) {
            "batches_in_flight_max out of range"
        } else if self.recycled_segments_max > RECYCLED_SEGMENTS_MAX {
            "recycled_segments_max above RECYCLED_SEGMENTS_MAX"
        } else if self.tail_cache_bytes
            < (self.batches_in_flight_max + BATCHES_QUEUED_MAX + 1) * self.batch_bytes_target
        {
            // Every record not yet durable must be in the cache, so that a read that goes to
            // disk only ever wants records behind the durable prefix (no hole in front).
            "tail_cache_bytes must hold every batch in flight, queued and open"
        } else {
            return Ok(());
        };
        Err(WalError::Config(format!("{problem}: {self:?}")))
    }
}

/// Everything that can go wrong, each naming what and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalError {
    /// An append's payload is larger than the configured maximum.
    RecordTooLarge {
        /// The payload's size.
        payload_bytes: usize,
        /// The largest accepted.
        max_bytes: usize,
    },
    /// Recovery found damage before records that were acknowledged.
    Corruption {
        /// The segment number.
        segment: u64,
        /// The byte offset within the segment.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// An I/O failed while opening or reading (the log itself is still usable).
    Io {
        /// The operation.
        op: &'static str,
        /// The device's error.
        reason: String,
    },
    /// A write failed: the log is failed for good; restart and recover.
    Failed {
        /// The first error.
        reason: String,
    },
    /// A read asked for a record the log does not hold (released, or never appended).
    Missing {
        /// The stream.
        stream: u64,
        /// The first missing index.
        index: u64,
    },
    /// The log was closed.
    Closed,
    /// Invalid configuration.
    Config(String),
}

impl std::fmt::Display for WalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalError::RecordTooLarge {
                payload_bytes,
                max_bytes,
            } => write!(
                f,
                "wal: record payload of {payload_bytes} bytes exceeds the {max_bytes}-byte maximum"
            ),
            WalError::Corruption {
                segment,
                offset,
                reason,
            } => write!(
                f,
                "wal: media corruption in segment {segment} at offset {offset}: {reason}"
            ),
            WalError::Io { op, reason } => write!(f, "wal: {op} failed: {reason}"),
            WalError::Failed { reason } => write!(f, "wal: failed by an earlier error: {reason}"),
            WalError::Missing { stream, index } => {
                write!(f, "wal: stream {stream} has no record at index {index}")
            }
            WalError::Closed => write!(f, "wal: closed"),
            WalError::Config(problem) => write!(f, "wal: invalid config: {problem}"),
        }
    }
}

impl std::error::Error for WalError {}
