//! percore-router: the front door. It speaks the native protocol to clients, finds the core
//! that owns each request's partition, forwards the request there and relays the answer.
//!
//! # What it owns
//!
//! - The process ([`process`], [`config`], `daemon::logging`, `daemon::signals`): one pinned glommio
//!   executor per configured CPU, each listening on the shared port (SO_REUSEPORT), the
//!   ready line `percore-router ready port=P`, a drain on SIGTERM.
//! - Per core, everything a request needs, unshared: its routing cache ([`cache`]), its
//!   link to the metadata service ([`meta`]), its pipelined connections to node cores
//!   ([`nodes`]), its request path ([`forward`]) and its connections from clients
//!   (`daemon::server`). Cores never talk to each other: each learns routes on its own.
//! - The routing cache's life: it fills lazily on a miss (a whole table's map the first
//!   time a table is seen, one lookup per range after), and is refreshed at a constant rate
//!   whatever the hit ratio ([`refresh`]), so that the metadata service's load depends on
//!   the number of router cores, not on what their clients do (DynamoDB's lesson: a cold
//!   start of every router must not take meta down). Hits, misses, refreshes and routes
//!   fetched are counted and logged every 10 s and at shutdown.
//! - The Redis port ([`redis`]), when configured: RESP2 clients and tools (redis-cli,
//!   redis-benchmark, redis-py) read and write items through the same request path, a Redis
//!   key being an item's partition key; `SELECT n` picks the n-th configured table.
//! - The retry rule: a node's typed refusal (`WrongOwner`, `Unavailable`) drops the route,
//!   looks it up again and retries, at most [`limits::ROUTER_RETRIES_MAX`] times; a node
//!   that cannot be reached fails the request at once with `Unavailable`; a write whose
//!   outcome is unknown is never sent again.
//!
//! # What it never does
//!
//! - It holds no durable state: a restarted router starts cold and fills again.
//! - It never sends a plain write twice: only after a typed refusal or a failed connect,
//!   when the node cannot have applied it.
//! - It never waits without bound: every call to a node or to meta has a timeout, a dead
//!   node refuses at once, and retries are counted.
//! - It never takes meta's word for more than routing: table admin is relayed unchanged,
//!   and with meta down, routing from the cache goes on while admin fails with a clear
//!   `Unavailable`.
//!
//! # Why its own crate
//!
//! It is a daemon of its own (a binary, a port, a config), it depends on `proto`, `client`,
//! `resp` (for the Redis port) and (for the trie) `routing`, never on the node's or meta's internals, and nothing depends
//! on it: the only contract is the wire.

#![warn(missing_docs)]

pub mod cache;
pub mod config;
pub mod core;
pub mod forward;
pub mod limits;
pub mod meta;
pub mod nodes;
pub mod process;
pub mod redis;
pub mod refresh;
