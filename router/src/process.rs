//! The process: configuration, executors, the ready line, the exit code.
//!
//! The main thread does everything that may block (reading the config, checking the port,
//! registering signals), then starts one pinned executor per core and waits for them. When
//! every core listens it prints `percore-router ready port=P` on stdout (tests and scripts
//! wait for it). A stop signal drains every core; the process exits 0 once all stopped.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::core::{self, CoreEvent, CoreStart};
use crate::limits::{EXECUTOR_START_ATTEMPTS_MAX, EXECUTOR_START_RETRY_MS};
use daemon::signals;

/// Exit code: stopped by a signal, cleanly.
pub const EXIT_OK: i32 = 0;
/// Exit code: a core failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: the configuration was refused.
pub const EXIT_CONFIG: i32 = 2;
/// Exit code: a start-up check refused (the port is taken).
pub const EXIT_CHECK: i32 = 3;

/// Runs the router with these command-line arguments; returns the exit code.
pub fn run(args: Vec<std::ffi::OsString>) -> i32 {
    let cpus: Vec<usize> =
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    let (cli, config) = match Config::from_args(args, &cpus) {
        Ok(c) => c,
        Err(ConfigError::CommandLine(m)) => {
            // clap's message, or --help / --version text.
            eprint!("{m}");
            return if m.starts_with("error") {
                EXIT_CONFIG
            } else {
                EXIT_OK
            };
        }
        Err(e) => {
            eprintln!("percore-router: {e}");
            return EXIT_CONFIG;
        }
    };
    if cli.print_config {
        print!("{}", config.to_toml());
        return EXIT_OK;
    }
    let _log_guard = match daemon::logging::init(&config.log_level, config.log_file.as_deref()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("percore-router: {e}");
            return EXIT_CONFIG;
        }
    };
    // glommio binds with SO_REUSEPORT (pitfall 7): another process on the port would
    // silently share its connections. A plain bind fails if anything listens there.
    let addr = format!("{}:{}", config.listen_host, config.port);
    if let Err(e) = std::net::TcpListener::bind(&addr) {
        tracing::error!(%addr, error = %e, "refusing to start: the port is taken");
        eprintln!("percore-router: refusing to start: cannot listen on {addr}: {e}");
        return EXIT_CHECK;
    }
    run_cores(config)
}

fn run_cores(config: Config) -> i32 {
    let cores = config.core_count();
    let mut stops = match signals::register(cores + 1) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("percore-router: cannot register signal handlers: {e}");
            return EXIT_FAILED;
        }
    };
    tracing::info!(
        port = config.port,
        cores = ?config.cores,
        meta = %config.meta,
        refresh_interval_ms = config.refresh_interval_ms,
        "starting"
    );
    let config = Arc::new(config);
    let (events_tx, events) = mpsc::channel();
    let main_stop = stops.pop().expect("one pipe per core and one for main");
    {
        let events = events_tx.clone();
        let watcher = std::thread::Builder::new()
            .name("stop-watcher".into())
            .spawn(move || {
                main_stop.wait_blocking();
                let _ = events.send(CoreEvent::StopSignal);
            });
        if let Err(e) = watcher {
            eprintln!("percore-router: cannot start the signal watcher: {e}");
            return EXIT_FAILED;
        }
    }
    let mut threads = Vec::with_capacity(cores);
    for (index, stop) in stops.into_iter().enumerate() {
        let start = CoreStart {
            index: index as u32,
            config: config.clone(),
            stop,
            events: events_tx.clone(),
        };
        match std::thread::Builder::new()
            .name(format!("core-{index}"))
            .spawn(move || run_core(start))
        {
            Ok(t) => threads.push(t),
            Err(e) => {
                eprintln!("percore-router: cannot start the thread of core {index}: {e}");
                return EXIT_FAILED;
            }
        }
    }
    drop(events_tx);
    let (mut listening, mut stopped, mut ended) = (0, 0, 0);
    let mut ready = false;
    let mut failure: Option<String> = None;
    while ended < cores {
        let Ok(event) = events.recv() else { break };
        match event {
            CoreEvent::Listening { core } => {
                tracing::debug!(core, "core listening");
                listening += 1;
                if listening == cores && failure.is_none() {
                    ready = true;
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "percore-router ready port={}", config.port);
                    let _ = out.flush();
                    tracing::info!(port = config.port, "ready");
                }
            }
            CoreEvent::StopSignal if !ready && failure.is_none() => {
                // Nothing served yet, nothing to drain: an operator's stop must not wait.
                tracing::warn!("stop signal during start-up: exiting without serving");
                return EXIT_OK;
            }
            CoreEvent::StopSignal => tracing::info!("stop signal: draining every core"),
            CoreEvent::Stopped { core } => {
                tracing::debug!(core, "core stopped");
                stopped += 1;
                ended += 1;
            }
            CoreEvent::Failed { core, reason } => {
                tracing::error!(core, %reason, "core failed");
                eprintln!("percore-router: core {core} failed: {reason}");
                ended += 1;
                if failure.is_none() {
                    failure = Some(reason);
                    // The other cores may be serving: stop them the way SIGTERM would.
                    signals::raise_stop();
                }
            }
        }
    }
    for t in threads {
        let _ = t.join();
    }
    if failure.is_some() || stopped != cores {
        tracing::error!("stopped after a failure");
        return EXIT_FAILED;
    }
    tracing::info!("stopped cleanly");
    EXIT_OK
}

/// One core's thread: start its executor (retrying, pitfall 8), run the core on it.
fn run_core(start: CoreStart) {
    let events = start.events.clone();
    let index = start.index;
    let cpu = start.config.cores[index as usize];
    let mut attempt = 1;
    let executor = loop {
        let built = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpu))
            .name(&format!("core-{index}"))
            .io_memory(start.config.io_memory_bytes as usize)
            .make();
        match built {
            Ok(ex) => break ex,
            Err(e) if attempt < EXECUTOR_START_ATTEMPTS_MAX => {
                tracing::warn!(core = index, cpu, attempt, error = %e, "executor did not start; retrying");
                attempt += 1;
                std::thread::sleep(Duration::from_millis(EXECUTOR_START_RETRY_MS));
            }
            Err(e) => {
                let _ = events.send(CoreEvent::Failed {
                    core: index,
                    reason: format!("cannot start the executor on CPU {cpu}: {e}"),
                });
                return;
            }
        }
    };
    let outcome = executor.run(core::run(start));
    let _ = events.send(match outcome {
        Ok(()) => CoreEvent::Stopped { core: index },
        Err(reason) => CoreEvent::Failed {
            core: index,
            reason,
        },
    });
}
