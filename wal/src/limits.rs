//! Every bound the log enforces, in one place, with units last in the names.
//!
//! The relations between them are checked at compile time below, so that changing one
//! number cannot silently make another impossible (a batch that cannot hold the largest
//! record, a segment that cannot hold the largest batch).

/// The largest payload one record may carry; a larger append gets
/// [`crate::WalError::RecordTooLarge`] naming its size.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 1024 * 1024;

/// Bytes of a record frame ahead of its payload (see `DESIGN.md`).
pub const RECORD_HEADER_BYTES: usize = 40;

/// Record frames start on this alignment, so that every frame's fixed fields are aligned.
pub const RECORD_ALIGN_BYTES: usize = 8;

/// Bytes of the header at the start of every batch.
pub const BATCH_HEADER_BYTES: usize = 48;

/// Bytes of the segment header at the start of every segment (it fills its own block).
pub const SEGMENT_HEADER_BYTES: usize = 64;

/// The device block size the format is laid out in: every batch starts on a block boundary
/// and is padded to whole blocks, so that no two batches ever share a block.
pub const BLOCK_BYTES: usize = 4096;

/// The most bytes one batch may hold (header, frames and padding): one record of the largest
/// size always fits alone.
pub const BATCH_BYTES_MAX: usize = round_up(
    BATCH_HEADER_BYTES + RECORD_HEADER_BYTES + RECORD_PAYLOAD_BYTES_MAX,
    BLOCK_BYTES,
);

/// Default soft target for a batch: when adding a record would exceed it, the batch closes
/// and the record opens the next one (a single record larger than this travels alone).
pub const BATCH_BYTES_TARGET_DEFAULT: usize = 256 * 1024;

/// The most batches written and not yet completed at once. Several writes in flight is what
/// lets the log beat one serial sync at a time (about 3x here, see GLOMMIO-NOTES).
pub const BATCHES_IN_FLIGHT_MAX: usize = 16;

/// Default batches in flight: 4-8 reached the device's best rate on this kind of machine.
pub const BATCHES_IN_FLIGHT_DEFAULT: usize = 8;

/// Sealed batches waiting for a write slot, beyond the one that is filling. Appends wait
/// (back-pressure) rather than let memory grow without bound.
pub const BATCHES_QUEUED_MAX: usize = 4;

/// Default segment size: large enough that rolling over is rare, small enough to recycle.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// The smallest segment: its header block plus one batch of the largest size the config
/// allows (checked when a config is validated).
pub const SEGMENT_BYTES_MIN: u64 = 16 * BLOCK_BYTES as u64;

/// The largest segment: offsets inside a segment are stored as `u32` in places.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 31;

/// Zero-filled spare segments kept ready, so that rolling over never waits for allocation.
pub const SPARE_SEGMENTS_DEFAULT: usize = 2;

/// Retired segments kept as spares for reuse rather than deleted (1 GiB of 64 MiB
/// segments). A log that grows by many segments between two checkpoints needs as many
/// again after the next one; deleting all but two of them meant zero-filling 64 MiB anew
/// for almost every rollover: measured with YCSB-A at 60 K ops/s (32 s runs, 100 K items),
/// 80–91 MB/s of device writes against 62 MB/s when the segments were kept, and each of
/// those writes also rides on the WAL's next cache flush.
pub const RECYCLED_SEGMENTS_DEFAULT: usize = 16;

/// The most retired segments a log may be configured to keep (16 GiB of 64 MiB segments).
pub const RECYCLED_SEGMENTS_MAX: usize = 256;

/// Default bytes of recent records kept in memory for `read` (followers catching up).
pub const TAIL_CACHE_BYTES_DEFAULT: usize = 32 * 1024 * 1024;

/// Segments one stream may hold back before the log says so (a `warn!` line and a counter).
pub const SEGMENTS_HELD_WARN_DEFAULT: usize = 4;

pub(crate) const fn round_up(value: usize, multiple: usize) -> usize {
    value.div_ceil(multiple) * multiple
}

const _: () = assert!(BLOCK_BYTES.is_power_of_two());
const _: () = assert!(
    SEGMENT_HEADER_BYTES <= 512,
    "the segment header must fit one sector"
);
const _: () = assert!(
    BATCH_HEADER_BYTES <= 512,
    "a batch header must fit one sector"
);
const _: () = assert!(BATCH_HEADER_BYTES % RECORD_ALIGN_BYTES == 0);
const _: () = assert!(RECORD_HEADER_BYTES % RECORD_ALIGN_BYTES == 0);
const _: () = assert!(BATCH_BYTES_MAX % BLOCK_BYTES == 0);
const _: () = assert!(
    BATCH_BYTES_MAX <= u32::MAX as usize,
    "batch_bytes is stored as u32"
);
const _: () = assert!(BATCH_BYTES_TARGET_DEFAULT <= BATCH_BYTES_MAX);
const _: () = assert!(BATCHES_IN_FLIGHT_DEFAULT <= BATCHES_IN_FLIGHT_MAX);
const _: () = assert!(SEGMENT_BYTES_DEFAULT >= BLOCK_BYTES as u64 + BATCH_BYTES_MAX as u64);
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX);
const _: () = assert!(SEGMENT_BYTES_MIN % BLOCK_BYTES as u64 == 0);
