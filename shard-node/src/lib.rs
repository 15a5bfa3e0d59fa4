//! percore-node: the storage daemon. One pinned glommio executor per core, each owning its
//! partitions end to end.
//!
//! # What it owns
//!
//! The process around the storage engine: the configuration (a TOML file with environment
//! and command-line overrides, [`config`]), the start-up checks ([`checks`]), the table
//! catalog ([`catalog`]), one executor per configured CPU ([`node`], [`shard`]), each with
//! its WAL, its partitions (a [`partition::Replica`] each: raft group, B-tree, WAL streams),
//! its listeners and connections (`daemon::server`), the request path ([`dispatch`]), the channel
//! mesh between cores ([`mesh`]) and the background work (raft ticks, paced checkpoints).
//! A request that lands on a core that does not own its partition is forwarded over the
//! mesh and counted; a router that reads the catalog sends it to the owner's own port.
//!
//! # What it never does
//!
//! - It never shares a partition, a tree or a WAL between cores: no locks, no `Send` on the
//!   request path; cores talk only through the mesh.
//! - It never makes a blocking system call on a core once the core serves: files, syncs,
//!   renames and directory syncs go through glommio; logs go through a non-blocking writer.
//!   Blocking calls are confined to start-up (config, checks, catalog read, directory
//!   creation).
//! - It never acknowledges a write before it is durable in the core's WAL (the replica
//!   answers only after its entry is durable, committed and applied).
//! - It never panics on input: a bad frame gets a typed error, lost framing closes the
//!   connection with the reason logged.
//!
//! # Why its own crate
//!
//! It is the only crate that knows about processes, sockets, signals, executors and the
//! data directory's layout; everything it drives (`proto`, `partition`, `btree`, `wal`,
//! `devices`) stays testable without it. Its design, with the request path step by step and
//! every fsync, is in `DESIGN.md` next to this crate.

pub mod barrier;
pub mod catalog;
pub mod checks;
pub mod cluster;
pub mod config;
pub mod dispatch;
pub mod limits;
pub mod mesh;
pub mod moving;
pub mod node;
pub mod oneshot;
pub mod shard;
