//! Every limit of the tree in one place, with units last in the names.
//!
//! The `const _: () = assert!(..)` lines state how the limits relate, so that a change to
//! one that breaks another fails the build instead of a test.

/// Longest key, in bytes (DynamoDB: 2 KiB partition key + 1 KiB sort key + a hash, rounded up).
pub const KEY_BYTES_MAX: usize = 4096;
/// Longest value, in bytes: DynamoDB's item limit (400 KiB) plus room for the header a host
/// puts in front of an item's value (the partition replica stores an 8-byte version), so
/// that an item of exactly 400 KiB with a 1-byte key still fits.
pub const VALUE_BYTES_MAX: usize = 400 * 1024 + VALUE_HOST_HEADER_BYTES_MAX;
/// Bytes a host may put in front of a 400 KiB value (see [`VALUE_BYTES_MAX`]).
pub const VALUE_HOST_HEADER_BYTES_MAX: usize = 64;
/// Pending pages (freed, maybe still seen by a snapshot) one allocation examines for
/// reclaim after a snapshot was dropped. Bounds the work per write; at 64 a round over
/// 100,000 pending pages ends within about 1,600 allocations, long before the next
/// checkpoint.
pub const RECLAIM_STEP_PAGES: usize = 64;
/// Smallest page, in bytes.
pub const PAGE_BYTES_MIN: usize = 4096;
/// Largest page, in bytes (offsets inside a page fit a `u32`; cell lengths fit their fields).
pub const PAGE_BYTES_MAX: usize = 65536;
/// Default page size, in bytes.
pub const PAGE_BYTES_DEFAULT: usize = 4096;
/// Bytes of the header every page starts with (see DESIGN.md, "Page header").
pub const PAGE_HEADER_BYTES: usize = 32;
/// Bytes of a leaf cell's fixed part: key length u16, flags u8, reserved u8, value length u32.
pub const LEAF_CELL_HEADER_BYTES: usize = 8;
/// Bytes of a branch cell's fixed part: key length u16, flags u8, reserved u8, child u64.
pub const BRANCH_CELL_HEADER_BYTES: usize = 12;
/// Bytes a key or value takes in a cell when it lives in overflow pages (the first page id).
pub const OUT_OF_LINE_REF_BYTES: usize = 8;
/// The fewest cells every node page can hold: each cell is at most 1/CELLS_PER_PAGE_MIN of
/// the page body, so a split of an overfull page always yields two pages that fit.
pub const CELLS_PER_PAGE_MIN: usize = 4;
/// Page writes a checkpoint keeps in flight at once, by default.
pub const CHECKPOINT_WRITES_IN_FLIGHT_DEFAULT: usize = 32;
/// Consecutive pages a checkpoint writes with one `write_pages` call (a bulk load allocates
/// mostly consecutive ids: one large write beats many small ones on every device).
pub const CHECKPOINT_RUN_PAGES_MAX: usize = 64;
/// A checkpoint that writes at most this many pages (a small commit) syncs once: its meta
/// slot lists every page it wrote with its crc32, and open verifies them (see DESIGN.md).
pub const SINGLE_SYNC_PAGES_MAX: usize = 64;
/// Where the verify list starts in a meta slot, in bytes from the start of the page.
pub const META_VERIFY_OFFSET_BYTES: usize = 96;
/// Bytes per verify-list entry: page id u64, crc32 u32.
pub const META_VERIFY_ENTRY_BYTES: usize = 12;
/// Default page cache budget, in bytes.
pub const CACHE_BYTES_DEFAULT: usize = 256 * 1024 * 1024;
/// The most pages one warm-up read spans (`Snapshot::warm_run`): 256 KiB of 8 KiB pages,
/// one large read instead of many random ones, and small enough that a few in flight fit
/// the node's registered I/O memory (4 MiB per core by default).
pub const WARM_RUN_PAGES_MAX: usize = 32;
/// Meta slots (pages 0 and 1), written alternately.
pub const META_SLOT_COUNT: u64 = 2;
/// Bytes of a freelist page's fixed body part (next page id).
pub const FREELIST_BODY_HEADER_BYTES: usize = 8;
/// Bytes of one freelist range (start u64, length u64).
pub const FREELIST_RANGE_BYTES: usize = 16;

/// The largest cell (fixed part included) a node page of `page_bytes` accepts.
pub const fn cell_bytes_max(page_bytes: usize) -> usize {
    (page_bytes - PAGE_HEADER_BYTES) / CELLS_PER_PAGE_MIN
}

/// The longest key stored inside its cell; longer keys go to overflow pages on disk.
pub const fn key_inline_bytes_max(page_bytes: usize) -> usize {
    // The worst cell holding an inline key: a branch cell, or a leaf cell whose value is out
    // of line. Both must fit `cell_bytes_max`.
    cell_bytes_max(page_bytes) - BRANCH_CELL_HEADER_BYTES - OUT_OF_LINE_REF_BYTES
}

/// Payload bytes of one overflow page.
pub const fn overflow_payload_bytes(page_bytes: usize) -> usize {
    page_bytes - PAGE_HEADER_BYTES
}

const _: () = assert!(PAGE_BYTES_MIN.is_power_of_two() && PAGE_BYTES_MAX.is_power_of_two());
const _: () = assert!(PAGE_BYTES_MIN <= PAGE_BYTES_DEFAULT && PAGE_BYTES_DEFAULT <= PAGE_BYTES_MAX);
// Offsets and lengths inside a page are stored in u32, key lengths in u16.
const _: () = assert!(PAGE_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(KEY_BYTES_MAX <= u16::MAX as usize);
// The value length field keeps its top bit free.
const _: () = assert!(VALUE_BYTES_MAX < (1 << 31));
// Even the smallest page keeps a useful inline key (24-byte keys must stay inline).
const _: () = assert!(key_inline_bytes_max(PAGE_BYTES_MIN) >= 512);
// A leaf cell with an out-of-line key and value fits any page.
const _: () =
    assert!(LEAF_CELL_HEADER_BYTES + 2 * OUT_OF_LINE_REF_BYTES <= cell_bytes_max(PAGE_BYTES_MIN));
// A freelist page holds at least one range.
const _: () = assert!(
    PAGE_HEADER_BYTES + FREELIST_BODY_HEADER_BYTES + FREELIST_RANGE_BYTES <= PAGE_BYTES_MIN
);
// The longest verify list fits the smallest meta page.
const _: () = assert!(
    META_VERIFY_OFFSET_BYTES + SINGLE_SYNC_PAGES_MAX * META_VERIFY_ENTRY_BYTES <= PAGE_BYTES_MIN
);
// The meta slot body fits in the smallest page.
const _: () = assert!(PAGE_HEADER_BYTES + 64 <= PAGE_BYTES_MIN);
