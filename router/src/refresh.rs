//! The constant-rate refresh: every period, whether requests hit or miss, each core brings
//! its cache level with the metadata service's map by a Merkle sync.
//!
//! The DynamoDB lesson: if a router called meta only on misses, meta's load would
//! follow the routers' hit ratio, and a cold start of every router at once (every request a
//! miss) would take it down just when it is needed. Refreshing at a fixed pace makes meta's
//! load a function of the number of router cores and the period: one `SyncRoot` round trip
//! when nothing changed, and `SyncExpand` rounds only down the paths where the hashes differ
//! (`routing::SyncSession`), so that a router fetches what changed, not the map. Misses
//! still fill lazily in between, coalesced per table.
//!
//! The sync makes the core's trie equal to meta's whole map: after the first refresh a core
//! holds every route (bounded by the trie's `ROUTES_MAX`), and misses are rare.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use proto::cluster::{ClusterReply, ClusterRequest};
use proto::Error;
use routing::{Expansion, SyncSession};

use crate::cache::{route_key, CachedRoute};
use crate::forward::Router;
use crate::limits::SYNC_ROUNDS_MAX;

/// What one refresh did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefreshOutcome {
    /// `SyncExpand` round trips (0 when the roots matched).
    pub rounds: u64,
    /// Routes written into the cache.
    pub routes_fetched: u64,
    /// Routes removed from the cache.
    pub routes_removed: u64,
}

/// Brings the core's cache level with meta's map once.
pub async fn refresh_once(router: &Rc<Router>) -> Result<RefreshOutcome, Error> {
    let root = match router.meta.call(&ClusterRequest::SyncRoot).await? {
        ClusterReply::SyncRoot { hash, count } => (hash, count),
        _ => {
            return Err(Error::internal(
                "the metadata service answered SyncRoot with something else",
            ))
        }
    };
    let mut session = SyncSession::start(router.cache.borrow().routes().trie(), root);
    let mut rounds = 0u64;
    while let Some(prefixes) = session.next_request() {
        rounds += 1;
        if rounds > u64::from(SYNC_ROUNDS_MAX) {
            return Err(Error::internal(format!(
                "the sync with the metadata service took over {SYNC_ROUNDS_MAX} rounds; \
                 trying again next period"
            )));
        }
        let request = ClusterRequest::SyncExpand {
            prefixes: routing::prefixes_to_wire(&prefixes),
        };
        let wire = match router.meta.call(&request).await? {
            ClusterReply::Expansions(e) => e,
            _ => {
                return Err(Error::internal(
                    "the metadata service answered SyncExpand with something else",
                ))
            }
        };
        let expansions = routing::expansions_from_wire(wire)
            .map_err(|e| Error::internal(format!("a sync reply from the metadata service: {e}")))?;
        let now = Instant::now();
        let expansions = expansions
            .into_iter()
            .map(|e| cached_expansion(e, now))
            .collect::<Result<Vec<_>, Error>>()?;
        let mut cache = router.cache.borrow_mut();
        session
            .on_reply(cache.routes_mut().trie_mut(), expansions)
            .map_err(|e| Error::internal(format!("a sync reply from the metadata service: {e}")))?;
    }
    let stats = session.stats();
    let mut cache = router.cache.borrow_mut();
    if stats.routes_fetched + stats.routes_removed > 0 {
        cache.rename_tables();
        cache.count_fetched(stats.routes_fetched);
        cache.count_dropped(stats.routes_removed);
    }
    cache.check_invariants();
    Ok(RefreshOutcome {
        rounds,
        routes_fetched: stats.routes_fetched,
        routes_removed: stats.routes_removed,
    })
}

/// An expansion whose leaf is checked and ready for the cache: a route stored under any
/// key but its own would be found for hashes it does not hold.
fn cached_expansion(
    e: Expansion<proto::cluster::Route>,
    now: Instant,
) -> Result<Expansion<CachedRoute>, Error> {
    Ok(match e {
        Expansion::Empty => Expansion::Empty,
        Expansion::Split { left, right } => Expansion::Split { left, right },
        Expansion::Leaf(key, route) => {
            let cached = CachedRoute::new(route, now)?;
            let own = route_key(cached.route.table_id, cached.route.start());
            if key != own {
                return Err(Error::internal(format!(
                    "the metadata service sent partition {} of table {:?} under another key",
                    cached.route.index, cached.route.table
                )));
            }
            Expansion::Leaf(key, cached)
        }
    })
}

/// Refreshes every `interval` while `alive` holds.
pub async fn run(router: Rc<Router>, interval: Duration, alive: Rc<Cell<bool>>) {
    let mut failing = false;
    while alive.get() {
        glommio::timer::sleep(interval).await;
        if !alive.get() {
            break;
        }
        let c = &router.stats;
        c.refreshes.set(c.refreshes.get() + 1);
        match refresh_once(&router).await {
            Ok(outcome) => {
                if failing {
                    tracing::info!(core = router.core, "the metadata service answers again");
                }
                if outcome.rounds > 0 {
                    tracing::debug!(core = router.core, ?outcome, "routing cache synced");
                }
                failing = false;
            }
            Err(e) => {
                c.refresh_failures.set(c.refresh_failures.get() + 1);
                if !failing {
                    tracing::warn!(core = router.core, error = %e, "refresh failed; routing goes on from the cache");
                }
                failing = true;
            }
        }
    }
}
