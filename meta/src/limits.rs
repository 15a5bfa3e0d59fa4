//! Every limit and fixed pace of the metadata service, in one place, each with its unit last
//! and the reason for its value.

/// Connections served at once (nodes, routers, admin tools). Each costs a read buffer, a
/// write queue and a task; a cluster has a few nodes and routers per core of a machine, so
/// this is far above need. Beyond it a new connection is closed at once, logged.
pub const CONNECTIONS_MAX: usize = 1024;

/// Requests one connection may have in flight. Nodes and routers send one at a time
/// (`client::ClusterConn`); a little pipelining is allowed, and at the bound the
/// connection stops reading (TCP back-pressure), never queueing without bound.
pub const REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX: usize = 64;

/// Answer bytes queued on a connection before it stops reading: one largest frame and
/// change, so a client that does not read its answers cannot grow our memory.
pub const RESPONSE_BACKLOG_BYTES_MAX: usize = proto::limits::FRAME_PAYLOAD_BYTES_MAX + 1024 * 1024;

/// The bounds of meta's connections (`daemon::server`).
pub const SERVER_LIMITS: daemon::server::ServerLimits = daemon::server::ServerLimits {
    connections_max: CONNECTIONS_MAX,
    requests_in_flight_per_connection_max: REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX,
    response_backlog_bytes_max: RESPONSE_BACKLOG_BYTES_MAX,
};

/// Tables the map holds. Placement spreads every table over every live node, so each node
/// holds a share of every table, and a node's catalog holds at most 1024 tables
/// (`shard_node::catalog::TABLES_MAX`): a larger map could not be assigned.
pub const TABLES_MAX: usize = 1024;

/// Partitions one table may have: proto's limit on a create (it bounds the files and raft
/// groups one create makes on the nodes).
pub const PARTITIONS_PER_TABLE_MAX: u32 = proto::limits::TABLE_PARTITIONS_MAX;

/// Nodes the map knows. Bounds the placement loops, the `ListNodes` answer (each node's
/// addresses travel in it) and the fan-out of a create; a thousand machines is beyond any
/// cluster this service (one core, not replicated yet) should run.
pub const NODES_MAX: usize = 1024;

/// Cores one node may report: the node's own limit (`shard_node::limits::CORES_MAX`).
pub const CORES_PER_NODE_MAX: usize = 256;

/// A node's zone label or one core address at most, in bytes: room for any host name and
/// port (DNS names stop at 253), small enough that a registration stays a small frame.
pub const NODE_TEXT_BYTES_MAX: usize = 300;

/// Per-partition statistics kept from one heartbeat: a node's partitions of every table at
/// two per core (1024 tables × 256 cores × 2 would be far more, but those counts are not
/// reachable with the table limit spread over many nodes); beyond this the rest are dropped.
pub const HEARTBEAT_STATS_MAX: usize = 65_536;

/// How long meta waits for a node to answer an `Assign` or `Drop` (connect included): the
/// node makes a catalog durable and opens or drops partitions, a few syncs each; beyond
/// this the table admin answers `Unavailable` and the node re-learns the map when it
/// registers again.
pub const NODE_CALL_TIMEOUT_MS: u64 = 10_000;

/// How long meta waits for the source core to answer a `MoveOut`: the node drains the
/// partition's writes (up to 10 s) and ships its snapshot chunk by chunk (each acknowledged
/// within 30 s); a partition of a few GB copies in well under this.
pub const MOVE_CALL_TIMEOUT_MS: u64 = 120_000;

/// WAL records between two checkpoints of the tree: each record is one admin change, so
/// this bounds what a restart replays (and the WAL's size) to a few milliseconds of work.
pub const CHECKPOINT_EVERY_RECORDS: u64 = 256;

/// A dirty tree is checkpointed at least this often, so that a quiet service's WAL is
/// released and a restart replays little.
pub const CHECKPOINT_INTERVAL_MS: u64 = 10_000;

/// The tree's page size: meta's records are small (a route is ~100 bytes, a table ~100).
pub const TREE_PAGE_BYTES: usize = 4096;

/// The tree's page cache: the whole map of a large cluster (a million routes at ~150 bytes
/// is 150 MB) would not fit, but meta keeps its state in memory anyway and reads the tree
/// only at start-up; the cache only has to keep the upper levels warm for the writes.
pub const TREE_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// WAL segment size. Meta writes a few records per admin change; small segments keep the
/// first start's zero-fill short (the node's 64 MiB would cost seconds here).
pub const WAL_SEGMENT_BYTES: u64 = 4 * 1024 * 1024;

/// WAL batches in flight: admin changes are serialised, so two is plenty.
pub const WAL_BATCHES_IN_FLIGHT: usize = 2;

/// Zero-filled spare WAL segments kept ready.
pub const WAL_SPARE_SEGMENTS: usize = 1;

/// Bytes of recent WAL records kept in memory: must hold every batch in flight, queued and
/// open (the WAL checks it), which with 256 KiB batches is under 2 MiB.
pub const WAL_TAIL_CACHE_BYTES: usize = 4 * 1024 * 1024;

/// glommio's registered I/O memory (locked three times over, GLOMMIO-NOTES pitfall 8): meta
/// writes a few small pages and WAL blocks at a time.
pub const IO_MEMORY_BYTES: usize = 2 * 1024 * 1024;

/// How long a stopping service waits for its connections' requests in flight before it
/// checkpoints and exits anyway: longer than one node call, so a create in flight finishes.
pub const DRAIN_TIMEOUT_MS: u64 = NODE_CALL_TIMEOUT_MS + 2_000;

const _: () = assert!(REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX >= 1);
const _: () = assert!(PARTITIONS_PER_TABLE_MAX as usize <= routing::ROUTES_MAX);
