//! `cargo xtask bench wal [--quick] [--json]`: the WAL's durable append rate and latency
//! against the device's own limit, as `../shared/BENCHMARKS.md` and issue 3 describe.
//!
//! Cases, all on one core (core 1), in one invocation, files on ext4 under /var/tmp (a
//! temporary directory, removed afterwards):
//!
//! - `raw_dsync_qd1`, `raw_dsync_qd8`: the device's limit. 4 KiB O_DIRECT writes with
//!   RWF_DSYNC, sequential, into a zero-filled file, through the `io-uring` crate directly
//!   (no glommio), at queue depth 1 and 8. `records_per_s` = writes per second; latency per
//!   write from submission to completion. The depth-1 case runs in slices interleaved with
//!   every `wal` case (0.5 s slices in `--quick`, 1 s otherwise), so that the ratios the
//!   targets are stated in hold while the shared machine's load comes and goes.
//! - `wal` with `writers` 1, 8, 64, 512: that many tasks on one glommio executor, each
//!   appending 128-byte records to its own stream in a closed loop (the next append starts
//!   when the previous one is durable; no rate is set, so latency is per append, from the
//!   call to the moment it resolved durable), with the WAL's flusher on the same executor.
//!   `records_per_s` = durable records per second. Writers release their stream as they
//!   go, so segments are recycled as in production. `bytes_per_record` = bytes written
//!   (headers and padding included) / records.
//!
//! The targets issue 3 sets are checked and printed (to stderr with `--json`). Direct runs
//! (`cargo bench -p devices --bench wal -- ...`) also take `--writers N` (one `wal` case,
//! for profiling) and read `WAL_BENCH_BATCH_KIB` (the batch target, for experiments).

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::cell::{Cell, RefCell};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use devices::block_device::DmaBlockDevice;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use io_uring::{opcode, types, IoUring};
use wal::{Config, Wal};

type Error = Box<dyn std::error::Error>;
type Result<T> = std::result::Result<T, Error>;

/// The core everything runs on: the disk's completion interrupts land on core 1 here (see
/// `/proc/interrupts`). `WAL_BENCH_CORE` overrides it for direct runs on a busy machine.
const CORE_DEFAULT: usize = 1;

fn core() -> usize {
    std::env::var("WAL_BENCH_CORE")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(CORE_DEFAULT)
}

const BLOCK_BYTES: usize = 4096;
const RAW_FILE_BYTES: u64 = 64 << 20;
const RECORD_BYTES: usize = 128;
const WRITERS: &[usize] = &[1, 8, 64, 512];
/// Each writer releases its stream below (index - this) every this many appends.
const RELEASE_EVERY: u64 = 256;

struct Run {
    quick: bool,
    json: bool,
    /// `--writers N` (direct runs only): just the `wal` case with N writers, for profiling.
    only_writers: Option<usize>,
}

struct Line {
    case: &'static str,
    writers: Option<usize>,
    setup: String,
    records_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    bytes_per_record: f64,
}

impl Line {
    fn json(&self) -> String {
        let writers = self
            .writers
            .map_or(String::new(), |w| format!(",\"writers\":{w}"));
        format!(
            "{{\"bench\":\"wal\",\"case\":\"{}\"{writers},\"setup\":\"{}\",\"records_per_s\":{:.0},\"p50_us\":{:.1},\"p99_us\":{:.1},\"bytes_per_record\":{:.1}}}",
            self.case, self.setup, self.records_per_s, self.p50_us, self.p99_us, self.bytes_per_record
        )
    }
}

fn raw_setup() -> String {
    format!(
        "raw io_uring on core {} (the wal executor's thread, blocked; qd1 in slices interleaved with every wal case), ext4 /var/tmp",
        core()
    )
}

fn wal_setup() -> String {
    format!(
        "wal core {} (writers and flusher on one glommio executor, O_DSYNC DMA writes), ext4 /var/tmp",
        core()
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run = Run {
        quick: args.iter().any(|a| a == "--quick"),
        json: args.iter().any(|a| a == "--json"),
        only_writers: args
            .iter()
            .position(|a| a == "--writers")
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse().ok()),
    };
    // cargo passes `--bench`; anything else unknown is ignored too.
    if let Err(e) = main_on_core(run) {
        eprintln!("bench wal: error: {e}");
        std::process::exit(1);
    }
}

fn main_on_core(run: Run) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("percore-bench-wal-")
        .tempdir_in("/var/tmp")?;
    let path = dir.path().to_path_buf();
    let (quick, only) = (run.quick, run.only_writers);
    let lines = LocalExecutorBuilder::new(Placement::Fixed(core()))
        .name("bench-wal")
        .spawn(move || async move {
            all_cases(&path, quick, only)
                .await
                .map_err(|e| e.to_string())
        })?
        .join()
        .map_err(|e| format!("executor: {e}"))??;
    drop(dir); // removes every file
    report(&run, &lines);
    Ok(())
}

async fn all_cases(dir: &Path, quick: bool, only: Option<usize>) -> Result<Vec<Line>> {
    // Each `wal` case runs in slices, alternating with slices of raw depth-1 writes on the
    // same core, so that the ratios the targets are stated in hold while the machine's speed
    // drifts (other work on a shared 2-core machine comes and goes within seconds).
    let (slice, rounds) = if quick {
        (Duration::from_millis(500), 5)
    } else {
        (Duration::from_millis(1000), 10)
    };
    let seconds = slice.as_secs_f64() * rounds as f64;
    let mut raw1 = RawRig::new(dir, 1)?;
    let mut lines = Vec::new();
    let mut wal_lines = Vec::new();
    let writers_list: Vec<usize> = only.map_or(WRITERS.to_vec(), |w| vec![w]);
    for &writers in &writers_list {
        eprintln!(
            "bench wal: wal with {writers} writers, {seconds} s, interleaved with raw qd1 slices"
        );
        let usage = CoreUsage::start();
        wal_lines.push(wal_case(dir, writers, slice, rounds, &mut raw1).await?);
        usage.report(&format!("wal with {writers} writers"));
    }
    lines.push(raw1.line("raw_dsync_qd1"));
    if only.is_none() {
        eprintln!("bench wal: raw RWF_DSYNC writes at depth 8, {seconds} s");
        let mut raw8 = RawRig::new(dir, 8)?;
        raw8.run_slice(slice * rounds as u32)?;
        lines.push(raw8.line("raw_dsync_qd8"));
    }
    lines.extend(wal_lines);
    Ok(lines)
}

/// How busy the measured core was with other processes during a case: on a shared machine
/// a neighbour on the same core decides the p99, so every case says how much there was.
struct CoreUsage {
    core_ticks: (u64, u64),
    own_ticks: u64,
}

impl CoreUsage {
    /// (busy, total) clock ticks of the measured core, from /proc/stat.
    fn core_ticks() -> (u64, u64) {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let name = format!("cpu{} ", core());
        let Some(line) = stat.lines().find(|l| l.starts_with(&name)) else {
            return (0, 0);
        };
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        (total - idle, total)
    }

    /// Clock ticks this process has used (all its threads run on the measured core, but for
    /// the blocking-pool threads glommio may start).
    fn own_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let v: Vec<u64> = after
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        // Fields 14 and 15 of the file (utime, stime) are the 12th and 13th after the name.
        v.get(10).copied().unwrap_or(0) + v.get(11).copied().unwrap_or(0)
    }

    fn start() -> CoreUsage {
        CoreUsage {
            core_ticks: CoreUsage::core_ticks(),
            own_ticks: CoreUsage::own_ticks(),
        }
    }

    fn report(&self, what: &str) {
        let (busy, total) = CoreUsage::core_ticks();
        let own = CoreUsage::own_ticks() - self.own_ticks;
        let (busy, total) = (busy - self.core_ticks.0, total - self.core_ticks.1);
        let pct = |t: u64| 100.0 * t as f64 / total.max(1) as f64;
        eprintln!(
            "bench wal:   {what}: core {} busy {:.0}% (this process {:.0}%, other work {:.0}%)",
            core(),
            pct(busy),
            pct(own.min(busy)),
            pct(busy.saturating_sub(own))
        );
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// A 4 KiB-aligned buffer for O_DIRECT.
struct Aligned(*mut u8);

impl Aligned {
    fn new() -> Aligned {
        let layout = std::alloc::Layout::from_size_align(BLOCK_BYTES, BLOCK_BYTES).expect("layout");
        // SAFETY: the layout is non-zero in size; the memory is freed in Drop.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Aligned(ptr)
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(BLOCK_BYTES, BLOCK_BYTES).expect("layout");
        // SAFETY: allocated in `new` with the same layout.
        unsafe { std::alloc::dealloc(self.0, layout) }
    }
}

/// Sequential 4 KiB O_DIRECT RWF_DSYNC writes at a fixed queue depth into a zero-filled
/// file, through io_uring directly on the calling thread (which it blocks).
struct RawRig {
    depth: usize,
    file: std::fs::File,
    path: std::path::PathBuf,
    ring: IoUring,
    buffers: Vec<Aligned>,
    next_offset: u64,
    hist: Histogram<u64>,
    writes: u64,
    seconds: f64,
}

impl RawRig {
    fn new(dir: &Path, depth: usize) -> Result<RawRig> {
        let path = dir.join(format!("raw-qd{depth}"));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&path)?;
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..(RAW_FILE_BYTES >> 20) {
                f.write_all(&zeros)?;
            }
            f.sync_all()?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)?;
        Ok(RawRig {
            depth,
            file,
            path,
            ring: IoUring::new(depth.next_power_of_two() as u32 * 2)?,
            buffers: (0..depth).map(|_| Aligned::new()).collect(),
            next_offset: 0,
            hist: histogram(),
            writes: 0,
            seconds: 0.0,
        })
    }

    fn submit(&mut self, slot: usize) -> Result<Instant> {
        let fd = types::Fd(self.file.as_raw_fd());
        let entry = opcode::Write::new(fd, self.buffers[slot].0, BLOCK_BYTES as u32)
            .offset(self.next_offset)
            .rw_flags(libc::RWF_DSYNC)
            .build()
            .user_data(slot as u64);
        self.next_offset = (self.next_offset + BLOCK_BYTES as u64) % RAW_FILE_BYTES;
        // SAFETY: the buffer outlives the operation: every submitted write is waited for
        // before `run_slice` returns, and the buffers live as long as the rig.
        unsafe { self.ring.submission().push(&entry) }.map_err(|_| "submission queue full")?;
        Ok(Instant::now())
    }

    /// Keeps `depth` writes in flight for `duration`, recording each write's latency.
    fn run_slice(&mut self, duration: Duration) -> Result<()> {
        let start = Instant::now();
        let end = start + duration;
        let mut started = vec![start; self.depth];
        for (slot, at) in started.iter_mut().enumerate() {
            *at = self.submit(slot)?;
        }
        let mut in_flight = self.depth;
        while in_flight > 0 {
            self.ring.submit_and_wait(1)?;
            let done: Vec<(u64, i32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            let now = Instant::now();
            for (slot, res) in done {
                in_flight -= 1;
                if res != BLOCK_BYTES as i32 {
                    return Err(format!("raw write returned {res}").into());
                }
                let slot = slot as usize;
                self.hist
                    .record(now.duration_since(started[slot]).as_nanos() as u64)?;
                self.writes += 1;
                if now < end {
                    started[slot] = self.submit(slot)?;
                    in_flight += 1;
                }
            }
        }
        self.seconds += start.elapsed().as_secs_f64();
        Ok(())
    }

    fn line(&self, case: &'static str) -> Line {
        Line {
            case,
            writers: None,
            setup: raw_setup(),
            records_per_s: self.writes as f64 / self.seconds.max(1e-9),
            p50_us: us(&self.hist, 0.50),
            p99_us: us(&self.hist, 0.99),
            bytes_per_record: BLOCK_BYTES as f64,
        }
    }
}

impl Drop for RawRig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `writers` tasks appending 128-byte records in a closed loop, measured in `rounds`
/// slices of `slice`, each preceded by a slice of raw depth-1 writes (which block the
/// executor, so the writers pause meanwhile).
async fn wal_case(
    dir: &Path,
    writers: usize,
    slice: Duration,
    rounds: usize,
    raw1: &mut RawRig,
) -> Result<Line> {
    let case_dir = dir.join(format!("wal-{writers}"));
    let device = DmaBlockDevice::open(&case_dir).await?;
    let mut config = Config::default();
    if let Some(kib) = std::env::var("WAL_BENCH_BATCH_KIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        config.batch_bytes_target = kib * 1024; // for experiments only
    }
    let (wal, _) = Wal::open(device, config).await?;
    let wal = Rc::new(wal);
    let flusher = glommio::spawn_local({
        let wal = wal.clone();
        async move { wal.run().await }
    });
    let hist = Rc::new(RefCell::new(histogram()));
    // Odd while a measured slice runs; an append counts only if it started and ended in
    // the same measured slice.
    let epoch = Rc::new(Cell::new(0u64));
    let stop = Rc::new(Cell::new(false));
    let counted = Rc::new(Cell::new(0u64));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (wal, hist, epoch, stop, counted) = (
            wal.clone(),
            hist.clone(),
            epoch.clone(),
            stop.clone(),
            counted.clone(),
        );
        tasks.push(glommio::spawn_local(async move {
            let payload = [w as u8; RECORD_BYTES];
            let stream = w as u64;
            let mut index = 1u64;
            while !stop.get() {
                let (e0, t0) = (epoch.get(), Instant::now());
                wal.append(stream, index, 0, &payload).await?;
                if e0 % 2 == 1 && epoch.get() == e0 {
                    let ns = t0.elapsed().as_nanos() as u64;
                    hist.borrow_mut().record(ns).expect("in bounds");
                    counted.set(counted.get() + 1);
                }
                if index % RELEASE_EVERY == 0 {
                    wal.release(stream, index - RELEASE_EVERY / 2);
                }
                index += 1;
            }
            Ok::<(), wal::WalError>(())
        }));
    }
    glommio::timer::sleep(slice / 2).await; // warm up
    let before = wal.stats();
    let mut measured = 0.0;
    for _ in 0..rounds {
        raw1.run_slice(slice)?;
        epoch.set(epoch.get() + 1);
        let start = Instant::now();
        glommio::timer::sleep(slice).await;
        epoch.set(epoch.get() + 1);
        measured += start.elapsed().as_secs_f64();
    }
    let after = wal.stats();
    stop.set(true);
    for t in tasks {
        t.await?;
    }
    wal.close();
    flusher.await?;
    let records = after.records_appended - before.records_appended;
    let bytes = after.bytes_written - before.bytes_written;
    let h = hist.borrow();
    eprintln!(
        "bench wal:   {writers} writers: {:.1} records per batch, {:.1} bytes per record, \
         latency p50 {:.0} p90 {:.0} p99 {:.0} p99.9 {:.0} max {:.0} us",
        records as f64 / (after.batches_written - before.batches_written).max(1) as f64,
        bytes as f64 / records.max(1) as f64,
        us(&h, 0.5),
        us(&h, 0.9),
        us(&h, 0.99),
        us(&h, 0.999),
        h.max() as f64 / 1000.0,
    );
    Ok(Line {
        case: "wal",
        writers: Some(writers),
        setup: wal_setup(),
        records_per_s: counted.get() as f64 / measured,
        p50_us: us(&h, 0.50),
        p99_us: us(&h, 0.99),
        bytes_per_record: bytes as f64 / records.max(1) as f64,
    })
}

fn report(run: &Run, lines: &[Line]) {
    if run.json {
        for l in lines {
            println!("{}", l.json());
        }
    } else {
        println!(
            "{:<14} {:>7} {:>14} {:>9} {:>9} {:>10}",
            "case", "writers", "records_per_s", "p50_us", "p99_us", "bytes/rec"
        );
        for l in lines {
            println!(
                "{:<14} {:>7} {:>14.0} {:>9.1} {:>9.1} {:>10.1}",
                l.case,
                l.writers.map_or("-".to_string(), |w| w.to_string()),
                l.records_per_s,
                l.p50_us,
                l.p99_us,
                l.bytes_per_record
            );
        }
    }
    let raw = lines.iter().find(|l| l.case == "raw_dsync_qd1");
    let wal = |w| lines.iter().find(|l| l.writers == Some(w));
    if let (Some(raw), Some(one), Some(many)) = (raw, wal(1), wal(64)) {
        let checks = [
            (
                "1 writer p50 <= 1.3x raw qd1 p50",
                one.p50_us / raw.p50_us,
                1.3,
                one.p50_us <= 1.3 * raw.p50_us,
            ),
            (
                "64 writers rate >= 20x raw qd1 rate",
                many.records_per_s / raw.records_per_s,
                20.0,
                many.records_per_s >= 20.0 * raw.records_per_s,
            ),
            (
                "64 writers p99 <= 5x raw qd1 p50",
                many.p99_us / raw.p50_us,
                5.0,
                many.p99_us <= 5.0 * raw.p50_us,
            ),
        ];
        for (what, ratio, bound, met) in checks {
            let verdict = if met { "met" } else { "MISSED" };
            let line = format!("target {what}: {ratio:.2}x (bound {bound}x) {verdict}");
            if run.json {
                eprintln!("bench wal: {line}");
            } else {
                println!("{line}");
            }
        }
    }
}
