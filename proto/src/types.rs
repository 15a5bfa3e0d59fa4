//! Requests, responses and the values they carry.
//!
//! Every type here is archived by rkyv and checked with `rkyv::access` when it arrives
//! from outside the process (see [`crate::frame`]). Each operation is its own struct so
//! that the server and the replica can take exactly what they need.

use rkyv::{Archive, Deserialize, Serialize};

use crate::Error;

/// An item's address: its partition key, and its sort key (empty when the table has none).
#[derive(
    Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
)]
pub struct Key {
    /// Hashed to place the item; 1 to [`crate::limits::PARTITION_KEY_BYTES_MAX`] bytes.
    pub partition: Vec<u8>,
    /// Orders items within one partition key; at most [`crate::limits::SORT_KEY_BYTES_MAX`].
    pub sort: Vec<u8>,
}

impl Key {
    /// A key with a partition key and a sort key.
    pub fn new(partition: impl Into<Vec<u8>>, sort: impl Into<Vec<u8>>) -> Key {
        Key {
            partition: partition.into(),
            sort: sort.into(),
        }
    }

    /// A key of a table without a sort key.
    pub fn simple(partition: impl Into<Vec<u8>>) -> Key {
        Key {
            partition: partition.into(),
            sort: Vec::new(),
        }
    }

    /// The bytes this key counts toward an item's size.
    pub fn bytes(&self) -> usize {
        self.partition.len() + self.sort.len()
    }
}

/// When a write may happen. Evaluated by the replica when the write is applied, so every
/// replica decides the same way.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Condition {
    /// Always.
    #[default]
    None,
    /// Only if no item has this key.
    IfAbsent,
    /// Only if an item has this key.
    IfPresent,
    /// Only if the item exists with exactly this version.
    IfVersion(u64),
}

/// Where a read may be answered.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Consistency {
    /// By the partition's leader: sees every acknowledged write.
    #[default]
    Strong,
    /// By any replica: may miss the latest writes.
    Eventual,
}

/// The order of a query.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    /// Ascending sort keys.
    #[default]
    Forward,
    /// Descending sort keys.
    Backward,
}

/// One end of a sort-key range.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub enum SortBound {
    /// No bound on this side.
    #[default]
    Unbounded,
    /// This sort key and beyond.
    Included(Vec<u8>),
    /// Strictly beyond this sort key.
    Excluded(Vec<u8>),
}

/// What a table's keys look like.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KeySchema {
    /// The partition key's attribute name (for front-ends; the store sees bytes).
    pub partition_key: String,
    /// The sort key's attribute name, if the table has one.
    pub sort_key: Option<String>,
}

/// How a table pays for its throughput.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CapacityMode {
    /// No set capacity; admission is bounded by the nodes only.
    #[default]
    OnDemand,
    /// Read and write units per second (one unit: one item of up to 4 KiB read, 1 KiB written).
    Provisioned {
        /// Read units per second.
        read_units_per_s: u64,
        /// Write units per second.
        write_units_per_s: u64,
    },
}

/// Creates a table.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CreateTable {
    /// 3 to 255 bytes of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// Its keys.
    pub key_schema: KeySchema,
    /// Its capacity mode.
    pub capacity: CapacityMode,
    /// Partitions to cut its hash space into; 0 lets the node choose (two per core).
    pub partitions: u32,
}

/// The lifecycle of a table.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableStatus {
    /// Serving.
    Active,
    /// Being deleted.
    Deleting,
}

/// What a table is.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TableDescription {
    /// Its name.
    pub name: String,
    /// Its id, never reused.
    pub id: u64,
    /// Its keys.
    pub key_schema: KeySchema,
    /// Its capacity mode.
    pub capacity: CapacityMode,
    /// How many partitions its hash space is cut into.
    pub partitions: u32,
    /// Its status.
    pub status: TableStatus,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
}

/// Writes an item (replacing any with the same key).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Put {
    /// The table.
    pub table: String,
    /// The item's key.
    pub key: Key,
    /// Its value: opaque bytes.
    pub value: Vec<u8>,
    /// When the write may happen.
    pub condition: Condition,
}

/// Reads one item.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Get {
    /// The table.
    pub table: String,
    /// The item's key.
    pub key: Key,
    /// Leader only, or any replica.
    pub consistency: Consistency,
}

/// Deletes one item.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    /// The table.
    pub table: String,
    /// The item's key.
    pub key: Key,
    /// When the delete may happen.
    pub condition: Condition,
}

/// Reads the items of one partition key, in sort-key order, a page at a time.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The table.
    pub table: String,
    /// The one partition key whose items are read.
    pub partition_key: Vec<u8>,
    /// The low end of the sort-key range (whatever the direction).
    pub start: SortBound,
    /// The high end of the sort-key range.
    pub end: SortBound,
    /// Ascending or descending.
    pub direction: Direction,
    /// Items per page at most; 0 means as many as fit in a page.
    pub limit: u32,
    /// The sort key of the last item of the previous page (exclusive), to go on from.
    pub resume: Option<Vec<u8>>,
    /// Leader only, or any replica.
    pub consistency: Consistency,
}

/// Where a scan goes on from: a partition and, within it, the last key returned.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ScanResume {
    /// The partition's index within the table.
    pub partition: u32,
    /// The last key returned (exclusive); `None` starts at the partition's beginning.
    pub after: Option<Key>,
}

/// Reads every item of a table, a page at a time, partition after partition.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    /// The table.
    pub table: String,
    /// Items per page at most; 0 means as many as fit in a page.
    pub limit: u32,
    /// Where to go on from; `None` starts at the first partition.
    pub resume: Option<ScanResume>,
    /// Leader only, or any replica.
    pub consistency: Consistency,
}

/// Reads many items by key.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BatchGet {
    /// The table.
    pub table: String,
    /// Up to [`crate::limits::BATCH_GETS_MAX`] keys.
    pub keys: Vec<Key>,
    /// Leader only, or any replica.
    pub consistency: Consistency,
}

/// One write of a batch write (unconditional, as in DynamoDB).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Writes an item.
    Put {
        /// The item's key.
        key: Key,
        /// Its value.
        value: Vec<u8>,
    },
    /// Deletes an item.
    Delete {
        /// The item's key.
        key: Key,
    },
}

impl WriteOp {
    /// The key this write touches.
    pub fn key(&self) -> &Key {
        match self {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => key,
        }
    }
}

/// Writes many items. Each write is atomic on its own; the batch is not (DynamoDB's rule).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BatchWrite {
    /// The table.
    pub table: String,
    /// Up to [`crate::limits::BATCH_WRITES_MAX`] writes, at most one per key.
    pub writes: Vec<WriteOp>,
}

/// A request, as a client sends it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Creates a table.
    CreateTable(CreateTable),
    /// Describes a table.
    DescribeTable {
        /// Its name.
        name: String,
    },
    /// Lists tables in name order, a page at a time.
    ListTables {
        /// Start after this name.
        start_after: Option<String>,
        /// Names per page at most; 0 means [`crate::limits::LIST_TABLES_PAGE_MAX`].
        limit: u32,
    },
    /// Deletes a table and every item in it.
    DeleteTable {
        /// Its name.
        name: String,
    },
    /// Writes an item.
    Put(Put),
    /// Reads an item.
    Get(Get),
    /// Deletes an item.
    Delete(Delete),
    /// Reads one partition key's items.
    Query(Query),
    /// Reads a whole table.
    Scan(Scan),
    /// Reads many items.
    BatchGet(BatchGet),
    /// Writes many items.
    BatchWrite(BatchWrite),
}

impl Request {
    /// The table the request is about.
    pub fn table(&self) -> &str {
        match self {
            Request::CreateTable(c) => &c.name,
            Request::DescribeTable { name } | Request::DeleteTable { name } => name,
            Request::ListTables { .. } => "",
            Request::Put(r) => &r.table,
            Request::Get(r) => &r.table,
            Request::Delete(r) => &r.table,
            Request::Query(r) => &r.table,
            Request::Scan(r) => &r.table,
            Request::BatchGet(r) => &r.table,
            Request::BatchWrite(r) => &r.table,
        }
    }

    /// Whether the request may be sent again after an unknown outcome without changing what
    /// it does: reads, and writes whose condition makes a second attempt fail harmlessly.
    pub fn is_idempotent(&self) -> bool {
        match self {
            Request::DescribeTable { .. }
            | Request::ListTables { .. }
            | Request::Get(_)
            | Request::Query(_)
            | Request::Scan(_)
            | Request::BatchGet(_) => true,
            Request::Put(p) => matches!(p.condition, Condition::IfAbsent | Condition::IfVersion(_)),
            Request::Delete(d) => matches!(d.condition, Condition::IfVersion(_)),
            Request::CreateTable(_) | Request::DeleteTable { .. } | Request::BatchWrite(_) => false,
        }
    }
}

/// An item as read back: its key, value and version (the log index that wrote it).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Its key.
    pub key: Key,
    /// Its value.
    pub value: Vec<u8>,
    /// The log index of the write that made it.
    pub version: u64,
}

/// The outcome of one write of a batch write.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Applied, at this version (for a delete: the log index of the delete).
    Written {
        /// Its version.
        version: u64,
    },
    /// Not applied.
    Failed(Error),
}

/// A response, as the server sends it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// A table (created, described or being deleted).
    Table(TableDescription),
    /// A page of table names.
    Tables {
        /// Names in order.
        names: Vec<String>,
        /// Set when more may follow: pass it as `start_after`.
        last: Option<String>,
    },
    /// A put was applied.
    Written {
        /// The new item's version.
        version: u64,
    },
    /// The item read.
    Item(Item),
    /// A delete was applied.
    Deleted {
        /// The log index of the delete.
        version: u64,
        /// Whether an item was there.
        existed: bool,
    },
    /// A page of a query.
    QueryPage {
        /// Items in the query's order.
        items: Vec<Item>,
        /// Set when more may follow: the sort key to pass as `resume`.
        resume: Option<Vec<u8>>,
    },
    /// A page of a scan.
    ScanPage {
        /// Items in partition order, then key order within a partition.
        items: Vec<Item>,
        /// Set when more may follow.
        resume: Option<ScanResume>,
    },
    /// The items of a batch get that exist (absent keys are left out).
    BatchItems {
        /// Found items, in no set order.
        items: Vec<Item>,
        /// Keys not read this time (throttled or over the frame's size): ask again.
        unprocessed: Vec<Key>,
    },
    /// The outcome of each write of a batch write, in the request's order.
    BatchWritten {
        /// One per write.
        outcomes: Vec<WriteOutcome>,
    },
    /// The request failed.
    Error(Error),
}

impl Response {
    /// The variant's name, for errors that say what came instead of what was expected.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Table(_) => "Table",
            Response::Tables { .. } => "Tables",
            Response::Written { .. } => "Written",
            Response::Item(_) => "Item",
            Response::Deleted { .. } => "Deleted",
            Response::QueryPage { .. } => "QueryPage",
            Response::ScanPage { .. } => "ScanPage",
            Response::BatchItems { .. } => "BatchItems",
            Response::BatchWritten { .. } => "BatchWritten",
            Response::Error(_) => "Error",
        }
    }
}
