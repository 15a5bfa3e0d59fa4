//! percore-meta: the metadata service. It owns the cluster's tables, nodes and partition
//! map, and answers the routing questions of routers.
//!
//! # What it owns
//!
//! - Tables (name, id, key schema, capacity mode, partitions, status, creation time), nodes
//!   (id, each core's address, zone; liveness from heartbeats) and the partition map: one
//!   `proto::cluster::Route` per partition (hash range, partition id, epoch, replicas,
//!   leader hint), kept in a `routing::Trie` keyed by (table id, range start).
//! - Placement: a new table's partitions go round-robin over the live nodes' cores,
//!   consecutive partitions on different nodes; the nodes are told (`Assign`) and must
//!   confirm before the create is answered. A delete tells them to drop (`Drop`).
//! - Its own durability: every change is a [`records::Command`] appended to its WAL (our
//!   `wal` crate) and durable before it is acknowledged, then applied to its B-tree (our
//!   `btree` crate), checkpointed from time to time ([`store`]). A restart serves the
//!   same map, the same ids.
//! - Moves: on an admin `MovePartition` the source core ships the partition to the target
//!   core (`MoveOut`: freeze, drain, snapshot), the route switches under the next epoch
//!   (durable), and both nodes are re-assigned.
//! - Routing answers: a floor lookup by (table, hash), a table's whole map, and the server
//!   side of the Merkle sync (`SyncRoot`, `SyncExpand`), so that routers find what changed
//!   by comparing hashes from the top down instead of downloading the map.
//!
//! # What it never does
//!
//! - It is not on the request path: items never pass through it, and routers keep routing
//!   from their caches while it is down.
//! - It never acknowledges a change before the change is durable in its WAL, and never
//!   reuses a table or partition id.
//! - It never panics on input: a bad frame gets a typed error, lost framing closes that
//!   connection only. Planning ([`state`]) is a pure function of the state, tested
//!   without disk or network.
//! - It does not replicate itself yet (that comes with replication).
//!
//! # Why its own crate
//!
//! The node must not depend on the service that tells it what to hold, and routers only
//! speak to it over the wire; a crate of its own (library plus a thin `percore-meta`
//! binary) keeps the map's rules in one place and lets other crates' tests start it in
//! process ([`start`]).
//!
//! # Layout
//!
//! [`config`] (TOML, env `PERCORE_META_*`, flags), [`state`] (the sans-I/O map),
//! [`records`] (what the WAL and the tree hold), [`store`] (WAL + tree on glommio DMA
//! files), [`service`] (answers, node calls), `daemon::server` (listener and connections),
//! `daemon::signals`, `daemon::logging`, [`limits`].

pub mod config;
pub mod limits;
pub mod records;
pub mod service;
pub mod state;
pub mod store;

use std::ffi::OsString;
use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::io::{FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use clap::Parser;
use futures_lite::AsyncReadExt;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::{Cli, Config};
use crate::limits::{CHECKPOINT_INTERVAL_MS, DRAIN_TIMEOUT_MS, IO_MEMORY_BYTES};
use crate::service::Meta;
use daemon::server::{self, Connections, Drain};

/// The lock file in the data directory: one service per data directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Attempts at starting the executor: the kernel frees a previous process's io_uring rings
/// (and their locked memory) asynchronously, so a back-to-back restart can briefly fail
/// (GLOMMIO-NOTES pitfall 8).
pub const EXECUTOR_START_ATTEMPTS_MAX: u32 = 5;

/// Wait between executor start attempts.
pub const EXECUTOR_START_RETRY_MS: u64 = 200;

/// How long start-up waits for its port to be free (see [`bind`]).
pub const BIND_WAIT_MS: u64 = 5_000;

/// The pause between two attempts at binding the port.
pub const BIND_RETRY_MS: u64 = 50;

/// How often deletions left in `Deleting` (a node did not confirm) are retried.
pub const DELETE_RETRY_MS: u64 = 2_000;

/// The process: parse the configuration, log, serve until SIGTERM or SIGINT; the exit
/// code (0 after a clean stop, 1 on a failure, 2 on a bad configuration).
pub fn run(args: Vec<OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let config = match Config::resolve(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("percore-meta: {e}");
            return 2;
        }
    };
    let _log = match daemon::logging::init(&config.log_level, config.log_file.as_deref()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("percore-meta: {e}");
            return 2;
        }
    };
    let stop = match daemon::signals::register(1) {
        Ok(mut s) => s.pop().expect("one pipe was asked for"),
        Err(e) => {
            eprintln!("percore-meta: cannot install the signal handlers: {e}");
            return 1;
        }
    };
    match serve_blocking(
        config,
        Box::new(|addr| {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "percore-meta ready addr={addr}");
            let _ = out.flush();
        }),
        StopSource::Pipe(stop),
    ) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "percore-meta failed");
            eprintln!("percore-meta: {e}");
            1
        }
    }
}

/// What ends the service.
enum StopSource {
    /// The signal pipe.
    Pipe(daemon::signals::StopPipe),
    /// A socket whose peer writes a byte or closes ([`Running::stop`]).
    Socket(RawFd),
}

impl StopSource {
    async fn wait(self) {
        match self {
            StopSource::Pipe(p) => p.wait().await,
            StopSource::Socket(fd) => {
                // SAFETY: `fd` came from `into_raw_fd` of a socket this value owns alone.
                let mut s = unsafe { glommio::net::UnixStream::from_raw_fd(fd) };
                let mut b = [0u8; 1];
                let _ = s.read(&mut b).await;
            }
        }
    }
}

/// A service started in this process by [`start`].
pub struct Running {
    addr: SocketAddr,
    stopper: Option<std::os::unix::net::UnixStream>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Running {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it as SIGTERM would (drain, checkpoint) and waits; its outcome.
    pub fn stop(mut self) -> Result<(), String> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), String> {
        drop(self.stopper.take());
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| "the service's thread panicked".to_string())?,
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// Starts the service on a thread of this process (for other crates' tests: no logger,
/// no signal handlers); returns once it serves.
pub fn start(config: Config) -> Result<Running, String> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| format!("cannot make the stop socket: {e}"))?;
    let fd = theirs.into_raw_fd();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("percore-meta".into())
        .spawn(move || {
            serve_blocking(
                config,
                Box::new(move |addr| {
                    let _ = tx.send(addr);
                }),
                StopSource::Socket(fd),
            )
        })
        .map_err(|e| format!("cannot start the service's thread: {e}"))?;
    match rx.recv() {
        Ok(addr) => Ok(Running {
            addr,
            stopper: Some(ours),
            thread: Some(thread),
        }),
        Err(_) => Err(thread
            .join()
            .map_err(|_| "the service's thread panicked".to_string())?
            .err()
            .unwrap_or_else(|| "the service stopped before serving".into())),
    }
}

/// Locks the data directory (blocking; start-up only).
fn lock_data_dir(config: &Config) -> Result<File, String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", config.data_dir.display()))?;
    let path = config.data_dir.join(LOCK_FILE_NAME);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor this function owns.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        return Err(format!(
            "{} is locked: another percore-meta uses this data directory",
            path.display()
        ));
    }
    Ok(file)
}

/// Binds without SO_REUSEPORT (glommio's own bind sets it, pitfall 7), so a second service
/// on the same port fails here instead of silently sharing it.
///
/// A port still held by a SIGKILLed predecessor is waited for, up to [`BIND_WAIT_MS`]: the
/// kernel tears down a dead process's io_uring (which holds its listener) asynchronously.
fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    let deadline = std::time::Instant::now() + Duration::from_millis(BIND_WAIT_MS);
    let l = loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => break l,
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(BIND_RETRY_MS));
            }
            Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
        }
    };
    l.set_nonblocking(true)
        .map_err(|e| format!("cannot make the listener non-blocking: {e}"))?;
    Ok(l)
}

/// Runs the service on a glommio executor on this thread until `stop`; `ready` is called
/// with the address once it serves.
fn serve_blocking(
    config: Config,
    ready: Box<dyn FnOnce(SocketAddr) + Send>,
    stop: StopSource,
) -> Result<(), String> {
    let mut config = config;
    let _lock = lock_data_dir(&config)?;
    // glommio fails to open a relative directory for its syncs (EBADF): use the absolute
    // path from here on.
    config.data_dir = std::fs::canonicalize(&config.data_dir)
        .map_err(|e| format!("cannot resolve {}: {e}", config.data_dir.display()))?;
    let listener = bind(config.listen)?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listener's address: {e}"))?;
    let listener_fd = listener.into_raw_fd();
    let placement = match config.cpu {
        Some(c) => Placement::Fixed(c),
        None => Placement::Unbound,
    };
    let shared = std::sync::Arc::new(std::sync::Mutex::new(Some((config, ready, stop))));
    let mut attempt = 0;
    let handle = loop {
        attempt += 1;
        let shared = shared.clone();
        let r = LocalExecutorBuilder::new(placement.clone())
            .name("percore-meta")
            .io_memory(IO_MEMORY_BYTES)
            .spawn(move || async move {
                let taken = shared.lock().map(|mut g| g.take()).ok().flatten();
                let Some((config, ready, stop)) = taken else {
                    return Err("the service was started twice".to_string());
                };
                serve(config, listener_fd, addr, ready, stop).await
            });
        match r {
            Ok(h) => break h,
            Err(e) if attempt < EXECUTOR_START_ATTEMPTS_MAX => {
                tracing::warn!(attempt, error = %e, "cannot start the executor yet; retrying");
                std::thread::sleep(Duration::from_millis(EXECUTOR_START_RETRY_MS));
            }
            Err(e) => return Err(format!("cannot start the executor: {e}")),
        }
    };
    handle
        .join()
        .map_err(|e| format!("the executor failed: {e:?}"))?
}

async fn serve(
    config: Config,
    listener_fd: RawFd,
    addr: SocketAddr,
    ready: Box<dyn FnOnce(SocketAddr) + Send>,
    stop: StopSource,
) -> Result<(), String> {
    // SAFETY: the descriptor came from `into_raw_fd` of a listener nothing else owns.
    let listener = unsafe { glommio::net::TcpListener::from_raw_fd(listener_fd) };
    let (store, state, recovered) =
        store::Store::open(&config.data_dir, config.node_timeout_ms).await?;
    tracing::info!(
        tables = state.table_count(),
        routes = state.route_count(),
        checkpoint_index = recovered.checkpoint_index,
        replayed = recovered.replayed,
        "map recovered"
    );
    let meta = Rc::new(Meta::new(store, state));
    let drain = Rc::new(Drain::default());
    let connections = Rc::new(Connections::new(limits::SERVER_LIMITS));
    let acceptor = glommio::spawn_local(server::accept_loop(
        listener,
        meta.clone(),
        connections.clone(),
        drain.clone(),
    ));
    let background = {
        let (meta, drain) = (meta.clone(), drain.clone());
        glommio::spawn_local(async move {
            let tick = Duration::from_millis(DELETE_RETRY_MS.min(CHECKPOINT_INTERVAL_MS / 2));
            loop {
                let slept = futures_lite::future::or(
                    async {
                        glommio::timer::sleep(tick).await;
                        true
                    },
                    async {
                        drain.started().await;
                        false
                    },
                )
                .await;
                if !slept {
                    return;
                }
                meta.finish_deletions().await;
                if let Err(e) = meta.checkpoint_if_due().await {
                    tracing::error!(error = %e, "checkpoint failed");
                }
            }
        })
    };
    tracing::info!(%addr, "serving");
    ready(addr);

    stop.wait().await;
    tracing::info!("stopping: no new connections, finishing requests in flight");
    drain.start();
    acceptor.await;
    background.await;
    let drained = connections
        .all_closed_within(Duration::from_millis(DRAIN_TIMEOUT_MS))
        .await;
    if !drained {
        tracing::warn!(
            open = connections.open(),
            "connections still busy after the drain timeout; stopping anyway"
        );
    }
    meta.close().await?;
    tracing::info!("stopped");
    Ok(())
}
