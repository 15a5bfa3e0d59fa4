//! The service's configuration: a TOML file, every field overridable by an environment
//! variable (`PERCORE_META_...`) and by a command-line flag.
//!
//! Precedence, highest first: the flag, the environment variable, the file, the default.
//!
//! # Defaults (and why)
//!
//! | field | default | why |
//! |---|---|---|
//! | `data_dir` | none: required | a metadata service must never guess where the map lives |
//! | `listen` | `127.0.0.1:7600` | safe by default; below the nodes' 7700 |
//! | `node_timeout_ms` | 3000 | three missed heartbeats (nodes beat every second) |
//! | `cpu` | unpinned | meta is not on the request path; pin it away from busy cores if wanted |
//! | `log_level` | `info` | a tracing filter |
//! | `log_file` | none: stderr | |

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

/// The listen address when none is configured.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7600";
/// A node unheard of for this long is dead: three missed one-second heartbeats.
pub const NODE_TIMEOUT_MS_DEFAULT: u64 = 3000;
/// Below a few heartbeat periods every hiccup would mark nodes dead.
pub const NODE_TIMEOUT_MS_MIN: u64 = 100;
/// An hour without a heartbeat is not "alive" in any useful sense; a larger value is a typo.
pub const NODE_TIMEOUT_MS_MAX: u64 = 3_600_000;
/// The tracing filter when none is configured.
pub const LOG_LEVEL_DEFAULT: &str = "info";

/// percore-meta: the metadata service (tables, nodes, the partition map, routing lookups).
///
/// Every flag can also be set by the environment variable shown, or in the TOML file given
/// with --config (same names, with underscores). Flags win over variables, variables over
/// the file, the file over the defaults.
#[derive(Parser, Debug, Clone, Default)]
#[command(name = "percore-meta", version, about, long_about = None, args_override_self = true)]
pub struct Cli {
    /// The TOML configuration file.
    #[arg(long, env = "PERCORE_META_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the service keeps its WAL and tree (required).
    #[arg(long, env = "PERCORE_META_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The address to listen on, host:port [default: 127.0.0.1:7600].
    #[arg(long, env = "PERCORE_META_LISTEN")]
    pub listen: Option<String>,
    /// A node without a heartbeat for this many ms is dead [default: 3000].
    #[arg(long, env = "PERCORE_META_NODE_TIMEOUT_MS")]
    pub node_timeout_ms: Option<u64>,
    /// The CPU to pin the service's executor to [default: unpinned].
    #[arg(long, env = "PERCORE_META_CPU")]
    pub cpu: Option<usize>,
    /// A tracing filter: `info`, `debug`, `meta=debug,warn` [default: info].
    #[arg(long, env = "PERCORE_META_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Append logs to this file instead of stderr.
    #[arg(long, env = "PERCORE_META_LOG_FILE")]
    pub log_file: Option<PathBuf>,
}

/// The configuration file, every field optional. Unknown fields are an error (a typo must
/// not silently fall back to a default).
#[derive(Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub node_timeout_ms: Option<u64>,
    pub cpu: Option<usize>,
    pub log_level: Option<String>,
    pub log_file: Option<PathBuf>,
}

impl FileConfig {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::ReadFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

/// The resolved, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the WAL and the tree live.
    pub data_dir: PathBuf,
    /// The address listened on.
    pub listen: SocketAddr,
    /// A node unheard of for this long is dead.
    pub node_timeout_ms: u64,
    /// The CPU the executor is pinned to, if any.
    pub cpu: Option<usize>,
    /// The tracing filter.
    pub log_level: String,
    /// The log file, or stderr.
    pub log_file: Option<PathBuf>,
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
    /// A value is not valid.
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
            ConfigError::ReadFile { path, reason } => {
                write!(f, "cannot read the config file {}: {reason}", path.display())
            }
            ConfigError::ParseFile { path, reason } => {
                write!(f, "the config file {} is not valid: {reason}", path.display())
            }
            ConfigError::MissingDataDir => write!(
                f,
                "no data directory: give --data-dir, PERCORE_META_DATA_DIR or data_dir in the config file"
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
    /// Merges the command line (with its environment variables) over the file, if any,
    /// over the defaults, and validates the result.
    pub fn resolve(cli: &Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        Config::merge(cli, &file)
    }

    /// [`Config::resolve`] with the file already read.
    pub fn merge(cli: &Cli, file: &FileConfig) -> Result<Config, ConfigError> {
        let data_dir = cli
            .data_dir
            .clone()
            .or_else(|| file.data_dir.clone())
            .ok_or(ConfigError::MissingDataDir)?;
        let listen_text = cli
            .listen
            .clone()
            .or_else(|| file.listen.clone())
            .unwrap_or_else(|| LISTEN_DEFAULT.to_string());
        let listen: SocketAddr = listen_text.parse().map_err(|e| ConfigError::BadValue {
            field: "listen",
            value: listen_text.clone(),
            reason: format!("expected host:port with a numeric host ({e})"),
        })?;
        let node_timeout_ms = cli
            .node_timeout_ms
            .or(file.node_timeout_ms)
            .unwrap_or(NODE_TIMEOUT_MS_DEFAULT);
        if !(NODE_TIMEOUT_MS_MIN..=NODE_TIMEOUT_MS_MAX).contains(&node_timeout_ms) {
            return Err(ConfigError::BadValue {
                field: "node_timeout_ms",
                value: node_timeout_ms.to_string(),
                reason: format!("must be in {NODE_TIMEOUT_MS_MIN}..={NODE_TIMEOUT_MS_MAX}"),
            });
        }
        let cpu = cli.cpu.or(file.cpu);
        if let Some(c) = cpu {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            if c >= n {
                return Err(ConfigError::BadValue {
                    field: "cpu",
                    value: c.to_string(),
                    reason: format!("this machine has CPUs 0..{n}"),
                });
            }
        }
        let log_level = cli
            .log_level
            .clone()
            .or_else(|| file.log_level.clone())
            .unwrap_or_else(|| LOG_LEVEL_DEFAULT.to_string());
        Ok(Config {
            data_dir,
            listen,
            node_timeout_ms,
            cpu,
            log_level,
            log_file: cli.log_file.clone().or_else(|| file.log_file.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let cli = Cli {
            data_dir: Some("/d".into()),
            node_timeout_ms: Some(500),
            ..Cli::default()
        };
        let file: FileConfig =
            toml::from_str("listen = \"127.0.0.1:9000\"\nnode_timeout_ms = 700").unwrap();
        let c = Config::merge(&cli, &file).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse::<SocketAddr>().unwrap());
        assert_eq!(c.node_timeout_ms, 500);
        assert_eq!(c.log_level, "info");
        assert_eq!(c.cpu, None);
    }

    #[test]
    fn bad_values_are_named() {
        assert_eq!(
            Config::merge(&Cli::default(), &FileConfig::default()),
            Err(ConfigError::MissingDataDir)
        );
        let cli = Cli {
            data_dir: Some("/d".into()),
            listen: Some("nowhere".into()),
            ..Cli::default()
        };
        let e = Config::merge(&cli, &FileConfig::default()).unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        let cli = Cli {
            data_dir: Some("/d".into()),
            node_timeout_ms: Some(1),
            ..Cli::default()
        };
        assert!(Config::merge(&cli, &FileConfig::default()).is_err());
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
    }
}
