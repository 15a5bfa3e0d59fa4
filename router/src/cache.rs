//! One core's routing cache: the routes it has learnt, found by (table, hash) with a floor
//! query over range starts. Sans-I/O: the caller fetches from the metadata service and
//! feeds what it got; the cache never waits and reads no clock (times are passed in).
//!
//! Keys are `route_key(table_id, start)` (the table id then the range start, big-endian),
//! so one ordered map holds every table and a floor query stays within a table when the
//! caller checks the table id of what it finds. A floor hit is only a hit if the route's
//! range also covers the hash: with lazy filling, the floor of a hash may be a cached
//! neighbour range while the hash's own range was never fetched.
//!
//! The map is the `routing` crate's crit-bit trie with Merkle hashes ([`RouteMap`] wraps
//! it), so that the constant-rate refresh can bring it level with the metadata service's
//! map by comparing hashes from the top down ([`crate::refresh`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use proto::cluster::Route;
use proto::Error;

use crate::limits::CACHED_ROUTES_MAX;

pub use routing::{route_key, Key, KEY_BYTES};

/// A route as the cache keeps it: shared (a request holds it while the cache moves on), with
/// its leader's address parsed once.
#[derive(Clone, Debug)]
pub struct CachedRoute {
    /// The route as meta gave it.
    pub route: Rc<Route>,
    /// The leader's own port, parsed; `None` if the hint is out of range or not `ip:port`
    /// (then the route cannot be used, and the request fails with `Unavailable`).
    pub leader: Option<SocketAddr>,
    /// When it was fetched.
    pub fetched_at: Instant,
}

impl CachedRoute {
    /// Checks a route from the metadata service and prepares it for the cache.
    pub fn new(route: Route, now: Instant) -> Result<CachedRoute, Error> {
        check_route(&route)?;
        let leader = route.leader().and_then(|p| p.addr.parse().ok());
        Ok(CachedRoute {
            route: Rc::new(route),
            leader,
            fetched_at: now,
        })
    }

    /// Whether this route's hash range holds `hash` (its start is at most `hash`).
    pub fn covers(&self, hash: u128) -> bool {
        let r = &self.route;
        r.start() <= hash
            && (r.index + 1 == r.partitions
                || hash < proto::partition_start(r.index + 1, r.partitions))
    }

    /// Whether two routes say the same: same partition, epoch and leader.
    pub fn same_as(&self, other: &CachedRoute) -> bool {
        self.route.partition_id == other.route.partition_id
            && self.route.epoch == other.route.epoch
            && self.leader == other.leader
    }
}

/// The Merkle hash of a cached route covers the route only (never when it was fetched), so
/// that it equals the metadata service's hash of the same route.
impl routing::Digest for CachedRoute {
    fn digest(&self) -> u128 {
        self.route.digest()
    }
}

/// Refuses a route that would make the placement functions panic or route nowhere.
fn check_route(route: &Route) -> Result<(), Error> {
    if route.partitions == 0 || route.index >= route.partitions {
        return Err(Error::internal(format!(
            "the metadata service sent a route of table {:?} with index {} of {} partitions",
            route.table, route.index, route.partitions
        )));
    }
    Ok(())
}

/// What the cache has counted since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that found no covering route.
    pub misses: u64,
    /// Routes stored from the metadata service (lookups, table maps and refreshes).
    pub routes_fetched: u64,
    /// Routes dropped (refused by a node, removed by a refresh, a deleted table).
    pub routes_dropped: u64,
}

/// The ordered map under the cache: the routing trie.
#[derive(Default)]
pub struct RouteMap {
    trie: routing::Trie<CachedRoute>,
}

impl RouteMap {
    /// Routes held.
    pub fn len(&self) -> usize {
        self.trie.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.trie.is_empty()
    }

    /// The entry with the greatest key at most `key`.
    pub fn floor(&self, key: &Key) -> Option<(&Key, &CachedRoute)> {
        self.trie.floor(key)
    }

    /// Stores a route under its key (the caller keeps the count under
    /// [`CACHED_ROUTES_MAX`], which is the trie's own bound).
    pub fn insert(&mut self, key: Key, value: CachedRoute) -> Option<CachedRoute> {
        self.trie.insert(key, value)
    }

    /// Removes a key.
    pub fn remove(&mut self, key: &Key) -> Option<CachedRoute> {
        self.trie.remove(key)
    }

    /// Removes every route of a table; returns how many.
    pub fn remove_table(&mut self, table_id: u64) -> usize {
        self.trie.remove_prefix(&routing::table_prefix(table_id))
    }

    /// A table's routes in hash order.
    pub fn table(&self, table_id: u64) -> impl Iterator<Item = (&Key, &CachedRoute)> {
        self.trie.iter_prefix(&routing::table_prefix(table_id))
    }

    /// Every route in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &CachedRoute)> {
        self.trie.iter()
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.trie = routing::Trie::new();
    }

    /// The trie itself, for the Merkle sync.
    pub fn trie(&self) -> &routing::Trie<CachedRoute> {
        &self.trie
    }

    /// The trie itself, for the Merkle sync to change.
    pub fn trie_mut(&mut self) -> &mut routing::Trie<CachedRoute> {
        &mut self.trie
    }
}

/// One core's routing cache (see the module doc).
#[derive(Default)]
pub struct RouteCache {
    routes: RouteMap,
    /// Table name → id, learnt from the routes fetched.
    tables: HashMap<String, u64>,
    stats: CacheStats,
}

impl RouteCache {
    /// An empty cache.
    pub fn new() -> RouteCache {
        RouteCache::default()
    }

    /// What it has counted.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Routes held.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether it holds no route.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The map under the cache (for the refresh).
    pub fn routes(&self) -> &RouteMap {
        &self.routes
    }

    /// The id of a table, if any of its routes was fetched.
    pub fn table_id(&self, table: &str) -> Option<u64> {
        self.tables.get(table).copied()
    }

    /// The names of the tables it knows.
    pub fn table_names(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }

    /// The route holding `hash` in `table`, counted as a hit or a miss.
    pub fn lookup(&mut self, table: &str, hash: u128) -> Option<CachedRoute> {
        let found = self.peek(table, hash);
        if found.is_some() {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
        found
    }

    /// The route holding `hash` in `table`, counted as a hit if it is there; a miss is not
    /// counted, for the caller's [`RouteCache::lookup`] on its slower way to count it.
    pub fn lookup_hit(&mut self, table: &str, hash: u128) -> Option<CachedRoute> {
        let found = self.peek(table, hash);
        if found.is_some() {
            self.stats.hits += 1;
        }
        found
    }

    /// The route holding `hash` in `table`, not counted (a re-check after a wait).
    pub fn peek(&self, table: &str, hash: u128) -> Option<CachedRoute> {
        let id = *self.tables.get(table)?;
        let (_, r) = self.routes.floor(&route_key(id, hash))?;
        (r.route.table_id == id && r.covers(hash)).then(|| r.clone())
    }

    /// How many partitions a table has, as its cached routes say.
    pub fn partitions(&self, table: &str) -> Option<u32> {
        let id = *self.tables.get(table)?;
        self.routes
            .table(id)
            .next()
            .map(|(_, r)| r.route.partitions)
    }

    /// Stores a route fetched from the metadata service. A route of a table under a new id
    /// (deleted and created again) drops the old table's routes; a route whose table now
    /// has another number of partitions drops that table's other routes (they no longer
    /// tile the hash space the same way).
    pub fn insert(&mut self, route: CachedRoute) {
        if self.routes.len() >= CACHED_ROUTES_MAX {
            tracing::warn!(
                routes = self.routes.len(),
                limit = CACHED_ROUTES_MAX,
                "the routing cache is full: clearing it (it fills again lazily)"
            );
            self.stats.routes_dropped += self.routes.len() as u64;
            self.routes.clear();
            self.tables.clear();
        }
        let r = &route.route;
        let id = r.table_id;
        match self.tables.insert(r.table.clone(), id) {
            Some(old) if old != id => {
                self.stats.routes_dropped += self.routes.remove_table(old) as u64;
            }
            _ => {}
        }
        let reshaped = self
            .routes
            .table(id)
            .next()
            .is_some_and(|(_, other)| other.route.partitions != r.partitions);
        if reshaped {
            self.stats.routes_dropped += self.routes.remove_table(id) as u64;
        }
        self.stats.routes_fetched += 1;
        self.routes.insert(route_key(id, r.start()), route);
        self.check_invariants();
    }

    /// Drops a route a node refused, if the cache still holds that very route.
    pub fn drop_route(&mut self, route: &CachedRoute) {
        let key = route_key(route.route.table_id, route.route.start());
        let same = self
            .routes
            .floor(&key)
            .is_some_and(|(k, r)| *k == key && r.same_as(route));
        if same {
            self.routes.remove(&key);
            self.stats.routes_dropped += 1;
        }
    }

    /// Drops a table by name (deleted through this core).
    pub fn drop_table(&mut self, table: &str) {
        if let Some(id) = self.tables.remove(table) {
            self.stats.routes_dropped += self.routes.remove_table(id) as u64;
        }
    }

    /// Forgets table names none of whose routes is cached any more (after a refresh
    /// removed them).
    pub fn forget_empty_tables(&mut self) {
        let routes = &self.routes;
        self.tables
            .retain(|_, id| routes.table(*id).next().is_some());
    }

    /// Rebuilds the table names from the routes (after a refresh changed them).
    pub fn rename_tables(&mut self) {
        self.tables.clear();
        for (_, r) in self.routes.iter() {
            self.tables.insert(r.route.table.clone(), r.route.table_id);
        }
    }

    /// Counts routes a refresh fetched.
    pub fn count_fetched(&mut self, n: u64) {
        self.stats.routes_fetched += n;
    }

    /// Counts a route the refresh removed.
    pub fn count_dropped(&mut self, n: u64) {
        self.stats.routes_dropped += n;
    }

    /// The map, for a refresh that changes it in place.
    pub fn routes_mut(&mut self) -> &mut RouteMap {
        &mut self.routes
    }

    /// Checks, in debug builds, that every route sits under its own key.
    pub fn check_invariants(&self) {
        #[cfg(debug_assertions)]
        if self.routes.len() <= 4096 {
            for (k, r) in self.routes.iter() {
                debug_assert_eq!(*k, route_key(r.route.table_id, r.route.start()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::cluster::Placement;

    fn route(table_id: u64, index: u32, partitions: u32, epoch: u64) -> Route {
        Route {
            table_id,
            table: format!("t{table_id}"),
            index,
            partitions,
            partition_id: table_id * 1000 + index as u64,
            epoch,
            replicas: vec![Placement {
                node: 1,
                core: 0,
                addr: format!("127.0.0.1:{}", 7000 + index),
            }],
            leader: 0,
        }
    }

    fn cached(r: Route) -> CachedRoute {
        CachedRoute::new(r, Instant::now()).unwrap()
    }

    #[test]
    fn a_floor_hit_counts_only_when_the_range_covers_the_hash() {
        let mut c = RouteCache::new();
        assert!(c.lookup("t1", 5).is_none());
        c.insert(cached(route(1, 0, 4, 1)));
        assert_eq!(c.lookup("t1", 5).unwrap().route.index, 0);
        // Partition 2's range: its floor is partition 0, which does not cover it.
        let h = proto::partition_start(2, 4) + 9;
        assert!(c.lookup("t1", h).is_none());
        c.insert(cached(route(1, 2, 4, 1)));
        assert_eq!(c.lookup("t1", h).unwrap().route.index, 2);
        assert!(
            c.lookup("t1", u128::MAX).is_none(),
            "partition 3 is not cached"
        );
        c.insert(cached(route(1, 3, 4, 1)));
        assert_eq!(
            c.lookup("t1", u128::MAX).unwrap().route.index,
            3,
            "the last range is open"
        );
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.routes_fetched), (3, 3, 3));
        // Another table's routes are never a floor for this one.
        c.insert(cached(route(0, 3, 4, 1)));
        assert!(c.lookup("t0", 0).is_none());
    }

    #[test]
    fn a_recreated_table_or_a_new_cut_drops_the_old_routes() {
        let mut c = RouteCache::new();
        c.insert(cached(route(1, 0, 4, 1)));
        c.insert(cached(route(1, 1, 4, 1)));
        let mut again = route(2, 0, 2, 1);
        again.table = "t1".into();
        c.insert(cached(again));
        assert_eq!(c.len(), 1);
        assert_eq!(c.table_id("t1"), Some(2));
        c.insert(cached({
            let mut r = route(2, 0, 8, 2);
            r.table = "t1".into();
            r
        }));
        assert_eq!(c.partitions("t1"), Some(8));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_refused_route_is_dropped_only_if_unchanged() {
        let mut c = RouteCache::new();
        let old = cached(route(1, 0, 1, 1));
        c.insert(old.clone());
        let new = cached(route(1, 0, 1, 2));
        c.insert(new);
        c.drop_route(&old);
        assert_eq!(
            c.peek("t1", 0).unwrap().route.epoch,
            2,
            "a newer route stays"
        );
        let cur = c.peek("t1", 0).unwrap();
        c.drop_route(&cur);
        assert!(c.peek("t1", 0).is_none());
        c.forget_empty_tables();
        assert_eq!(c.table_id("t1"), None);
    }

    #[test]
    fn bad_routes_from_meta_are_refused_not_panicked_on() {
        assert!(CachedRoute::new(route(1, 4, 4, 1), Instant::now()).is_err());
        assert!(CachedRoute::new(route(1, 0, 0, 1), Instant::now()).is_err());
        let mut r = route(1, 0, 1, 1);
        r.leader = 3;
        assert!(CachedRoute::new(r, Instant::now())
            .unwrap()
            .leader
            .is_none());
    }
}
