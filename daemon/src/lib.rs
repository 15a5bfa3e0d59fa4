//! What every percore daemon (`percore-node`, `percore-meta`, `percore-router`) does the
//! same way: serve `proto` frames on pipelined connections with a drain ([`server`]), log
//! without ever blocking an executor ([`logging`]), and hear SIGTERM and SIGINT in every
//! executor ([`signals`]), with the same value syntax for sizes and CPU lists ([`config`]).
//!
//! It is its own crate because no daemon may import another (they meet only on the wire),
//! yet all three serve the same frames under the same rules; one copy of the connection
//! loop keeps those rules (bounds, back-pressure, typed errors, lost framing) the same
//! everywhere. It holds no daemon's logic: each brings its own [`server::Service`] and
//! its own [`server::ServerLimits`].

#![warn(missing_docs)]

pub mod config;
pub mod logging;
pub mod server;
pub mod signals;
