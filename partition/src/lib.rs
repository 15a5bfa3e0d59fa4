//! One partition replica: a raft-rs group, its B-tree, and its records in the core's WAL.
//!
//! # What it owns
//!
//! A [`Replica`] is one copy of one partition on one core. Every write goes through
//! consensus — a raft-rs `RawNode`, a single voter for now, so that replication later
//! changes no shape: [`Replica::write`] proposes a [`Command`], [`Replica::run`] (the
//! driver the host spawns) persists raft's Readies into the core's shared WAL, tells raft what
//! became durable, and applies committed entries to the partition's tree in one batch per
//! Ready, the applied raft index riding in the same batch. The write resolves once its entry
//! is applied. Reads ([`Replica::get`], [`Replica::query`], [`Replica::scan_page`]) are served
//! from a copy-on-write view of the tree. [`Replica::checkpoint_step`] makes the tree durable
//! in paced slices and then releases the WAL and the in-memory raft log below the index the
//! checkpoint carries. [`Replica::open`] recovers from the newest checkpoint plus the WAL.
//!
//! The byte layouts (tree keys and values, commands, WAL records) and the crash analysis of
//! the write path are in `partition/DESIGN.md`.
//!
//! # What it never does
//!
//! - It never imports glommio, spawns, sleeps or reads a clock: the host (`shard-node`) owns
//!   the executor, spawns [`Replica::run`] and `Wal::run`, calls [`Replica::tick`] on a timer
//!   and serves the network. Tests drive it with `wal::sim`'s executor over in-memory and
//!   simulated devices.
//! - It never queues without bound: over `limits::PROPOSALS_IN_FLIGHT_MAX` proposals (or
//!   their byte budget) a write is `Throttled` at once.
//! - It never acknowledges a write before its entry is durable, committed and applied, and
//!   never serves a strong read before it has applied every write it acknowledged.
//! - It never panics on bytes it reads back: commands, WAL records and tree values that do
//!   not decode are typed errors.
//! - It never holds a `RefCell` borrow across an await: one `Rc<Replica>` is shared by every
//!   task of its core.
//!
//! # Why its own crate
//!
//! The replica is where consensus, the log and the tree meet, and its correctness (what a
//! crash between any two writes leaves) is the product's. Without a runtime it is tested
//! with seeded crashes against a model, in seconds, and the host stays a thin shell.

#![warn(missing_docs)]

pub mod command;
pub mod keys;
pub mod limits;
mod log_store;
pub mod records;
mod replica;
mod tree_slot;

pub use command::{Command, DecodeError, COMMAND_FORMAT_VERSION};
pub use replica::{
    CheckpointStep, PartitionId, QueryPage, Replica, ReplicaConfig, ReplicaError, ReplicaStats,
    ScanPage, WriteOutcome,
};
