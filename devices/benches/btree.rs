//! `cargo xtask bench btree [--quick] [--json]`: percore's copy-on-write B+tree against redb
//! and LMDB (through `heed`), as `../shared/BENCHMARKS.md` and issue 2 describe.
//!
//! Cases, each run for every engine (`percore`, `redb`, `lmdb`), on keys of 24 bytes (a seeded
//! hash of the item's index, so insertion order is random) and values of 150 bytes:
//!
//! - `bulk_insert`: every item, in write batches of 1,000 (one transaction each, not durable),
//!   then one durability step at the end (percore `checkpoint`, redb an `Immediate` commit,
//!   LMDB `mdb_env_sync` on an environment opened `MDB_NOSYNC`). `ops_per_s` is items per
//!   second including that final step; `p50_us`/`p99_us` are per batch of 1,000 items.
//! - `random_get`: the store reopened and warmed (every item read once, so percore's page cache,
//!   redb's cache and LMDB's mapping hold everything), then point gets of random existing keys
//!   from one reader (redb and LMDB: one read transaction for the whole run; percore: `get_with`
//!   on the tree, no copy). After a short warm-up pass, each slice (below) runs an untimed
//!   stretch timed as a whole, which gives `ops_per_s` (no clock read per get), then a stretch
//!   of the same length that times every get on its own, which gives `p50_us`/`p99_us` (each
//!   clock read costs tens of nanoseconds here, counted alike for every engine; that stretch's
//!   rate is `timed_pass_ops_per_s`).
//! - `range_scan`: warmed likewise; 100 items forward from a random existing key; ops = scans.
//! - `small_commit`: warmed likewise; one new item, then made durable (percore `put` then
//!   `checkpoint` on a DMA file; redb's default `Immediate` commit; LMDB a synced commit); latency
//!   per commit. A durable commit is the figure most exposed to other tenants' disk traffic,
//!   and buffered-write engines (redb, LMDB) are hit harder by it than O_DIRECT ones.
//!
//! Every (case, engine) pair runs in a child process of this binary (it re-executes itself), so
//! each engine has its own heap and the peak resident memory (`VmHWM`) is per engine and case.
//! Engines are interleaved in one invocation so that ratios hold while the machine drifts:
//! the bulk loads one after the other (a loader's unsynced pages must not be written back on
//! another engine's clock); for the other cases every engine's child is started and warmed,
//! then the measured part runs in slices (8, or 4 with `--quick`), the engines taking turns
//! slice by slice while the others wait on a pipe. `slice_p50_us` lists each slice's median,
//! so drift stays visible. Each child runs its engine on a glommio `LocalExecutor` pinned to
//! the same core, and every engine's files live in one directory under `/var/tmp` (ext4),
//! removed afterwards.
//!
//! Extra flags (only when running `cargo bench -p devices --bench btree -- ...` directly):
//! `--engines redb,lmdb` and `--cases bulk_insert,random_get` to run a subset (later cases
//! need `bulk_insert` first), `--items N` to override the item count, `--keys ycsb` for keys
//! as YCSB makes them (`user` and 20 digits: long shared prefixes). To profile one engine:
//! `perf record -g -- target/release/deps/btree-<hash> --engines percore --cases
//! bulk_insert,random_get`, then `perf report --pid <the random_get child>` (perf follows the
//! children).

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::hint::black_box;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

type Error = Box<dyn std::error::Error>;
type Result<T> = std::result::Result<T, Error>;

/// The core every engine runs on. The disk's completion interrupts land on core 1 on the
/// machines this project runs on (see `/proc/interrupts`), which favours every engine alike.
const ENGINE_CORE: usize = 1;
const SETUP: &str = "engine core 1 for every engine (each in its own child process on a glommio LocalExecutor pinned to core 1; gets, scans and commits in slices, engines taking turns), files on ext4 under /var/tmp";

const ENGINES: &[&str] = &["percore", "redb", "lmdb"];
const CASES: &[&str] = &["bulk_insert", "random_get", "range_scan", "small_commit"];

const KEY_LEN: usize = 24;
const VALUE_LEN: usize = 150;
const BATCH: u64 = 1_000;
const SCAN_LEN: usize = 100;
const KEY_SEED: u64 = 0x5eed_0fb7_ee20_2600;

/// redb's cache and percore's page-cache budget: far above the data set, so warm means warm.
const CACHE_BYTES: usize = 2 << 30;
/// LMDB's map size: the file grows up to it.
const LMDB_MAP_BYTES: usize = 16 << 30;

const CHILD_ENV: &str = "PERCORE_BTREE_BENCH_CHILD";

#[derive(Clone, Copy, Debug)]
struct Params {
    items: u64,
    gets: u64,
    scans: u64,
    /// Durable commits per engine.
    commits: u64,
    /// Untimed commits before the measured ones.
    warmup_commits: u64,
    /// The measured part of `random_get`, `range_scan` and `small_commit` runs in this many
    /// slices per engine, the engines taking turns, so that the machine's drift (other
    /// tenants' CPU and disk load) falls on every engine alike.
    slices: u64,
    /// Keys as YCSB and `percore-perf` make them (`--keys ycsb`): `user` and the item's index
    /// in 20 zero-padded digits, so that every key shares a long prefix with its neighbours.
    /// Otherwise (`hashed`, the default) a key starts with 8 bytes of hash.
    ycsb_keys: bool,
}

/// Whether `key` makes YCSB-style keys (set once per process from [`Params::ycsb_keys`]).
static YCSB_KEYS: AtomicBool = AtomicBool::new(false);

impl Params {
    fn new(quick: bool, items: Option<u64>) -> Params {
        let mut p = if quick {
            Params {
                items: 100_000,
                gets: 200_000,
                scans: 20_000,
                commits: 300,
                warmup_commits: 20,
                slices: 4,
                ycsb_keys: false,
            }
        } else {
            Params {
                items: 1_000_000,
                gets: 1_000_000,
                scans: 100_000,
                commits: 2_000,
                warmup_commits: 50,
                slices: 8,
                ycsb_keys: false,
            }
        };
        if let Some(items) = items {
            p.items = items;
        }
        p
    }

    fn to_arg(self) -> String {
        format!(
            "{},{},{},{},{},{},{}",
            self.items,
            self.gets,
            self.scans,
            self.commits,
            self.warmup_commits,
            self.slices,
            u64::from(self.ycsb_keys)
        )
    }

    fn from_arg(s: &str) -> Result<Params> {
        let v: Vec<u64> = s
            .split(',')
            .map(|x| x.parse::<u64>())
            .collect::<std::result::Result<_, _>>()?;
        if v.len() != 7 {
            return Err(format!("bad params {s:?}").into());
        }
        Ok(Params {
            items: v[0],
            gets: v[1],
            scans: v[2],
            commits: v[3],
            warmup_commits: v[4],
            slices: v[5],
            ycsb_keys: v[6] == 1,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Workload: keys, values, random choices.

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The key of item `i`: a hash prefix (random order), the index (uniqueness), more hash; or,
/// with `--keys ycsb`, `user` and the index in 20 digits.
fn key(i: u64) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    if YCSB_KEYS.load(Ordering::Relaxed) {
        k[..4].copy_from_slice(b"user");
        let mut n = i;
        for digit in k[4..].iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
        return k;
    }
    let h = splitmix64(i ^ KEY_SEED);
    k[..8].copy_from_slice(&h.to_be_bytes());
    k[8..16].copy_from_slice(&i.to_be_bytes());
    k[16..].copy_from_slice(&splitmix64(h).to_be_bytes());
    k
}

/// The value of item `i`: 150 bytes derived from `i`.
fn value(i: u64) -> [u8; VALUE_LEN] {
    let mut v = [0u8; VALUE_LEN];
    let mut x = i;
    for chunk in v.chunks_mut(8) {
        x = splitmix64(x);
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    v
}

/// The item index that operation `op` of a measured phase reads (uniform over existing items).
fn pick(phase: u64, op: u64, items: u64) -> u64 {
    splitmix64(splitmix64(phase) ^ op) % items
}

/// What a reader does with a value, the same for every engine: look at its length and bytes.
fn touch(v: &[u8]) -> u64 {
    v.len() as u64 + u64::from(v[0]) + u64::from(v[v.len() - 1])
}

// ---------------------------------------------------------------------------------------------
// Measurement.

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_nanos() as u64).max(1));
}

/// One measured case: the fields that go on its line, in order.
struct Outcome {
    ops: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    latency_unit: &'static str,
    extra: Vec<(&'static str, String)>,
}

impl Outcome {
    fn fields(&self) -> Vec<(String, String)> {
        let q = |p: f64| format!("{:.1}", self.latency.value_at_quantile(p) as f64 / 1e3);
        let mut f = vec![
            (
                "ops_per_s".to_string(),
                format!("{:.0}", self.ops as f64 / self.elapsed.as_secs_f64()),
            ),
            ("p50_us".to_string(), q(0.50)),
            ("p99_us".to_string(), q(0.99)),
            ("ops".to_string(), self.ops.to_string()),
            (
                "elapsed_s".to_string(),
                format!("{:.3}", self.elapsed.as_secs_f64()),
            ),
            (
                "latency_unit".to_string(),
                format!("\"{}\"", self.latency_unit),
            ),
        ];
        for (k, v) in &self.extra {
            f.push((k.to_string(), v.clone()));
        }
        f
    }
}

/// Runs `ops` operations timed as a whole (no clock read between them): the throughput pass.
async fn run_untimed(ops: u64, mut op: impl AsyncFnMut(u64) -> Result<()>) -> Result<Duration> {
    let start = Instant::now();
    for i in 0..ops {
        op(i).await?;
    }
    Ok(start.elapsed())
}

/// Runs `ops` operations, timing each: the latency pass. Returns the total too.
async fn run_timed(
    ops: u64,
    mut op: impl AsyncFnMut(u64) -> Result<()>,
) -> Result<(Duration, Histogram<u64>)> {
    let mut h = histogram();
    let start = Instant::now();
    for i in 0..ops {
        let t = Instant::now();
        op(i).await?;
        record(&mut h, t.elapsed());
    }
    Ok((start.elapsed(), h))
}

/// Waits for the parent's turn to run the next slice (the gated cases only). The first call
/// says the child is warm and ready, the later ones that the previous slice is done.
fn gate() -> Result<()> {
    use std::io::{BufRead, Write};
    static STARTED: AtomicBool = AtomicBool::new(false);
    let said = if STARTED.swap(true, Ordering::Relaxed) {
        "done"
    } else {
        "ready"
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{said}")?;
    out.flush()?;
    drop(out);
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "go" {
        return Err(format!("expected \"go\" from the parent, got {line:?}").into());
    }
    Ok(())
}

fn median_us(h: &Histogram<u64>) -> String {
    format!("{:.1}", h.value_at_quantile(0.5) as f64 / 1e3)
}

/// Point reads: after a short warm-up pass (other keys, before the first slice), each slice
/// runs an untimed stretch (throughput) then a timed one (latency) of the same length.
async fn run_two_pass(
    p: &Params,
    ops: u64,
    mut op: impl AsyncFnMut(u64, u64) -> Result<()>,
) -> Result<Outcome> {
    run_untimed(ops / 10, async |i| op(0, i).await).await?;
    let per = ops / p.slices;
    let (mut elapsed, mut timed_elapsed) = (Duration::ZERO, Duration::ZERO);
    let mut latency = histogram();
    let mut medians = Vec::new();
    for s in 0..p.slices {
        gate()?;
        elapsed += run_untimed(per, async |i| op(1, s * per + i).await).await?;
        let (e, h) = run_timed(per, async |i| op(2, s * per + i).await).await?;
        timed_elapsed += e;
        medians.push(median_us(&h));
        latency.add(&h).map_err(|e| format!("{e:?}"))?;
    }
    let ops = per * p.slices;
    Ok(Outcome {
        ops,
        elapsed,
        latency,
        latency_unit: "op",
        extra: vec![
            (
                "timed_pass_ops_per_s",
                format!("{:.0}", ops as f64 / timed_elapsed.as_secs_f64()),
            ),
            ("slice_p50_us", format!("[{}]", medians.join(","))),
        ],
    })
}

/// `ops` timed operations in `p.slices` gated slices.
async fn run_sliced(
    p: &Params,
    ops: u64,
    latency_unit: &'static str,
    mut op: impl AsyncFnMut(u64) -> Result<()>,
) -> Result<Outcome> {
    let per = ops / p.slices;
    let mut elapsed = Duration::ZERO;
    let mut latency = histogram();
    let mut medians = Vec::new();
    for s in 0..p.slices {
        gate()?;
        let (e, h) = run_timed(per, async |i| op(s * per + i).await).await?;
        elapsed += e;
        medians.push(median_us(&h));
        latency.add(&h).map_err(|e| format!("{e:?}"))?;
    }
    Ok(Outcome {
        ops: per * p.slices,
        elapsed,
        latency,
        latency_unit,
        extra: vec![("slice_p50_us", format!("[{}]", medians.join(",")))],
    })
}

/// Range scans: `op(i)` scans from a random key.
async fn run_scans(p: &Params, op: impl AsyncFnMut(u64) -> Result<()>) -> Result<Outcome> {
    run_sliced(p, p.scans, "scan of 100 items", op).await
}

/// One step of a bulk load: write items `first..end` (not durable yet), or make all durable.
#[derive(Clone, Copy)]
enum Bulk {
    Batch(u64, u64),
    Finish,
}

/// Bulk insert: `step(Bulk::Batch(..))` for every batch, then `step(Bulk::Finish)` once.
async fn run_bulk(p: &Params, mut step: impl AsyncFnMut(Bulk) -> Result<()>) -> Result<Outcome> {
    let mut h = histogram();
    let start = Instant::now();
    let mut first = 0;
    while first < p.items {
        let end = (first + BATCH).min(p.items);
        let t = Instant::now();
        step(Bulk::Batch(first, end)).await?;
        record(&mut h, t.elapsed());
        first = end;
    }
    let t = Instant::now();
    step(Bulk::Finish).await?;
    let final_sync = t.elapsed();
    Ok(Outcome {
        ops: p.items,
        elapsed: start.elapsed(),
        latency: h,
        latency_unit: "batch of 1000 items",
        extra: vec![(
            "final_sync_us",
            format!("{:.0}", final_sync.as_secs_f64() * 1e6),
        )],
    })
}

async fn run_commits(
    p: &Params,
    mut commit: impl AsyncFnMut(u64) -> Result<()>,
) -> Result<Outcome> {
    // New items, past the bulk-loaded ones.
    for j in 0..p.warmup_commits {
        commit(p.items + j).await?;
    }
    let base = p.items + p.warmup_commits;
    run_sliced(p, p.commits, "commit", async |j| commit(base + j).await).await
}

fn warm_field(d: Duration) -> (&'static str, String) {
    ("warm_s", format!("{:.2}", d.as_secs_f64()))
}

fn file_bytes(path: &Path) -> Result<(&'static str, String)> {
    Ok(("file_bytes", std::fs::metadata(path)?.len().to_string()))
}

fn check_warm(seen: u64, p: &Params) -> Result<()> {
    if seen < p.items {
        return Err(format!("warm-up read {seen} items, expected at least {}", p.items).into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// redb.

mod redb_engine {
    use super::*;
    use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};

    const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("items");

    fn path(dir: &Path) -> PathBuf {
        dir.join("bench.redb")
    }

    fn open(dir: &Path) -> Result<redb::Database> {
        Ok(redb::Database::builder()
            .set_cache_size(CACHE_BYTES)
            .open(path(dir))?)
    }

    pub async fn run(case: &str, dir: &Path, p: &Params) -> Result<Outcome> {
        if case == "bulk_insert" {
            let db = redb::Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(path(dir))?;
            let db = &db;
            let mut out = run_bulk(p, async |step| {
                let mut tx = db.begin_write()?;
                match step {
                    Bulk::Batch(first, end) => {
                        tx.set_durability(Durability::None)?;
                        let mut t = tx.open_table(TABLE)?;
                        for i in first..end {
                            t.insert(&key(i)[..], &value(i)[..])?;
                        }
                    }
                    // An empty Immediate commit makes the non-durable ones before it durable.
                    Bulk::Finish => tx.set_durability(Durability::Immediate)?,
                }
                tx.commit()?;
                Ok(())
            })
            .await?;
            out.extra.push(file_bytes(&path(dir))?);
            return Ok(out);
        }
        let db = open(dir)?;
        let (warm, mut out) = {
            let start = Instant::now();
            let rx = db.begin_read()?;
            let t = rx.open_table(TABLE)?;
            let mut seen = 0u64;
            let mut sum = 0u64;
            for item in t.iter()? {
                let (k, v) = item?;
                sum += k.value().len() as u64 + touch(v.value());
                seen += 1;
            }
            black_box(sum);
            check_warm(seen, p)?;
            let warm = start.elapsed();
            let out = match case {
                "random_get" => {
                    run_two_pass(p, p.gets, async |phase, i| {
                        let k = key(pick(phase, i, p.items));
                        let v = t.get(&k[..])?.ok_or("missing key")?;
                        black_box(touch(v.value()));
                        Ok(())
                    })
                    .await?
                }
                "range_scan" => {
                    run_scans(p, async |i| {
                        let k = key(pick(3, i, p.items));
                        let mut n = 0;
                        let mut sum = 0;
                        for item in t.range(&k[..]..)?.take(SCAN_LEN) {
                            let (k, v) = item?;
                            sum += k.value().len() as u64 + touch(v.value());
                            n += 1;
                        }
                        black_box(sum);
                        if n == 0 {
                            return Err("empty scan".into());
                        }
                        Ok(())
                    })
                    .await?
                }
                "small_commit" => {
                    drop(t);
                    drop(rx);
                    let db = &db;
                    run_commits(p, async |j| {
                        // The default durability: Immediate.
                        let tx = db.begin_write()?;
                        {
                            let mut t = tx.open_table(TABLE)?;
                            t.insert(&key(j)[..], &value(j)[..])?;
                        }
                        tx.commit()?;
                        Ok(())
                    })
                    .await?
                }
                other => return Err(format!("unknown case {other}").into()),
            };
            (warm, out)
        };
        out.extra.push(warm_field(warm));
        out.extra.push(file_bytes(&path(dir))?);
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// LMDB through heed.

mod lmdb_engine {
    use super::*;
    use heed::types::Bytes;
    use heed::{CommitOrAbort, Database, EnvFlags, EnvOpenOptions};

    pub async fn run(case: &str, dir: &Path, p: &Params) -> Result<Outcome> {
        let dir = dir.join("lmdb");
        std::fs::create_dir_all(&dir)?;
        let mut opts = EnvOpenOptions::new();
        opts.map_size(LMDB_MAP_BYTES).max_dbs(1);
        if case == "bulk_insert" {
            // Batches are not durable; one mdb_env_sync at the end makes them so.
            // SAFETY: nothing reads this environment after a crash without that final sync.
            unsafe { opts.flags(EnvFlags::NO_SYNC) };
        }
        // SAFETY: one process opens this environment, once.
        let env = unsafe { opts.open(&dir)? };
        let wtxn = env.write_txn()?;
        let db: Database<Bytes, Bytes> = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> Result<_> {
                Ok(CommitOrAbort::<_, ()>::Commit(
                    dbo.create_database(wtxn, None)?,
                ))
            })?
            .unwrap_commit();
        if case == "bulk_insert" {
            let env = &env;
            let mut out = run_bulk(p, async |step| {
                match step {
                    Bulk::Batch(first, end) => {
                        let mut w = env.write_txn()?;
                        for i in first..end {
                            db.put(&mut w, &key(i), &value(i))?;
                        }
                        w.commit()?;
                    }
                    Bulk::Finish => env.force_sync()?,
                }
                Ok(())
            })
            .await?;
            out.extra.push(file_bytes(&dir.join("data.mdb"))?);
            return Ok(out);
        }
        let start = Instant::now();
        let mut out = {
            let r = env.read_txn()?;
            let mut seen = 0u64;
            let mut sum = 0u64;
            for item in db.iter(&r)? {
                let (k, v) = item?;
                sum += k.len() as u64 + touch(v);
                seen += 1;
            }
            black_box(sum);
            check_warm(seen, p)?;
            let warm = start.elapsed();
            let mut out = match case {
                "random_get" => {
                    run_two_pass(p, p.gets, async |phase, i| {
                        let k = key(pick(phase, i, p.items));
                        let v = db.get(&r, &k)?.ok_or("missing key")?;
                        black_box(touch(v));
                        Ok(())
                    })
                    .await?
                }
                "range_scan" => {
                    run_scans(p, async |i| {
                        let k = key(pick(3, i, p.items));
                        let mut n = 0;
                        let mut sum = 0;
                        for item in db
                            .range(&r, &(Bound::Included(&k[..]), Bound::Unbounded))?
                            .take(SCAN_LEN)
                        {
                            let (k, v) = item?;
                            sum += k.len() as u64 + touch(v);
                            n += 1;
                        }
                        black_box(sum);
                        if n == 0 {
                            return Err("empty scan".into());
                        }
                        Ok(())
                    })
                    .await?
                }
                "small_commit" => {
                    drop(r);
                    let env = &env;
                    run_commits(p, async |j| {
                        // No NOSYNC flag: the commit syncs before it returns.
                        let mut w = env.write_txn()?;
                        db.put(&mut w, &key(j), &value(j))?;
                        w.commit()?;
                        Ok(())
                    })
                    .await?
                }
                other => return Err(format!("unknown case {other}").into()),
            };
            out.extra.push(warm_field(warm));
            out
        };
        out.extra.push(file_bytes(&dir.join("data.mdb"))?);
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// percore.

mod percore_engine {
    use super::*;
    use btree::{Config, Direction, Tree, WriteBatch};

    use devices::page_store::DmaPageStore;

    type Store = DmaPageStore;

    async fn open_store(path: &Path, page_size: usize) -> Result<Store> {
        Ok(DmaPageStore::open(path, page_size).await?)
    }

    fn config() -> Config {
        Config {
            cache_bytes_max: CACHE_BYTES,
            ..Config::default()
        }
    }

    async fn open(dir: &Path) -> Result<Tree<Store>> {
        let config = config();
        let store = open_store(&dir.join("tree.db"), config.page_size_bytes).await?;
        Ok(Tree::open(store, config).await?)
    }

    pub async fn run(case: &str, dir: &Path, p: &Params) -> Result<Outcome> {
        let mut tree = open(dir).await?;
        if case == "bulk_insert" {
            let mut batch = WriteBatch::new();
            let tree = &mut tree;
            let mut out = run_bulk(p, async |step| {
                match step {
                    Bulk::Batch(first, end) => {
                        batch.clear();
                        for i in first..end {
                            batch.put(&key(i), &value(i));
                        }
                        tree.apply(&batch).await?;
                    }
                    Bulk::Finish => {
                        tree.checkpoint().await?;
                    }
                }
                Ok(())
            })
            .await?;
            out.extra.push(file_bytes(&dir.join("tree.db"))?);
            return Ok(out);
        }
        let start = Instant::now();
        let mut seen = 0u64;
        let mut sum = 0u64;
        let mut c = tree.range(.., Direction::Forward).await?;
        while let Some((k, v)) = c.next().await? {
            sum += k.len() as u64 + touch(&v);
            seen += 1;
        }
        drop(c);
        black_box(sum);
        check_warm(seen, p)?;
        let warm = start.elapsed();
        let mut out = match case {
            "random_get" => {
                let tree = &tree;
                run_two_pass(p, p.gets, async |phase, i| {
                    let k = key(pick(phase, i, p.items));
                    let v = tree.get_with(&k, |v| v.map(touch)).await?;
                    black_box(v.ok_or("missing key")?);
                    Ok(())
                })
                .await?
            }
            "range_scan" => {
                let tree = &tree;
                run_scans(p, async |i| {
                    let k = key(pick(3, i, p.items));
                    let mut c = tree
                        .range(
                            (Bound::Included(&k[..]), Bound::Unbounded),
                            Direction::Forward,
                        )
                        .await?;
                    let mut n = 0;
                    let mut sum = 0;
                    while n < SCAN_LEN {
                        let Some((k, v)) = c.next().await? else { break };
                        sum += k.len() as u64 + touch(&v);
                        n += 1;
                    }
                    black_box(sum);
                    if n == 0 {
                        return Err("empty scan".into());
                    }
                    Ok(())
                })
                .await?
            }
            "small_commit" => {
                let mut pages = 0u64;
                let tree = &mut tree;
                let mut out = run_commits(p, async |j| {
                    tree.put(&key(j), &value(j)).await?;
                    pages += tree.checkpoint().await?.pages_written;
                    Ok(())
                })
                .await?;
                out.extra.push((
                    "pages_per_commit",
                    format!(
                        "{:.1}",
                        pages as f64 / (p.commits + p.warmup_commits) as f64
                    ),
                ));
                out
            }
            other => return Err(format!("unknown case {other}").into()),
        };
        out.extra.push(warm_field(warm));
        out.extra.push(file_bytes(&dir.join("tree.db"))?);
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// The child: one engine, one case.

fn peak_rss_bytes() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or("no VmHWM in /proc/self/status")?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib * 1024)
}

fn child(spec: &str) -> Result<()> {
    let parts: Vec<&str> = spec.splitn(4, ':').collect();
    let [engine, case, params, dir] = parts[..] else {
        return Err(format!("bad child spec {spec:?}").into());
    };
    let p = Params::from_arg(params)?;
    YCSB_KEYS.store(p.ycsb_keys, Ordering::Relaxed);
    let dir = PathBuf::from(dir).join(engine);
    std::fs::create_dir_all(&dir)?;
    let (engine, case) = (engine.to_string(), case.to_string());
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(ENGINE_CORE))
        .name("btree-bench")
        .make()
        .map_err(|e| format!("glommio executor: {e}"))?;
    let outcome = ex.run(async move {
        match engine.as_str() {
            "percore" => percore_engine::run(&case, &dir, &p).await,
            "redb" => redb_engine::run(&case, &dir, &p).await,
            "lmdb" => lmdb_engine::run(&case, &dir, &p).await,
            other => Err(format!("unknown engine {other}").into()),
        }
    })?;
    let mut fields = outcome.fields();
    fields.push(("peak_rss_bytes".into(), peak_rss_bytes()?.to_string()));
    let line: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{}", line.join("\t"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The parent: run every case for every engine, interleaved, and report.

struct Row {
    case: &'static str,
    engine: String,
    fields: Vec<(String, String)>,
}

impl Row {
    fn num(&self, name: &str) -> f64 {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(f64::NAN)
    }

    fn json(&self, p: &Params) -> String {
        let mut s = format!(
            "{{\"bench\":\"btree\",\"case\":\"{}\",\"engine\":\"{}\",\"setup\":\"{}\",\"items\":{},\"key_bytes\":{},\"keys\":\"{}\",\"value_bytes\":{}",
            self.case,
            self.engine,
            SETUP,
            p.items,
            KEY_LEN,
            if p.ycsb_keys { "ycsb" } else { "hashed" },
            VALUE_LEN
        );
        for (k, v) in &self.fields {
            s.push_str(&format!(",\"{k}\":{v}"));
        }
        s.push('}');
        s
    }
}

fn child_spec(engine: &str, case: &str, p: &Params, dir: &Path) -> String {
    format!("{engine}:{case}:{}:{}", p.to_arg(), dir.display())
}

fn parse_row(engine: &str, case: &str, line: &str) -> Result<Row> {
    let fields = line
        .split('\t')
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("{engine} {case}: bad child output {line:?}"))?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Row {
        case: CASES.iter().find(|c| **c == case).expect("known case"),
        engine: engine.to_string(),
        fields,
    })
}

fn report_row(row: &Row, started: Instant) {
    eprintln!(
        "bench btree: {:<12} {:<8} {:>12.0} ops/s  p50 {:>8.1} us  p99 {:>8.1} us  peak RSS {:>6.0} MiB  ({:.1} s)",
        row.case,
        row.engine,
        row.num("ops_per_s"),
        row.num("p50_us"),
        row.num("p99_us"),
        row.num("peak_rss_bytes") / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
}

/// One child at a time, start to end (bulk loads: a loader's unsynced pages must not be
/// written back on another engine's clock).
fn run_child(exe: &Path, engine: &str, case: &str, p: &Params, dir: &Path) -> Result<Row> {
    let started = Instant::now();
    let out = Command::new(exe)
        .env(CHILD_ENV, child_spec(engine, case, p, dir))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!("{engine} {case}: child failed: {}", out.status).into());
    }
    let text = String::from_utf8(out.stdout)?;
    let line = text
        .lines()
        .last()
        .ok_or_else(|| format!("{engine} {case}: child printed nothing"))?;
    let row = parse_row(engine, case, line)?;
    report_row(&row, started);
    Ok(row)
}

/// Every engine's child at once, each warmed and then waiting at its gate; the engines take
/// turns slice by slice (one runs, the others block on a read), so that a drift in the
/// machine's load falls on all of them.
fn run_gated(
    exe: &Path,
    engines: &[String],
    case: &str,
    p: &Params,
    dir: &Path,
) -> Result<Vec<Row>> {
    use std::io::{BufRead, BufReader, Write};
    struct Kid {
        engine: String,
        child: std::process::Child,
        stdin: std::process::ChildStdin,
        stdout: BufReader<std::process::ChildStdout>,
        row: Option<Row>,
    }
    fn next_line(kid: &mut Kid, case: &str) -> Result<String> {
        let mut line = String::new();
        if kid.stdout.read_line(&mut line)? == 0 {
            let status = kid.child.wait()?;
            return Err(format!("{} {case}: child failed: {status}", kid.engine).into());
        }
        Ok(line.trim_end().to_string())
    }
    let started = Instant::now();
    let mut kids = Vec::new();
    for engine in engines {
        let mut child = Command::new(exe)
            .env(CHILD_ENV, child_spec(engine, case, p, dir))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no child stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no child stdout")?);
        kids.push(Kid {
            engine: engine.clone(),
            child,
            stdin,
            stdout,
            row: None,
        });
    }
    for kid in &mut kids {
        let line = next_line(kid, case)?;
        if line != "ready" {
            return Err(format!("{} {case}: expected ready, got {line:?}", kid.engine).into());
        }
    }
    while kids.iter().any(|k| k.row.is_none()) {
        for kid in kids.iter_mut().filter(|k| k.row.is_none()) {
            writeln!(kid.stdin, "go")?;
            kid.stdin.flush()?;
            let line = next_line(kid, case)?;
            if line != "done" {
                let row = parse_row(&kid.engine, case, &line)?;
                report_row(&row, started);
                kid.row = Some(row);
            }
        }
    }
    let mut rows = Vec::new();
    for mut kid in kids {
        let status = kid.child.wait()?;
        if !status.success() {
            return Err(format!("{} {case}: child failed: {status}", kid.engine).into());
        }
        rows.push(kid.row.take().expect("every child reported"));
    }
    Ok(rows)
}

fn print_table(rows: &[Row], p: &Params, quick: bool) {
    println!(
        "btree benchmark ({} run): {} items, {KEY_LEN} B keys, {VALUE_LEN} B values; {SETUP}",
        if quick { "quick" } else { "full" },
        p.items
    );
    println!(
        "{:<13} {:<8} {:>12} {:>10} {:>10} {:>14}  latency unit",
        "case", "engine", "ops/s", "p50 us", "p99 us", "peak RSS MiB"
    );
    for r in rows {
        let unit = r
            .fields
            .iter()
            .find(|(k, _)| k == "latency_unit")
            .map(|(_, v)| v.trim_matches('"').to_string())
            .unwrap_or_default();
        println!(
            "{:<13} {:<8} {:>12.0} {:>10.1} {:>10.1} {:>14.0}  {unit}",
            r.case,
            r.engine,
            r.num("ops_per_s"),
            r.num("p50_us"),
            r.num("p99_us"),
            r.num("peak_rss_bytes") / (1 << 20) as f64,
        );
    }
    println!();
    println!("ratios (percore / peer): throughput higher is better, p50 lower is better");
    for case in CASES {
        let get = |e: &str| rows.iter().find(|r| r.case == *case && r.engine == e);
        let Some(pc) = get("percore") else { continue };
        for peer in ["redb", "lmdb"] {
            if let Some(other) = get(peer) {
                println!(
                    "{case:<13} percore/{peer:<5} ops/s {:>5.2}x   p50 {:>5.2}x   p99 {:>5.2}x   peak RSS {:>5.2}x",
                    pc.num("ops_per_s") / other.num("ops_per_s"),
                    pc.num("p50_us") / other.num("p50_us"),
                    pc.num("p99_us") / other.num("p99_us"),
                    pc.num("peak_rss_bytes") / other.num("peak_rss_bytes"),
                );
            }
        }
    }
}

fn parent(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let json = args.iter().any(|a| a == "--json");
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let engines: Vec<String> = match value_of("--engines") {
        Some(list) => list.split(',').map(str::to_string).collect(),
        None => ENGINES.iter().map(|e| e.to_string()).collect(),
    };
    for e in &engines {
        if !ENGINES.contains(&e.as_str()) {
            return Err(format!("unknown engine {e:?}; known: {ENGINES:?}").into());
        }
    }
    let cases: Vec<&'static str> = match value_of("--cases") {
        Some(list) => list
            .split(',')
            .map(|c| {
                CASES
                    .iter()
                    .find(|k| **k == c)
                    .copied()
                    .ok_or_else(|| format!("unknown case {c:?}; known: {CASES:?}"))
            })
            .collect::<std::result::Result<_, _>>()?,
        None => CASES.to_vec(),
    };
    let items = value_of("--items").map(|s| s.parse::<u64>()).transpose()?;
    let mut p = Params::new(quick, items);
    p.ycsb_keys = match value_of("--keys").as_deref() {
        None | Some("hashed") => false,
        Some("ycsb") => true,
        Some(other) => {
            return Err(format!("unknown key style {other:?}; known: hashed, ycsb").into())
        }
    };
    let exe = std::env::current_exe()?;
    let dir = tempfile::Builder::new()
        .prefix("percore-btree-bench-")
        .tempdir_in("/var/tmp")?;
    eprintln!(
        "bench btree: {} run, {} items, engines {:?}, data in {}",
        if quick { "quick" } else { "full" },
        p.items,
        engines,
        dir.path().display()
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    for case in &cases {
        let case_rows = if *case == "bulk_insert" {
            engines
                .iter()
                .map(|engine| run_child(&exe, engine, case, &p, dir.path()))
                .collect::<Result<Vec<_>>>()?
        } else {
            run_gated(&exe, &engines, case, &p, dir.path())?
        };
        for row in case_rows {
            if json {
                println!("{}", row.json(&p));
            }
            rows.push(row);
        }
    }
    eprintln!(
        "bench btree: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if !json {
        print_table(&rows, &p, quick);
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = match std::env::var(CHILD_ENV) {
        Ok(spec) => child(&spec),
        Err(_) => {
            // cargo appends `--bench`; unknown flags are ignored.
            let args: Vec<String> = std::env::args().skip(1).collect();
            parent(&args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench btree: error: {e}");
            ExitCode::FAILURE
        }
    }
}
