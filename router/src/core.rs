//! One router core's life: listen, serve, refresh at a constant rate, log its counters,
//! drain on a stop signal.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::config::Config;
use crate::forward::Router;
use crate::limits::{DRAIN_TIMEOUT_MS, REACTOR_KEEPALIVE_US, STATS_LOG_INTERVAL_MS};
use crate::meta::MetaLink;
use daemon::server::{self, Connections, Drain};
use daemon::signals::StopPipe;

/// What a core tells the main thread.
#[derive(Debug)]
pub enum CoreEvent {
    /// The core accepts connections.
    Listening {
        /// The core index.
        core: u32,
    },
    /// The core stopped cleanly (drained).
    Stopped {
        /// The core index.
        core: u32,
    },
    /// A stop signal reached the main thread (from its watcher, not from a core).
    StopSignal,
    /// The core failed; the router must stop.
    Failed {
        /// The core index.
        core: u32,
        /// Why.
        reason: String,
    },
}

/// What the main thread hands a core's executor.
pub struct CoreStart {
    /// The core index (0-based; not the CPU number).
    pub index: u32,
    /// The configuration.
    pub config: Arc<Config>,
    /// The core's stop-signal pipe.
    pub stop: StopPipe,
    /// Where to report.
    pub events: mpsc::Sender<CoreEvent>,
}

/// Runs one core until a stop signal, then drains it.
pub async fn run(start: CoreStart) -> Result<(), String> {
    let CoreStart {
        index,
        config,
        stop,
        events,
    } = start;
    let alive = Rc::new(Cell::new(true));
    let keepalive = {
        let alive = alive.clone();
        glommio::spawn_local(async move {
            while alive.get() {
                glommio::timer::sleep(Duration::from_micros(REACTOR_KEEPALIVE_US)).await;
            }
        })
    };

    let router = Rc::new(Router::new(index, MetaLink::new(config.meta)));
    let connections = Rc::new(Connections::new(crate::limits::SERVER_LIMITS));
    let drain = Rc::new(Drain::default());
    let addr = format!("{}:{}", config.listen_host, config.port);
    let listener = glommio::net::TcpListener::bind(&addr)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let accepting = glommio::spawn_local(server::accept_loop(
        listener,
        router.clone(),
        connections.clone(),
        drain.clone(),
    ));
    let redis_stats = Rc::new(crate::redis::RedisStats::default());
    let redis_accepting = match config.redis_port {
        None => None,
        Some(port) => {
            let listener = crate::redis::listen(&config.listen_host, port)?;
            let tables: Rc<[String]> = config.redis_tables.clone().into();
            Some(glommio::spawn_local(crate::redis::accept_loop(
                listener,
                crate::redis::exec::RouterStore::new(router.clone()),
                tables,
                index,
                connections.clone(),
                drain.clone(),
                redis_stats.clone(),
            )))
        }
    };
    let _ = events.send(CoreEvent::Listening { core: index });

    let refresher = glommio::spawn_local(crate::refresh::run(
        router.clone(),
        Duration::from_millis(config.refresh_interval_ms),
        alive.clone(),
    ));
    let logger = {
        let (router, alive, connections, redis) = (
            router.clone(),
            alive.clone(),
            connections.clone(),
            redis_stats.clone(),
        );
        glommio::spawn_local(async move {
            while alive.get() {
                glommio::timer::sleep(Duration::from_millis(STATS_LOG_INTERVAL_MS)).await;
                log_stats(&router, &connections, &redis, "router counters");
            }
        })
    };

    stop.wait().await;
    tracing::info!(
        core = index,
        open = connections.open(),
        "stop signal: draining"
    );
    drain.start();
    accepting.await;
    if let Some(redis) = redis_accepting {
        redis.await;
    }
    let drained = connections
        .all_closed_within(Duration::from_millis(DRAIN_TIMEOUT_MS))
        .await;
    if !drained {
        tracing::warn!(
            core = index,
            open = connections.open(),
            "drain timed out; closing anyway"
        );
    }
    alive.set(false);
    // Both sleep for a period: cancel rather than wait it out.
    drop(refresher.cancel());
    drop(logger.cancel());
    keepalive.await;
    router.meta.close();
    router.nodes.close();
    log_stats(&router, &connections, &redis_stats, "core stopped");
    Ok(())
}

fn log_stats(
    router: &Router,
    connections: &Connections,
    redis: &crate::redis::RedisStats,
    what: &'static str,
) {
    let cache = router.cache.borrow();
    let c = cache.stats();
    let s = &router.stats;
    tracing::info!(
        core = router.core,
        requests = s.requests.get(),
        hits = c.hits,
        misses = c.misses,
        refreshes = s.refreshes.get(),
        refresh_failures = s.refresh_failures.get(),
        routes_fetched = c.routes_fetched,
        routes_dropped = c.routes_dropped,
        routes_cached = cache.len(),
        meta_fetches = s.meta_fetches.get(),
        forwarded = s.forwarded.get(),
        retries = s.retries.get(),
        errors = s.errors.get(),
        admin = s.admin.get(),
        connections = connections.open(),
        accepted = connections.accepted(),
        redis_connections = redis.connections.get(),
        redis_commands = redis.commands.get(),
        redis_refused = redis.refused.get(),
        redis_protocol_errors = redis.protocol_errors.get(),
        "{what}"
    );
}
