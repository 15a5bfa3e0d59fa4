//! `cargo xtask bench redis`: percore against redis-server 7, driven by `redis-benchmark`.
//!
//! Three targets run side by side in one invocation: percore (`percore-meta`, one
//! `percore-node` core and one `percore-router` core serving RESP2 through
//! `--redis-port`), redis-server with `appendfsync always` (every reply durable, the same
//! promise as percore's OK) and redis-server with `appendfsync everysec` (the usual
//! deployment, which may lose the last second). Each is preloaded with the whole key space
//! (so that every GET hits), then `redis-benchmark -t set|get -d 100 -r KEYS -c 50` runs
//! against each, without pipelining and with `-P 16`, in rounds of [percore, always,
//! everysec] so that a drift of the machine hits all three alike. Each figure is the median
//! round (by throughput) of its (server, test, pipeline).
//!
//! Cores: the servers' work runs on CPU 1 (percore's node, each redis-server); CPU 0 holds
//! `redis-benchmark` and percore's router, so percore's figures include its router competing
//! with the load generator for its core, as the issue's two-process setup implies.
//!
//! `redis-benchmark` measures closed-loop (each of the 50 clients waits for its answers), so
//! its latencies are service times under full load, not open-loop latencies at a set rate.
//! It exits non-zero at the first error reply, so a run that finishes had no errors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::node_bench::s;
use crate::procs::{self, Daemon, ScratchDir};
use crate::Result;

/// percore's node CPU, and every redis-server's: the servers get the same core.
const SERVER_CPU: &str = "1";
/// percore's router CPU, shared with the load generator (there are two CPUs).
const ROUTER_CPU: &str = "0";
/// The load generator's CPU.
const LOAD_CPU: &str = "0";
/// How the cores were shared, for every JSON line.
const SETUP: &str =
    "server core 1 (percore node, redis-server); load core 0 (redis-benchmark, percore router)";
/// The percore table behind Redis db 0.
const TABLE: &str = "usertable";
/// Bytes of each value (the issue: 100-byte values).
const VALUE_BYTES: usize = 100;
/// Keys in a full run (the issue: 1,000,000 random keys).
const KEYS_FULL: u64 = 1_000_000;
/// Keys in a quick run: a preload of a few seconds.
const KEYS_QUICK: u64 = 100_000;
/// redis-benchmark's parallel connections (the issue: 50 clients).
const CLIENTS: u32 = 50;
/// Requests each client sends before it waits for their answers: none, then 16.
const PIPELINES: [u32; 2] = [1, 16];
/// The tests, in the order run (SET first, so that the GETs follow the writes).
const TESTS: [&str; 2] = ["set", "get"];
/// Seconds each measured phase lasts in a full run: 3 rounds × 12 phases × 8 s ≈ 5 min.
const PHASE_S_FULL: f64 = 8.0;
/// Seconds each measured phase lasts in a quick run.
const PHASE_S_QUICK: f64 = 2.0;
/// Rounds of a full run; an odd count, so that the median is one measured round.
const ROUNDS_FULL: usize = 3;
/// Rounds of a quick run.
const ROUNDS_QUICK: usize = 1;
/// Requests of the first calibration run of each phase (it also warms the server up).
const CALIBRATION_REQUESTS_START: u64 = 20_000;
/// A calibration run shorter than this is repeated with more requests: shorter ones say
/// little about the rate (connection set-up dominates).
const CALIBRATION_MIN_S: f64 = 0.5;
/// Fewest requests in a measured phase, so that 50 clients × 16 pipelined still make a
/// few hundred round trips even on a slow target.
const PHASE_REQUESTS_MIN: u64 = 20_000;
/// A run that takes this many times its expected duration (plus [`RUN_SLACK_S`]) is
/// stalled: it is killed and the benchmark fails (redis-benchmark retries a refused
/// connection forever).
const RUN_TIMEOUT_FACTOR: f64 = 5.0;
/// Seconds added to every run's timeout: connection set-up and the last answers.
const RUN_SLACK_S: f64 = 30.0;
/// Preload connections: enough for percore's router to keep its node's core busy.
const PRELOAD_CONNECTIONS: u64 = 8;
/// SETs written on a preload connection before its answers are read.
const PRELOAD_BATCH: u64 = 200;
/// Keys read back after a preload to check that GETs will hit.
const HIT_CHECK_KEYS: u64 = 1_000;
/// How long a reply may take on our own connections (preload, checks) before it is a stall.
const REPLY_TIMEOUT_S: u64 = 60;
/// How long a redis-server may take to answer PING after it starts.
const REDIS_READY_TIMEOUT_S: u64 = 20;
/// How long a redis-server may take to exit after SIGTERM before it is killed.
const REDIS_STOP_TIMEOUT_S: u64 = 30;
/// The redis-server major version the issue compares with.
const REDIS_MAJOR: u32 = 7;
/// Before each phase, wait until both CPUs are this idle (the previous target's flushes
/// land on the shared server core otherwise)...
const QUIET_BUSY_PERCENT: f64 = 15.0;
/// ...over a window of this many milliseconds...
const QUIET_WINDOW_MS: u64 = 250;
/// ...but at most this long (48 phases: a busy machine must not add minutes); the phase
/// then starts anyway and the output says so.
const QUIET_TIMEOUT_S: u64 = 3;
/// The largest reply our own RESP reader accepts, in bytes: far above any value here.
const REPLY_MAX_BYTES: usize = 64 << 20;

/// One of the three servers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Percore,
    RedisAlways,
    RedisEverysec,
}

impl Target {
    const ALL: [Target; 3] = [Target::Percore, Target::RedisAlways, Target::RedisEverysec];

    /// The JSON `server` field (BENCHMARKS.md).
    fn name(self) -> &'static str {
        match self {
            Target::Percore => "percore",
            Target::RedisAlways => "redis_always",
            Target::RedisEverysec => "redis_everysec",
        }
    }
}

/// One `redis-benchmark --csv` result line, latencies in milliseconds as printed.
#[derive(Clone, Debug, PartialEq)]
struct CsvRow {
    test: String,
    rps: f64,
    avg_ms: f64,
    min_ms: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Parses `redis-benchmark --csv` output: a header line naming the columns, then one line
/// per test. Columns are found by name, so that a reordering fails loudly, not silently.
fn parse_csv(out: &str) -> Result<Vec<CsvRow>> {
    let mut lines = out.lines().filter(|l| l.starts_with('"'));
    let header: Vec<String> = split_csv(
        lines
            .next()
            .ok_or_else(|| format!("redis-benchmark printed no CSV header: {out:?}"))?,
    );
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("redis-benchmark's CSV has no {name:?} column: {header:?}"))
    };
    let cols = [
        col("test")?,
        col("rps")?,
        col("avg_latency_ms")?,
        col("min_latency_ms")?,
        col("p50_latency_ms")?,
        col("p95_latency_ms")?,
        col("p99_latency_ms")?,
        col("max_latency_ms")?,
    ];
    let mut rows = Vec::new();
    for line in lines {
        let cells = split_csv(line);
        let cell = |i: usize| {
            cells
                .get(cols[i])
                .ok_or_else(|| format!("short CSV line from redis-benchmark: {line:?}"))
        };
        let number = |i: usize| -> Result<f64> {
            let c = cell(i)?;
            c.parse()
                .map_err(|_| format!("not a number in redis-benchmark's CSV: {c:?} in {line:?}"))
        };
        rows.push(CsvRow {
            test: cell(0)?.to_ascii_lowercase(),
            rps: number(1)?,
            avg_ms: number(2)?,
            min_ms: number(3)?,
            p50_ms: number(4)?,
            p95_ms: number(5)?,
            p99_ms: number(6)?,
            max_ms: number(7)?,
        });
    }
    Ok(rows)
}

/// Splits one CSV line of quoted cells (redis-benchmark quotes every cell, never embeds one).
fn split_csv(line: &str) -> Vec<String> {
    line.trim()
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_owned())
        .collect()
}

/// One RESP2 reply, as our own small client reads it.
#[derive(Debug, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// Appends one command, as a RESP array of bulk strings, to `out`.
fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads one RESP2 reply; a malformed one is an error naming what was wrong.
fn read_reply(r: &mut impl BufRead) -> Result<Reply> {
    let mut line = Vec::new();
    let n = r
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("reading a reply: {e}"))?;
    if n == 0 {
        return Err("the server closed the connection".into());
    }
    if !line.ends_with(b"\r\n") || line.len() < 3 {
        return Err(format!(
            "malformed reply line {:?}",
            String::from_utf8_lossy(&line)
        ));
    }
    let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let length = |body: &str| -> Result<Option<usize>> {
        let n: i64 = body
            .parse()
            .map_err(|_| format!("bad length {body:?} in a reply"))?;
        match n {
            -1 => Ok(None),
            n if n < -1 || n as u64 > REPLY_MAX_BYTES as u64 => {
                Err(format!("reply length {n} out of range"))
            }
            n => Ok(Some(n as usize)),
        }
    };
    match line[0] {
        b'+' => Ok(Reply::Simple(body)),
        b'-' => Ok(Reply::Error(body)),
        b':' => body
            .parse()
            .map(Reply::Integer)
            .map_err(|_| format!("bad integer reply {body:?}")),
        b'$' => match length(&body)? {
            None => Ok(Reply::Bulk(None)),
            Some(len) => {
                let mut data = vec![0; len + 2];
                r.read_exact(&mut data)
                    .map_err(|e| format!("reading a bulk reply of {len} bytes: {e}"))?;
                if !data.ends_with(b"\r\n") {
                    return Err(format!("bulk reply of {len} bytes not ended by CRLF"));
                }
                data.truncate(len);
                Ok(Reply::Bulk(Some(data)))
            }
        },
        b'*' => match length(&body)? {
            None => Ok(Reply::Array(None)),
            Some(len) => {
                let items = (0..len)
                    .map(|_| read_reply(r))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Reply::Array(Some(items)))
            }
        },
        other => Err(format!(
            "unknown reply type byte {:?}",
            char::from(other).escape_default().to_string()
        )),
    }
}

/// A blocking RESP2 connection for the preload and the checks (not for measuring).
struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(port: u16) -> Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("cannot connect to 127.0.0.1:{port}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(REPLY_TIMEOUT_S)))
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        Ok(Conn {
            writer: stream,
            reader,
        })
    }

    /// Sends the encoded commands in `batch` and reads `count` replies.
    fn pipeline(&mut self, batch: &[u8], count: u64) -> Result<Vec<Reply>> {
        self.writer
            .write_all(batch)
            .map_err(|e| format!("sending commands: {e}"))?;
        (0..count).map(|_| read_reply(&mut self.reader)).collect()
    }

    fn call(&mut self, args: &[&[u8]]) -> Result<Reply> {
        let mut out = Vec::new();
        encode_command(&mut out, args);
        Ok(self.pipeline(&out, 1)?.remove(0))
    }
}

/// redis-benchmark's key for number `i` under `-r`: `key:` and 12 digits.
fn bench_key(i: u64) -> String {
    format!("key:{i:012}")
}

/// Writes every key `0..keys` with a value of [`VALUE_BYTES`] bytes (the same `x`s that
/// redis-benchmark writes), over [`PRELOAD_CONNECTIONS`] pipelined connections, then reads
/// back a sample to check that GETs hit. Returns the preload's rate in keys per second.
fn preload(port: u16, keys: u64) -> Result<f64> {
    let started = Instant::now();
    let workers: Vec<_> = (0..PRELOAD_CONNECTIONS)
        .map(|w| {
            std::thread::spawn(move || -> Result<()> {
                let mut conn = Conn::open(port)?;
                let value = vec![b'x'; VALUE_BYTES];
                let mine: Vec<u64> = (w..keys).step_by(PRELOAD_CONNECTIONS as usize).collect();
                for chunk in mine.chunks(PRELOAD_BATCH as usize) {
                    let mut out = Vec::new();
                    for &i in chunk {
                        encode_command(&mut out, &[b"SET", bench_key(i).as_bytes(), &value]);
                    }
                    for (reply, &i) in conn.pipeline(&out, chunk.len() as u64)?.iter().zip(chunk) {
                        if *reply != Reply::Simple("OK".into()) {
                            return Err(format!("preload SET {} answered {reply:?}", bench_key(i)));
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| "a preload thread panicked".to_string())??;
    }
    let rate = keys as f64 / started.elapsed().as_secs_f64();
    // A sample spread over the key space (a fixed stride, so that reruns check the same keys).
    let mut conn = Conn::open(port)?;
    let sample = HIT_CHECK_KEYS.min(keys);
    let mut out = Vec::new();
    for j in 0..sample {
        encode_command(&mut out, &[b"GET", bench_key(j * keys / sample).as_bytes()]);
    }
    let hits = conn
        .pipeline(&out, sample)?
        .iter()
        .filter(|r| matches!(r, Reply::Bulk(Some(v)) if v.len() == VALUE_BYTES))
        .count();
    if hits as u64 != sample {
        return Err(format!(
            "after the preload only {hits} of {sample} sampled keys read back with {VALUE_BYTES} bytes"
        ));
    }
    Ok(rate)
}

/// A running redis-server, pinned to [`SERVER_CPU`]; stopped (SIGTERM, then SIGKILL) when
/// dropped, so that no server outlives an error.
struct RedisServer {
    child: Child,
    port: u16,
    fsync: &'static str,
}

impl RedisServer {
    fn start(dir: &Path, fsync: &'static str) -> Result<RedisServer> {
        let port = procs::free_port_block(1)?;
        let log = dir.join("redis-server.log");
        let args = [
            s("-c"),
            s(SERVER_CPU),
            s("redis-server"),
            s("--port"),
            port.to_string(),
            s("--bind"),
            s("127.0.0.1"),
            s("--appendonly"),
            s("yes"),
            s("--appendfsync"),
            s(fsync),
            s("--save"),
            s(""),
            s("--dir"),
            dir.display().to_string(),
            s("--daemonize"),
            s("no"),
            s("--logfile"),
            log.display().to_string(),
        ];
        let shown: Vec<&str> = args
            .iter()
            .map(|a| if a.is_empty() { "\"\"" } else { a.as_str() })
            .collect();
        eprintln!("xtask: $ taskset {}", shown.join(" "));
        let child = Command::new("taskset")
            .args(&args)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start taskset redis-server: {e}"))?;
        let mut server = RedisServer { child, port, fsync };
        let deadline = Instant::now() + Duration::from_secs(REDIS_READY_TIMEOUT_S);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "redis-server (appendfsync {fsync}) exited at start ({status}); its log:\n{tail}"
                ));
            }
            if let Ok(Reply::Simple(pong)) = Conn::open(port).and_then(|mut c| c.call(&[b"PING"])) {
                if pong == "PONG" {
                    return Ok(server);
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server (appendfsync {fsync}) did not answer PING within {REDIS_READY_TIMEOUT_S} s"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The running server's `redis_version` (from `INFO server`).
    fn version(&self) -> Result<String> {
        match Conn::open(self.port)?.call(&[b"INFO", b"server"])? {
            Reply::Bulk(Some(info)) => String::from_utf8_lossy(&info)
                .lines()
                .find_map(|l| l.strip_prefix("redis_version:"))
                .map(|v| v.trim().to_owned())
                .ok_or_else(|| "INFO server has no redis_version".to_string()),
            other => Err(format!("INFO server answered {other:?}")),
        }
    }

    /// SIGTERM (redis-server syncs its AOF and exits 0), SIGKILL if it does not exit in time.
    fn stop(mut self) -> Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<()> {
        if let Ok(Some(_)) = self.child.try_wait() {
            return Err(format!(
                "redis-server (appendfsync {}) had already exited",
                self.fsync
            ));
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(REDIS_STOP_TIMEOUT_S);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!(
                        "redis-server (appendfsync {}) exited with {status} after SIGTERM",
                        self.fsync
                    ))
                }
                _ if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!(
                        "redis-server (appendfsync {}) did not exit within {REDIS_STOP_TIMEOUT_S} s of SIGTERM",
                        self.fsync
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.terminate();
        }
    }
}

/// Busy and total jiffies of each CPU, from `/proc/stat`.
fn cpu_jiffies() -> Vec<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().take(8).sum();
            // idle and iowait are the 4th and 5th fields.
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total - idle, total)
        })
        .collect()
}

/// Percent busy of each CPU between two [`cpu_jiffies`] readings.
fn busy_percent(before: &[(u64, u64)], after: &[(u64, u64)]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let total = a.1.saturating_sub(b.1);
            if total == 0 {
                0.0
            } else {
                100.0 * a.0.saturating_sub(b.0) as f64 / total as f64
            }
        })
        .collect()
}

/// Waits until every CPU is quieter than [`QUIET_BUSY_PERCENT`]; false if it never was
/// within [`QUIET_TIMEOUT_S`].
fn wait_quiet() -> bool {
    let deadline = Instant::now() + Duration::from_secs(QUIET_TIMEOUT_S);
    while Instant::now() < deadline {
        let before = cpu_jiffies();
        std::thread::sleep(Duration::from_millis(QUIET_WINDOW_MS));
        let busy = busy_percent(&before, &cpu_jiffies());
        if busy.iter().all(|b| *b < QUIET_BUSY_PERCENT) {
            return true;
        }
    }
    false
}

/// One redis-benchmark run's result, with the CPUs' load while it ran.
#[derive(Clone, Debug)]
struct Run {
    row: CsvRow,
    requests: u64,
    cpu_busy_percent: Vec<f64>,
    quiet_before: bool,
}

/// Runs `redis-benchmark` pinned to [`LOAD_CPU`] for one test, after waiting for a quiet
/// machine if `settle`; kills it if it stalls.
fn redis_benchmark(
    port: u16,
    test: &str,
    pipeline: u32,
    keys: u64,
    requests: u64,
    expected_s: f64,
    settle: bool,
) -> Result<Run> {
    let quiet_before = !settle || wait_quiet();
    let args = [
        s("-c"),
        s(LOAD_CPU),
        s("redis-benchmark"),
        s("-h"),
        s("127.0.0.1"),
        s("-p"),
        port.to_string(),
        s("-t"),
        s(test),
        s("-d"),
        s(VALUE_BYTES),
        s("-r"),
        s(keys),
        s("-c"),
        s(CLIENTS),
        s("-n"),
        s(requests),
        s("-P"),
        s(pipeline),
        s("--csv"),
    ];
    let mut child = Command::new("taskset")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start taskset redis-benchmark: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut v = String::new();
        let _ = stdout.read_to_string(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = String::new();
        let _ = stderr.read_to_string(&mut v);
        v
    });
    let before = cpu_jiffies();
    let timeout = Duration::from_secs_f64(expected_s * RUN_TIMEOUT_FACTOR + RUN_SLACK_S);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "redis-benchmark {test} -P {pipeline} -n {requests} on port {port} stalled: killed after {:.0} s",
                timeout.as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let cpu_busy_percent = busy_percent(&before, &cpu_jiffies());
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    // redis-benchmark prints server errors ("Error from server: ...") and exits 1.
    if !status.success() || out.contains("Error") || err.contains("Error") {
        return Err(format!(
            "redis-benchmark {test} -P {pipeline} on port {port} failed ({status}):\n{out}{err}"
        ));
    }
    let rows = parse_csv(&out)?;
    let row = rows
        .into_iter()
        .find(|r| r.test == test)
        .ok_or_else(|| format!("redis-benchmark printed no {test} line: {out}"))?;
    Ok(Run {
        row,
        requests,
        cpu_busy_percent,
        quiet_before,
    })
}

/// Measures how many requests make a phase of `phase_s` seconds on this target, with runs
/// that double as the server's warm-up for this test.
fn calibrate(port: u16, test: &str, pipeline: u32, keys: u64, phase_s: f64) -> Result<u64> {
    let mut requests = CALIBRATION_REQUESTS_START;
    loop {
        let run = redis_benchmark(port, test, pipeline, keys, requests, phase_s, false)?;
        let took_s = requests as f64 / run.row.rps.max(1.0);
        if took_s >= CALIBRATION_MIN_S {
            return Ok(((run.row.rps * phase_s) as u64).max(PHASE_REQUESTS_MIN));
        }
        // Aim at twice the minimum, so that one more run suffices.
        requests = ((run.row.rps * CALIBRATION_MIN_S * 2.0) as u64).max(requests * 2);
    }
}

/// The redis-server version on the PATH, e.g. `7.0.15`, from `redis-server --version`.
fn redis_server_version() -> Result<String> {
    let out = Command::new("redis-server")
        .arg("--version")
        .output()
        .map_err(|e| {
            format!("cannot run redis-server ({e}): install Debian's redis-server (`cargo xtask test` does)")
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .map(str::to_owned)
        .ok_or_else(|| format!("cannot read a version in `redis-server --version`: {text:?}"))
}

/// Fails unless the tools this bench drives are on the PATH: a missing peer fails loudly.
fn check_tools() -> Result<String> {
    for (tool, package) in [
        ("redis-benchmark", "redis-tools"),
        ("taskset", "util-linux"),
    ] {
        if !crate::succeeds("sh", &["-c", &format!("command -v {tool}")]) {
            return Err(format!(
                "{tool} is not installed: install Debian's {package} (`cargo xtask test` does)"
            ));
        }
    }
    let version = redis_server_version()?;
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("redis-server version {version:?} is not major.minor.patch"))?;
    if major != REDIS_MAJOR {
        return Err(format!(
            "redis-server is {version}; the issue compares with redis-server {REDIS_MAJOR}.x"
        ));
    }
    Ok(version)
}

/// Fails unless the built `percore-router` serves RESP (`--redis-port`).
fn check_router_serves_resp() -> Result<()> {
    let bin = procs::release_bin("percore-router");
    let out = Command::new(&bin)
        .arg("--help")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    // The help goes to standard error or output, depending on how the daemon prints it.
    let help = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if help.contains("--redis-port") && help.contains("--redis-tables") {
        Ok(())
    } else {
        Err(format!(
            "{} has no --redis-port/--redis-tables: percore's RESP server is not built into the router yet",
            bin.display()
        ))
    }
}

/// Creates [`TABLE`] through the router's native port (percore-perf creates it; the one
/// record it writes, `user` + 20 digits, is outside redis-benchmark's `key:` space).
fn create_table(native_port: u16) -> Result<()> {
    let bin = procs::release_bin("percore-perf");
    let args = [
        s("load"),
        s("--addr"),
        format!("127.0.0.1:{native_port}"),
        s("--table"),
        s(TABLE),
        s("--create-table"),
        s("--quiet"),
        s("--record-count"),
        s(1),
        s("--value-size"),
        s(VALUE_BYTES),
        s("--cores"),
        s(LOAD_CPU),
    ];
    eprintln!("xtask: $ {} {}", bin.display(), args.join(" "));
    let status = Command::new(&bin)
        .args(&args)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("percore-perf could not create {TABLE}: {status}"))
    }
}

/// The median run by throughput (rounds are odd, so it is one measured run).
fn median_run(runs: &[Run]) -> &Run {
    let mut sorted: Vec<&Run> = runs.iter().collect();
    sorted.sort_by(|a, b| a.row.rps.total_cmp(&b.row.rps));
    sorted[sorted.len() / 2]
}

/// `cargo xtask bench redis [--quick] [--json]`.
pub fn bench(quick: bool, json: bool) -> Result<()> {
    let version = check_tools()?;
    procs::build_release(&["shard-node", "meta", "router", "perf"])?;
    check_router_serves_resp()?;
    let keys = if quick { KEYS_QUICK } else { KEYS_FULL };
    let phase_s = if quick { PHASE_S_QUICK } else { PHASE_S_FULL };
    let rounds = if quick { ROUNDS_QUICK } else { ROUNDS_FULL };
    eprintln!("xtask: redis bench: redis-server {version}, {keys} keys of {VALUE_BYTES} B, {CLIENTS} clients, pipelines {PIPELINES:?}, {rounds} round(s) of ~{phase_s} s phases; {SETUP}");

    // Directories first: they are dropped (removed) after the servers that use them.
    let meta_dir = ScratchDir::new("bench-redis-meta")?;
    let node_dir = ScratchDir::new("bench-redis-node")?;
    let always_dir = ScratchDir::new("bench-redis-always")?;
    let everysec_dir = ScratchDir::new("bench-redis-everysec")?;

    let (meta, meta_addr) = Daemon::meta(&meta_dir.0)?;
    let (node, _) = Daemon::cluster_node(&node_dir.0, SERVER_CPU, 1, &meta_addr, "2GiB")?;
    let percore_port = procs::free_port_block(1)?;
    // The Redis port's table list defaults to `TABLE` (usertable).
    let (router, router_port) = Daemon::router(ROUTER_CPU, &meta_addr, Some(percore_port))?;
    create_table(router_port)?;
    let always = RedisServer::start(&always_dir.0, "always")?;
    let everysec = RedisServer::start(&everysec_dir.0, "everysec")?;
    for server in [&always, &everysec] {
        let v = server.version()?;
        if !v.starts_with(&format!("{REDIS_MAJOR}.")) {
            return Err(format!(
                "the running redis-server says it is {v}, not {REDIS_MAJOR}.x"
            ));
        }
    }
    let port = |t: Target| match t {
        Target::Percore => percore_port,
        Target::RedisAlways => always.port,
        Target::RedisEverysec => everysec.port,
    };

    for t in Target::ALL {
        eprintln!("xtask: preloading {keys} keys into {}", t.name());
        let rate = preload(port(t), keys)?;
        eprintln!(
            "xtask: {} preloaded at {rate:.0} keys/s; {HIT_CHECK_KEYS} sampled keys read back",
            t.name()
        );
    }
    let idle_before = cpu_jiffies();
    std::thread::sleep(Duration::from_secs(1));
    let idle_busy = busy_percent(&idle_before, &cpu_jiffies());
    eprintln!("xtask: all servers up and idle: CPUs busy {idle_busy:.0?} %");

    // Requests per (target, test, pipeline), sized for `phase_s` seconds each; each measured
    // run resizes its case for the next round (one short calibration run can hit a stall).
    let mut sizes: Vec<((Target, &str, u32), u64)> = Vec::new();
    for pipeline in PIPELINES {
        for test in TESTS {
            for t in Target::ALL {
                let n = calibrate(port(t), test, pipeline, keys, phase_s)?;
                eprintln!(
                    "xtask: calibrated {} {test} -P {pipeline}: {n} requests per phase",
                    t.name()
                );
                sizes.push(((t, test, pipeline), n));
            }
        }
    }

    let mut runs: Vec<((Target, &str, u32), Run)> = Vec::new();
    for round in 0..rounds {
        for pipeline in PIPELINES {
            for test in TESTS {
                for t in Target::ALL {
                    let (_, n) = sizes
                        .iter_mut()
                        .find(|(key, _)| *key == (t, test, pipeline))
                        .expect("every case was calibrated");
                    let run = redis_benchmark(port(t), test, pipeline, keys, *n, phase_s, true)?;
                    *n = ((run.row.rps * phase_s) as u64).max(PHASE_REQUESTS_MIN);
                    eprintln!(
                        "xtask: round {} {:<14} {test} -P {pipeline:<2}: {:>9.0} ops/s p50 {:.3} ms p99 {:.3} ms max {:.3} ms; CPUs busy {:.0?} %{}",
                        round + 1,
                        t.name(),
                        run.row.rps,
                        run.row.p50_ms,
                        run.row.p99_ms,
                        run.row.max_ms,
                        run.cpu_busy_percent,
                        if run.quiet_before { "" } else { " (machine not quiet before)" }
                    );
                    runs.push(((t, test, pipeline), run));
                }
            }
        }
    }

    router.stop()?;
    node.stop()?;
    meta.stop()?;
    always.stop()?;
    everysec.stop()?;

    // The median round of each case.
    let mut table = Vec::new();
    for pipeline in PIPELINES {
        for test in TESTS {
            for t in Target::ALL {
                let mine: Vec<Run> = runs
                    .iter()
                    .filter(|(k, _)| *k == (t, test, pipeline))
                    .map(|(_, r)| r.clone())
                    .collect();
                table.push(((t, test, pipeline), median_run(&mine).clone()));
            }
        }
    }
    let us = |ms: f64| (ms * 1000.0).round();
    if json {
        for ((t, test, pipeline), r) in &table {
            println!(
                "{{\"bench\":\"redis\",\"case\":\"{test}\",\"server\":\"{}\",\"pipeline\":{pipeline},\"ops_per_s\":{:.0},\"avg_us\":{},\"min_us\":{},\"p50_us\":{},\"p95_us\":{},\"p99_us\":{},\"max_us\":{},\"requests\":{},\"rounds\":{rounds},\"keys\":{keys},\"value_bytes\":{VALUE_BYTES},\"clients\":{CLIENTS},\"redis_version\":\"{version}\",\"setup\":\"{SETUP}\"}}",
                t.name(),
                r.row.rps,
                us(r.row.avg_ms),
                us(r.row.min_ms),
                us(r.row.p50_ms),
                us(r.row.p95_ms),
                us(r.row.p99_ms),
                us(r.row.max_ms),
                r.requests,
            );
        }
    }
    eprintln!();
    eprintln!(
        "redis benchmark: redis-benchmark -t set|get -d {VALUE_BYTES} -r {keys} -c {CLIENTS} -P 1|16, every key preloaded; redis-server {version} (appendonly yes); {SETUP}; median of {rounds} round(s), ~{phase_s} s each; closed-loop latencies"
    );
    eprintln!(
        "{:<15} {:<4} {:>3} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>11}",
        "server",
        "test",
        "-P",
        "ops/s",
        "avg ms",
        "min ms",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "CPU0/1 %"
    );
    for ((t, test, pipeline), r) in &table {
        let cpu = &r.cpu_busy_percent;
        eprintln!(
            "{:<15} {:<4} {:>3} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>5.0}/{:<5.0}",
            t.name(),
            test,
            pipeline,
            r.row.rps,
            r.row.avg_ms,
            r.row.min_ms,
            r.row.p50_ms,
            r.row.p95_ms,
            r.row.p99_ms,
            r.row.max_ms,
            cpu.first().copied().unwrap_or(f64::NAN),
            cpu.get(1).copied().unwrap_or(f64::NAN),
        );
    }
    let row = |t: Target, test: &str, pipeline: u32| {
        table
            .iter()
            .find(|(k, _)| *k == (t, test, pipeline))
            .map(|(_, r)| &r.row)
            .expect("every case was measured")
    };
    let mark = |ok: bool| if ok { "✔" } else { "✘" };
    for pipeline in PIPELINES {
        let (p, a) = (
            row(Target::Percore, "set", pipeline),
            row(Target::RedisAlways, "set", pipeline),
        );
        let ratio = p.rps / a.rps;
        eprintln!(
            "-P {pipeline:<2} SET percore / redis always: {ratio:.3}x (target ≥ 1.0) {}; p99 {:.3} vs {:.3} ms (target: no higher) {}",
            mark(ratio >= 1.0),
            p.p99_ms,
            a.p99_ms,
            mark(p.p99_ms <= a.p99_ms)
        );
        let (p, e) = (
            row(Target::Percore, "get", pipeline),
            row(Target::RedisEverysec, "get", pipeline),
        );
        let ratio = p.rps / e.rps;
        eprintln!(
            "-P {pipeline:<2} GET percore / redis everysec: {ratio:.3}x (target ≥ 0.8) {}",
            mark(ratio >= 0.8)
        );
    }
    if runs.iter().any(|(_, r)| !r.quiet_before) {
        eprintln!("note: some phases started before the CPUs were quiet for {QUIET_WINDOW_MS} ms (waited {QUIET_TIMEOUT_S} s): see the round lines above");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lines_parse_by_column_name() {
        let out = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"SET\",\"56433.41\",\"0.807\",\"0.288\",\"0.799\",\"1.103\",\"1.271\",\"2.903\"\n\"GET\",\"89605.73\",\"0.290\",\"0.064\",\"0.279\",\"0.383\",\"0.479\",\"4.039\"\n";
        let rows = parse_csv(out).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].test, "set");
        assert_eq!(rows[0].rps, 56433.41);
        assert_eq!(rows[0].p99_ms, 1.271);
        assert_eq!(rows[1].test, "get");
        assert_eq!(rows[1].max_ms, 4.039);
        assert!(parse_csv("\"test\",\"rps\"\n\"SET\",\"1\"\n").is_err());
        assert!(parse_csv("").is_err());
    }

    #[test]
    fn replies_parse_and_malformed_ones_fail() {
        let mut r: &[u8] = b"+OK\r\n-ERR no\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n$1\r\nx\r\n:1\r\n";
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Simple("OK".into()));
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Error("ERR no".into()));
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Integer(42));
        assert_eq!(
            read_reply(&mut r).unwrap(),
            Reply::Bulk(Some(b"abc".to_vec()))
        );
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Bulk(None));
        assert_eq!(
            read_reply(&mut r).unwrap(),
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"x".to_vec())),
                Reply::Integer(1)
            ]))
        );
        assert!(read_reply(&mut r).is_err(), "end of input");
        for bad in [
            &b"?x\r\n"[..],
            b"+OK\n",
            b"$5\r\nab\r\n",
            b"$-7\r\n",
            b":x\r\n",
        ] {
            let mut r = bad;
            assert!(
                read_reply(&mut r).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn commands_encode_as_resp_arrays() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"key:000000000007", b"xy"]);
        assert_eq!(
            out,
            b"*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000007\r\n$2\r\nxy\r\n"
        );
        assert_eq!(bench_key(7), "key:000000000007");
    }

    #[test]
    fn median_run_is_the_middle_throughput() {
        let run = |rps: f64| Run {
            row: CsvRow {
                test: "set".into(),
                rps,
                avg_ms: 0.0,
                min_ms: 0.0,
                p50_ms: 0.0,
                p95_ms: 0.0,
                p99_ms: rps,
                max_ms: 0.0,
            },
            requests: 1,
            cpu_busy_percent: vec![],
            quiet_before: true,
        };
        let runs = [run(3.0), run(1.0), run(2.0)];
        assert_eq!(median_run(&runs).row.p99_ms, 2.0);
    }
}
