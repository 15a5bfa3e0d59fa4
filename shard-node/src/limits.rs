//! Every limit and fixed pace of the node, in one place, each with its unit last and the
//! reason for its value. Knobs an operator may want to turn are in [`crate::config`]; these
//! are the ones that bound memory and work per connection, per core and per request.

/// Connections one core serves at once (over both of its listeners). Each costs a read
/// buffer, a write buffer and a task; beyond this the core accepts and closes at once,
/// logging why, so that a connection storm cannot exhaust a core's memory.
pub const CONNECTIONS_PER_CORE_MAX: usize = 4096;

/// Requests one connection may have in flight (read, not yet answered). At this many the
/// connection stops reading (TCP back-pressure reaches the client); it never answers
/// `Throttled` for this, because the client's pipeline depth is its own choice and the
/// kernel's socket buffer is the queue.
pub const REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX: usize = 1024;

/// Response bytes queued on one connection before it stops reading new requests (the
/// client is not reading its answers). Large enough for a full page or batch answer.
pub const RESPONSE_BACKLOG_BYTES_MAX: usize = 32 * 1024 * 1024;

/// The bounds of each core's connections (`daemon::server`).
pub const SERVER_LIMITS: daemon::server::ServerLimits = daemon::server::ServerLimits {
    connections_max: CONNECTIONS_PER_CORE_MAX,
    requests_in_flight_per_connection_max: REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX,
    response_backlog_bytes_max: RESPONSE_BACKLOG_BYTES_MAX,
};

/// Messages a mesh channel between two cores holds before a sender waits. A full channel
/// means the receiving core is far behind; waiting there is the back-pressure.
pub const MESH_CHANNEL_MESSAGES_MAX: usize = 1024;

/// How long a draining core waits, on SIGTERM, for its connections' requests in flight to
/// be answered before it stops them. Long enough for a checkpoint's worth of queued writes.
pub const DRAIN_TIMEOUT_MS: u64 = 10_000;

/// The smallest page-cache share of one partition. Below a few dozen pages a tree spends
/// its time evicting and re-reading its own upper levels.
pub const PARTITION_CACHE_BYTES_MIN: u64 = 256 * 1024;

/// Attempts at starting one core's executor. The kernel frees a previous process's io_uring
/// rings (and their locked memory) asynchronously, so a back-to-back restart can briefly
/// fail (GLOMMIO-NOTES pitfall 8).
pub const EXECUTOR_START_ATTEMPTS_MAX: u32 = 5;

/// Wait between executor start attempts.
pub const EXECUTOR_START_RETRY_MS: u64 = 200;

/// Locked memory glommio needs per executor beyond its three registered copies of
/// `io_memory`: the rings themselves (three rings of 128 entries, charged by recent kernels)
/// with room to spare. An estimate, used only to refuse early with a clear message.
pub const RING_MEMLOCK_BYTES_PER_CORE: u64 = 1024 * 1024;

/// Cores one node runs. Bounds the mesh (cores² channels) and the config's core list.
pub const CORES_MAX: usize = 256;

/// Items one scan page returns when the request sets no limit, and at most: proto's page
/// bound, repeated here so that the node's pacing is visible in one place.
pub const SCAN_PAGE_ITEMS_MAX: u32 = proto::limits::QUERY_PAGE_ITEMS_MAX;

const _: () = assert!(REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX >= 1);
const _: () = assert!(
    RESPONSE_BACKLOG_BYTES_MAX >= proto::limits::FRAME_PAYLOAD_BYTES_MAX + proto::HEADER_BYTES
);
