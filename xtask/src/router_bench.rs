//! `cargo xtask bench router`: what the router costs, and the routing trie against a
//! `BTreeMap`.
//!
//! A metadata service, one node (one core) and one router run as separate processes on
//! 127.0.0.1. The same YCSB-B load (95 % reads, 1,000-byte values, zipfian) is driven by
//! `percore-perf` straight at the node's core (`direct`), through the router (`routed`), and
//! through `xtask relay` (`relay`: a byte pipe with a blocked thread per direction, the
//! cheapest process a request can pass through; see `crate::relay`), alternating in one run
//! so that a drift of the machine hits all three: first as fast as each goes (the throughput
//! ratio), then open-loop at the same rate, half of the lowest maximum (the latency each
//! adds). The relay is the peer: what any process in the middle costs on this machine, which
//! the router pays too before any work of its own. The trie's case runs the `routing`
//! crate's own benchmark.
//!
//! Cores: the node on CPU 1; the router, the relay and the generator share CPU 0 (there are
//! two). The routed and relayed figures therefore include the middle process competing with
//! the generator for its core.

use crate::node_bench::{load, num, phase};
use crate::procs::{self, Daemon, ScratchDir};
use crate::{run, Result};

/// The node's CPU.
const NODE_CPU: &str = "1";
/// The router's CPU (and the relay's).
const ROUTER_CPU: &str = "0";
/// How the cores were shared, for every JSON line.
const SETUP: &str = "node core 1; router or relay core 0; load core 0";
/// Records loaded first.
const RECORDS_FULL: u64 = 100_000;
/// Records loaded first in a quick run.
const RECORDS_QUICK: u64 = 20_000;
/// Seconds per measured phase.
const PHASE_S_FULL: u32 = 15;
/// Seconds per measured phase in a quick run.
const PHASE_S_QUICK: u32 = 4;
/// Rounds of (direct, relay, routed) at each load; the figures are each side's median round.
const ROUNDS: usize = 2;

struct Side {
    max: Vec<Vec<(String, String)>>,
    fixed: Vec<Vec<(String, String)>>,
}

fn median_by(rows: &[Vec<(String, String)>], name: &str) -> Result<f64> {
    let mut v: Vec<f64> = rows.iter().map(|r| num(r, name)).collect::<Result<_>>()?;
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}

/// `cargo xtask bench router [--quick] [--json]`.
pub fn bench(quick: bool, json: bool) -> Result<()> {
    procs::build_release(&["shard-node", "meta", "router", "perf"])?;
    let records = if quick { RECORDS_QUICK } else { RECORDS_FULL };
    let seconds = if quick { PHASE_S_QUICK } else { PHASE_S_FULL };
    let meta_dir = ScratchDir::new("bench-router-meta")?;
    let node_dir = ScratchDir::new("bench-router-node")?;
    let (meta, meta_addr) = Daemon::meta(&meta_dir.0)?;
    let (node, node_port) = Daemon::cluster_node(&node_dir.0, NODE_CPU, 1, &meta_addr, "2GiB")?;
    let (router, router_port) = Daemon::router(ROUTER_CPU, &meta_addr, None)?;
    // The table is created through the router (meta places it on the one node); the node's
    // core port then holds every partition, so `direct` (and the relay) need no routing.
    load(router_port, records)?;
    let direct_port = node_port + 1;
    let (relay, relay_port) = Daemon::relay(ROUTER_CPU, direct_port)?;
    let side = || Side {
        max: Vec::new(),
        fixed: Vec::new(),
    };
    let (mut direct, mut relayed, mut routed) = (side(), side(), side());
    for _ in 0..ROUNDS {
        let sides = [
            (direct_port, &mut direct.max),
            (relay_port, &mut relayed.max),
            (router_port, &mut routed.max),
        ];
        for (port, rows) in sides {
            rows.push(phase(port, "b", None, records, seconds, &[])?);
        }
    }
    // Half of the lowest maximum: a rate every side serves without queueing, so that the
    // difference in latency is what the middle process costs, not its saturation.
    let mut lowest_max = f64::INFINITY;
    for s in [&direct, &relayed, &routed] {
        lowest_max = lowest_max.min(median_by(&s.max, "ops_per_s")?);
    }
    let rate = (lowest_max / 2.0).round().max(1.0) as u64;
    for _ in 0..ROUNDS {
        let sides = [
            (direct_port, &mut direct.fixed),
            (relay_port, &mut relayed.fixed),
            (router_port, &mut routed.fixed),
        ];
        for (port, rows) in sides {
            rows.push(phase(port, "b", Some(rate), records, seconds, &[])?);
        }
    }
    drop(relay);
    router.stop()?;
    node.stop()?;
    meta.stop()?;

    let mut table = Vec::new();
    for (case, side) in [
        ("direct", &direct),
        ("relay", &relayed),
        ("routed", &routed),
    ] {
        for (load, rows) in [("max", &side.max), ("fixed", &side.fixed)] {
            let row = (
                case,
                load,
                median_by(rows, "ops_per_s")?,
                median_by(rows, "p50_us")?,
                median_by(rows, "p99_us")?,
                median_by(rows, "errors")?,
            );
            if json {
                println!(
                    "{{\"bench\":\"router\",\"case\":\"{case}\",\"load\":\"{load}\",\"ops_per_s\":{:.0},\"p50_us\":{},\"p99_us\":{},\"errors\":{},\"workload\":\"ycsb_b\",\"records\":{records},\"setup\":\"{SETUP}\"}}",
                    row.2, row.3, row.4, row.5
                );
            }
            table.push(row);
        }
    }
    let get = |case: &str, load: &str| {
        table
            .iter()
            .find(|r| r.0 == case && r.1 == load)
            .copied()
            .expect("every row was measured")
    };
    let (d_max, l_max, r_max) = (
        get("direct", "max"),
        get("relay", "max"),
        get("routed", "max"),
    );
    let (d_fix, l_fix, r_fix) = (
        get("direct", "fixed"),
        get("relay", "fixed"),
        get("routed", "fixed"),
    );
    eprintln!("router benchmark ({SETUP}; YCSB-B, {records} records; median of {ROUNDS} rounds)");
    eprintln!(
        "{:<8} {:>6} {:>10} {:>9} {:>9} {:>7}",
        "case", "load", "ops/s", "p50 µs", "p99 µs", "errors"
    );
    for r in &table {
        eprintln!(
            "{:<8} {:>6} {:>10.0} {:>9.0} {:>9.0} {:>7.0}",
            r.0, r.1, r.2, r.3, r.4, r.5
        );
    }
    eprintln!(
        "routed/direct throughput at max: {:.2} (target ≥ 0.70); p50 added at {rate} ops/s: {:.0} µs (target ≤ 50)",
        r_max.2 / d_max.2,
        r_fix.3 - d_fix.3
    );
    eprintln!(
        "the peer, a byte relay: relay/direct throughput at max {:.2}; p50 added {:.0} µs; the router beyond the relay: {:.2} of its throughput, {:.0} µs more at p50",
        l_max.2 / d_max.2,
        l_fix.3 - d_fix.3,
        r_max.2 / l_max.2,
        r_fix.3 - l_fix.3
    );

    // The trie against a BTreeMap, in process.
    let mut args = vec!["bench", "--quiet", "-p", "routing", "--bench", "trie", "--"];
    if quick {
        args.push("--quick");
    }
    if json {
        args.push("--json");
    }
    run("cargo", &args)
}
