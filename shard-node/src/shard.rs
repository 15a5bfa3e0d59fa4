//! One core: its WAL, its partitions, its listeners, its background work, its life.
//!
//! A [`Shard`] is built on its executor and never leaves it (`Rc`, `RefCell`, no locks).
//! It owns:
//!
//! - one WAL (`data_dir/core-<i>/wal/`, a `DmaBlockDevice`), shared by all its partitions;
//! - its partitions: a tree file each (`data_dir/core-<i>/tables/p-<id>.tree`, a
//!   `DmaPageStore`) and a [`partition::Replica`] (raft group + tree + WAL streams), with
//!   the replica's driver task;
//! - its copy of the catalog (core 0 owns the original, see [`crate::catalog`]);
//! - its end of the mesh, its listeners and connections.
//!
//! [`run`] is the core's whole life: connect the mesh, recover, wait for every core to
//! recover, listen, serve until a stop signal, drain, wait for every core to drain, take a
//! final checkpoint of every partition, close the WAL.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use btree::Tree;
use devices::block_device::DmaBlockDevice;
use devices::page_store::DmaPageStore;
use glommio::{Latency, Shares, TaskQueueHandle};
use partition::{CheckpointStep, PartitionId, Replica, ReplicaConfig, ReplicaError};
use wal::{RecoveryReport, Wal};

use crate::catalog::{Catalog, TableEntry};
use crate::config::Config;
use crate::limits::{DRAIN_TIMEOUT_MS, PARTITION_CACHE_BYTES_MIN};
use crate::mesh::{Call, Envelope, Mesh, Reply};
use crate::node::{CoreEvent, CoreStart};
use daemon::server::{self, Connections, Drain};

/// glommio's preemption period: how long the background queue may run before a runnable
/// request task gets the core back. 1 ms keeps a checkpoint slice from showing in the p99.
pub const PREEMPT_TIMER_MS: u64 = 1;

/// The period of each core's keep-alive timer, which wakes its reactor even when nothing
/// else would.
///
/// Found here (kernel 6.18, glommio 0.9): with several processes doing disk I/O at once, a
/// sleeping executor sometimes does not wake for a completion that did arrive (compare
/// upstream glommio #326 and #494). A stand-alone reproducer (6 processes, one executor
/// each, zero-filling WAL segments like `Wal::open`) hung 7 times in 24 runs without the
/// timer and never in 30 with it. The timer wakes the reactor, which then reaps every ring,
/// so such a miss costs at most this long. A busy core never sleeps, so the timer costs only
/// idle wake-ups, but those are dear: glommio's sleep path issues a `membarrier`, and an
/// idle core woken every 1 ms spent 4.4 % of its CPU (about 44 µs a wake-up) against 0.6 %
/// without the timer. Every 10 ms it is a safety net (0.4 %) rather than a pace. (A second stall, where the kernel never completes a request at all, is not
/// cured by this: see the report in DESIGN.md's known gaps.)
pub const REACTOR_KEEPALIVE_US: u64 = 10_000;

/// The slowest a checkpoint writes, in pages a second (8 MiB/s of 8 KiB pages). A
/// checkpoint goes only as fast as it must to end within its share of half the checkpoint
/// interval (the checkpoints due at once split it), because its writes share the device
/// with the WAL's durable writes, whose cache flushes then carry them too. Measured with YCSB-A at 60 K ops/s on 100 K items of 1 KB (node
/// direct, `percore-perf run --rate 60000`): at a fixed 128 MiB/s, read p99 was 3.5–3.9 ms
/// and p99.9 20–23 ms; without checkpoints 1.1 ms and 5 ms; paced at 8–32 MiB/s, 1.6–1.9
/// ms and 5 ms.
const CHECKPOINT_PAGES_PER_S_MIN: f64 = 1024.0;

/// The fastest a checkpoint writes, in pages a second (128 MiB/s of 8 KiB pages): the
/// fixed rate checkpoints had before they were paced to their need, for a tree dirtied
/// faster than a slow checkpoint could keep up with.
const CHECKPOINT_PAGES_PER_S_MAX: f64 = 16384.0;

/// The shortest time left a checkpoint is paced for: a checkpoint past its budget writes at
/// [`CHECKPOINT_PAGES_PER_S_MAX`].
const CHECKPOINT_TIME_LEFT_MS_MIN: u64 = 1;

/// How often the checkpointer looks at its partitions when nothing is due.
const CHECKPOINT_POLL_MS: u64 = 20;

/// Branch pages a warm-up reads at once (see [`Shard::warm_up`]). After a restart the page
/// caches are empty, and a node under load fills them one random read per request:
/// measured with 1 M items of 1 KB and YCSB-A offered at 40 K ops/s from the moment a
/// restarted node listens, it fell behind by up to 2.5 s and took 21–26 s to get back under
/// 10 ms at p99; with the warm-up (4 s for 198 K pages) it took 6–7 s. Random 8 KiB reads get
/// faster with queue depth on this kind of device; 32 keeps it busy while a request's own
/// read still finds a place.
const WARM_READS_IN_FLIGHT: usize = 32;

/// Runs of neighbouring leaf pages a warm-up reads at once (each up to
/// `btree::limits::WARM_RUN_PAGES_MAX` pages): 8 × 256 KiB stays within half of the
/// core's registered I/O memory, which requests need too.
const WARM_RUNS_IN_FLIGHT: usize = 8;

/// A warm-up stops once the partition's page cache is this full (percent of its share):
/// room stays for the pages writes dirty, and nothing a request brought in is evicted.
const WARM_CACHE_PERCENT: u64 = 75;

/// The pause after a checkpoint slice of `slice_pages` pages, with `pages_left` to write and
/// `time_left` of the checkpoint's budget: the rate that ends it in time, within
/// [`CHECKPOINT_PAGES_PER_S_MIN`] and [`CHECKPOINT_PAGES_PER_S_MAX`].
fn checkpoint_pause(slice_pages: usize, pages_left: u64, time_left: Duration) -> Duration {
    let time_left = time_left.max(Duration::from_millis(CHECKPOINT_TIME_LEFT_MS_MIN));
    let pages_per_s = (pages_left as f64 / time_left.as_secs_f64())
        .clamp(CHECKPOINT_PAGES_PER_S_MIN, CHECKPOINT_PAGES_PER_S_MAX);
    Duration::from_secs_f64(slice_pages.max(1) as f64 / pages_per_s)
}

/// The replica type of the node: trees and WALs on glommio DMA files.
pub type NodeReplica = Replica<DmaPageStore, DmaBlockDevice>;

/// One partition on its core.
pub struct LocalPartition {
    /// Its global id.
    pub id: u64,
    /// Its table.
    pub table: String,
    /// Its index within the table.
    pub index: u32,
    /// The replica.
    pub replica: Rc<NodeReplica>,
    /// Its tree file.
    pub path: PathBuf,
    driver: RefCell<Option<glommio::Task<Result<(), ReplicaError>>>>,
    last_checkpoint: Cell<Instant>,
    /// Requests served since the last heartbeat took the count.
    pub(crate) requests: Cell<u64>,
}

/// Counters of one core.
#[derive(Default, Debug)]
pub struct ShardStats {
    /// Requests that arrived from clients.
    pub requests: Cell<u64>,
    /// Requests forwarded to another core because this one does not own the partition.
    pub forwarded_out: Cell<u64>,
    /// Calls served for other cores.
    pub forwarded_in: Cell<u64>,
    /// Checkpoints completed.
    pub checkpoints: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// What warming one partition did ([`Shard::warm_partition`]).
struct Warmed {
    /// Pages it asked for (cached ones included).
    pages: u64,
    /// Items in the partition's tree.
    items: u64,
}

/// One core's state (see the module doc).
pub struct Shard {
    /// This core's index.
    pub index: u32,
    /// Cores in the node.
    pub cores: u32,
    /// The configuration.
    pub config: Arc<Config>,
    /// The mesh to the other cores.
    pub mesh: Rc<Mesh>,
    /// The WAL.
    pub wal: Rc<Wal<DmaBlockDevice>>,
    /// What the WAL held at start-up; replicas opened later find nothing of theirs in it.
    wal_report: RecoveryReport,
    catalog: RefCell<Arc<Catalog>>,
    partitions: RefCell<HashMap<u64, Rc<LocalPartition>>>,
    /// Serialises catalog changes (core 0 only: plan, write, broadcast).
    pub(crate) admin_lock: glommio::sync::Semaphore,
    /// Serialises the application of catalogs on this core.
    catalog_lock: glommio::sync::Semaphore,
    /// Set on SIGTERM.
    pub drain: Rc<Drain>,
    /// Partitions being received from another node (a move).
    pub(crate) inbox: crate::moving::Inbox,
    /// Open connections.
    pub connections: Rc<Connections>,
    background: TaskQueueHandle,
    /// The page-cache warm-ups under way (at start-up, and of partitions a catalog opened
    /// since, such as one moved here): closed, and waited for, before the final checkpoint.
    warming: glommio::sync::Gate,
    stopping: Cell<bool>,
    /// Counters.
    pub stats: ShardStats,
}

impl Shard {
    /// Whether the node is stopping (connections drain).
    pub fn draining(&self) -> bool {
        self.drain.is_draining()
    }

    /// The catalog as this core knows it.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    /// The local partition with this id.
    pub fn partition(&self, id: u64) -> Option<Rc<LocalPartition>> {
        self.partitions.borrow().get(&id).cloned()
    }

    /// This core's directory.
    fn core_dir(&self) -> PathBuf {
        core_dir(&self.config, self.index)
    }

    pub(crate) fn tables_dir(&self) -> PathBuf {
        self.core_dir().join("tables")
    }

    /// The page-cache bytes one of `partitions` partitions of this core gets.
    fn partition_cache_bytes(&self, partitions: usize) -> usize {
        let per = self.config.core_memory_budget_bytes() / partitions.max(1) as u64;
        per.max(PARTITION_CACHE_BYTES_MIN) as usize
    }

    /// Opens (creating if new) partition `index` of `table`, recovers it from its tree and
    /// the WAL, spawns its driver and waits until it serves.
    async fn open_partition(
        &self,
        table: &TableEntry,
        index: u32,
        partitions_on_core: usize,
    ) -> Result<Rc<LocalPartition>, String> {
        let entry = table.partitions[index as usize];
        let path = partition_path(&self.tables_dir(), entry.id);
        let page_size = table.page_size_bytes as usize;
        let store = DmaPageStore::open(&path, page_size)
            .await
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        let tree_config = btree::Config {
            page_size_bytes: page_size,
            cache_bytes_max: self.partition_cache_bytes(partitions_on_core),
            ..btree::Config::default()
        };
        let tree = Tree::open(store, tree_config)
            .await
            .map_err(|e| format!("opening the tree {}: {e}", path.display()))?;
        let replica_config = ReplicaConfig {
            hash_range: table.hash_range(index),
            ..ReplicaConfig::single(PartitionId(entry.id))
        };
        let replica = Replica::open(replica_config, tree, self.wal.clone(), &self.wal_report)
            .await
            .map_err(|e| format!("recovering partition {} of {:?}: {e}", entry.id, table.name))?;
        let replica = Rc::new(replica);
        let driver = glommio::spawn_local(replica.clone().run());
        replica.ready().await.map_err(|e| {
            format!(
                "partition {} of {:?} did not become ready: {e}",
                entry.id, table.name
            )
        })?;
        Ok(Rc::new(LocalPartition {
            id: entry.id,
            table: table.name.clone(),
            index,
            replica,
            path,
            driver: RefCell::new(Some(driver)),
            last_checkpoint: Cell::new(Instant::now()),
            requests: Cell::new(0),
        }))
    }

    /// Checkpoints a partition to the end, in slices, pausing between them: paced to end
    /// within `budget`, or at the fastest pace with none (at shutdown, when no request
    /// waits on the device) and once the core is stopping.
    async fn checkpoint_fully(
        &self,
        p: &LocalPartition,
        budget: Option<Duration>,
    ) -> Result<(), ReplicaError> {
        let started = Instant::now();
        loop {
            match p
                .replica
                .checkpoint_step(self.config.checkpoint_slice_pages)
                .await?
            {
                CheckpointStep::InProgress { pages_left, .. } => {
                    // Paced, not just yielded: an idle core would otherwise write a whole
                    // checkpoint at the device's full speed, and the WAL's durable writes
                    // wait behind it in the device queue (with a million items, p99 rose to
                    // 100 ms). See `CHECKPOINT_PAGES_PER_S_MIN` for why only as fast as
                    // the budget needs.
                    let time_left = match budget {
                        Some(b) if !self.stopping.get() => b.saturating_sub(started.elapsed()),
                        _ => Duration::ZERO,
                    };
                    let pause =
                        checkpoint_pause(self.config.checkpoint_slice_pages, pages_left, time_left);
                    glommio::timer::sleep(pause).await
                }
                CheckpointStep::Done { pages_written, .. } => {
                    if pages_written > 0 {
                        bump(&self.stats.checkpoints);
                    }
                    p.last_checkpoint.set(Instant::now());
                    return Ok(());
                }
            }
        }
    }

    /// Stops a partition's driver once its writes in flight are answered.
    async fn stop_partition(&self, p: &LocalPartition) {
        p.replica.shutdown();
        let driver = p.driver.borrow_mut().take();
        if let Some(driver) = driver {
            if let Err(e) = driver.await {
                tracing::error!(core = self.index, partition = p.id, error = %e, "partition driver failed");
            }
        }
    }

    /// Adopts `next` (from core 0): opens the partitions it gives this core, drops the ones
    /// it took away (deleting their tree files and releasing their WAL streams).
    pub async fn apply_catalog(self: &Rc<Self>, next: Arc<Catalog>) -> Result<(), String> {
        let _turn = self
            .catalog_lock
            .acquire_permit(1)
            .await
            .map_err(|e| format!("catalog lock: {e}"))?;
        let current = self.catalog();
        if next.version <= current.version {
            return Ok(());
        }
        let me = self.index;
        let on_core = next.partitions_of_core(me).count();
        // Open what is new before the catalog names it, so a request routed by the new
        // catalog finds its replica.
        let mut opened = Vec::new();
        for (table, index, entry) in next.partitions_of_core(me) {
            if self.partitions.borrow().contains_key(&entry.id) {
                continue;
            }
            opened.push(self.open_partition(table, index, on_core).await?);
        }
        for p in opened {
            self.partitions.borrow_mut().insert(p.id, p.clone());
            // A partition moved here arrives with its whole tree and a cold cache: warm it
            // as at start-up, so that its first requests do not each wait for the disk (a
            // new partition is one page, and done at once).
            let warming = self
                .warming
                .spawn_into(self.clone().warm_opened(p), self.background);
            match warming {
                Ok(task) => drop(task.detach()),
                // Closed: the core is stopping, and a cold cache no longer matters.
                Err(e) => tracing::debug!(core = me, error = %e, "no warm-up: stopping"),
            }
        }
        *self.catalog.borrow_mut() = next.clone();
        // Drop what is gone, after the catalog stopped naming it.
        let keep: std::collections::HashSet<u64> =
            next.partitions_of_core(me).map(|(_, _, p)| p.id).collect();
        let gone: Vec<Rc<LocalPartition>> = {
            let mut parts = self.partitions.borrow_mut();
            let ids: Vec<u64> = parts
                .keys()
                .copied()
                .filter(|id| !keep.contains(id))
                .collect();
            ids.into_iter().filter_map(|id| parts.remove(&id)).collect()
        };
        for p in gone {
            self.stop_partition(&p).await;
            let id = PartitionId(p.id);
            self.wal.release(id.entries_stream(), u64::MAX);
            self.wal.release(id.hard_state_stream(), u64::MAX);
            let path = p.path.clone();
            drop(p);
            if let Err(e) = glommio::io::remove(&path).await {
                tracing::warn!(core = me, path = %path.display(), error = %e, "cannot remove a deleted partition's tree");
            }
            tracing::info!(core = me, partition = id.0, "partition dropped");
        }
        Ok(())
    }

    /// Serves one mesh call from core `from`.
    async fn serve_call(self: &Rc<Self>, call: Call) -> Reply {
        bump(&self.stats.forwarded_in);
        match call {
            Call::Request(request) => Reply::Response(
                self.route(request, true)
                    .await
                    .unwrap_or_else(proto::Response::Error),
            ),
            Call::Scan(step) => Reply::Scan(self.scan_step_local(&step).await),
            Call::ApplyCatalog(catalog) => Reply::CatalogApplied(self.apply_catalog(catalog).await),
        }
    }

    /// Reads every partition's pages into its cache after start-up, until the tree is all
    /// in or the cache is [`WARM_CACHE_PERCENT`] full. Runs in the background queue while the
    /// core serves, and stops when it drains.
    ///
    /// The branch levels go first, breadth-first, a page at a time with
    /// [`WARM_READS_IN_FLIGHT`] in flight: they are few and on every path. The leaves, nearly
    /// every page, then go by their ids in ascending order, in runs of up to
    /// `btree::limits::WARM_RUN_PAGES_MAX` neighbouring pages read at once,
    /// [`WARM_RUNS_IN_FLIGHT`] runs at a time.
    async fn warm_up(self: Rc<Self>) {
        let started = Instant::now();
        let parts: Vec<_> = self.partitions.borrow().values().cloned().collect();
        let mut pages = 0u64;
        for p in parts {
            match self.warm_partition(&p).await {
                Ok(warmed) => pages += warmed.pages,
                // A damaged page shows itself to the request that reads it; the warm-up
                // only moves on.
                Err(e) => {
                    tracing::warn!(core = self.index, partition = p.id, error = %e, "warm-up stopped")
                }
            }
        }
        tracing::info!(
            core = self.index,
            pages,
            ms = started.elapsed().as_millis() as u64,
            "page caches warmed"
        );
    }

    /// Warms one partition a catalog opened while the core serves (see
    /// [`Shard::apply_catalog`]), and says so.
    async fn warm_opened(self: Rc<Self>, p: Rc<LocalPartition>) {
        let started = Instant::now();
        match self.warm_partition(&p).await {
            // A new partition is empty: not worth a line per partition of a new table.
            Ok(warmed) if warmed.items == 0 => {}
            Ok(warmed) => tracing::info!(
                core = self.index,
                partition = p.id,
                items = warmed.items,
                pages = warmed.pages,
                ms = started.elapsed().as_millis() as u64,
                "page cache of an opened partition warmed"
            ),
            Err(e) => {
                tracing::warn!(core = self.index, partition = p.id, error = %e, "warm-up stopped")
            }
        }
    }

    /// Warms one partition (see [`Shard::warm_up`]); says how many pages it asked for, of
    /// how many items.
    async fn warm_partition(self: &Rc<Self>, p: &LocalPartition) -> Result<Warmed, String> {
        let view = p.replica.view().await;
        let warmed = |pages| Warmed {
            pages,
            items: view.len(),
        };
        let full = view.cache_bytes_max() / 100 * WARM_CACHE_PERCENT;
        let mut level = vec![view.root_page()];
        let mut pages = 0u64;
        // Branch levels, page by page: each level's children are the next level.
        for _ in 1..view.depth() {
            pages += level.len() as u64;
            let singles = level.iter().map(|&id| vec![id]).collect();
            level = self
                .warm_runs(&view, singles, WARM_READS_IN_FLIGHT, full)
                .await?;
            if self.draining() || view.cache_bytes() >= full {
                return Ok(warmed(pages));
            }
        }
        // The leaves (or a root that is one), by page id, in runs of neighbours.
        level.sort_unstable();
        pages += level.len() as u64;
        let mut runs: Vec<Vec<u64>> = Vec::new();
        for id in level {
            match runs.last_mut() {
                Some(run) if id - run[0] < btree::limits::WARM_RUN_PAGES_MAX as u64 => run.push(id),
                _ => runs.push(vec![id]),
            }
        }
        self.warm_runs(&view, runs, WARM_RUNS_IN_FLIGHT, full)
            .await?;
        Ok(warmed(pages))
    }

    /// Reads `runs` into the cache, `in_flight` runs at a time, in order, until the cache is
    /// `full` bytes or the core drains; returns the children of what it read.
    async fn warm_runs(
        self: &Rc<Self>,
        view: &btree::Snapshot<DmaPageStore>,
        runs: Vec<Vec<u64>>,
        in_flight: usize,
        full: u64,
    ) -> Result<Vec<u64>, String> {
        let runs = Rc::new(RefCell::new(runs.into_iter()));
        let mut workers = Vec::with_capacity(in_flight);
        for _ in 0..in_flight {
            let (view, shard, runs) = (view.clone(), self.clone(), runs.clone());
            let worker = glommio::spawn_local_into(
                async move {
                    let mut kids = Vec::new();
                    loop {
                        if shard.draining() || view.cache_bytes() >= full {
                            break;
                        }
                        let Some(run) = runs.borrow_mut().next() else {
                            break;
                        };
                        kids.extend(view.warm_run(&run).await?);
                    }
                    Ok::<_, btree::Error>(kids)
                },
                self.background,
            )
            .map_err(|e| format!("cannot spawn a warm-up worker: {e}"))?;
            workers.push(worker);
        }
        let mut kids = Vec::new();
        for w in workers {
            kids.extend(w.await.map_err(|e| e.to_string())?);
        }
        Ok(kids)
    }

    /// Ticks every replica's raft clock.
    async fn ticker(self: Rc<Self>) {
        let period = Duration::from_millis(self.config.raft_tick_ms);
        while !self.stopping.get() {
            glommio::timer::sleep(period).await;
            let parts: Vec<_> = self.partitions.borrow().values().cloned().collect();
            for p in parts {
                p.replica.tick();
            }
        }
    }

    /// Checkpoints dirty trees in small slices: a tree is due once it has
    /// `checkpoint_dirty_bytes` dirty, or `checkpoint_interval_ms` after its last checkpoint
    /// (even clean: an idle replica still gives the WAL back). Runs in the low-share
    /// background queue and yields it after every slice.
    async fn checkpointer(self: Rc<Self>) {
        let interval = Duration::from_millis(self.config.checkpoint_interval_ms);
        let poll = Duration::from_millis(CHECKPOINT_POLL_MS).min(interval);
        let mut failed_logged = std::collections::HashSet::new();
        while !self.stopping.get() {
            glommio::timer::sleep(poll).await;
            let parts: Vec<_> = self.partitions.borrow().values().cloned().collect();
            // Dirty pages are pinned in the cache: never let them fill more than half of it.
            let dirty_max = self
                .config
                .checkpoint_dirty_bytes
                .min(self.partition_cache_bytes(parts.len().max(1)) as u64 / 2);
            let due: Vec<_> = parts
                .into_iter()
                .filter(|p| {
                    (p.replica.dirty_bytes() >= dirty_max
                        || p.last_checkpoint.get().elapsed() >= interval)
                        && p.replica.failure().is_none()
                })
                .collect();
            // The due checkpoints run one after another: together they get half an
            // interval, so that the next round finds them done.
            let budget = interval / 2 / due.len().max(1) as u32;
            for p in due {
                if self.stopping.get() {
                    break;
                }
                if let Err(e) = self.checkpoint_fully(&p, Some(budget)).await {
                    if failed_logged.insert(p.id) {
                        tracing::error!(core = self.index, partition = p.id, error = %e, "checkpoint failed");
                    }
                }
            }
        }
    }
}

fn core_dir(config: &Config, index: u32) -> PathBuf {
    config.data_dir.join(format!("core-{index}"))
}

pub(crate) fn partition_path(tables_dir: &std::path::Path, id: u64) -> PathBuf {
    tables_dir.join(format!("p-{id}.tree"))
}

/// The partition id a tree file name holds, if it is one.
fn partition_id_of(name: &str) -> Option<u64> {
    name.strip_prefix("p-")?.strip_suffix(".tree")?.parse().ok()
}

/// Creates `dir` (and its parents) and makes its entry durable in its parent.
async fn make_dir(dir: &std::path::Path) -> Result<(), String> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if let Some(parent) = dir.parent() {
        devices::dma::sync_dir(parent)
            .await
            .map_err(|e| format!("syncing {}: {e}", parent.display()))?;
    }
    Ok(())
}

/// The core's whole life (see the module doc). `Err` says why the core failed.
pub async fn run(start: CoreStart) -> Result<(), String> {
    let CoreStart {
        index,
        config,
        catalog,
        mesh,
        stop,
        events,
        recovered,
        drained,
    } = start;
    let cores = config.core_count() as u32;

    // Before anything else: see REACTOR_KEEPALIVE_US.
    let keepalive_stop = Rc::new(Cell::new(false));
    let keepalive = {
        let stop = keepalive_stop.clone();
        glommio::spawn_local(async move {
            while !stop.get() {
                glommio::timer::sleep(Duration::from_micros(REACTOR_KEEPALIVE_US)).await;
            }
        })
    };

    // The mesh first: each end's connect waits for its peer's, so every core must reach it.
    tracing::debug!(core = index, "connecting the mesh");
    let (mesh, receivers) = mesh.connect().await;
    tracing::debug!(core = index, "mesh connected");

    // Pitfall 1: a non-empty file is opened first on this executor, before any tree or WAL.
    let dir = core_dir(&config, index);
    make_dir(&dir).await?;
    devices::dma::prime_device(&dir)
        .await
        .map_err(|e| format!("priming {}: {e}", dir.display()))?;
    let wal_dir = dir.join("wal");
    let tables_dir = dir.join("tables");
    make_dir(&wal_dir).await?;
    make_dir(&tables_dir).await?;

    tracing::debug!(core = index, "data directory primed; opening the WAL");
    let device = DmaBlockDevice::open(&wal_dir)
        .await
        .map_err(|e| format!("opening the WAL directory {}: {e}", wal_dir.display()))?;
    let (wal, wal_report) = Wal::open(device, config.wal.wal_config())
        .await
        .map_err(|e| format!("recovering the WAL of core {index}: {e}"))?;
    tracing::info!(
        core = index,
        records = wal_report.records,
        streams = wal_report.streams.len(),
        cut_at = ?wal_report.cut_at,
        "WAL recovered"
    );
    let wal = Rc::new(wal);
    let flusher = {
        let wal = wal.clone();
        glommio::spawn_local(async move { wal.run().await })
    };

    let background = glommio::executor().create_task_queue(
        Shares::Static(config.background_shares),
        Latency::NotImportant,
        "background",
    );
    let shard = Rc::new(Shard {
        index,
        cores,
        config: config.clone(),
        mesh: mesh.clone(),
        wal: wal.clone(),
        wal_report,
        catalog: RefCell::new(Arc::new(Catalog::default())),
        partitions: RefCell::new(HashMap::new()),
        admin_lock: glommio::sync::Semaphore::new(1),
        catalog_lock: glommio::sync::Semaphore::new(1),
        drain: Rc::new(Drain::default()),
        inbox: crate::moving::Inbox::default(),
        connections: Rc::new(Connections::new(crate::limits::SERVER_LIMITS)),
        background,
        warming: glommio::sync::Gate::new(),
        stopping: Cell::new(false),
        stats: ShardStats::default(),
    });

    // Mesh receivers: a call runs as its own task, so a slow call never holds the channel.
    for (peer, receiver) in receivers {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(envelope) = receiver.recv().await {
                match envelope {
                    Envelope::Call { from, token, call } => {
                        let shard = shard.clone();
                        glommio::spawn_local(async move {
                            let reply = shard.serve_call(call).await;
                            if let Err(e) = shard.mesh.reply(from, token, reply).await {
                                tracing::debug!(core = shard.index, error = %e, "reply not delivered");
                            }
                        })
                        .detach();
                    }
                    Envelope::Reply { token, reply } => shard.mesh.deliver(token, reply),
                }
            }
            tracing::debug!(core = shard.index, peer, "mesh receiver closed");
        })
        .detach();
    }

    // Recover every partition of this core, then remove what the catalog no longer names.
    let result = recover(&shard, catalog, &tables_dir).await;
    if let Err(e) = result {
        recovered.fail();
        drained.fail();
        wal.close();
        let _ = flusher.await;
        return Err(e);
    }
    let _ = events.send(CoreEvent::Recovered {
        core: index,
        partitions: shard.partitions.borrow().len(),
    });

    let ticker = glommio::spawn_local_into(shard.clone().ticker(), shard.background)
        .map_err(|e| format!("spawning the ticker: {e}"))?;
    let checkpointer = glommio::spawn_local_into(shard.clone().checkpointer(), shard.background)
        .map_err(|e| format!("spawning the checkpointer: {e}"))?;

    // Listen only once every core has recovered.
    if recovered.arrive_and_wait().await.is_err() {
        return Err("another core failed to start".into());
    }
    let mut accepting = Vec::new();
    for port in [config.port, config.core_ports[index as usize]] {
        let addr = format!("{}:{port}", config.listen_host);
        let listener = glommio::net::TcpListener::bind(&addr)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        accepting.push(glommio::spawn_local(server::accept_loop(
            listener,
            shard.clone(),
            shard.connections.clone(),
            shard.drain.clone(),
        )));
    }
    let _ = events.send(CoreEvent::Listening { core: index });
    shard
        .warming
        .spawn_into(shard.clone().warm_up(), shard.background)
        .map_err(|e| format!("spawning the warm-up: {e}"))?
        .detach();
    let agent = match (index, &config.meta) {
        (0, Some(meta)) => {
            let meta: std::net::SocketAddr = meta
                .parse()
                .map_err(|e| format!("the meta address {meta:?}: {e}"))?;
            Some(glommio::spawn_local(shard.clone().cluster_agent(meta)))
        }
        _ => None,
    };

    stop.wait().await;
    tracing::info!(
        core = index,
        open = shard.connections.open(),
        "stop signal: draining"
    );
    shard.drain.start();
    for a in accepting {
        a.await;
    }
    if let Some(agent) = agent {
        // It stops at its next heartbeat or retry; no need to wait for that.
        drop(agent.cancel());
    }
    let drained_in_time = shard
        .connections
        .all_closed_within(Duration::from_millis(DRAIN_TIMEOUT_MS))
        .await;
    if !drained_in_time {
        tracing::warn!(
            core = index,
            open = shard.connections.open(),
            "drain timed out; closing anyway"
        );
    }
    // Peers may still forward their last requests here until they have drained too.
    let _ = drained.arrive_and_wait().await;

    shard.stopping.set(true);
    if let Err(e) = shard.warming.close().await {
        tracing::warn!(core = index, error = %e, "waiting for the warm-ups");
    }
    ticker.await;
    checkpointer.await;
    let parts: Vec<_> = shard.partitions.borrow().values().cloned().collect();
    let mut failure = None;
    for p in &parts {
        if p.replica.failure().is_none() {
            if let Err(e) = shard.checkpoint_fully(p, None).await {
                tracing::error!(core = index, partition = p.id, error = %e, "final checkpoint failed");
            }
        }
        shard.stop_partition(p).await;
        if let Some(e) = p.replica.failure() {
            failure.get_or_insert(format!("partition {} failed: {e}", p.id));
        }
    }
    wal.close();
    if let Err(e) = flusher.await {
        failure.get_or_insert(format!("the WAL failed: {e}"));
    }
    mesh.close();
    keepalive_stop.set(true);
    keepalive.await;
    let wal_stats = wal.stats();
    let (readies, apply_batches) = shard
        .partitions
        .borrow()
        .values()
        .map(|p| p.replica.stats())
        .fold((0, 0), |(r, a), s| (r + s.readies, a + s.apply_batches));
    tracing::info!(
        core = index,
        requests = shard.stats.requests.get(),
        forwarded_out = shard.stats.forwarded_out.get(),
        forwarded_in = shard.stats.forwarded_in.get(),
        checkpoints = shard.stats.checkpoints.get(),
        wal_records = wal_stats.records_appended,
        wal_batches = wal_stats.batches_written,
        wal_bytes = wal_stats.bytes_written,
        wal_rollover_waits = wal_stats.rollover_waits,
        readies,
        apply_batches,
        "core stopped"
    );
    match failure {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// Opens every partition the catalog gives this core; removes tree files and releases WAL
/// streams of partitions it does not name (left by a delete that crashed half-way).
async fn recover(
    shard: &Rc<Shard>,
    catalog: Arc<Catalog>,
    tables_dir: &std::path::Path,
) -> Result<(), String> {
    let me = shard.index;
    let on_core = catalog.partitions_of_core(me).count();
    for (table, index, _) in catalog.partitions_of_core(me) {
        let p = shard.open_partition(table, index, on_core).await?;
        shard.partitions.borrow_mut().insert(p.id, p);
    }
    *shard.catalog.borrow_mut() = catalog.clone();

    let known: std::collections::HashSet<u64> = shard.partitions.borrow().keys().copied().collect();
    let entries = std::fs::read_dir(tables_dir)
        .map_err(|e| format!("listing {}: {e}", tables_dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(partition_id_of) else {
            continue;
        };
        if !known.contains(&id) {
            let path = entry.path();
            tracing::info!(core = me, path = %path.display(), "removing the tree of a deleted partition");
            glommio::io::remove(&path)
                .await
                .map_err(|e| format!("removing {}: {e}", path.display()))?;
        }
    }
    for &stream in shard.wal_report.streams.keys() {
        if !known.contains(&(stream / 2)) {
            shard.wal.release(stream, u64::MAX);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_goes_as_fast_as_its_budget_needs_within_bounds() {
        let ms = Duration::from_millis;
        // 10,000 pages in 5 s: 2,000 pages/s, so 4 pages take 2 ms.
        assert_eq!(checkpoint_pause(4, 10_000, ms(5000)), ms(2));
        // Little to write: the slowest rate (4 pages at 1,024 a second).
        assert_eq!(
            checkpoint_pause(4, 10, ms(5000)),
            Duration::from_secs_f64(4.0 / 1024.0)
        );
        // Far behind, or past the budget: the fastest rate.
        let fastest = Duration::from_secs_f64(4.0 / 16384.0);
        assert_eq!(checkpoint_pause(4, 1_000_000, ms(5000)), fastest);
        assert_eq!(checkpoint_pause(4, 100, Duration::ZERO), fastest);
        // A slice of zero pages still pauses, as one page would.
        assert_eq!(
            checkpoint_pause(0, 10, ms(5000)),
            Duration::from_secs_f64(1.0 / 1024.0)
        );
    }
}
