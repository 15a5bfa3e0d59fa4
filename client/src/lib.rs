//! The Rust client library for percore's native protocol.
//!
//! # What it owns
//!
//! - [`Client`]: an async client for a glommio executor. A pool of connections, each
//!   pipelined: many requests in flight, answered in any order and matched by request id
//!   (see `pipeline.rs`), the frames of requests queued together written in one system call by
//!   the connection's writer task, the answers dispatched by its reader task. At most
//!   [`limits::REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX`] requests are in flight on one
//!   connection; further callers wait for room (the wait counts toward the request timeout).
//! - Retries, only where they cannot do a write twice ([`retry`]): server errors that say
//!   nothing was done, requests that never left the client, and — for idempotent requests
//!   only — attempts whose outcome is unknown (a broken connection, a timeout).
//! - Typed operations (tables, put/get/delete with conditions, query and scan pages and
//!   helpers that follow them, batch get and write) and a raw [`Client::call`], with typed
//!   errors ([`Error`]): the server's own [`proto::Error`], or what went wrong on the way.
//! - [`blocking::Client`]: one request at a time over `std::net`, with raw byte access,
//!   for tests and tools.
//!
//! # What it never does
//!
//! It never sends a plain write again once its outcome is unknown; the caller gets the
//! error and decides. It never checks a request against the protocol's limits beyond the
//! frame size (the server is the one judge, and answers with the same typed errors); it
//! refuses only a frame so large that the server would have to close the connection, and
//! every other request on it with it. It never resolves host names (a blocking call on a
//! core): it takes socket addresses. It never blocks the executor it runs on.
//!
//! # Why its own crate
//!
//! Applications, the load generator and the node's tests all speak to percore through it;
//! it depends on `proto` and glommio only, never on the node's internals, so what it can do
//! is exactly what the wire allows.

#![warn(missing_docs)]

pub mod blocking;
mod client;
mod cluster;
mod conn;
mod error;
pub mod limits;
mod ops;
mod pipeline;
pub mod retry;

pub use client::{Client, ClientConfig};
pub use cluster::ClusterConn;
pub use conn::Then;
pub use error::{Error, ProtocolError, Result};
pub use ops::{create_table_request, BatchItems, Deleted, QueryPage, ScanPage, TablesPage};
pub use proto;
pub use retry::{Backoff, Decision, Failure, RetryPolicy};
