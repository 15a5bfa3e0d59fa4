//! Starting and stopping a real `percore-node` for the end-to-end and crash tests.
//!
//! A [`Node`] is the binary started on 127.0.0.1 with free ports, a data directory of the
//! test's choosing and its log in a file beside it. It is ready when it prints
//! `percore-node ready port=P`. Dropping it kills it (SIGKILL) and, if the test is failing,
//! prints the tail of its log, which is usually where the reason is.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use client::blocking;

/// How long a node may take to print its ready line (recovery included). Generous: the
/// tests run in parallel on two shared cores, and recovery after a kill under load replays
/// the WAL. (Starts and restarts take 0.1 to 0.7 s here.)
pub const READY_TIMEOUT_MS: u64 = 20_000;

/// Starts of one node before a test gives up: a start that hangs (see [`STARTS`]) is
/// killed, reported on stderr, and tried again on the same data directory — which makes it
/// one more crash point for recovery, not a way around one.
pub const START_ATTEMPTS_MAX: u32 = 3;

/// How long a stopping node (SIGTERM) may take to drain and exit before it is killed.
pub const STOP_TIMEOUT_MS: u64 = 15_000;

/// How long one request of a test's blocking client may wait.
pub const REQUEST_TIMEOUT_MS: u64 = 20_000;

/// Serialises node start-ups within one test binary. When about ten nodes start at once
/// on this 2-CPU machine, about one in ten never becomes ready: one core's executor sleeps
/// in io_uring waiting for a completion during WAL open (both executors parked in
/// `io_uring_enter`). One at a time it is rarer, but it still happens now and then (about
/// one start in twenty while other glommio processes run on the same CPUs). Until that is
/// understood the tests start their nodes one at a time (and run them in parallel after),
/// and a start that hangs is tried again ([`START_ATTEMPTS_MAX`]).
static STARTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The ports a node listens on: its shared port and each core's own.
#[derive(Clone, Debug)]
pub struct Ports {
    /// The shared (SO_REUSEPORT) port.
    pub shared: u16,
    /// Each core's own port, in core order.
    pub cores: Vec<u16>,
}

impl Ports {
    /// Ports the kernel has just handed out as free: one shared, one per core.
    pub fn free(cores: usize) -> Ports {
        // Hold every listener until all are chosen, so that the ports are distinct.
        let listeners: Vec<TcpListener> = (0..=cores)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        Ports {
            shared: ports[0],
            cores: ports[1..].to_vec(),
        }
    }
}

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Executors (pinned to CPUs 0..cores, wrapping on a smaller machine).
    pub cores: usize,
    /// Further flags, appended last (they win).
    pub extra_args: Vec<String>,
}

impl Default for NodeOptions {
    fn default() -> NodeOptions {
        NodeOptions {
            cores: 2,
            extra_args: Vec::new(),
        }
    }
}

/// A running `percore-node`.
pub struct Node {
    child: Option<Child>,
    /// Its ports.
    pub ports: Ports,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log (stderr and tracing output).
    pub log_path: PathBuf,
    options: NodeOptions,
}

fn cpu_list(cores: usize) -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // More executors than CPUs would need Placement::Unbound; the node pins each one.
    (0..cores)
        .map(|i| (i % cpus).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl Node {
    /// Starts a node on fresh free ports with `data_dir` (created if missing) and waits for
    /// it to be ready. Panics, with the log's tail, if it does not become ready.
    pub fn start(data_dir: &Path, options: NodeOptions) -> Node {
        let ports = Ports::free(options.cores);
        Node::start_on(data_dir, ports, options)
    }

    /// Starts a node on these ports (a restart keeps its ports, as an operator would).
    pub fn start_on(data_dir: &Path, ports: Ports, options: NodeOptions) -> Node {
        // One node of this test binary starts at a time: nodes started together (pinned to
        // the same CPUs) have been seen to hang in start-up (reported; see STARTS).
        let _one_start = STARTS.lock().unwrap_or_else(|p| p.into_inner());
        for attempt in 1..=START_ATTEMPTS_MAX {
            match Node::try_start(data_dir, ports.clone(), options.clone()) {
                Ok(node) => return node,
                Err(mut hung) => {
                    let tail = hung.log_tail(20);
                    hung.kill();
                    assert!(
                        attempt < START_ATTEMPTS_MAX,
                        "percore-node was not ready within {READY_TIMEOUT_MS} ms, \
                         {START_ATTEMPTS_MAX} times; its log:\n{tail}"
                    );
                    eprintln!(
                        "WARNING: percore-node start {attempt} was not ready within \
                         {READY_TIMEOUT_MS} ms (a known start-up hang); killed it, starting \
                         again on the same data directory. Its log:\n{tail}"
                    );
                }
            }
        }
        unreachable!("every attempt returns or asserts")
    }

    /// One start; the node, or the node that did not become ready in time (still running).
    fn try_start(data_dir: &Path, ports: Ports, options: NodeOptions) -> Result<Node, Box<Node>> {
        std::fs::create_dir_all(data_dir).expect("create the data directory");
        let log_path = data_dir.parent().unwrap_or(Path::new("/tmp")).join(format!(
            "{}-node.log",
            data_dir.file_name().unwrap().to_string_lossy()
        ));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open the node's log");
        let core_ports = ports
            .cores
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut command = Command::new(env!("CARGO_BIN_EXE_percore-node"));
        command
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen-host", "127.0.0.1"])
            .args(["--port", &ports.shared.to_string()])
            .args(["--core-ports", &core_ports])
            .args(["--cores", &cpu_list(options.cores)])
            .args(["--memory-budget", "64MiB"])
            .args(["--log-level", "info"])
            .args(&options.extra_args)
            // No PERCORE_* variable of the developer's shell may change the test.
            .env_remove("PERCORE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = command.spawn().expect("start percore-node");
        let stdout = child.stdout.take().expect("piped stdout");
        let (ready_tx, ready_rx) = mpsc::channel();
        let expected = format!("percore-node ready port={}", ports.shared);
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if line.trim() == expected {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        let mut node = Node {
            child: Some(child),
            ports,
            data_dir: data_dir.to_owned(),
            log_path,
            options,
        };
        let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(()) => return Ok(node),
                Err(mpsc::RecvTimeoutError::Disconnected)
                | Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if let Some(status) = node.child.as_mut().unwrap().try_wait().unwrap() {
                node.child = None;
                panic!(
                    "percore-node exited with {status} before it was ready; its log:\n{}",
                    node.log_tail(60)
                );
            }
            if Instant::now() > deadline {
                return Err(Box::new(node));
            }
        }
    }

    /// Starts the node again on the same data directory and ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a node that is stopped");
        let started = Node::start_on(&self.data_dir, self.ports.clone(), self.options.clone());
        *self = started;
    }

    /// The shared port's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.shared))
    }

    /// Core `i`'s own port's address.
    pub fn core_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.cores[i]))
    }

    /// A blocking client on the shared port.
    pub fn client(&self) -> blocking::Client {
        Node::client_at(self.addr())
    }

    /// A blocking client on an address.
    pub fn client_at(addr: SocketAddr) -> blocking::Client {
        blocking::Client::connect(addr, Some(Duration::from_millis(REQUEST_TIMEOUT_MS)))
            .expect("connect to the node")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => c.try_wait().unwrap().is_none(),
        }
    }

    /// Kills the node with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the node with SIGTERM (it drains, syncs and exits) and returns its exit
    /// status; kills it if it has not exited within [`STOP_TIMEOUT_MS`] (then `None`).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_millis(STOP_TIMEOUT_MS);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        let all: Vec<&str> = s.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- the last lines of the node's log ({}) ---\n{}",
                self.log_path.display(),
                self.log_tail(40)
            );
        }
    }
}

/// A fresh temporary directory holding `data/` for a node (and its log beside it).
pub fn temp_data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("percore-test-")
        .tempdir()
        .expect("a temporary directory");
    let data = dir.path().join("data");
    (dir, data)
}
