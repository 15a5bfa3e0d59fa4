//! `cargo xtask demo`: a local cluster under a load, ending in an SLO report.
//!
//! It starts, as separate processes on 127.0.0.1, one metadata service, three nodes and one
//! router; creates `usertable` through the router; loads it and runs YCSB-A through the
//! router from `percore-perf`; prints perf's SLO table; writes the HTML report and the
//! HdrHistogram log; stops every process with SIGTERM and ends with one JSON line. The
//! router also serves the Redis protocol on port 6380 (another port if that one is taken):
//! while the load runs, `redis-cli -p 6380 GET user00000000000000000042` reads an item, and
//! the demo itself writes and reads one item that way before it stops.
//!
//! Nothing is left running: each daemon is stopped on the way out, killed if it does not
//! stop, and killed when xtask unwinds from an error. Ctrl-C reaches every daemon too (they
//! share the terminal's process group), and each treats SIGINT like SIGTERM.
//!
//! Cores: this machine has two, and five daemons plus the load generator share them. The
//! nodes take CPUs 1, 0 and 1, the router CPU 0, meta is unpinned, the generator CPU 0. The
//! figures say how a cluster behaves when its processes contend for the cores, not what a
//! node can do (that is `cargo xtask bench node`).

use crate::node_bench::{load, num, phase, s};
use crate::procs::{self, Daemon, ScratchDir};
use crate::Result;

/// Nodes in the demo cluster.
const NODES: usize = 3;
/// Each node's CPU.
const NODE_CPUS: [&str; NODES] = ["1", "0", "1"];
/// The router's CPU.
const ROUTER_CPU: &str = "0";
/// Page cache per node: the demo's 100,000 items of 1 KB fit in a fraction of it.
const NODE_MEMORY_BUDGET: &str = "512MiB";
/// The Redis port the demo's router serves, as the issue asks; another free one if taken.
const DEMO_REDIS_PORT: u16 = 6380;
/// The demo's records.
const DEMO_RECORDS: u64 = 100_000;
/// The demo's rate: well inside what five processes on two cores serve.
const DEMO_RATE_PER_S: u64 = 5_000;
/// The demo's measured seconds unless `--seconds` says.
const DEMO_SECONDS_DEFAULT: u32 = 20;

/// The running cluster; dropping it kills whatever still runs.
struct Cluster {
    router: Option<Daemon>,
    nodes: Vec<Daemon>,
    meta: Option<Daemon>,
    router_port: u16,
    redis_port: u16,
    _dirs: Vec<ScratchDir>,
}

impl Cluster {
    fn start() -> Result<Cluster> {
        let meta_dir = ScratchDir::new("demo-meta")?;
        let (meta, meta_addr) = Daemon::meta(&meta_dir.0)?;
        let mut dirs = vec![meta_dir];
        let mut nodes = Vec::new();
        for (i, cpu) in NODE_CPUS.iter().enumerate() {
            let dir = ScratchDir::new(&format!("demo-node{}", i + 1))?;
            let id = i as u64 + 1;
            let (node, _) = Daemon::cluster_node(&dir.0, cpu, id, &meta_addr, NODE_MEMORY_BUDGET)?;
            nodes.push(node);
            dirs.push(dir);
        }
        let redis_port = if std::net::TcpListener::bind(("127.0.0.1", DEMO_REDIS_PORT)).is_ok() {
            DEMO_REDIS_PORT
        } else {
            let other = procs::free_port_block(1)?;
            eprintln!("demo: port {DEMO_REDIS_PORT} is taken; Redis clients get port {other}");
            other
        };
        let (router, router_port) = Daemon::router(ROUTER_CPU, &meta_addr, Some(redis_port))?;
        Ok(Cluster {
            router: Some(router),
            nodes,
            meta: Some(meta),
            router_port,
            redis_port,
            _dirs: dirs,
        })
    }

    /// Stops the router, then the nodes, then meta, each with SIGTERM; reports the first
    /// failure after trying them all.
    fn stop(mut self) -> Result<()> {
        let mut first = None;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        };
        if let Some(r) = self.router.take() {
            note(r.stop());
        }
        for n in self.nodes.drain(..) {
            note(n.stop());
        }
        if let Some(m) = self.meta.take() {
            note(m.stop());
        }
        first.map_or(Ok(()), Err)
    }
}

/// `cargo xtask demo [--seconds N]`.
pub fn demo(seconds: Option<u32>) -> Result<()> {
    let seconds = seconds.unwrap_or(DEMO_SECONDS_DEFAULT);
    procs::build_release(&["shard-node", "meta", "router", "perf"])?;
    let cluster = Cluster::start()?;
    let port = cluster.router_port;
    load(port, DEMO_RECORDS)?;
    let report = procs::target_dir().join("percore-demo.html");
    let hdr_log = procs::target_dir().join("percore-demo.hlog");
    let extra = [
        s("--html"),
        report.display().to_string(),
        s("--hist-log"),
        hdr_log.display().to_string(),
    ];
    let total = phase(
        port,
        "a",
        Some(DEMO_RATE_PER_S),
        DEMO_RECORDS,
        seconds,
        &extra,
    )?;
    let redis = redis_check(cluster.redis_port);
    cluster.stop()?;
    eprintln!("demo: {}", redis?);
    let ms = |name: &str| num(&total, name).map(|us| us / 1000.0);
    eprintln!("demo: meta, {NODES} nodes and a router on 127.0.0.1; load through the router");
    eprintln!("demo: SLO report written to {}", report.display());
    eprintln!(
        "demo: HdrHistogram interval log written to {}",
        hdr_log.display()
    );
    println!(
        "{{\"ops_per_s\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3},\"errors\":{}}}",
        num(&total, "ops_per_s")?,
        ms("p50_us")?,
        ms("p99_us")?,
        ms("p999_us")?,
        ms("max_us")?,
        num(&total, "errors")?
    );
    Ok(())
}

/// Writes and reads one item through the router's Redis port, as a Redis client would.
fn redis_check(port: u16) -> Result<String> {
    use std::io::{BufRead, BufReader, Write};
    let fail = |e: std::io::Error| format!("the Redis port {port}: {e}");
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(fail)?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .map_err(fail)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(fail)?);
    (&stream)
        .write_all(b"SET demo:greeting hello\r\nGET demo:greeting\r\n")
        .map_err(fail)?;
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(fail)?;
        lines.push(line.trim_end().to_string());
    }
    if lines[0] != "+OK" || lines[2] != "hello" {
        return Err(format!("the Redis port {port} answered {lines:?}"));
    }
    Ok(format!(
        "Redis port {port}: SET demo:greeting -> {}, GET -> {}",
        lines[0], lines[2]
    ))
}
