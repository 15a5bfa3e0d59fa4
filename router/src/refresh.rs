//! The constant-rate refresh: every period, whether requests hit or miss, each core brings
//! its cache up to date with the metadata service.
//!
//! The DynamoDB lesson: if a router called meta only on misses, meta's load would
//! follow the routers' hit ratio, and a cold start of every router at once (every request a
//! miss) would take it down just when it is needed. Refreshing at a fixed pace makes meta's
//! load a function of the number of router cores and the period alone; misses still fill
//! lazily in between, coalesced per table.
//!
//! Until the `routing` crate's Merkle trie lands, a refresh re-reads the map of each table
//! the core has routed to (`TableMap`): its cost grows with the tables a core knows, not
//! with requests. With the trie it becomes a Merkle sync (`SyncRoot`, then `SyncExpand`
//! only where the hashes differ), which costs one round trip when nothing changed.

use std::rc::Rc;
use std::time::Duration;

use proto::Error;

use crate::forward::Router;

/// What one refresh did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefreshOutcome {
    /// Calls made to meta.
    pub calls: u64,
    /// Tables found deleted (their routes dropped).
    pub tables_dropped: u64,
}

/// Brings the core's cache up to date once.
pub async fn refresh_once(router: &Rc<Router>) -> Result<RefreshOutcome, Error> {
    let mut outcome = RefreshOutcome::default();
    let tables = router.cache.borrow().table_names();
    for table in tables {
        outcome.calls += 1;
        match router.meta.table_map(&table).await {
            Ok(routes) => router.store_table(&table, routes)?,
            Err(Error::UnknownTable { .. }) => {
                router.cache.borrow_mut().drop_table(&table);
                outcome.tables_dropped += 1;
            }
            Err(e) => return Err(e),
        }
    }
    router.cache.borrow_mut().forget_empty_tables();
    Ok(outcome)
}

/// Refreshes every `interval` while `alive` holds.
pub async fn run(router: Rc<Router>, interval: Duration, alive: Rc<std::cell::Cell<bool>>) {
    let mut failing = false;
    while alive.get() {
        glommio::timer::sleep(interval).await;
        if !alive.get() {
            break;
        }
        let c = &router.stats;
        c.refreshes.set(c.refreshes.get() + 1);
        match refresh_once(&router).await {
            Ok(_) => {
                if failing {
                    tracing::info!(core = router.core, "the metadata service answers again");
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
