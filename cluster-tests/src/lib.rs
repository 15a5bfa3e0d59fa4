//! A local percore cluster for tests: a metadata service, nodes and a router, each a real
//! process on 127.0.0.1, started, stopped, killed and restarted by the test.
//!
//! It is its own crate because the cluster tests belong to no one daemon: they start all
//! three binaries and speak to them only over the wire, as users do. The binaries come from
//! the target directory this test was built into (`cargo build --workspace --bins` puts
//! them there; `cargo xtask test` runs it before the tests).
//!
//! Every daemon logs to a file beside its data directory; dropping a [`Daemon`] kills it
//! and, when the test is failing, prints the tail of its log.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use client::blocking;
use proto::cluster::{ClusterReply, ClusterRequest};

/// How long a daemon may take to print its ready line.
pub const READY_TIMEOUT_MS: u64 = 30_000;

/// How long a stopping daemon (SIGTERM) may take to exit before it is killed.
pub const STOP_TIMEOUT_MS: u64 = 15_000;

/// How long one request of a test's client may wait.
pub const REQUEST_TIMEOUT_MS: u64 = 20_000;

/// The tables the router's Redis port offers (`SELECT 0`, `SELECT 1`); tests create them.
pub const REDIS_TABLES: [&str; 2] = ["usertable", "redis1"];

/// Starts are serialised within a test binary: several glommio processes starting at
/// once on two CPUs have been seen to hang in start-up (see shard-node's tests).
static STARTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The directory holding the workspace's binaries for this build.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("a test binary lives in target/<profile>/deps")
        .to_path_buf()
}

fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the daemons first with `cargo build --workspace --bins` \
         (cargo xtask test does)",
        path.display()
    );
    path
}

/// `count` distinct ports that were free a moment ago.
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound").port())
        .collect()
}

/// A running daemon.
pub struct Daemon {
    name: &'static str,
    child: Option<Child>,
    args: Vec<String>,
    ready: String,
    /// Its log file.
    pub log_path: PathBuf,
}

impl Daemon {
    /// Starts binary `name` with `args`, logging to `log_path`, and waits until it prints a
    /// line starting with `ready`.
    pub fn start(
        name: &'static str,
        args: Vec<String>,
        ready: String,
        log_path: PathBuf,
    ) -> Daemon {
        let mut d = Daemon {
            name,
            child: None,
            args,
            ready,
            log_path,
        };
        d.restart();
        d
    }

    /// Starts it again with the same arguments (it must be stopped).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a daemon that is stopped");
        let _one = STARTS.lock().unwrap_or_else(|p| p.into_inner());
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open the daemon's log");
        let mut child = Command::new(bin(self.name))
            .args(&self.args)
            .env_remove("PERCORE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        let ready = self.ready.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with(&ready) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
        loop {
            if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "{} exited with {status} before it was ready; its log:\n{}",
                    self.name,
                    self.log_tail(60)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} was not ready within {READY_TIMEOUT_MS} ms; its log:\n{}",
                self.name,
                self.log_tail(60)
            );
        }
    }

    /// Kills it with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops it with SIGTERM; asserts that it exits 0 in time.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child; no memory is involved.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_millis(STOP_TIMEOUT_MS);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "{} exited with {status} after SIGTERM; its log:\n{}",
                    self.name,
                    self.log_tail(40)
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "{} did not stop within {STOP_TIMEOUT_MS} ms of SIGTERM",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        let all: Vec<&str> = s.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- the last lines of {}'s log ({}) ---\n{}",
                self.name,
                self.log_path.display(),
                self.log_tail(30)
            );
        }
    }
}

/// A node of the cluster, with what a test needs to know of it.
pub struct Node {
    /// The process.
    pub daemon: Daemon,
    /// Its id.
    pub id: u64,
    /// Its one core's own port.
    pub core_port: u16,
}

/// A local cluster: one metadata service, `nodes` nodes of one core each, one router.
pub struct Cluster {
    /// The metadata service.
    pub meta: Daemon,
    /// Its address.
    pub meta_addr: SocketAddr,
    /// The nodes.
    pub nodes: Vec<Node>,
    /// The router.
    pub router: Daemon,
    /// Its port.
    pub router_port: u16,
    /// Its Redis port (tables [`REDIS_TABLES`]).
    pub redis_port: u16,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts meta, `nodes` nodes (registered) and a router.
    pub fn start(nodes: usize) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("percore-cluster-")
            .tempdir()
            .expect("a temporary directory");
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let meta_port = free_ports(1)[0];
        let meta_addr = SocketAddr::from(([127, 0, 0, 1], meta_port));
        let meta = Daemon::start(
            "percore-meta",
            vec![
                "--data-dir".into(),
                dir.path().join("meta").display().to_string(),
                "--listen".into(),
                meta_addr.to_string(),
                "--log-level".into(),
                "info".into(),
            ],
            "percore-meta ready".into(),
            dir.path().join("meta.log"),
        );
        let mut list = Vec::new();
        for i in 0..nodes {
            let id = i as u64 + 1;
            let ports = free_ports(2);
            let node = Daemon::start(
                "percore-node",
                vec![
                    "--data-dir".into(),
                    dir.path().join(format!("node{id}")).display().to_string(),
                    "--listen-host".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    ports[0].to_string(),
                    "--core-ports".into(),
                    ports[1].to_string(),
                    "--cores".into(),
                    (i % cpus).to_string(),
                    "--memory-budget".into(),
                    "64MiB".into(),
                    "--io-memory".into(),
                    "1MiB".into(),
                    "--node-id".into(),
                    id.to_string(),
                    "--meta".into(),
                    meta_addr.to_string(),
                    "--heartbeat-ms".into(),
                    "200".into(),
                    "--log-level".into(),
                    "info".into(),
                ],
                "percore-node ready".into(),
                dir.path().join(format!("node{id}.log")),
            );
            list.push(Node {
                daemon: node,
                id,
                core_port: ports[1],
            });
        }
        let ports = free_ports(2);
        let (router_port, redis_port) = (ports[0], ports[1]);
        let router = Daemon::start(
            "percore-router",
            vec![
                "--listen-host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                router_port.to_string(),
                "--cores".into(),
                "0".into(),
                "--meta".into(),
                meta_addr.to_string(),
                "--io-memory".into(),
                "1MiB".into(),
                "--redis-port".into(),
                redis_port.to_string(),
                "--redis-tables".into(),
                REDIS_TABLES.join(","),
                "--log-level".into(),
                "info".into(),
            ],
            "percore-router ready".into(),
            dir.path().join("router.log"),
        );
        let cluster = Cluster {
            meta,
            meta_addr,
            nodes: list,
            router,
            router_port,
            redis_port,
            _dir: dir,
        };
        cluster.wait_for_nodes(nodes);
        cluster
    }

    /// Waits until meta lists `count` live nodes.
    pub fn wait_for_nodes(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
        loop {
            if let Ok(ClusterReply::Nodes(nodes)) = self.meta_call(&ClusterRequest::ListNodes) {
                if nodes.iter().filter(|n| n.alive).count() >= count {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "meta did not list {count} live nodes in time"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A blocking client of the router.
    pub fn client(&self) -> blocking::Client {
        blocking::Client::connect(
            SocketAddr::from(([127, 0, 0, 1], self.router_port)),
            Some(Duration::from_millis(REQUEST_TIMEOUT_MS)),
        )
        .expect("connect to the router")
    }

    /// One cluster message to meta (admin: list nodes, move a partition), over a fresh
    /// connection.
    pub fn meta_call(&self, request: &ClusterRequest) -> Result<ClusterReply, String> {
        cluster_call(self.meta_addr, request)
    }
}

/// One cluster message over a fresh blocking connection.
pub fn cluster_call(addr: SocketAddr, request: &ClusterRequest) -> Result<ClusterReply, String> {
    blocking::Client::connect(addr, Some(Duration::from_millis(REQUEST_TIMEOUT_MS)))
        .and_then(|mut c| c.cluster_call(request))
        .map_err(|e| e.to_string())
}
