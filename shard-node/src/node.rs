//! The process: configuration, checks, executors, the ready line, the exit code.
//!
//! The main thread does everything that may block (reading the config and the catalog,
//! the start-up checks, registering signals), then starts one pinned executor per core and
//! waits for them. Each core reports through a std channel: recovered, listening, stopped
//! or failed. When every core listens the main thread prints the ready line,
//! `percore-node ready port=P`, on stdout (tests and scripts wait for it).

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::barrier::Barrier;
use crate::catalog::{self, Catalog};
use crate::checks;
use crate::config::{Config, SystemFacts};
use crate::limits::{EXECUTOR_START_ATTEMPTS_MAX, EXECUTOR_START_RETRY_MS};
use crate::mesh::{self, MeshPorts};
use crate::shard;
use daemon::signals::{self, StopPipe};

/// Exit code: a stop signal was handled and everything was synced.
pub const EXIT_OK: i32 = 0;
/// Exit code: the node failed while running or starting.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: the configuration was refused.
pub const EXIT_CONFIG: i32 = 2;
/// Exit code: a start-up check refused (io_uring, memlock, O_DIRECT, lock).
pub const EXIT_CHECK: i32 = 3;

/// What a core tells the main thread.
#[derive(Debug)]
pub enum CoreEvent {
    /// Every partition of the core is recovered.
    Recovered {
        /// The core index.
        core: u32,
        /// Partitions opened.
        partitions: usize,
    },
    /// The core accepts connections.
    Listening {
        /// The core index.
        core: u32,
    },
    /// The core stopped cleanly (drained, synced).
    Stopped {
        /// The core index.
        core: u32,
    },
    /// A stop signal reached the main thread (sent by its watcher, not by a core).
    StopSignal,
    /// The core failed; the node must stop.
    Failed {
        /// The core index.
        core: u32,
        /// Why.
        reason: String,
    },
}

/// What the main thread hands each core's executor.
pub struct CoreStart {
    /// The core index (0-based; not the CPU number).
    pub index: u32,
    /// The configuration.
    pub config: Arc<Config>,
    /// The catalog as loaded at start-up.
    pub catalog: Arc<Catalog>,
    /// The core's ends of the mesh.
    pub mesh: MeshPorts,
    /// The core's stop-signal pipe.
    pub stop: StopPipe,
    /// Where to report.
    pub events: mpsc::Sender<CoreEvent>,
    /// Every core recovered.
    pub recovered: Arc<Barrier>,
    /// Every core drained.
    pub drained: Arc<Barrier>,
}

/// Runs the node with these command-line arguments; returns the process exit code.
pub fn run(args: Vec<std::ffi::OsString>) -> i32 {
    let facts = SystemFacts::probe();
    let (cli, config) = match Config::from_args(args, &facts) {
        Ok(c) => c,
        Err(crate::config::ConfigError::BadValue {
            field: "command line",
            reason,
            ..
        }) => {
            // clap's own message (or --help / --version text).
            eprint!("{reason}");
            return if reason.starts_with("error") {
                EXIT_CONFIG
            } else {
                EXIT_OK
            };
        }
        Err(e) => {
            eprintln!("percore-node: {e}");
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
            eprintln!("percore-node: {e}");
            return EXIT_CONFIG;
        }
    };
    let lock = match checks::run_all(&config) {
        Ok(lock) => lock,
        Err(e) => {
            tracing::error!("refusing to start: {e}");
            eprintln!("percore-node: refusing to start: {e}");
            return EXIT_CHECK;
        }
    };
    let code = run_checked(config);
    drop(lock);
    code
}

fn run_checked(config: Config) -> i32 {
    let catalog = match catalog::load(&config.data_dir).and_then(|c| {
        c.check_cores(config.core_count())?;
        Ok(c)
    }) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!("refusing to start: {e}");
            eprintln!("percore-node: refusing to start: {e}");
            return EXIT_FAILED;
        }
    };
    let cores = config.core_count();
    // One pipe per core, and one for the main thread's watcher.
    let mut stops = match signals::register(cores + 1) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("percore-node: cannot register signal handlers: {e}");
            return EXIT_FAILED;
        }
    };
    tracing::info!(
        data_dir = %config.data_dir.display(),
        cores = ?config.cores,
        port = config.port,
        core_ports = ?config.core_ports,
        tables = catalog.tables.len(),
        "starting"
    );

    let shared = config.shared_cpus();
    if !shared.is_empty() {
        tracing::warn!(cpus = ?shared, "several cores are pinned to the same CPU: they will compete for it");
    }
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
            eprintln!("percore-node: cannot start the signal watcher: {e}");
            return EXIT_FAILED;
        }
    }
    let recovered = Arc::new(Barrier::new(cores));
    let drained = Arc::new(Barrier::new(cores));
    let mut threads = Vec::with_capacity(cores);
    for ((index, mesh), stop) in mesh::build(cores).into_iter().enumerate().zip(stops) {
        let start = CoreStart {
            index: index as u32,
            config: config.clone(),
            catalog: catalog.clone(),
            mesh,
            stop,
            events: events_tx.clone(),
            recovered: recovered.clone(),
            drained: drained.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("core-{index}"))
            .spawn(move || run_core(start));
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                eprintln!("percore-node: cannot start the thread of core {index}: {e}");
                recovered.fail();
                drained.fail();
                return EXIT_FAILED;
            }
        }
    }
    drop(events_tx);
    let mut ready = false;

    let mut listening = 0;
    let mut stopped = 0;
    let mut failure: Option<String> = None;
    // Every core sends Stopped or Failed exactly once.
    let mut ended = 0;
    while ended < cores {
        let Ok(event) = events.recv() else { break };
        match event {
            CoreEvent::Recovered { core, partitions } => {
                tracing::info!(core, partitions, "core recovered")
            }
            CoreEvent::Listening { core } => {
                tracing::debug!(core, "core listening");
                listening += 1;
                if listening == cores && failure.is_none() {
                    ready = true;
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "percore-node ready port={}", config.port);
                    let _ = out.flush();
                    tracing::info!(port = config.port, core_ports = ?config.core_ports, "ready");
                }
            }
            CoreEvent::StopSignal if !ready && failure.is_none() => {
                // Nothing has been served, so nothing needs draining; recovery may be deep
                // in I/O that cannot be cancelled. Leaving now is as safe as a crash at
                // this point, which recovery is built for, and an operator's stop must
                // not wait for a slow (or stuck) start-up.
                tracing::warn!("stop signal during start-up: exiting without serving");
                return EXIT_OK;
            }
            CoreEvent::StopSignal => {}
            CoreEvent::Stopped { core } => {
                tracing::debug!(core, "core stopped");
                stopped += 1;
                ended += 1;
            }
            CoreEvent::Failed { core, reason } => {
                tracing::error!(core, %reason, "core failed");
                ended += 1;
                eprintln!("percore-node: core {core} failed: {reason}");
                if failure.is_none() {
                    failure = Some(reason);
                    recovered.fail();
                    drained.fail();
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

/// One core's thread: start its executor (retrying, pitfall 8), run the shard on it.
fn run_core(start: CoreStart) {
    let events = start.events.clone();
    let index = start.index;
    let cpu = start.config.cores[index as usize];
    let mut attempt = 1;
    let executor = loop {
        let built = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpu))
            .name(&format!("core-{index}"))
            .io_memory(start.config.io_memory_bytes as usize)
            .preempt_timer(Duration::from_millis(shard::PREEMPT_TIMER_MS))
            .make();
        match built {
            Ok(ex) => break ex,
            Err(e) if attempt < EXECUTOR_START_ATTEMPTS_MAX => {
                tracing::warn!(core = index, cpu, attempt, error = %e, "executor did not start; retrying");
                attempt += 1;
                std::thread::sleep(Duration::from_millis(EXECUTOR_START_RETRY_MS));
            }
            Err(e) => {
                start.recovered.fail();
                start.drained.fail();
                let _ = events.send(CoreEvent::Failed {
                    core: index,
                    reason: format!("cannot start the executor on CPU {cpu}: {e}"),
                });
                return;
            }
        }
    };
    let (recovered, drained) = (start.recovered.clone(), start.drained.clone());
    let outcome = executor.run(shard::run(start));
    let _ = events.send(match outcome {
        Ok(()) => CoreEvent::Stopped { core: index },
        Err(reason) => {
            recovered.fail();
            drained.fail();
            CoreEvent::Failed {
                core: index,
                reason,
            }
        }
    });
}
