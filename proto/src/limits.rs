//! Every size limit of the protocol, in one place, with the reason for each.

/// A partition key's largest size. DynamoDB's limit, so that data moves between the two.
pub const PARTITION_KEY_BYTES_MAX: usize = 2048;

/// A sort key's largest size. DynamoDB's limit.
pub const SORT_KEY_BYTES_MAX: usize = 1024;

/// An item's largest size: partition key + sort key + value. DynamoDB's 400 KiB; it bounds
/// one raft entry, one WAL record and one B-tree overflow run.
pub const ITEM_BYTES_MAX: usize = 400 * 1024;

/// Writes in one batch write. DynamoDB's limit; it keeps one batch's raft entries small
/// enough to commit in one WAL batch.
pub const BATCH_WRITES_MAX: usize = 25;

/// Keys in one batch get. DynamoDB's limit.
pub const BATCH_GETS_MAX: usize = 100;

/// The bytes of items one query or scan page returns at most (the page stops early and hands
/// back a resume key). DynamoDB's 1 MiB: a page never monopolises a core for long.
pub const QUERY_PAGE_BYTES_MAX: usize = 1024 * 1024;

/// Items one query or scan page returns at most, whatever the limit asked for; bounds the
/// work per request when items are tiny.
pub const QUERY_PAGE_ITEMS_MAX: u32 = 10_000;

/// A table name's largest size (DynamoDB's).
pub const TABLE_NAME_BYTES_MAX: usize = 255;

/// A table name's smallest size (DynamoDB's).
pub const TABLE_NAME_BYTES_MIN: usize = 3;

/// Partitions one table may be cut into on creation. Bounds the files and raft groups one
/// create makes (each partition has a tree file and a WAL stream).
pub const TABLE_PARTITIONS_MAX: u32 = 4096;

/// Tables one list-tables page returns at most.
pub const LIST_TABLES_PAGE_MAX: u32 = 100;

/// A reason string's largest size in an error; longer ones are cut with a marker, because an
/// error must never itself be refused as too large.
pub const ERROR_REASON_BYTES_MAX: usize = 1024;

/// A frame payload's largest size. A batch get answers at most 100 items of 400 KiB (40 MiB)
/// in theory; like DynamoDB (16 MB per batch get answer) the server stops at this size and
/// returns the rest as unprocessed. Larger frames are lost framing: the connection closes.
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The slack in a frame beyond its items' bytes (names, keys' framing, rkyv's relative
/// pointers). A batch of the largest items must still fit in one frame.
pub const FRAME_OVERHEAD_BYTES_MAX: usize = 64 * 1024;

const _: () = assert!(
    BATCH_WRITES_MAX * ITEM_BYTES_MAX + FRAME_OVERHEAD_BYTES_MAX <= FRAME_PAYLOAD_BYTES_MAX
);
const _: () = assert!(
    QUERY_PAGE_BYTES_MAX + ITEM_BYTES_MAX + FRAME_OVERHEAD_BYTES_MAX <= FRAME_PAYLOAD_BYTES_MAX
);
const _: () = assert!(PARTITION_KEY_BYTES_MAX + SORT_KEY_BYTES_MAX < ITEM_BYTES_MAX);
const _: () = assert!(FRAME_PAYLOAD_BYTES_MAX < u32::MAX as usize);
