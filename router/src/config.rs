//! The router's configuration: a TOML file, every field overridable by an environment
//! variable (`PERCORE_ROUTER_...`) and by a command-line flag.
//!
//! Precedence, highest first: the flag, the environment variable, the file, the default
//! (percore-node's rule). Sizes accept bytes or a binary unit (`1MiB`); core lists accept
//! `0,1`, `0-3` or `all`.
//!
//! # Defaults (and why)
//!
//! | field | default | why |
//! |---|---|---|
//! | `listen_host` | `127.0.0.1` | safe by default; set `0.0.0.0` to serve the network |
//! | `port` | 7800 | the shared (SO_REUSEPORT) port every core listens on; nodes use 7700 |
//! | `cores` | every CPU | one pinned executor per CPU |
//! | `meta` | none: required | a router without a map cannot route anything |
//! | `refresh_interval_ms` | 1000 | each core syncs its cache with meta this often, hit or miss |
//! | `io_memory` | 1 MiB per core | the router does no file I/O; glommio's pool is nearly unused |
//! | `log_level` | `info` | a tracing filter |
//! | `log_file` | none: stderr | |

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

use crate::limits::{CORES_MAX, REFRESH_INTERVAL_MS_DEFAULT, REFRESH_INTERVAL_MS_MIN};

/// The shared port when none is configured.
pub const PORT_DEFAULT: u16 = 7800;
/// The listen address when none is configured.
pub const LISTEN_HOST_DEFAULT: &str = "127.0.0.1";
/// glommio's registered I/O memory per core when none is configured: the router reads no
/// files, so the pool only needs to exist.
pub const IO_MEMORY_BYTES_DEFAULT: u64 = 1024 * 1024;
/// The smallest pool glommio takes (it rounds up to 64 KiB).
pub const IO_MEMORY_BYTES_MIN: u64 = 64 * 1024;
/// A pool beyond 1 GiB per core is a typo.
pub const IO_MEMORY_BYTES_MAX: u64 = 1 << 30;
/// The table a Redis connection starts on when none is configured: the one `percore-perf`
/// and the demo create.
pub const REDIS_TABLE_DEFAULT: &str = "usertable";
/// Tables one router offers Redis clients at most (Redis's own default is 16 databases);
/// bounds the list and the `SELECT` index.
pub const REDIS_TABLES_MAX: usize = 1_024;
/// The tracing filter when none is configured.
pub const LOG_LEVEL_DEFAULT: &str = "info";

/// percore-router: the front door; routes each request to the core that owns its partition.
///
/// Every flag can also be set by the environment variable shown, or in the TOML file given
/// with --config (same names, with underscores). Flags win over variables, variables over
/// the file, the file over the defaults.
#[derive(Parser, Debug, Clone, Default)]
#[command(name = "percore-router", version, about, long_about = None, args_override_self = true)]
pub struct Cli {
    /// The TOML configuration file.
    #[arg(long, env = "PERCORE_ROUTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// The address to listen on [default: 127.0.0.1].
    #[arg(long, env = "PERCORE_ROUTER_LISTEN_HOST")]
    pub listen_host: Option<String>,
    /// The port every core listens on (SO_REUSEPORT) [default: 7800].
    #[arg(long, env = "PERCORE_ROUTER_PORT")]
    pub port: Option<u16>,
    /// The CPUs to run on, one executor each: `0,1`, `0-3` or `all` [default: all].
    #[arg(long, env = "PERCORE_ROUTER_CORES")]
    pub cores: Option<String>,
    /// The metadata service's address, `ip:port` (required).
    #[arg(long, env = "PERCORE_ROUTER_META")]
    pub meta: Option<String>,
    /// Each core syncs its routing cache with meta this often, in ms [default: 1000].
    #[arg(long, env = "PERCORE_ROUTER_REFRESH_INTERVAL_MS")]
    pub refresh_interval_ms: Option<u64>,
    /// A tracing filter: `info`, `debug`, `router=debug,warn` [default: info].
    #[arg(long, env = "PERCORE_ROUTER_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Append logs to this file instead of stderr.
    #[arg(long, env = "PERCORE_ROUTER_LOG_FILE")]
    pub log_file: Option<PathBuf>,
    /// glommio's registered I/O memory per core, e.g. `1MiB` [default: 1MiB].
    #[arg(long, env = "PERCORE_ROUTER_IO_MEMORY")]
    pub io_memory: Option<String>,
    /// Also serve the Redis protocol (RESP2) on this port; off when not given.
    #[arg(long, env = "PERCORE_ROUTER_REDIS_PORT")]
    pub redis_port: Option<u16>,
    /// The tables Redis clients see, comma-separated: `SELECT n` picks the n-th, and a
    /// connection starts on the first [default: usertable].
    #[arg(long, env = "PERCORE_ROUTER_REDIS_TABLES")]
    pub redis_tables: Option<String>,
    /// Print the resolved configuration and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// A size in a TOML file: a number of bytes or a string with a binary unit.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum SizeValue {
    /// Bytes.
    Bytes(u64),
    /// `"1MiB"` and the like.
    Text(String),
}

/// A core list in a TOML file: CPU numbers or a string like `"0-3"`.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum CoresValue {
    /// CPU numbers.
    List(Vec<usize>),
    /// `"0-3,6"` or `"all"`.
    Text(String),
}

/// The configuration file, every field optional; unknown fields are refused (a typo must
/// not fall back to a default silently).
#[derive(Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct FileConfig {
    pub listen_host: Option<String>,
    pub port: Option<u16>,
    pub cores: Option<CoresValue>,
    pub meta: Option<String>,
    pub refresh_interval_ms: Option<u64>,
    pub log_level: Option<String>,
    pub log_file: Option<PathBuf>,
    pub io_memory: Option<SizeValue>,
    pub redis_port: Option<u16>,
    pub redis_tables: Option<Vec<String>>,
}

/// The resolved, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The address listened on.
    pub listen_host: String,
    /// The shared port.
    pub port: u16,
    /// The CPU of each core, by core index.
    pub cores: Vec<usize>,
    /// The metadata service.
    pub meta: SocketAddr,
    /// The refresh period of each core's cache.
    pub refresh_interval_ms: u64,
    /// The tracing filter.
    pub log_level: String,
    /// The log file, or stderr.
    pub log_file: Option<PathBuf>,
    /// glommio's registered I/O memory per core.
    pub io_memory_bytes: u64,
    /// The Redis protocol's port, if it is served.
    pub redis_port: Option<u16>,
    /// The tables Redis clients see, by `SELECT` index; never empty.
    pub redis_tables: Vec<String>,
}

/// Why a configuration was refused; each names the field and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    File {
        /// Which file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// clap's own message (bad flag, or --help / --version text).
    CommandLine(String),
    /// No metadata service address was given.
    MissingMeta,
    /// A value could not be used.
    BadValue {
        /// The field.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::File { path, reason } => {
                write!(f, "the config file {}: {reason}", path.display())
            }
            ConfigError::CommandLine(m) => write!(f, "{m}"),
            ConfigError::MissingMeta => write!(
                f,
                "no metadata service: give --meta ip:port (or PERCORE_ROUTER_META, or meta in the file)"
            ),
            ConfigError::BadValue {
                field,
                value,
                reason,
            } => write!(f, "{field} = {value:?}: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses the command line (and the environment), reads the file it names, resolves.
    /// `available_cpus` is what `all` means.
    pub fn from_args(
        args: Vec<std::ffi::OsString>,
        available_cpus: &[usize],
    ) -> Result<(Cli, Config), ConfigError> {
        let cli = Cli::try_parse_from(args).map_err(|e| ConfigError::CommandLine(e.to_string()))?;
        let file = match &cli.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let config = Config::resolve(&cli, &file, available_cpus)?;
        Ok((cli, config))
    }

    /// Merges flags (and variables) over the file over the defaults, and validates.
    pub fn resolve(
        cli: &Cli,
        file: &FileConfig,
        available_cpus: &[usize],
    ) -> Result<Config, ConfigError> {
        let listen_host = cli
            .listen_host
            .clone()
            .or_else(|| file.listen_host.clone())
            .unwrap_or_else(|| LISTEN_HOST_DEFAULT.to_string());
        let port = cli.port.or(file.port).unwrap_or(PORT_DEFAULT);
        if port == 0 {
            return Err(bad(
                "port",
                "0",
                "a fixed port is needed: every core binds it",
            ));
        }
        let cores = match (&cli.cores, &file.cores) {
            (Some(t), _) | (None, Some(CoresValue::Text(t))) => parse_cores(t, available_cpus)?,
            (None, Some(CoresValue::List(l))) => l.clone(),
            (None, None) => available_cpus.to_vec(),
        };
        if cores.is_empty() || cores.len() > CORES_MAX {
            return Err(bad(
                "cores",
                &format!("{cores:?}"),
                &format!("give 1 to {CORES_MAX} CPUs"),
            ));
        }
        let meta_text = cli
            .meta
            .clone()
            .or_else(|| file.meta.clone())
            .ok_or(ConfigError::MissingMeta)?;
        // An address, not a host name: resolving a name is a blocking call a core must not
        // make, and a router that resolved once would keep a stale answer anyway.
        let meta: SocketAddr = meta_text.trim().parse().map_err(|e| {
            bad(
                "meta",
                &meta_text,
                &format!("expected ip:port (no host names): {e}"),
            )
        })?;
        let refresh_interval_ms = cli
            .refresh_interval_ms
            .or(file.refresh_interval_ms)
            .unwrap_or(REFRESH_INTERVAL_MS_DEFAULT);
        if refresh_interval_ms < REFRESH_INTERVAL_MS_MIN {
            return Err(bad(
                "refresh_interval_ms",
                &refresh_interval_ms.to_string(),
                &format!("at least {REFRESH_INTERVAL_MS_MIN} ms"),
            ));
        }
        let log_level = cli
            .log_level
            .clone()
            .or_else(|| file.log_level.clone())
            .unwrap_or_else(|| LOG_LEVEL_DEFAULT.to_string());
        let log_file = cli.log_file.clone().or_else(|| file.log_file.clone());
        let io_memory_bytes = match (&cli.io_memory, &file.io_memory) {
            (Some(t), _) | (None, Some(SizeValue::Text(t))) => parse_size("io_memory", t)?,
            (None, Some(SizeValue::Bytes(b))) => *b,
            (None, None) => IO_MEMORY_BYTES_DEFAULT,
        };
        if !(IO_MEMORY_BYTES_MIN..=IO_MEMORY_BYTES_MAX).contains(&io_memory_bytes) {
            return Err(bad(
                "io_memory",
                &io_memory_bytes.to_string(),
                &format!("between {IO_MEMORY_BYTES_MIN} and {IO_MEMORY_BYTES_MAX} bytes"),
            ));
        }
        let redis_port = cli.redis_port.or(file.redis_port);
        if redis_port == Some(0) || (redis_port == Some(port)) {
            return Err(bad(
                "redis_port",
                &format!("{redis_port:?}"),
                "a fixed port of its own is needed: every core binds it, apart from `port`",
            ));
        }
        let redis_tables: Vec<String> = match (&cli.redis_tables, &file.redis_tables) {
            (Some(t), _) => t.split(',').map(|n| n.trim().to_string()).collect(),
            (None, Some(l)) => l.clone(),
            (None, None) => vec![REDIS_TABLE_DEFAULT.to_string()],
        };
        let bad_name = redis_tables.iter().find(|n| {
            !(proto::limits::TABLE_NAME_BYTES_MIN..=proto::limits::TABLE_NAME_BYTES_MAX)
                .contains(&n.len())
        });
        if redis_tables.is_empty() || redis_tables.len() > REDIS_TABLES_MAX || bad_name.is_some() {
            return Err(bad(
                "redis_tables",
                &redis_tables.join(","),
                &format!(
                    "1 to {REDIS_TABLES_MAX} table names of {} to {} bytes",
                    proto::limits::TABLE_NAME_BYTES_MIN,
                    proto::limits::TABLE_NAME_BYTES_MAX
                ),
            ));
        }
        Ok(Config {
            listen_host,
            port,
            cores,
            meta,
            refresh_interval_ms,
            log_level,
            log_file,
            io_memory_bytes,
            redis_port,
            redis_tables,
        })
    }

    /// Executors to start.
    pub fn core_count(&self) -> usize {
        self.cores.len()
    }

    /// The resolved configuration as TOML (for `--print-config`).
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        s += &format!("listen_host = {:?}\n", self.listen_host);
        s += &format!("port = {}\n", self.port);
        s += &format!("cores = {:?}\n", self.cores);
        s += &format!("meta = \"{}\"\n", self.meta);
        s += &format!("refresh_interval_ms = {}\n", self.refresh_interval_ms);
        s += &format!("log_level = {:?}\n", self.log_level);
        if let Some(f) = &self.log_file {
            s += &format!("log_file = {:?}\n", f.display().to_string());
        }
        s += &format!("io_memory = {}\n", self.io_memory_bytes);
        if let Some(p) = self.redis_port {
            s += &format!("redis_port = {p}\n");
        }
        s += &format!("redis_tables = {:?}\n", self.redis_tables);
        s
    }
}

fn bad(field: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::BadValue {
        field,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Parses a size (`daemon::config::parse_size`), naming `field` if it fails.
pub fn parse_size(field: &'static str, text: &str) -> Result<u64, ConfigError> {
    daemon::config::parse_size(text).map_err(|reason| bad(field, text, &reason))
}

/// Parses a CPU list (`daemon::config::parse_cores`).
pub fn parse_cores(text: &str, available: &[usize]) -> Result<Vec<usize>, ConfigError> {
    daemon::config::parse_cores(text, available, CORES_MAX).map_err(|e| match e {
        daemon::config::CoresError::Bad(reason) => bad("cores", text, &reason),
        daemon::config::CoresError::TooMany { count } => bad(
            "cores",
            text,
            &format!("{count} CPUs: give 1 to {CORES_MAX}"),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<std::ffi::OsString> {
        std::iter::once("percore-router")
            .chain(a.iter().copied())
            .map(Into::into)
            .collect()
    }

    #[test]
    fn defaults_and_flags_resolve() {
        let (_, c) = Config::from_args(args(&["--meta", "127.0.0.1:7600"]), &[0, 1]).unwrap();
        assert_eq!(c.port, PORT_DEFAULT);
        assert_eq!(c.cores, vec![0, 1]);
        assert_eq!(c.refresh_interval_ms, REFRESH_INTERVAL_MS_DEFAULT);
        let (_, c) = Config::from_args(
            args(&[
                "--meta",
                "127.0.0.1:7600",
                "--cores",
                "1",
                "--port",
                "9000",
                "--io-memory",
                "2MiB",
                "--refresh-interval-ms",
                "250",
            ]),
            &[0, 1],
        )
        .unwrap();
        assert_eq!(
            (c.port, c.cores.clone(), c.io_memory_bytes),
            (9000, vec![1], 2 << 20)
        );
        assert_eq!(c.refresh_interval_ms, 250);
    }

    #[test]
    fn bad_values_are_named() {
        assert_eq!(
            Config::from_args(args(&[]), &[0]).unwrap_err(),
            ConfigError::MissingMeta
        );
        let e = Config::from_args(args(&["--meta", "meta.local:1"]), &[0]).unwrap_err();
        assert!(
            matches!(e, ConfigError::BadValue { field: "meta", .. }),
            "{e}"
        );
        let e = Config::from_args(
            args(&["--meta", "127.0.0.1:1", "--refresh-interval-ms", "1"]),
            &[0],
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::BadValue {
                    field: "refresh_interval_ms",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn the_file_is_under_the_flags() {
        let file: FileConfig = toml::from_str(
            "meta = \"127.0.0.1:5\"\nport = 8000\ncores = [0]\nio_memory = \"1MiB\"",
        )
        .unwrap();
        let cli = Cli {
            port: Some(8100),
            ..Cli::default()
        };
        let c = Config::resolve(&cli, &file, &[0, 1]).unwrap();
        assert_eq!((c.port, c.cores, c.meta.port()), (8100, vec![0], 5));
        assert!(toml::from_str::<FileConfig>("prot = 1").is_err());
    }
}
