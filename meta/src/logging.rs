//! Logs: tracing, written by a background thread so that the executor never blocks on a log line.
//!
//! `tracing-appender`'s non-blocking writer hands each formatted line to a bounded queue
//! that one plain thread drains to stderr or the log file. When the queue is full, lines
//! are dropped (and counted by the appender), never waited for: an executor that blocked on a
//! slow disk or a full pipe would stall every request it serves. The `log` crate's records
//! (glommio reports falling back to unregistered buffers only through `log::warn!`,
//! pitfall 8) are bridged into tracing, so they are seen too.

use std::fs::OpenOptions;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// Lines the log queue holds before it drops new ones.
const LOG_QUEUE_LINES_MAX: usize = 64 * 1024;

/// Installs the global subscriber. Keep the guard until exit: dropping it flushes.
pub fn init(config: &Config) -> Result<WorkerGuard, String> {
    let (writer, guard) = match &config.log_file {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
            NonBlockingBuilder::default()
                .lossy(true)
                .buffered_lines_limit(LOG_QUEUE_LINES_MAX)
                .thread_name("percore-meta-log")
                .finish(file)
        }
        None => NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(LOG_QUEUE_LINES_MAX)
            .thread_name("percore-meta-log")
            .finish(std::io::stderr()),
    };
    let filter = EnvFilter::try_new(&config.log_level)
        .map_err(|e| format!("log_level {:?}: {e}", config.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .with_thread_names(true)
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))?;
    Ok(guard)
}
