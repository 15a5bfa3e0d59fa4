//! `cargo xtask bench wal [--quick] [--json]`: the WAL's durable append rate and latency
//! against the device's own limit, as `../shared/BENCHMARKS.md` and issue 3 describe.
//!
//! Cases, all on one core (core 1), in one invocation, files on ext4 under /var/tmp:
//!
//! - `raw_dsync_qd1`, `raw_dsync_qd8`: the device's limit. 4 KiB O_DIRECT writes with
//!   RWF_DSYNC, sequential, into a zero-filled file, through the `io-uring` crate directly
//!   (no glommio), at queue depth 1 and 8. `records_per_s` = writes per second; latency per
//!   write from submission to completion.
//! - `wal` with `writers` 1, 8, 64, 512: that many tasks on one glommio executor, each
//!   appending 128-byte records to its own stream in a closed loop (the next append starts
//!   when the previous one is durable), with the WAL's flusher on the same executor.
//!   `records_per_s` = durable records per second; latency per append, from the call to
//!   the moment it resolved durable. Writers release their stream as they go, so segments
//!   are recycled as in production. `bytes_per_record` = bytes written / records.
//!
//! The targets issue 3 sets are checked and printed (to stderr with `--json`).

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

/// The core everything runs on.
const CORE: usize = 1;
const RAW_SETUP: &str = "raw io_uring on core 1 (glommio executor thread, blocked), ext4 /var/tmp";
const WAL_SETUP: &str =
    "wal core 1 (writers and flusher on one glommio executor, O_DSYNC DMA writes), ext4 /var/tmp";

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
    setup: &'static str,
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
    let lines = LocalExecutorBuilder::new(Placement::Fixed(CORE))
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
    let seconds = if quick { 3.0 } else { 10.0 };
    let duration = Duration::from_secs_f64(seconds);
    let mut lines = Vec::new();
    if let Some(writers) = only {
        lines.push(wal_case(dir, writers, duration).await?);
        return Ok(lines);
    }
    eprintln!("bench wal: raw RWF_DSYNC writes, {seconds} s per case");
    lines.push(raw_dsync(dir, 1, duration)?);
    lines.push(raw_dsync(dir, 8, duration)?);
    for &writers in WRITERS {
        eprintln!("bench wal: wal with {writers} writers, {seconds} s");
        lines.push(wal_case(dir, writers, duration).await?);
    }
    Ok(lines)
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

/// Sequential 4 KiB O_DIRECT RWF_DSYNC writes at queue depth `depth`, into a zero-filled
/// file, for `duration`; io_uring driven directly on this thread.
fn raw_dsync(dir: &Path, depth: usize, duration: Duration) -> Result<Line> {
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
    let fd = types::Fd(file.as_raw_fd());
    let mut ring = IoUring::new(depth.next_power_of_two() as u32 * 2)?;
    let buffers: Vec<Aligned> = (0..depth).map(|_| Aligned::new()).collect();
    let mut started = vec![Instant::now(); depth];
    let mut next_offset = 0u64;
    let mut submit = |ring: &mut IoUring, slot: usize, started: &mut Vec<Instant>| -> Result<()> {
        let entry = opcode::Write::new(fd, buffers[slot].0, BLOCK_BYTES as u32)
            .offset(next_offset)
            .rw_flags(libc::RWF_DSYNC)
            .build()
            .user_data(slot as u64);
        next_offset = (next_offset + BLOCK_BYTES as u64) % RAW_FILE_BYTES;
        started[slot] = Instant::now();
        // SAFETY: the buffer outlives the operation (we wait for every completion below).
        unsafe { ring.submission().push(&entry) }.map_err(|_| "submission queue full")?;
        Ok(())
    };
    let mut hist = histogram();
    // Warm up for a tenth of the run, then measure.
    let begin = Instant::now();
    let warm = begin + duration / 10;
    let end = warm + duration;
    let mut in_flight = 0;
    for slot in 0..depth {
        submit(&mut ring, slot, &mut started)?;
        in_flight += 1;
    }
    let mut measured = 0u64;
    let mut measure_start = None;
    while in_flight > 0 {
        ring.submit_and_wait(1)?;
        let done: Vec<(u64, i32)> = ring
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
            if now >= warm {
                measure_start.get_or_insert(now);
                if now < end {
                    hist.record(now.duration_since(started[slot]).as_nanos() as u64)?;
                    measured += 1;
                }
            }
            if now < end {
                submit(&mut ring, slot, &mut started)?;
                in_flight += 1;
            }
        }
    }
    let elapsed = end
        .duration_since(measure_start.unwrap_or(warm))
        .as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(Line {
        case: if depth == 1 {
            "raw_dsync_qd1"
        } else {
            "raw_dsync_qd8"
        },
        writers: None,
        setup: RAW_SETUP,
        records_per_s: measured as f64 / elapsed,
        p50_us: us(&hist, 0.50),
        p99_us: us(&hist, 0.99),
        bytes_per_record: BLOCK_BYTES as f64,
    })
}

/// `writers` tasks appending 128-byte records in a closed loop for `duration`.
async fn wal_case(dir: &Path, writers: usize, duration: Duration) -> Result<Line> {
    let case_dir = dir.join(format!("wal-{writers}"));
    let device = DmaBlockDevice::open(&case_dir).await?;
    let mut config = Config::default();
    if let Some(kib) = std::env::var("WAL_BENCH_BATCH_KIB").ok().and_then(|v| v.parse::<usize>().ok()) {
        config.batch_bytes_target = kib * 1024; // for experiments only
    }
    let (wal, _) = Wal::open(device, config).await?;
    let wal = Rc::new(wal);
    let flusher = glommio::spawn_local({
        let wal = wal.clone();
        async move { wal.run().await }
    });
    let hist = Rc::new(RefCell::new(histogram()));
    let measuring = Rc::new(Cell::new(false));
    let stop = Rc::new(Cell::new(false));
    let counted = Rc::new(Cell::new(0u64));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (wal, hist, measuring, stop, counted) = (
            wal.clone(),
            hist.clone(),
            measuring.clone(),
            stop.clone(),
            counted.clone(),
        );
        tasks.push(glommio::spawn_local(async move {
            let payload = [w as u8; RECORD_BYTES];
            let stream = w as u64;
            let mut index = 1u64;
            while !stop.get() {
                let t0 = Instant::now();
                wal.append(stream, index, 0, &payload).await?;
                if measuring.get() {
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
    glommio::timer::sleep(duration / 10).await;
    let before = wal.stats();
    measuring.set(true);
    let start = Instant::now();
    glommio::timer::sleep(duration).await;
    measuring.set(false);
    let elapsed = start.elapsed().as_secs_f64();
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
        setup: WAL_SETUP,
        records_per_s: counted.get() as f64 / elapsed,
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
