//! Every limit and fixed pace of the router, in one place, each with its unit last and the
//! reason for its value. Knobs an operator may want to turn are in [`crate::config`].

/// Extra attempts a request makes after a node refused it with `WrongOwner` or `Unavailable`
/// (or could not be reached), each after dropping the route and looking it up again. A moved
/// partition needs one (the first answer names the move, the lookup finds the new owner);
/// a move in progress answers `Unavailable` while the partition is frozen, so a few more,
/// spaced by [`RETRY_BACKOFF_MS_INITIAL`] doubling up to [`RETRY_BACKOFF_MS_MAX`] (about
/// 0.3 s in all), ride out a short freeze. Beyond that the client gets the error and its own
/// retry policy decides: the router never holds a request for long.
pub const ROUTER_RETRIES_MAX: u32 = 6;

/// The wait before the first retry of a refused request.
pub const RETRY_BACKOFF_MS_INITIAL: u64 = 5;

/// The longest wait between two retries of one request.
pub const RETRY_BACKOFF_MS_MAX: u64 = 160;

/// How long one forwarded request may take at a node: connecting (when no connection is
/// open), sending and the answer. A node that is down refuses the connect at once; this
/// bounds a node that hangs, so that a request never waits forever. A request queued at
/// once on a ready connection is timed out by the connection's sweep, after 1 to 1.25
/// times this (`client::limits::TIMEOUT_SWEEP_PERIODS`).
pub const NODE_REQUEST_TIMEOUT_MS: u64 = 3_000;

/// Pipelined connections one core keeps to each node core it forwards to. One carries 512
/// requests in flight (the client crate's bound) and writes the frames queued together in
/// one system call: more would only split those writes.
pub const NODE_CONNECTIONS_PER_ADDR: usize = 1;

/// Node core addresses one router core keeps connections to. A cluster of 64 nodes of 64
/// cores is 4,096; past this the idle ones are dropped, so a map that churns addresses
/// cannot grow the router's memory without bound.
pub const NODE_ADDRS_MAX: usize = 4_096;

/// How long one call to the metadata service may take (connect, send, answer). A miss waits
/// for it, so it is short; a dead meta refuses the connect at once anyway.
pub const META_CALL_TIMEOUT_MS: u64 = 2_000;

/// Connections one core keeps open to the metadata service. Each carries one call at a time
/// (`client::ClusterConn`); misses of different tables on one core go in parallel up to
/// this, and further ones wait: a cold start cannot open a connection per request at meta.
pub const META_CONNECTIONS_PER_CORE_MAX: usize = 4;

/// A route fetched from the metadata service less than this long ago is not fetched again
/// when a node refuses it: the request backs off and retries on it. Without this, every
/// request to a dead node would look its route up at meta again and again; with it, meta
/// sees at most one lookup per route per core per this period, whatever the request rate
/// (the load on meta must not depend on what requests do: the DynamoDB lesson).
pub const ROUTE_RECHECK_MS_MIN: u64 = 50;

/// How long a core remembers that the metadata service knows no table of a name. Requests
/// to a table that does not exist are all misses; without this, each would cost meta a
/// call, and a client looping on a typo (or on a deleted table) would set meta's load.
/// A table created through another router is seen after at most this long (or at the next
/// refresh, which brings its routes).
pub const UNKNOWN_TABLE_REMEMBER_MS: u64 = 100;

/// Unknown table names one core remembers at most; past this it forgets them all.
pub const UNKNOWN_TABLES_MAX: usize = 4_096;

/// Routes one core's cache holds at most: the routing trie's own bound (4,096 tables of
/// 256 partitions). Past this the cache is cleared and fills again lazily.
pub const CACHED_ROUTES_MAX: usize = routing::ROUTES_MAX;

/// Prefix expansions of one Merkle sync at most, before the refresh gives up until its next
/// period. A sync takes about 2 rounds per trie level where the maps differ; this bounds the
/// work one refresh can cost meta however confused the two sides are.
pub const SYNC_ROUNDS_MAX: u32 = 256;

/// The refresh period when none is configured: once a second, whatever the request rate.
pub const REFRESH_INTERVAL_MS_DEFAULT: u64 = 1_000;

/// The shortest refresh period allowed: 10 routers' cores refreshing every 10 ms is already
/// a thousand syncs a second at meta.
pub const REFRESH_INTERVAL_MS_MIN: u64 = 10;

/// How often each core logs its counters at info.
pub const STATS_LOG_INTERVAL_MS: u64 = 10_000;

/// Connections one core serves at once. Each costs a read buffer, a task and its requests'
/// tasks; beyond this the core accepts and closes at once, logging why.
pub const CONNECTIONS_PER_CORE_MAX: usize = 4_096;

/// Requests one client connection may have in flight through the router. At this many the
/// connection stops reading (TCP back-pressure reaches the client). Kept at the node's own
/// per-connection bound.
pub const REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX: usize = 1_024;

/// Response bytes queued on one client connection before it stops reading new requests
/// (the client is not reading its answers). Room for the largest frame and then some.
pub const RESPONSE_BACKLOG_BYTES_MAX: usize = 32 * 1024 * 1024;

/// The bounds of each core's client connections (`daemon::server`).
pub const SERVER_LIMITS: daemon::server::ServerLimits = daemon::server::ServerLimits {
    connections_max: CONNECTIONS_PER_CORE_MAX,
    requests_in_flight_per_connection_max: REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX,
    response_backlog_bytes_max: RESPONSE_BACKLOG_BYTES_MAX,
};

/// How long a draining core waits, on SIGTERM, for the requests in flight to be answered.
/// Longer than one request's whole budget at a node plus its retries.
pub const DRAIN_TIMEOUT_MS: u64 = 10_000;

/// The period of each core's keep-alive timer. percore-node found (kernel 6.18, glommio
/// 0.9) that a sleeping executor can miss a completion's wake-up; a timer wakes the reactor
/// so such a miss costs at most this long. Every 10 ms it costs ~0.4 % of an idle core.
pub const REACTOR_KEEPALIVE_US: u64 = 10_000;

/// Cores one router runs at most: bounds the core list.
pub const CORES_MAX: usize = 256;

/// Attempts at starting one core's executor: the kernel frees a previous process's io_uring
/// rings asynchronously, so a back-to-back restart can briefly fail (GLOMMIO-NOTES pitfall 8).
pub const EXECUTOR_START_ATTEMPTS_MAX: u32 = 5;

/// Wait between executor start attempts.
pub const EXECUTOR_START_RETRY_MS: u64 = 200;

const _: () = assert!(RETRY_BACKOFF_MS_INITIAL <= RETRY_BACKOFF_MS_MAX);
const _: () = assert!(ROUTE_RECHECK_MS_MIN < REFRESH_INTERVAL_MS_DEFAULT);
// A relayed request's first attempt (swept: up to 1.25 times the timeout), then one more
// the slow way, a meta call and a back-off fit in the drain.
const _: () = assert!(
    DRAIN_TIMEOUT_MS
        > NODE_REQUEST_TIMEOUT_MS * 5 / 4 * 2 + META_CALL_TIMEOUT_MS + RETRY_BACKOFF_MS_MAX
);
const _: () = assert!(
    RESPONSE_BACKLOG_BYTES_MAX >= proto::limits::FRAME_PAYLOAD_BYTES_MAX + proto::HEADER_BYTES
);
const _: () = assert!(NODE_CONNECTIONS_PER_ADDR >= 1 && META_CONNECTIONS_PER_CORE_MAX >= 1);

/// Arguments in one Redis command, its name included: an MGET of 4,096 keys or an MSET of
/// 2,048 pairs. Each argument costs a `Vec`; Redis's own bound is far higher (1 M), but a
/// command this wide already becomes 41 batch gets or 82 batch writes.
pub const REDIS_ARGS_MAX: usize = 4_097;
/// Bytes in one Redis argument: an item's largest value. A larger one is skipped as it
/// arrives and answered with an error (the item could not be stored anyway).
pub const REDIS_ARG_BYTES_MAX: usize = proto::limits::ITEM_BYTES_MAX;
/// Bytes in one Redis command, all arguments together: ten largest items. It is what one
/// connection's parser may hold; 4,096 connections at this bound would be 16 GiB, so the
/// bound is about a single command, not a promise of memory for every connection at once.
pub const REDIS_COMMAND_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Bytes in one inline (telnet-style) command line, Redis's own bound.
pub const REDIS_INLINE_BYTES_MAX: usize = 64 * 1024;
/// Commands one Redis connection parses ahead of their replies. A pipeline longer than this
/// runs in parts (TCP holds the rest); it bounds the tasks and replies one connection has
/// at once.
pub const REDIS_PIPELINE_COMMANDS_MAX: usize = 256;
/// Bytes read from a Redis client at a time.
pub const REDIS_READ_BYTES: usize = 64 * 1024;
/// Rounds a Redis MGET or EXISTS sends again the keys a batch get left unprocessed, before
/// answering TRYAGAIN: a node sheds a batch only under load, and a few rounds ride it out.
pub const REDIS_BATCH_ROUNDS_MAX: u32 = 8;
/// Attempts of one INCR/DECR (read, add, write if the version has not moved) before it
/// answers TRYAGAIN: each lost attempt means another client changed the counter, so more
/// attempts only help a hot counter that many clients race on.
pub const REDIS_INCR_ATTEMPTS_MAX: u32 = 32;

const _: () = assert!(REDIS_ARG_BYTES_MAX <= REDIS_COMMAND_BYTES_MAX);
const _: () = assert!(REDIS_PIPELINE_COMMANDS_MAX >= 1 && REDIS_ARGS_MAX >= 3);
/// How long the Redis port keeps sending again a request a node answered `Throttled`,
/// pausing as the node hints, before passing `TRYAGAIN` on. Redis clients do not retry (Redis
/// queues rather than refuses), so the port absorbs a node's short overloads; a longer one
/// is the client's to see.
pub const REDIS_THROTTLED_WAIT_MS_MAX: u64 = 1_000;
/// Bytes of item values one Redis MGET or EXISTS may gather before it is refused (asking
/// for fewer keys): its reply is held whole before it is sent, and 4,096 keys of 400 KiB
/// would otherwise be 1.6 GiB on one connection.
pub const REDIS_REPLY_BYTES_MAX: usize = 64 * 1024 * 1024;
