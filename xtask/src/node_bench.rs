//! `cargo xtask bench node`: a real node under a YCSB load.
//!
//! It starts `percore-node` on a fresh data directory on the data disk, drive it with
//! `percore-perf`, and stop it with SIGTERM. The cores are shared the same way in every run
//! (see [`NODE_CORES`] and [`LOAD_CORES`]): on this 2-core machine the load generator and the
//! node cannot each have the machine, so each gets one core, and every figure says so.

use std::process::{Command, Stdio};

use crate::procs::{self, field, json_fields, Node, ScratchDir};
use crate::Result;

/// The node's cores. One core for the node, one for the load: each side's latency then
/// measures itself, not the scheduler's choice between the two.
const NODE_CORES: &str = "1";
/// The load generator's cores.
const LOAD_CORES: &str = "0";
/// How the cores were shared, for every JSON line (BENCHMARKS.md's `setup`).
const SETUP: &str = "server core 1, load core 0";
/// The generator's real-time priority (SCHED_FIFO, `percore-perf --realtime-priority`).
/// The generator has its core to itself here, yet on this machine other tasks (an agent
/// at nice -10, the kernel's DAMON thread) took that core for 1 to 9 ms a few times a
/// second; every request due meanwhile went out late, and the open-loop figures charged
/// the wait to the node (YCSB-C at 220 K reads/s, three alternating rounds: p99 0.96–1.18
/// ms at normal priority, 0.30–0.66 ms under SCHED_FIFO). The node itself stays at normal
/// priority: under SCHED_FIFO it starved the kernel's flush worker on its CPU (YCSB-A max
/// 67 K → 47 K).
const LOAD_REALTIME_PRIORITY: u8 = 1;
/// The table the benchmark and the demo use.
const TABLE: &str = "usertable";
/// Value size of the node benchmark (BENCHMARKS.md: DynamoDB's paper uses 900-byte items).
const VALUE_BYTES: u32 = 1000;
/// Records loaded before a full run (BENCHMARKS.md).
const RECORDS_FULL: u64 = 1_000_000;
/// Records loaded before a quick run.
const RECORDS_QUICK: u64 = 100_000;
/// Seconds of each measured phase of a full run, after the warm-up.
const PHASE_S_FULL: u32 = 20;
/// Seconds of each measured phase of a quick run.
const PHASE_S_QUICK: u32 = 5;
/// Warm-up seconds before each phase (not measured).
const WARMUP_S: u32 = 2;
/// Warm-up seconds before a `max` phase of the node benchmark: the rate it reports should be
/// one the node keeps, and its first seconds at full speed are not. Right after the load,
/// YCSB-A ran at 106–148 K ops/s for 8–16 s and then at 67–95 K, as its checkpoints fell
/// behind (README); measured from the 2nd second, the maximum was that burst, and the
/// phases at 50 and 75 % of it were overload. 30 s covers the burst and the first
/// checkpoints at full load. The rate still drifts down later (no limit makes writes wait
/// for checkpoints yet).
const MAX_WARMUP_S: u32 = 30;
/// Connections the generator opens. Two, not more: each answer costs the node a send that
/// wakes the generator (on loopback the sender pays for the receiver), so fewer, fuller
/// connections halved the node's CPU per request against eight (measured at 20 K ops/s).
const CONNECTIONS: u32 = 2;
/// The fractions of the maximum at which each workload is measured again, open-loop.
const LOAD_FRACTIONS_PERCENT: &[u32] = &[25, 50, 75];
/// The node's page-cache budget in the benchmark: enough for the loaded records' pages.
const NODE_MEMORY_BUDGET: &str = "4GiB";

fn perf(args: &[String]) -> Result<Vec<String>> {
    let bin = procs::release_bin("percore-perf");
    eprintln!("xtask: $ {} {}", bin.display(), args.join(" "));
    let out = Command::new(&bin)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("percore-perf failed ({}): {stdout}", out.status));
    }
    Ok(stdout.lines().map(str::to_owned).collect())
}

pub(crate) fn s(v: impl ToString) -> String {
    v.to_string()
}

pub(crate) fn load(port: u16, records: u64) -> Result<()> {
    let lines = perf(&[
        s("load"),
        s("--addr"),
        format!("127.0.0.1:{port}"),
        s("--table"),
        s(TABLE),
        s("--create-table"),
        s("--quiet"),
        s("--record-count"),
        s(records),
        s("--value-size"),
        s(VALUE_BYTES),
        s("--cores"),
        s(LOAD_CORES),
    ])?;
    for l in lines {
        eprintln!("load: {l}");
    }
    Ok(())
}

/// One measured phase after the usual warm-up: returns perf's JSON fields of the total.
pub(crate) fn phase(
    port: u16,
    workload: &str,
    rate: Option<u64>,
    records: u64,
    seconds: u32,
    extra: &[String],
) -> Result<Vec<(String, String)>> {
    phase_after(port, workload, rate, records, WARMUP_S, seconds, extra)
}

/// One measured phase after `warmup_s` seconds of the same load.
fn phase_after(
    port: u16,
    workload: &str,
    rate: Option<u64>,
    records: u64,
    warmup_s: u32,
    seconds: u32,
    extra: &[String],
) -> Result<Vec<(String, String)>> {
    let mut args = vec![
        s("run"),
        s("--addr"),
        format!("127.0.0.1:{port}"),
        s("--table"),
        s(TABLE),
        s("--workload"),
        s(workload),
        s("--distribution"),
        s("zipfian"),
        s("--record-count"),
        s(records),
        s("--value-size"),
        s(VALUE_BYTES),
        s("--rate"),
        rate.map_or_else(|| s("max"), s),
        s("--warmup-s"),
        s(warmup_s),
        s("--duration-s"),
        s(seconds),
        s("--connections"),
        s(CONNECTIONS),
        s("--cores"),
        s(LOAD_CORES),
        s("--json"),
    ];
    args.extend_from_slice(extra);
    let lines = perf(&args)?;
    let total = lines
        .iter()
        .map(|l| json_fields(l))
        .find(|f| field(f, "op").is_none_or(|op| op == "total"))
        .ok_or_else(|| format!("percore-perf printed no total line: {lines:?}"))?;
    Ok(total)
}

pub(crate) fn num(fields: &[(String, String)], name: &str) -> Result<f64> {
    field(fields, name)
        .ok_or_else(|| format!("percore-perf's line has no {name:?}"))?
        .parse()
        .map_err(|_| format!("percore-perf's {name:?} is not a number"))
}

/// Whether this process may run a program under SCHED_FIFO at `priority` (asks `chrt`).
fn realtime_allowed(priority: u8) -> bool {
    Command::new("chrt")
        .args(["-f", &priority.to_string(), "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `cargo xtask bench node [--quick] [--json]`.
pub fn bench(quick: bool, json: bool) -> Result<()> {
    procs::build_release(&["shard-node", "perf"])?;
    let records = if quick { RECORDS_QUICK } else { RECORDS_FULL };
    let seconds = if quick { PHASE_S_QUICK } else { PHASE_S_FULL };
    let (setup, priority) = if realtime_allowed(LOAD_REALTIME_PRIORITY) {
        let flag = vec![s("--realtime-priority"), s(LOAD_REALTIME_PRIORITY)];
        (
            format!("{SETUP} (SCHED_FIFO {LOAD_REALTIME_PRIORITY})"),
            flag,
        )
    } else {
        eprintln!(
            "xtask: SCHED_FIFO is not allowed here: the generator runs at normal priority, \
             and other tasks on its core will show in the tails"
        );
        (format!("{SETUP} (normal priority)"), Vec::new())
    };
    let data = ScratchDir::new("bench-node")?;
    let port = procs::free_port_block(4)?;
    let node = Node::start(
        &data.0,
        port,
        NODE_CORES,
        &["--memory-budget", NODE_MEMORY_BUDGET, "--log-level", "warn"],
    )?;
    load(port, records)?;
    let max_warmup_s = if quick { WARMUP_S } else { MAX_WARMUP_S };
    let mut table = Vec::new();
    for (workload, case) in [("a", "ycsb_a"), ("b", "ycsb_b"), ("c", "ycsb_c")] {
        let max = phase_after(
            port,
            workload,
            None,
            records,
            max_warmup_s,
            seconds,
            &priority,
        )?;
        let max_rate = num(&max, "ops_per_s")?;
        let mut rows = vec![("max".to_owned(), max)];
        for pct in LOAD_FRACTIONS_PERCENT {
            let rate = (max_rate * *pct as f64 / 100.0).round().max(1.0) as u64;
            rows.push((
                format!("{pct}%"),
                phase(port, workload, Some(rate), records, seconds, &priority)?,
            ));
        }
        let peak = node.peak_rss_mib().unwrap_or(f64::NAN);
        for (load, f) in rows {
            let line = format!(
                "{{\"bench\":\"node\",\"case\":\"{case}\",\"load\":\"{load}\",\"ops_per_s\":{:.0},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"errors\":{},\"node_peak_rss_mib\":{peak:.0},\"records\":{records},\"value_bytes\":{VALUE_BYTES},\"setup\":\"{setup}\"}}",
                num(&f, "ops_per_s")?,
                num(&f, "p50_us")?,
                num(&f, "p99_us")?,
                num(&f, "p999_us")?,
                num(&f, "max_us")?,
                num(&f, "errors")?,
            );
            if json {
                println!("{line}");
            }
            table.push((case, load, f, peak));
        }
    }
    node.stop()?;
    if !json {
        println!("node benchmark ({setup}; {records} records of {VALUE_BYTES} B, zipfian; {seconds} s per phase)");
        println!(
            "{:<8} {:>5} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9}",
            "case", "load", "ops/s", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "errors", "peak MiB"
        );
        for (case, load, f, peak) in table {
            println!(
                "{:<8} {:>5} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>7.0} {:>9.0}",
                case,
                load,
                num(&f, "ops_per_s")?,
                num(&f, "p50_us")?,
                num(&f, "p99_us")?,
                num(&f, "p999_us")?,
                num(&f, "max_us")?,
                num(&f, "errors")?,
                peak
            );
        }
    }
    Ok(())
}
