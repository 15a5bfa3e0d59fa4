//! The node's configuration: a TOML file, every field overridable by an environment variable
//! (`PERCORE_...`) and by a command-line flag.
//!
//! Precedence, highest first: the flag, the environment variable, the file, the default.
//! [`Cli`] is what clap parses (flags and environment together: clap reads a flag's variable
//! when the flag is absent); [`FileConfig`] is the file; [`Config::resolve`] merges them
//! over the defaults and validates the result, answering a [`ConfigError`] that names the
//! field and what to do.
//!
//! Sizes accept a plain number of bytes or a binary unit: `4096`, `64KiB`, `512MiB`, `1GiB`.
//! Core lists accept `0,1`, `0-3,6` or `all`.
//!
//! # Defaults (and why)
//!
//! | field | default | why |
//! |---|---|---|
//! | `data_dir` | none: required | a storage daemon must never guess where data lives |
//! | `listen_host` | `127.0.0.1` | safe by default; set `0.0.0.0` to serve the network |
//! | `port` | 7700 | the shared (SO_REUSEPORT) port every core listens on |
//! | `core_ports` | `port+1+i` for core index `i` | each core's own port, for routers |
//! | `cores` | every CPU this process may run on | one executor per CPU, pinned |
//! | `memory_budget` | a quarter of physical memory | page caches; the rest is the OS's and the WAL's |
//! | `io_memory` | 4 MiB per core | glommio's registered DMA pool; locked 3× (pitfall 8) |
//! | `partitions_per_core` | 2 | a table's default cut: two per core, so work spreads |
//! | `log_level` | `info` | a tracing filter (`info`, `debug`, `shard_node=debug,warn`...) |
//! | `log_file` | none: stderr | |
//! | WAL knobs | `wal::Config::default()` | 64 MiB segments, 256 KiB batches, 8 in flight |
//! | `checkpoint_interval_ms` | 10000 | a dirty tree is checkpointed at least this often (fewer tree syncs in the WAL's device queue) |
//! | `checkpoint_dirty_bytes` | 256 MiB | ... or sooner, once this much of it (or half its cache share) is dirty |
//! | `checkpoint_slice_pages` | 16 | pages per checkpoint step between yields: ~0.2 ms of work |
//! | `background_shares` | 50 | the background queue's CPU share against 1000 for requests |
//! | `raft_tick_ms` | 100 | the raft timer (elections and heartbeats count ticks) |
//! | `page_size` | 8 KiB | B-tree pages of new partitions: a 1 KB item (DynamoDB's typical size) stays inside its leaf; with 4 KiB pages it takes an overflow page of its own, 4× the memory and I/O |
//! | `node_id` | 1 | this node's id, named in errors that point at an owner; unique in a cluster |
//! | `meta` | none | the metadata service's `host:port`; set, the node joins a cluster: it registers, heartbeats and holds what the service assigns (tables are created through it, not here) |
//! | `zone` | `local` | the node's failure domain, reported to the metadata service |
//! | `heartbeat_ms` | 1000 | how often the node tells the metadata service it is alive |

use std::fmt;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

use crate::limits::{CORES_MAX, PARTITION_CACHE_BYTES_MIN};

/// The shared port when none is configured.
pub const PORT_DEFAULT: u16 = 7700;
/// The listen address when none is configured.
pub const LISTEN_HOST_DEFAULT: &str = "127.0.0.1";
/// glommio's registered I/O memory per core when none is configured.
pub const IO_MEMORY_BYTES_DEFAULT: u64 = 4 * 1024 * 1024;
/// glommio refuses below 512 KiB of memlock and rounds its pool up to 64 KiB; below that
/// the WAL's batches would not fit in registered buffers at all.
pub const IO_MEMORY_BYTES_MIN: u64 = 64 * 1024;
/// A registered pool beyond 1 GiB per core is a typo, not a plan.
pub const IO_MEMORY_BYTES_MAX: u64 = 1 << 30;
/// Partitions per core a table gets by default.
pub const PARTITIONS_PER_CORE_DEFAULT: u32 = 2;
/// More than this many default partitions per core is a typo (a create may still ask for
/// up to proto's `TABLE_PARTITIONS_MAX`).
pub const PARTITIONS_PER_CORE_MAX: u32 = 64;
/// The tracing filter when none is configured.
pub const LOG_LEVEL_DEFAULT: &str = "info";
/// How often a dirty tree is checkpointed at the latest. Every checkpoint ends in two syncs of
/// the tree file, which the device serves in the same queue as the WAL's durable writes:
/// measured with a million 1 KB items under YCSB-A, checkpointing every 1 s / 16 MiB held
/// the node to 41.5 K ops/s, every 10 s / 256 MiB let it reach 53 K with a lower p99. The
/// price is WAL to replay at start-up (about 20 MB/s of writes: 200 MB, a few seconds).
pub const CHECKPOINT_INTERVAL_MS_DEFAULT: u64 = 10_000;
/// Dirty bytes of one tree that start a checkpoint before the interval is up (never more
/// than half the partition's page-cache share: dirty pages cannot be evicted). See
/// [`CHECKPOINT_INTERVAL_MS_DEFAULT`] for the measurement.
pub const CHECKPOINT_DIRTY_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;
/// Pages one checkpoint step writes before the background task yields.
pub const CHECKPOINT_SLICE_PAGES_DEFAULT: usize = 16;
/// The background task queue's shares (glommio's range is 1..=1000; requests have 1000).
pub const BACKGROUND_SHARES_DEFAULT: usize = 50;
/// The raft timer's period.
pub const RAFT_TICK_MS_DEFAULT: u64 = 100;
/// B-tree page size of new partitions when none is configured. A value longer than about a
/// quarter of a page goes to overflow pages of its own; at 8 KiB a 1 KB item stays in its
/// leaf (at 4 KiB it took a 4 KiB overflow page: 4× the page cache for the same items).
pub const PAGE_SIZE_BYTES_DEFAULT: u64 = 8 * 1024;
/// The node id when none is configured.
pub const NODE_ID_DEFAULT: u64 = 1;

/// The zone a node reports when none is configured.
pub const ZONE_DEFAULT: &str = "local";

/// Milliseconds between heartbeats: well under the metadata service's default 3 s timeout,
/// so that two lost heartbeats do not make a live node look dead.
pub const HEARTBEAT_MS_DEFAULT: u64 = 1000;

/// percore-node: the storage daemon, one pinned glommio executor per core.
///
/// Every flag can also be set by the environment variable shown, or in the TOML file given
/// with --config (same names, with underscores). Flags win over variables, variables over
/// the file, the file over the defaults; a flag given twice takes its last value.
#[derive(Parser, Debug, Clone, Default)]
#[command(name = "percore-node", version, about, long_about = None, args_override_self = true)]
pub struct Cli {
    /// The TOML configuration file.
    #[arg(long, env = "PERCORE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the node keeps its catalog, WALs and trees (required).
    #[arg(long, env = "PERCORE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The address to listen on [default: 127.0.0.1].
    #[arg(long, env = "PERCORE_LISTEN_HOST")]
    pub listen_host: Option<String>,
    /// The shared port, on which every core listens (SO_REUSEPORT) [default: 7700].
    #[arg(long, env = "PERCORE_PORT")]
    pub port: Option<u16>,
    /// Each core's own port, in core order, comma-separated [default: port+1+i].
    #[arg(long, env = "PERCORE_CORE_PORTS")]
    pub core_ports: Option<String>,
    /// The CPUs to run on, one executor each: `0,1`, `0-3,6` or `all` [default: all].
    #[arg(long, env = "PERCORE_CORES")]
    pub cores: Option<String>,
    /// Bytes of page cache for all partitions together, e.g. `2GiB` [default: RAM/4].
    #[arg(long, env = "PERCORE_MEMORY_BUDGET")]
    pub memory_budget: Option<String>,
    /// glommio's registered I/O memory per core, e.g. `4MiB` [default: 4MiB].
    #[arg(long, env = "PERCORE_IO_MEMORY")]
    pub io_memory: Option<String>,
    /// Partitions a new table gets per core when its create does not say [default: 2].
    #[arg(long, env = "PERCORE_PARTITIONS_PER_CORE")]
    pub partitions_per_core: Option<u32>,
    /// A tracing filter: `info`, `debug`, `shard_node=debug,warn` [default: info].
    #[arg(long, env = "PERCORE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Append logs to this file instead of stderr.
    #[arg(long, env = "PERCORE_LOG_FILE")]
    pub log_file: Option<PathBuf>,
    /// Bytes per WAL segment file [default: 64MiB].
    #[arg(long, env = "PERCORE_WAL_SEGMENT_BYTES")]
    pub wal_segment_bytes: Option<String>,
    /// A WAL batch closes past this many bytes [default: 256KiB].
    #[arg(long, env = "PERCORE_WAL_BATCH_BYTES")]
    pub wal_batch_bytes: Option<String>,
    /// WAL batch writes in flight at once [default: 8].
    #[arg(long, env = "PERCORE_WAL_BATCHES_IN_FLIGHT")]
    pub wal_batches_in_flight: Option<usize>,
    /// Zero-filled spare WAL segments kept ready [default: 2].
    #[arg(long, env = "PERCORE_WAL_SPARE_SEGMENTS")]
    pub wal_spare_segments: Option<usize>,
    /// Bytes of recent WAL records kept in memory [default: 32MiB].
    #[arg(long, env = "PERCORE_WAL_TAIL_CACHE_BYTES")]
    pub wal_tail_cache_bytes: Option<String>,
    /// A dirty tree is checkpointed at least this often, in ms [default: 10000].
    #[arg(long, env = "PERCORE_CHECKPOINT_INTERVAL_MS")]
    pub checkpoint_interval_ms: Option<u64>,
    /// A tree with this many dirty bytes is checkpointed early [default: 256MiB].
    #[arg(long, env = "PERCORE_CHECKPOINT_DIRTY_BYTES")]
    pub checkpoint_dirty_bytes: Option<String>,
    /// Pages per checkpoint step between yields [default: 16].
    #[arg(long, env = "PERCORE_CHECKPOINT_SLICE_PAGES")]
    pub checkpoint_slice_pages: Option<usize>,
    /// CPU shares of the background task queue, 1..=1000, against 1000 for requests
    /// [default: 50].
    #[arg(long, env = "PERCORE_BACKGROUND_SHARES")]
    pub background_shares: Option<usize>,
    /// The raft timer's period in ms [default: 100].
    #[arg(long, env = "PERCORE_RAFT_TICK_MS")]
    pub raft_tick_ms: Option<u64>,
    /// B-tree page size of new partitions, a power of two in 4KiB..=64KiB [default: 8KiB].
    #[arg(long, env = "PERCORE_PAGE_SIZE")]
    pub page_size: Option<String>,
    /// This node's id [default: 1].
    #[arg(long, env = "PERCORE_NODE_ID")]
    pub node_id: Option<u64>,
    /// The metadata service's address (`host:port`); unset: a single node that is its own
    /// metadata service.
    #[arg(long, env = "PERCORE_META")]
    pub meta: Option<String>,
    /// The failure domain this node runs in, as the metadata service sees it [default: local].
    #[arg(long, env = "PERCORE_ZONE")]
    pub zone: Option<String>,
    /// Milliseconds between two heartbeats to the metadata service [default: 1000].
    #[arg(long, env = "PERCORE_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Print the resolved configuration as TOML and exit (checks nothing on disk).
    #[arg(long)]
    pub print_config: bool,
}

/// A size in a TOML file: a number of bytes or a string with a binary unit.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum SizeValue {
    /// Bytes.
    Bytes(u64),
    /// `"64MiB"` and the like.
    Text(String),
}

/// A core list in a TOML file: an array of CPU numbers or a string like `"0-3,6"`.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum CoresValue {
    /// CPU numbers.
    List(Vec<usize>),
    /// `"0-3,6"` or `"all"`.
    Text(String),
}

/// The configuration file, every field optional. Unknown fields are an error (a typo must
/// not silently fall back to a default).
#[derive(Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen_host: Option<String>,
    pub port: Option<u16>,
    pub core_ports: Option<Vec<u16>>,
    pub cores: Option<CoresValue>,
    pub memory_budget: Option<SizeValue>,
    pub io_memory: Option<SizeValue>,
    pub partitions_per_core: Option<u32>,
    pub log_level: Option<String>,
    pub log_file: Option<PathBuf>,
    pub wal_segment_bytes: Option<SizeValue>,
    pub wal_batch_bytes: Option<SizeValue>,
    pub wal_batches_in_flight: Option<usize>,
    pub wal_spare_segments: Option<usize>,
    pub wal_tail_cache_bytes: Option<SizeValue>,
    pub checkpoint_interval_ms: Option<u64>,
    pub checkpoint_dirty_bytes: Option<SizeValue>,
    pub checkpoint_slice_pages: Option<usize>,
    pub background_shares: Option<usize>,
    pub raft_tick_ms: Option<u64>,
    pub page_size: Option<SizeValue>,
    pub node_id: Option<u64>,
    pub meta: Option<String>,
    pub zone: Option<String>,
    pub heartbeat_ms: Option<u64>,
}

impl FileConfig {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::ReadFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        FileConfig::parse(&text).map_err(|reason| ConfigError::ParseFile {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses a configuration file's text.
    pub fn parse(text: &str) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// What the machine offers, for defaults and checks; [`SystemFacts::probe`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemFacts {
    /// The CPUs this process may run on (its affinity mask), ascending.
    pub cpus: Vec<usize>,
    /// Physical memory in bytes.
    pub physical_memory_bytes: u64,
}

impl SystemFacts {
    /// Reads the affinity mask and the physical memory size.
    pub fn probe() -> SystemFacts {
        SystemFacts {
            cpus: allowed_cpus(),
            physical_memory_bytes: physical_memory_bytes(),
        }
    }
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a plain bitmask the kernel fills; the size passed is its own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect();
            if !cpus.is_empty() {
                return cpus;
            }
        }
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..n).collect()
}

fn physical_memory_bytes() -> u64 {
    // SAFETY: sysconf reads constants; no memory is passed.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages > 0 && page > 0 {
        pages as u64 * page as u64
    } else {
        // Unknown: assume a small machine rather than a large one.
        1 << 30
    }
}

/// The WAL's knobs (see `wal::Config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalKnobs {
    /// Bytes per segment file.
    pub segment_bytes: u64,
    /// A batch closes past this many bytes.
    pub batch_bytes: usize,
    /// Batch writes in flight.
    pub batches_in_flight: usize,
    /// Spare segments kept zero-filled.
    pub spare_segments: usize,
    /// Bytes of recent records kept in memory.
    pub tail_cache_bytes: usize,
}

impl WalKnobs {
    /// The `wal::Config` these knobs make.
    pub fn wal_config(&self) -> wal::Config {
        wal::Config {
            segment_bytes: self.segment_bytes,
            batch_bytes_target: self.batch_bytes,
            batches_in_flight_max: self.batches_in_flight,
            spare_segments: self.spare_segments,
            tail_cache_bytes: self.tail_cache_bytes,
            ..wal::Config::default()
        }
    }
}

/// The resolved, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the catalog, WALs and trees live.
    pub data_dir: PathBuf,
    /// The address listened on.
    pub listen_host: String,
    /// The shared port.
    pub port: u16,
    /// Each core's own port, by core index.
    pub core_ports: Vec<u16>,
    /// The CPU of each core, by core index.
    pub cores: Vec<usize>,
    /// Page-cache bytes for the whole node.
    pub memory_budget_bytes: u64,
    /// glommio's registered I/O memory per core.
    pub io_memory_bytes: u64,
    /// A new table's default partitions per core.
    pub partitions_per_core: u32,
    /// The tracing filter.
    pub log_level: String,
    /// The log file, or stderr.
    pub log_file: Option<PathBuf>,
    /// The WAL's knobs.
    pub wal: WalKnobs,
    /// A dirty tree is checkpointed at least this often.
    pub checkpoint_interval_ms: u64,
    /// ... or as soon as it has this many dirty bytes.
    pub checkpoint_dirty_bytes: u64,
    /// Pages per checkpoint step.
    pub checkpoint_slice_pages: usize,
    /// The background task queue's shares.
    pub background_shares: usize,
    /// The raft timer's period.
    pub raft_tick_ms: u64,
    /// B-tree page size of new partitions.
    pub page_size_bytes: usize,
    /// This node's id.
    pub node_id: u64,
    /// The metadata service's address, when the node is part of a cluster.
    pub meta: Option<String>,
    /// The node's failure domain.
    pub zone: String,
    /// Milliseconds between two heartbeats.
    pub heartbeat_ms: u64,
}

/// Why a configuration was refused. Each names the field and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    ReadFile {
        /// Which file.
        path: PathBuf,
        /// The OS's reason.
        reason: String,
    },
    /// The file is not valid TOML or has an unknown or mistyped field.
    ParseFile {
        /// Which file.
        path: PathBuf,
        /// The parser's reason.
        reason: String,
    },
    /// No data directory was given.
    MissingDataDir,
    /// A value could not be parsed.
    BadValue {
        /// The field.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        reason: String,
    },
    /// A value is outside its range.
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The smallest accepted.
        min: u64,
        /// The largest accepted.
        max: u64,
    },
    /// The core list is empty.
    NoCores,
    /// A configured CPU is not one this process may run on (glommio's `Placement::Fixed`
    /// would fail on it, pitfall 9).
    CoreNotAvailable {
        /// The CPU.
        cpu: usize,
        /// The CPUs available.
        available: Vec<usize>,
    },
    /// More cores than [`CORES_MAX`].
    TooManyCores {
        /// How many were listed.
        count: usize,
    },
    /// The number of per-core ports differs from the number of cores.
    CorePortsCount {
        /// Cores configured.
        cores: usize,
        /// Ports given.
        ports: usize,
    },
    /// A port is 0, beyond 65535 when derived, or used twice.
    BadPort {
        /// The port (as derived, possibly past 65535).
        port: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The memory budget leaves a partition less than its minimum page cache.
    MemoryBudgetTooSmall {
        /// The budget.
        bytes: u64,
        /// The default partitions the node would hold for one table.
        partitions: u64,
        /// The least acceptable budget.
        min_bytes: u64,
    },
    /// The log filter does not parse.
    BadLogLevel {
        /// The filter given.
        value: String,
        /// The parser's reason.
        reason: String,
    },
    /// The WAL knobs do not fit together.
    Wal(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ReadFile { path, reason } => {
                write!(f, "cannot read the config file {}: {reason}", path.display())
            }
            ConfigError::ParseFile { path, reason } => {
                write!(f, "the config file {} is not valid: {reason}", path.display())
            }
            ConfigError::MissingDataDir => write!(
                f,
                "no data directory: pass --data-dir DIR, set PERCORE_DATA_DIR or data_dir in the config file"
            ),
            ConfigError::BadValue { field, value, reason } => {
                write!(f, "{field} = {value:?} is not valid: {reason}")
            }
            ConfigError::OutOfRange { field, value, min, max } => {
                write!(f, "{field} = {value} is out of range: it must be in {min}..={max}")
            }
            ConfigError::NoCores => write!(f, "the core list is empty: name at least one CPU"),
            ConfigError::CoreNotAvailable { cpu, available } => write!(
                f,
                "CPU {cpu} is not available to this process (available: {available:?}); \
                 fix --cores or the process's CPU affinity"
            ),
            ConfigError::TooManyCores { count } => {
                write!(f, "{count} cores configured; at most {CORES_MAX} are supported")
            }
            ConfigError::CorePortsCount { cores, ports } => write!(
                f,
                "core_ports lists {ports} ports for {cores} cores: give one per core, or none \
                 to use port+1+i"
            ),
            ConfigError::BadPort { port, reason } => write!(f, "port {port}: {reason}"),
            ConfigError::MemoryBudgetTooSmall { bytes, partitions, min_bytes } => write!(
                f,
                "memory_budget of {bytes} bytes is too small for {partitions} partitions \
                 ({PARTITION_CACHE_BYTES_MIN} bytes each): give at least {min_bytes}"
            ),
            ConfigError::BadLogLevel { value, reason } => {
                write!(f, "log_level {value:?} is not a valid filter: {reason}")
            }
            ConfigError::Wal(reason) => write!(f, "the WAL settings do not fit: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses a size (`daemon::config::parse_size`), naming `field` if it fails.
pub fn parse_size(field: &'static str, text: &str) -> Result<u64, ConfigError> {
    daemon::config::parse_size(text).map_err(|reason| ConfigError::BadValue {
        field,
        value: text.to_string(),
        reason,
    })
}

fn size_value(field: &'static str, value: &SizeValue) -> Result<u64, ConfigError> {
    match value {
        SizeValue::Bytes(b) => Ok(*b),
        SizeValue::Text(t) => parse_size(field, t),
    }
}

/// Parses a CPU list (`daemon::config::parse_cores`).
pub fn parse_cores(text: &str, available: &[usize]) -> Result<Vec<usize>, ConfigError> {
    daemon::config::parse_cores(text, available, CORES_MAX).map_err(|e| match e {
        daemon::config::CoresError::Bad(reason) => ConfigError::BadValue {
            field: "cores",
            value: text.to_string(),
            reason,
        },
        daemon::config::CoresError::TooMany { count } => ConfigError::TooManyCores { count },
    })
}

fn parse_ports(text: &str) -> Result<Vec<u16>, ConfigError> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u16>().map_err(|_| ConfigError::BadValue {
                field: "core_ports",
                value: text.to_string(),
                reason: format!("{p:?} is not a port number"),
            })
        })
        .collect()
}

fn range(field: &'static str, value: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

/// Picks the flag (which clap already merged with its environment variable), else the file.
fn pick<T>(cli: Option<T>, file: Option<T>) -> Option<T> {
    cli.or(file)
}

impl Config {
    /// Parses the command line (and environment), reads the file it names, and resolves.
    pub fn from_args<I, T>(args: I, facts: &SystemFacts) -> Result<(Cli, Config), ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args).map_err(|e| ConfigError::BadValue {
            field: "command line",
            value: String::new(),
            reason: e.to_string(),
        })?;
        let config = Config::resolve(&cli, facts)?;
        Ok((cli, config))
    }

    /// Reads the file `cli` names (if any) and merges flags, file and defaults.
    pub fn resolve(cli: &Cli, facts: &SystemFacts) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Config::merge(cli, &file, facts)
    }

    /// Merges flags (with their environment variables) over the file over the defaults,
    /// and validates the result.
    pub fn merge(cli: &Cli, file: &FileConfig, facts: &SystemFacts) -> Result<Config, ConfigError> {
        let data_dir =
            pick(cli.data_dir.clone(), file.data_dir.clone()).ok_or(ConfigError::MissingDataDir)?;
        // Absolute from here on: glommio's directory sync fails with EBADF on a relative
        // path, and logs should name the real place.
        let data_dir = std::path::absolute(&data_dir).map_err(|e| ConfigError::BadValue {
            field: "data_dir",
            value: data_dir.display().to_string(),
            reason: format!("cannot make it absolute: {e}"),
        })?;
        let listen_host = pick(cli.listen_host.clone(), file.listen_host.clone())
            .unwrap_or_else(|| LISTEN_HOST_DEFAULT.to_string());
        let port = pick(cli.port, file.port).unwrap_or(PORT_DEFAULT);

        let cores = match (&cli.cores, &file.cores) {
            (Some(t), _) => parse_cores(t, &facts.cpus)?,
            (None, Some(CoresValue::Text(t))) => parse_cores(t, &facts.cpus)?,
            (None, Some(CoresValue::List(l))) => l.clone(),
            (None, None) => facts.cpus.clone(),
        };
        if cores.is_empty() {
            return Err(ConfigError::NoCores);
        }
        if cores.len() > CORES_MAX {
            return Err(ConfigError::TooManyCores { count: cores.len() });
        }
        // A CPU may be listed twice: two executors then share it (tests of many cores on a
        // small machine); the node warns at start-up, since they compete for one CPU.
        for &cpu in &cores {
            if !facts.cpus.contains(&cpu) {
                return Err(ConfigError::CoreNotAvailable {
                    cpu,
                    available: facts.cpus.clone(),
                });
            }
        }

        let core_ports = match (&cli.core_ports, &file.core_ports) {
            (Some(t), _) => parse_ports(t)?,
            (None, Some(p)) => p.clone(),
            (None, None) => (0..cores.len())
                .map(|i| {
                    let p = port as u32 + 1 + i as u32;
                    u16::try_from(p).map_err(|_| ConfigError::BadPort {
                        port: p,
                        reason: "the derived per-core port (port+1+i) is past 65535: lower port or give core_ports",
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        if core_ports.len() != cores.len() {
            return Err(ConfigError::CorePortsCount {
                cores: cores.len(),
                ports: core_ports.len(),
            });
        }
        if port == 0 {
            return Err(ConfigError::BadPort {
                port: 0,
                reason: "port 0 is not supported: routers and clients need a known port",
            });
        }
        for (i, &p) in core_ports.iter().enumerate() {
            if p == 0 {
                return Err(ConfigError::BadPort {
                    port: 0,
                    reason: "a per-core port must be a real port",
                });
            }
            if p == port || core_ports[..i].contains(&p) {
                return Err(ConfigError::BadPort {
                    port: p as u32,
                    reason: "used twice among port and core_ports",
                });
            }
        }

        let size = |field: &'static str, c: &Option<String>, f: &Option<SizeValue>| match (c, f) {
            (Some(t), _) => parse_size(field, t).map(Some),
            (None, Some(v)) => size_value(field, v).map(Some),
            (None, None) => Ok(None),
        };

        let partitions_per_core = range(
            "partitions_per_core",
            pick(cli.partitions_per_core, file.partitions_per_core)
                .unwrap_or(PARTITIONS_PER_CORE_DEFAULT) as u64,
            1,
            PARTITIONS_PER_CORE_MAX as u64,
        )? as u32;

        let memory_budget_bytes = size("memory_budget", &cli.memory_budget, &file.memory_budget)?
            .unwrap_or(facts.physical_memory_bytes / 4);
        let partitions = cores.len() as u64 * partitions_per_core as u64;
        let min_bytes = partitions * PARTITION_CACHE_BYTES_MIN;
        if memory_budget_bytes < min_bytes {
            return Err(ConfigError::MemoryBudgetTooSmall {
                bytes: memory_budget_bytes,
                partitions,
                min_bytes,
            });
        }

        let io_memory_bytes = range(
            "io_memory",
            size("io_memory", &cli.io_memory, &file.io_memory)?.unwrap_or(IO_MEMORY_BYTES_DEFAULT),
            IO_MEMORY_BYTES_MIN,
            IO_MEMORY_BYTES_MAX,
        )?;

        let log_level = pick(cli.log_level.clone(), file.log_level.clone())
            .unwrap_or_else(|| LOG_LEVEL_DEFAULT.to_string());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            return Err(ConfigError::BadLogLevel {
                value: log_level,
                reason: e.to_string(),
            });
        }
        let log_file = pick(cli.log_file.clone(), file.log_file.clone());

        let wal_default = wal::Config::default();
        let wal = WalKnobs {
            segment_bytes: size(
                "wal_segment_bytes",
                &cli.wal_segment_bytes,
                &file.wal_segment_bytes,
            )?
            .unwrap_or(wal_default.segment_bytes),
            batch_bytes: size(
                "wal_batch_bytes",
                &cli.wal_batch_bytes,
                &file.wal_batch_bytes,
            )?
            .map_or(wal_default.batch_bytes_target, |b| b as usize),
            batches_in_flight: pick(cli.wal_batches_in_flight, file.wal_batches_in_flight)
                .unwrap_or(wal_default.batches_in_flight_max),
            spare_segments: pick(cli.wal_spare_segments, file.wal_spare_segments)
                .unwrap_or(wal_default.spare_segments),
            tail_cache_bytes: size(
                "wal_tail_cache_bytes",
                &cli.wal_tail_cache_bytes,
                &file.wal_tail_cache_bytes,
            )?
            .map_or(wal_default.tail_cache_bytes, |b| b as usize),
        };
        wal.wal_config()
            .validate()
            .map_err(|e| ConfigError::Wal(e.to_string()))?;

        let checkpoint_interval_ms = range(
            "checkpoint_interval_ms",
            pick(cli.checkpoint_interval_ms, file.checkpoint_interval_ms)
                .unwrap_or(CHECKPOINT_INTERVAL_MS_DEFAULT),
            1,
            3_600_000,
        )?;
        let checkpoint_dirty_bytes = range(
            "checkpoint_dirty_bytes",
            size(
                "checkpoint_dirty_bytes",
                &cli.checkpoint_dirty_bytes,
                &file.checkpoint_dirty_bytes,
            )?
            .unwrap_or(CHECKPOINT_DIRTY_BYTES_DEFAULT),
            4096,
            u64::MAX,
        )?;
        let checkpoint_slice_pages = range(
            "checkpoint_slice_pages",
            pick(cli.checkpoint_slice_pages, file.checkpoint_slice_pages)
                .unwrap_or(CHECKPOINT_SLICE_PAGES_DEFAULT) as u64,
            1,
            4096,
        )? as usize;
        let background_shares = range(
            "background_shares",
            pick(cli.background_shares, file.background_shares).unwrap_or(BACKGROUND_SHARES_DEFAULT)
                as u64,
            1,
            1000,
        )? as usize;
        let raft_tick_ms = range(
            "raft_tick_ms",
            pick(cli.raft_tick_ms, file.raft_tick_ms).unwrap_or(RAFT_TICK_MS_DEFAULT),
            1,
            60_000,
        )?;
        let page_size_bytes =
            size("page_size", &cli.page_size, &file.page_size)?.unwrap_or(PAGE_SIZE_BYTES_DEFAULT);
        if !page_size_bytes.is_power_of_two()
            || !(btree::limits::PAGE_BYTES_MIN as u64..=btree::limits::PAGE_BYTES_MAX as u64)
                .contains(&page_size_bytes)
        {
            return Err(ConfigError::BadValue {
                field: "page_size",
                value: page_size_bytes.to_string(),
                reason: "a power of two from 4KiB to 64KiB".into(),
            });
        }
        let node_id = pick(cli.node_id, file.node_id).unwrap_or(NODE_ID_DEFAULT);
        let meta = pick(cli.meta.clone(), file.meta.clone());
        if let Some(m) = &meta {
            if m.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::BadValue {
                    field: "meta",
                    value: m.clone(),
                    reason: "an address like 127.0.0.1:7600".into(),
                });
            }
        }
        let zone = pick(cli.zone.clone(), file.zone.clone()).unwrap_or_else(|| ZONE_DEFAULT.into());
        let heartbeat_ms = range(
            "heartbeat_ms",
            pick(cli.heartbeat_ms, file.heartbeat_ms).unwrap_or(HEARTBEAT_MS_DEFAULT),
            10,
            60_000,
        )?;

        Ok(Config {
            data_dir,
            listen_host,
            port,
            core_ports,
            cores,
            memory_budget_bytes,
            io_memory_bytes,
            partitions_per_core,
            log_level,
            log_file,
            wal,
            checkpoint_interval_ms,
            checkpoint_dirty_bytes,
            checkpoint_slice_pages,
            background_shares,
            raft_tick_ms,
            page_size_bytes: page_size_bytes as usize,
            node_id,
            meta,
            zone,
            heartbeat_ms,
        })
    }

    /// The configuration as a TOML file that [`FileConfig::parse`] reads back to the same
    /// [`Config`] (printed by `--print-config`).
    pub fn to_toml(&self) -> String {
        let q = |s: &str| format!("{s:?}");
        let mut out = String::new();
        let mut line = |k: &str, v: String| {
            out.push_str(k);
            out.push_str(" = ");
            out.push_str(&v);
            out.push('\n');
        };
        line("data_dir", q(&self.data_dir.to_string_lossy()));
        line("listen_host", q(&self.listen_host));
        line("port", self.port.to_string());
        line("core_ports", format!("{:?}", self.core_ports));
        line("cores", format!("{:?}", self.cores));
        line("memory_budget", self.memory_budget_bytes.to_string());
        line("io_memory", self.io_memory_bytes.to_string());
        line("partitions_per_core", self.partitions_per_core.to_string());
        line("log_level", q(&self.log_level));
        if let Some(f) = &self.log_file {
            line("log_file", q(&f.to_string_lossy()));
        }
        line("wal_segment_bytes", self.wal.segment_bytes.to_string());
        line("wal_batch_bytes", self.wal.batch_bytes.to_string());
        line(
            "wal_batches_in_flight",
            self.wal.batches_in_flight.to_string(),
        );
        line("wal_spare_segments", self.wal.spare_segments.to_string());
        line(
            "wal_tail_cache_bytes",
            self.wal.tail_cache_bytes.to_string(),
        );
        line(
            "checkpoint_interval_ms",
            self.checkpoint_interval_ms.to_string(),
        );
        line(
            "checkpoint_dirty_bytes",
            self.checkpoint_dirty_bytes.to_string(),
        );
        line(
            "checkpoint_slice_pages",
            self.checkpoint_slice_pages.to_string(),
        );
        line("background_shares", self.background_shares.to_string());
        line("raft_tick_ms", self.raft_tick_ms.to_string());
        line("page_size", self.page_size_bytes.to_string());
        line("node_id", self.node_id.to_string());
        if let Some(m) = &self.meta {
            line("meta", q(m));
        }
        line("zone", q(&self.zone));
        line("heartbeat_ms", self.heartbeat_ms.to_string());
        out
    }

    /// CPUs that more than one core is pinned to.
    pub fn shared_cpus(&self) -> Vec<usize> {
        let mut shared: Vec<usize> = self
            .cores
            .iter()
            .enumerate()
            .filter(|(i, c)| self.cores[..*i].contains(c))
            .map(|(_, &c)| c)
            .collect();
        shared.dedup();
        shared
    }

    /// Core indices: 0..cores.
    pub fn core_count(&self) -> usize {
        self.cores.len()
    }

    /// The page-cache bytes each core may use.
    pub fn core_memory_budget_bytes(&self) -> u64 {
        self.memory_budget_bytes / self.cores.len() as u64
    }
}
