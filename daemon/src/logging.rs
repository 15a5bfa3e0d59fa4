//! Logs: tracing, written by a background thread so that no executor ever blocks on a log line.
//!
//! `tracing-appender`'s non-blocking writer hands each formatted line to a bounded queue
//! that one plain thread drains to stderr or the log file. When the queue is full, lines
//! are dropped (and counted by the appender), never waited for: a core that blocked on a
//! slow disk or a full pipe would stall everything it serves. The `log` crate's records
//! (glommio reports falling back to unregistered buffers only through `log::warn!`,
//! pitfall 8) are bridged into tracing, so they are seen too.

use std::fs::OpenOptions;
use std::path::Path;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines the log queue holds before it drops new ones.
const LOG_QUEUE_LINES_MAX: usize = 64 * 1024;

/// Installs the global subscriber: `log_level` is a tracing filter, `log_file` where lines
/// go (stderr when `None`). Keep the guard until exit: dropping it flushes.
pub fn init(log_level: &str, log_file: Option<&Path>) -> Result<WorkerGuard, String> {
    let (writer, guard) = match log_file {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
            NonBlockingBuilder::default()
                .lossy(true)
                .buffered_lines_limit(LOG_QUEUE_LINES_MAX)
                .thread_name("percore-log")
                .finish(file)
        }
        None => NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(LOG_QUEUE_LINES_MAX)
            .thread_name("percore-log")
            .finish(std::io::stderr()),
    };
    let filter =
        EnvFilter::try_new(log_level).map_err(|e| format!("log_level {log_level:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .with_thread_names(true)
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))?;
    Ok(guard)
}
