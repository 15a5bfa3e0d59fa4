//! The request path on a router core: validate, find the owning partition's route (the
//! cache, or the metadata service on a miss), forward, relay the answer; retry a bounded
//! number of times when a node refuses the route.
//!
//! - Put, get, delete and query touch one partition: the partition key's hash picks it.
//! - A scan page stays within the partitions of the node that serves it (the node stops at
//!   a range it does not hold and its resume names the next partition): the router sends
//!   each page to the partition its resume names (partition 0 to start).
//! - Batch gets and writes are split by partition, the parts forwarded at once, and the
//!   answers merged (a batch write's outcomes keep the request's order).
//! - Table admin goes to the metadata service unchanged.
//!
//! Retries: a node's `WrongOwner` or `Unavailable` (or `UnknownTable`, which a node that has
//! not yet heard of a new table answers) says nothing was done: the route is dropped, looked
//! up again and the request sent again, at most [`ROUTER_RETRIES_MAX`] times. A node that
//! cannot be reached makes the request fail at once with `Unavailable` unless the route
//! changed meanwhile. A request whose outcome is unknown (the connection broke after it was
//! sent) is sent again only if it is idempotent; a plain write gets `Internal`, saying so,
//! and the client decides.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use daemon::server::{Relayed, ReplySink};
use glommio::sync::Semaphore;
use proto::cluster::Route;
use proto::{
    Error, Frame, FrameHeader, Key, Request, Response, ScanResume, WriteOutcome, HEADER_BYTES,
};

use crate::cache::{CachedRoute, RouteCache};
use crate::limits::{
    RETRY_BACKOFF_MS_INITIAL, RETRY_BACKOFF_MS_MAX, ROUTER_RETRIES_MAX, ROUTE_RECHECK_MS_MIN,
    UNKNOWN_TABLES_MAX, UNKNOWN_TABLE_REMEMBER_MS,
};
use crate::meta::MetaLink;
use crate::nodes::{NodeFailure, NodePool};

/// What one core's router has counted (besides its cache's counters).
#[derive(Default, Debug)]
pub struct RouterStats {
    /// Requests served.
    pub requests: Cell<u64>,
    /// Requests (or batch parts) sent to a node.
    pub forwarded: Cell<u64>,
    /// Attempts made again after a node refused or could not be reached.
    pub retries: Cell<u64>,
    /// Requests answered with an error the router made (not relayed from a node or meta).
    pub errors: Cell<u64>,
    /// Admin requests relayed to meta.
    pub admin: Cell<u64>,
    /// Routing calls made to meta on a miss or a refusal (lookups and table maps).
    pub meta_fetches: Cell<u64>,
    /// Refreshes done (constant rate).
    pub refreshes: Cell<u64>,
    /// Refreshes that failed (meta unreachable, or an answer that did not fit).
    pub refresh_failures: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// One core's request path (see the module doc).
pub struct Router {
    /// The core index, for logs.
    pub core: u32,
    /// The routing cache.
    pub cache: RefCell<RouteCache>,
    /// The link to the metadata service.
    pub meta: MetaLink,
    /// The connections to node cores.
    pub nodes: NodePool,
    /// Counters.
    pub stats: RouterStats,
    /// One fill at a time per table: requests that miss together wait for one fetch.
    fills: RefCell<HashMap<String, Rc<Semaphore>>>,
    /// Tables meta said it does not know, and when (see [`UNKNOWN_TABLE_REMEMBER_MS`]).
    unknown: RefCell<HashMap<String, Instant>>,
}

impl Router {
    /// A router core with an empty cache.
    pub fn new(core: u32, meta: MetaLink) -> Router {
        Router {
            core,
            cache: RefCell::new(RouteCache::new()),
            meta,
            nodes: NodePool::new(),
            stats: RouterStats::default(),
            fills: RefCell::new(HashMap::new()),
            unknown: RefCell::new(HashMap::new()),
        }
    }

    /// Answers one client request (never panics on bad input: errors are answers).
    pub async fn serve_request(self: &Rc<Self>, request: Request) -> Response {
        bump(&self.stats.requests);
        let result = match proto::validate(&request) {
            Err(e) => Err(e),
            Ok(()) => self.route_request(request).await,
        };
        match result {
            Ok(r) => r,
            Err(e) => Response::Error(e),
        }
    }

    async fn route_request(self: &Rc<Self>, request: Request) -> Result<Response, Error> {
        match request {
            Request::CreateTable(_)
            | Request::DescribeTable { .. }
            | Request::ListTables { .. }
            | Request::DeleteTable { .. } => self.admin(request).await,
            Request::Put(ref p) => {
                let (t, h) = (p.table.clone(), proto::partition_key_hash(&p.key.partition));
                self.forward(&t, h, request).await
            }
            Request::Get(ref g) => {
                let (t, h) = (g.table.clone(), proto::partition_key_hash(&g.key.partition));
                self.forward(&t, h, request).await
            }
            Request::Delete(ref d) => {
                let (t, h) = (d.table.clone(), proto::partition_key_hash(&d.key.partition));
                self.forward(&t, h, request).await
            }
            Request::Query(ref q) => {
                let (t, h) = (q.table.clone(), proto::partition_key_hash(&q.partition_key));
                self.forward(&t, h, request).await
            }
            Request::Scan(s) => self.scan(s).await,
            Request::BatchGet(b) => self.batch_get(b).await,
            Request::BatchWrite(b) => self.batch_write(b).await,
        }
    }

    async fn admin(&self, request: Request) -> Result<Response, Error> {
        bump(&self.stats.admin);
        let deleted = match &request {
            Request::DeleteTable { name } => Some(name.clone()),
            _ => None,
        };
        if let Request::CreateTable(c) = &request {
            self.unknown.borrow_mut().remove(&c.name);
        }
        let answer = self.meta.admin(&request).await;
        if let (Some(name), Ok(_)) = (&deleted, &answer) {
            // This core forgets it now; the others at their next refresh.
            self.cache.borrow_mut().drop_table(name);
        }
        answer.inspect_err(|_| bump(&self.stats.errors))
    }

    /// Sends a request to the partition holding `hash` in `table`, retrying on refusals,
    /// and decodes the answer.
    async fn forward(&self, table: &str, hash: u128, request: Request) -> Result<Response, Error> {
        let frame = proto::encode_request(0, &request, 0);
        let (header, payload) = split_frame(&frame);
        let answer = self
            .forward_frame(table, hash, header, payload, request.is_idempotent())
            .await?;
        // The client checked the frame (checksum, `rkyv::access`) already.
        proto::decode_checked_response(&answer)
            .map_err(|e| Error::internal(format!("a node's answer did not decode: {e}")))
    }

    /// Sends a request frame (its encoded header and payload) to the partition holding
    /// `hash` in `table`, retrying on refusals, and returns the answer's frame, checked
    /// but not decoded. `idempotent` is what [`Request::is_idempotent`] says of it.
    async fn forward_frame(
        &self,
        table: &str,
        hash: u128,
        header: &[u8; HEADER_BYTES],
        payload: &[u8],
        idempotent: bool,
    ) -> Result<Frame, Error> {
        // The route refused last, whether the node said so itself, and what it said.
        let mut refused: Option<(CachedRoute, bool, Error)> = None;
        let mut attempt = 0u32;
        loop {
            let route = match self
                .route(table, hash, refused.as_ref().map(|r| &r.0))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    bump(&self.stats.errors);
                    // Meta could not name another route: the node's answer says more.
                    return Err(refused.map_or(e, |(_, _, node_error)| node_error));
                }
            };
            if let Some((old, false, error)) = &refused {
                if old.same_as(&route) {
                    // The node could not be reached and meta still names it: fail now,
                    // never hang on a dead node.
                    bump(&self.stats.errors);
                    return Err(error.clone());
                }
            }
            let Some(addr) = route.leader else {
                bump(&self.stats.errors);
                return Err(Error::unavailable(format!(
                    "partition {} of table {table:?} has no usable leader address",
                    route.route.index
                )));
            };
            bump(&self.stats.forwarded);
            let (error, typed) = match self.nodes.call(addr, header, payload, idempotent).await {
                Ok(r) => return Ok(r),
                Err(NodeFailure::Answered(e)) if is_refusal(&e) => (e, true),
                Err(NodeFailure::Answered(e)) => return Err(e),
                Err(NodeFailure::NotSent(why)) => {
                    let leader = route.route.leader();
                    let error = Error::unavailable(format!(
                        "node {} core {} at {addr}, which holds partition {} of table {table:?}, \
                         cannot be reached: {why}",
                        leader.map_or(0, |p| p.node),
                        leader.map_or(0, |p| p.core),
                        route.route.index
                    ));
                    (error, false)
                }
                Err(NodeFailure::Unknown(why)) if idempotent => {
                    let error = Error::unavailable(format!(
                        "the connection to {addr} failed after the request was sent: {why}"
                    ));
                    (error, false)
                }
                Err(NodeFailure::Unknown(why)) => {
                    bump(&self.stats.errors);
                    return Err(outcome_unknown(addr, &why));
                }
            };
            attempt += 1;
            if attempt > ROUTER_RETRIES_MAX {
                bump(&self.stats.errors);
                return Err(error);
            }
            bump(&self.stats.retries);
            tracing::debug!(core = self.core, table, attempt, %error, "retrying on a fresh route");
            if typed {
                // A move in progress answers `Unavailable` until it is done: give it time.
                glommio::timer::sleep(backoff(attempt)).await;
            }
            refused = Some((route, typed, error));
        }
    }

    /// The route of the partition holding `hash`: the cache's, or meta's on a miss. After a
    /// refusal of `refused`, the cache's only if it changed meanwhile; else looked up again
    /// unless it was fetched less than [`ROUTE_RECHECK_MS_MIN`] ago.
    async fn route(
        &self,
        table: &str,
        hash: u128,
        refused: Option<&CachedRoute>,
    ) -> Result<CachedRoute, Error> {
        if refused.is_none() {
            if let Some(r) = self.cache.borrow_mut().lookup(table, hash) {
                return Ok(r);
            }
        }
        // Boxed: the way to meta is a large future, and inlined it would be copied with
        // every request's task though a cache hit never takes it.
        Box::pin(self.route_missed(table, hash, refused)).await
    }

    /// [`Router::route`] past a cache miss (the cache was looked up, unless `refused`).
    async fn route_missed(
        &self,
        table: &str,
        hash: u128,
        refused: Option<&CachedRoute>,
    ) -> Result<CachedRoute, Error> {
        if let Some(old) = refused {
            let current = self.cache.borrow().peek(table, hash);
            match current {
                Some(r) if !r.same_as(old) => return Ok(r),
                Some(r) if r.fetched_at.elapsed() < Duration::from_millis(ROUTE_RECHECK_MS_MIN) => {
                    return Ok(r)
                }
                _ => self.cache.borrow_mut().drop_route(old),
            }
        }
        self.known_to_meta(table)?;
        let lock = self.fill_lock(table);
        let permit = lock.acquire_permit(1).await;
        let result = async {
            // Another request may have filled it while this one waited.
            if let Some(r) = self.cache.borrow().peek(table, hash) {
                if refused.is_none_or(|old| !r.same_as(old)) {
                    return Ok(r);
                }
            }
            let known = self.cache.borrow().table_id(table).is_some();
            bump(&self.stats.meta_fetches);
            if !known && refused.is_none() {
                // A table never seen: take its whole map at once, so that a cold start costs
                // meta one call per table and core, not one per partition.
                self.fill_table(table).await?;
                if let Some(r) = self.cache.borrow().peek(table, hash) {
                    return Ok(r);
                }
            }
            let route = self.meta.lookup(table, hash).await?;
            let cached = CachedRoute::new(route, Instant::now())?;
            if !cached.covers(hash) || cached.route.table != table {
                return Err(Error::internal(format!(
                    "the metadata service answered a lookup of table {table:?} with partition \
                     {} of table {:?}, which does not hold the hash",
                    cached.route.index, cached.route.table
                )));
            }
            self.cache.borrow_mut().insert(cached.clone());
            Ok(cached)
        }
        .await;
        drop(permit);
        self.release_fill_lock(table, lock);
        if let Err(Error::UnknownTable { .. }) = &result {
            let mut unknown = self.unknown.borrow_mut();
            if unknown.len() >= UNKNOWN_TABLES_MAX {
                unknown.clear();
            }
            unknown.insert(table.to_string(), Instant::now());
        }
        result
    }

    /// Fails at once for a table meta said it does not know, a moment ago.
    fn known_to_meta(&self, table: &str) -> Result<(), Error> {
        let mut unknown = self.unknown.borrow_mut();
        match unknown.get(table) {
            Some(at) if at.elapsed() < Duration::from_millis(UNKNOWN_TABLE_REMEMBER_MS) => {
                Err(Error::UnknownTable {
                    name: table.to_string(),
                })
            }
            Some(_) => {
                unknown.remove(table);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Fetches a table's whole map into the cache.
    async fn fill_table(&self, table: &str) -> Result<(), Error> {
        let routes = self.meta.table_map(table).await?;
        self.store_table(table, routes)
    }

    /// Replaces what the cache holds of `table` by `routes` (a refresh or a fill).
    pub fn store_table(&self, table: &str, routes: Vec<Route>) -> Result<(), Error> {
        let now = Instant::now();
        let mut checked = Vec::with_capacity(routes.len());
        for r in routes {
            if r.table != table {
                return Err(Error::internal(format!(
                    "the metadata service answered the map of table {table:?} with a route of {:?}",
                    r.table
                )));
            }
            checked.push(CachedRoute::new(r, now)?);
        }
        let mut cache = self.cache.borrow_mut();
        cache.drop_table(table);
        for r in checked {
            cache.insert(r);
        }
        Ok(())
    }

    fn fill_lock(&self, table: &str) -> Rc<Semaphore> {
        self.fills
            .borrow_mut()
            .entry(table.to_string())
            .or_insert_with(|| Rc::new(Semaphore::new(1)))
            .clone()
    }

    fn release_fill_lock(&self, table: &str, lock: Rc<Semaphore>) {
        // The map's handle and this one: nobody else waits, so the entry can go.
        if Rc::strong_count(&lock) == 2 {
            self.fills.borrow_mut().remove(table);
        }
    }

    /// How many partitions a table has (from the cache, or its map from meta).
    async fn partitions(&self, table: &str) -> Result<u32, Error> {
        if let Some(n) = self.cache.borrow().partitions(table) {
            return Ok(n);
        }
        self.known_to_meta(table)?;
        bump(&self.stats.meta_fetches);
        self.fill_table(table).await?;
        self.cache.borrow().partitions(table).ok_or_else(|| {
            Error::internal(format!(
                "the metadata service has no routes for table {table:?}"
            ))
        })
    }

    async fn scan(&self, scan: proto::Scan) -> Result<Response, Error> {
        let hash = match &scan.resume {
            None => 0,
            Some(ScanResume { partition, .. }) => {
                let n = self.partitions(&scan.table).await?;
                if *partition >= n {
                    bump(&self.stats.errors);
                    return Err(Error::invalid(format!(
                        "the scan resumes at partition {partition}, but table {:?} has {n}",
                        scan.table
                    )));
                }
                proto::partition_start(*partition, n)
            }
        };
        let table = scan.table.clone();
        self.forward(&table, hash, Request::Scan(scan)).await
    }

    /// Positions of `keys`, grouped by the node core the cache names for their partitions
    /// (`None`: no usable leader), then by partition (see [`OwnerGroups`]).
    async fn group_by_owner<'k>(
        &self,
        table: &str,
        keys: impl Iterator<Item = &'k Key>,
    ) -> Result<OwnerGroups, Error> {
        let mut groups: OwnerGroups = BTreeMap::new();
        for (i, key) in keys.enumerate() {
            let hash = proto::partition_key_hash(&key.partition);
            let route = self.route(table, hash, None).await?;
            let partitions = groups.entry(route.leader).or_default();
            let start = route.route.start();
            match partitions.iter_mut().find(|p| p.0 == start) {
                Some(p) => p.2.push(i),
                None => partitions.push((start, hash, vec![i])),
            }
        }
        Ok(groups)
    }

    /// A batch get: one request per node core holding some of its keys (a pipeline of GETs
    /// over one node's partitions costs it one frame, not one per partition), each sent
    /// again partition by partition if that core refuses it (a partition moved: its new
    /// route is then looked up as for any request). A lone part is awaited without a task.
    async fn batch_get(self: &Rc<Self>, batch: proto::BatchGet) -> Result<Response, Error> {
        let groups = self.group_by_owner(&batch.table, batch.keys.iter()).await?;
        let mut keys: Vec<Option<Key>> = batch.keys.into_iter().map(Some).collect();
        let mut parts = Vec::with_capacity(groups.len());
        for (addr, partitions) in groups {
            let by_partition: Vec<(u128, Vec<Key>)> = partitions
                .into_iter()
                .map(|(_, hash, positions)| {
                    let part = positions
                        .iter()
                        .map(|&i| keys[i].take().expect("one group per key"))
                        .collect();
                    (hash, part)
                })
                .collect();
            let router = self.clone();
            let table = batch.table.clone();
            let consistency = batch.consistency;
            parts.push(async move {
                router
                    .batch_get_owner(&table, consistency, addr, by_partition)
                    .await
            });
        }
        let mut items = Vec::new();
        let mut unprocessed = Vec::new();
        let mut answers = Vec::with_capacity(parts.len());
        if parts.len() == 1 {
            answers.push(parts.pop().expect("one part").await);
        } else {
            let tasks: Vec<_> = parts.into_iter().map(spawn_part).collect();
            for task in tasks {
                answers.push(task.await);
            }
        }
        for answer in answers {
            let (i, u) = answer?;
            items.extend(i);
            unprocessed.extend(u);
        }
        Ok(Response::BatchItems { items, unprocessed })
    }

    /// The part of a batch get whose partitions the cache places on the core at `addr`:
    /// one request if there are several, else (or after a refusal) one per partition
    /// through [`Router::forward`] and its retries.
    async fn batch_get_owner(
        self: &Rc<Self>,
        table: &str,
        consistency: proto::Consistency,
        addr: Option<SocketAddr>,
        mut by_partition: Vec<(u128, Vec<Key>)>,
    ) -> Result<(Vec<proto::Item>, Vec<Key>), Error> {
        if let (Some(addr), true) = (addr, by_partition.len() > 1) {
            // The keys move into the merged request; the partitions' shares are kept as
            // counts, to cut them out again if it is refused.
            let counts: Vec<(u128, usize)> = by_partition
                .iter()
                .map(|(hash, keys)| (*hash, keys.len()))
                .collect();
            let request = Request::BatchGet(proto::BatchGet {
                table: table.to_string(),
                keys: by_partition.into_iter().flat_map(|(_, k)| k).collect(),
                consistency,
            });
            let frame = proto::encode_request(0, &request, 0);
            let (header, payload) = split_frame(&frame);
            bump(&self.stats.forwarded);
            if let Ok(answer) = self.nodes.call(addr, header, payload, true).await {
                if let Ok(Response::BatchItems { items, unprocessed }) =
                    proto::decode_checked_response(&answer)
                {
                    return Ok((items, unprocessed));
                }
            }
            // Refused or failed (a read: safe to send again): partition by partition.
            let Request::BatchGet(merged) = request else {
                unreachable!("built as a batch get")
            };
            let mut keys = merged.keys.into_iter();
            by_partition = counts
                .into_iter()
                .map(|(hash, n)| (hash, keys.by_ref().take(n).collect()))
                .collect();
        }
        let mut items = Vec::new();
        let mut unprocessed = Vec::new();
        for (hash, keys) in by_partition {
            let part = Request::BatchGet(proto::BatchGet {
                table: table.to_string(),
                keys,
                consistency,
            });
            match self.forward(table, hash, part).await? {
                Response::BatchItems {
                    items: i,
                    unprocessed: u,
                } => {
                    items.extend(i);
                    unprocessed.extend(u);
                }
                other => return Err(unexpected_answer("BatchGet", &other)),
            }
        }
        Ok((items, unprocessed))
    }

    async fn batch_write(self: &Rc<Self>, batch: proto::BatchWrite) -> Result<Response, Error> {
        // Writes go partition by partition (a refused part is then only that partition's),
        // whichever core holds each.
        let groups = self
            .group_by_owner(&batch.table, batch.writes.iter().map(|w| w.key()))
            .await?;
        let total = batch.writes.len();
        let mut writes: Vec<Option<proto::WriteOp>> = batch.writes.into_iter().map(Some).collect();
        let mut parts = Vec::new();
        for (_, hash, positions) in groups.into_values().flatten() {
            let part = proto::BatchWrite {
                table: batch.table.clone(),
                writes: positions
                    .iter()
                    .map(|&i| writes[i].take().expect("one group per write"))
                    .collect(),
            };
            let router = self.clone();
            let task = spawn_part(async move {
                let table = part.table.clone();
                router
                    .forward(&table, hash, Request::BatchWrite(part))
                    .await
            });
            parts.push((positions, task));
        }
        let mut outcomes: Vec<Option<WriteOutcome>> = (0..total).map(|_| None).collect();
        for (positions, task) in parts {
            match task.await {
                Ok(Response::BatchWritten { outcomes: got }) if got.len() == positions.len() => {
                    for (i, o) in positions.into_iter().zip(got) {
                        outcomes[i] = Some(o);
                    }
                }
                Ok(other) => {
                    let e = unexpected_answer("BatchWrite", &other);
                    for i in positions {
                        outcomes[i] = Some(WriteOutcome::Failed(e.clone()));
                    }
                }
                Err(e) => {
                    for i in positions {
                        outcomes[i] = Some(WriteOutcome::Failed(e.clone()));
                    }
                }
            }
        }
        Ok(Response::BatchWritten {
            outcomes: outcomes
                .into_iter()
                .map(|o| o.expect("every position belongs to one part"))
                .collect(),
        })
    }
}

/// A request frame's header and payload, as [`NodePool::call`] takes them.
fn split_frame(frame: &[u8]) -> (&[u8; HEADER_BYTES], &[u8]) {
    let (header, payload) = frame.split_at(HEADER_BYTES);
    (header.try_into().expect("a whole header"), payload)
}

/// Runs a batch part as its own task so that the parts go out at once.
fn spawn_part<T: 'static>(f: impl std::future::Future<Output = T> + 'static) -> glommio::Task<T> {
    glommio::spawn_local(f)
}

/// A batch's keys by the node core the cache names (`None`: no usable leader), then by
/// partition: `(route start, a hash in it, the keys' positions in the batch)`.
type OwnerGroups = BTreeMap<Option<SocketAddr>, Vec<(u128, u128, Vec<usize>)>>;

/// The wait before retry number `attempt` (1 for the first).
pub fn backoff(attempt: u32) -> Duration {
    let ms = RETRY_BACKOFF_MS_INITIAL
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
        .min(RETRY_BACKOFF_MS_MAX);
    Duration::from_millis(ms)
}

/// A relayed request in flight: what answering it, or sending it again, needs.
struct Relaying {
    /// The client's frame, kept for a retry.
    frame: Frame,
    /// The router's own header for it (no flags a client may have set).
    header: [u8; HEADER_BYTES],
    /// Its partition key's hash.
    hash: u128,
    /// What `Request::is_idempotent` says of it.
    idempotent: bool,
    /// Where its answer goes.
    sink: ReplySink,
}

impl Router {
    /// The node at `addr` answered a relayed request sent the fast way (`Service::relay`):
    /// passed on as it came, or, for a refusal or a failure the slow way would retry, sent
    /// again the slow way (a refusal says nothing was done). A write whose outcome is
    /// unknown is not sent again, as on the slow way.
    fn relay_answered(
        self: Rc<Self>,
        answer: Result<Frame, client::Error>,
        addr: SocketAddr,
        r: Relaying,
    ) {
        match answer.map_err(NodeFailure::of) {
            Ok(answer) => r.sink.send(&Relayed::Frame(answer)),
            Err(NodeFailure::Answered(e)) if !is_refusal(&e) => {
                r.sink.send(&Relayed::Response(Response::Error(e)))
            }
            Err(NodeFailure::Unknown(why)) if !r.idempotent => {
                bump(&self.stats.errors);
                let error = outcome_unknown(addr, &why);
                r.sink.send(&Relayed::Response(Response::Error(error)))
            }
            // A refusal (nothing was done), or an idempotent request on a failed connection.
            Err(_) => {
                bump(&self.stats.retries);
                self.relay_slow(r)
            }
        }
    }

    /// Relays a request the way that can wait (for meta, a connect, room) and retry, in a
    /// task of its own.
    fn relay_slow(self: Rc<Self>, r: Relaying) {
        // Boxed: the forward's future (route, retry, the node call) is about a kilobyte,
        // and glommio's spawn copies a future several times.
        glommio::spawn_local(Box::pin(async move {
            // Read in place again (the fast way keeps no copy of the table's name): the
            // frame passed these checks in `relay` and has not changed since.
            let table = match proto::access_checked_request(&r.frame).map(proto::item_target) {
                Ok(Some(Ok(t))) => t.table.to_owned(),
                _ => {
                    let e = Error::internal("a relayed frame could no longer be read");
                    return r.sink.send(&Relayed::Response(Response::Error(e)));
                }
            };
            let answer = match self
                .forward_frame(&table, r.hash, &r.header, &r.frame.payload, r.idempotent)
                .await
            {
                Ok(answer) => Relayed::Frame(answer),
                Err(e) => Relayed::Response(Response::Error(e)),
            };
            r.sink.send(&answer);
        }))
        .detach();
    }
}

/// Whether a node's error answer refuses the route (the request was not done, and another
/// route, or the same one later, may take it): what the router retries.
fn is_refusal(e: &Error) -> bool {
    matches!(
        e,
        Error::WrongOwner { .. } | Error::Unavailable { .. } | Error::UnknownTable { .. }
    )
}

/// The answer to a write whose connection to `addr` failed after it was sent: it may or may
/// not have been done, so it is not sent again.
fn outcome_unknown(addr: SocketAddr, why: &str) -> Error {
    Error::internal(format!(
        "the connection to {addr} failed after the write was sent ({why}): its outcome is \
         unknown"
    ))
}

fn unexpected_answer(asked: &str, got: &Response) -> Error {
    Error::internal(format!(
        "a node answered a {asked} part with {}",
        got.name()
    ))
}

impl daemon::server::Service for Router {
    async fn serve(self: &Rc<Self>, request: Request) -> Response {
        self.serve_request(request).await
    }

    /// Relays a valid put, get or delete as its frame's bytes: the request is read in
    /// place (`rkyv::access`) for its table and partition key, sent on under a fresh
    /// header, and the node's answer goes back to the client as it came, unless it is a
    /// refusal the router retries. Re-encoding both took four rkyv passes and two copies of
    /// the item per request. Everything else (and anything invalid, for its typed error)
    /// is handed back and served decoded.
    ///
    /// The common case takes no task: with the route cached and the node's connection
    /// ready, the frame is queued at once and the node's answer goes from that
    /// connection's reader straight to the client's connection ([`Router::relay_answered`]).
    /// A miss, a connection that is not ready, a refusal or a failed connection goes the
    /// way that can wait and retry ([`Router::relay_slow`], in a task of its own).
    fn relay(self: Rc<Self>, frame: Frame, sink: ReplySink) -> Result<(), (Frame, ReplySink)> {
        let (hash, idempotent, route) =
            match proto::access_checked_request(&frame).map(proto::item_target) {
                Ok(Some(Ok(t))) => {
                    let hash = proto::partition_key_hash(t.partition_key);
                    let route = self.cache.borrow_mut().lookup_hit(t.table, hash);
                    (hash, t.idempotent, route)
                }
                _ => return Err((frame, sink)),
            };
        bump(&self.stats.requests);
        let r = Relaying {
            header: FrameHeader {
                request_id: 0,
                flags: 0,
                ..frame.header
            }
            .encode(),
            frame,
            hash,
            idempotent,
            sink,
        };
        let addr = route.as_ref().and_then(|route| route.leader);
        let client = addr.and_then(|addr| Some((addr, self.nodes.ready_client(addr)?)));
        let Some((addr, client)) = client else {
            self.relay_slow(r);
            return Ok(());
        };
        bump(&self.stats.forwarded);
        // The request waits here for its answer, for a retry. The callback runs from the
        // node connection's reader, sweep or close, all later tasks; should it ever find
        // nothing, the sink was dropped and answered `Internal`.
        let pending = Rc::new(Cell::new(None::<Relaying>));
        let then: client::Then = {
            let (pending, router) = (pending.clone(), self.clone());
            Box::new(move |answer| {
                if let Some(r) = pending.take() {
                    router.relay_answered(answer, addr, r);
                }
            })
        };
        match client.try_call_frame_then(&r.header, &r.frame.payload, then) {
            Ok(()) => pending.set(Some(r)),
            // Not queued after all (the connection died just now): the slow way.
            Err(_) => self.relay_slow(r),
        }
        Ok(())
    }

    async fn serve_cluster(
        self: &Rc<Self>,
        _request: proto::cluster::ClusterRequest,
    ) -> proto::cluster::ClusterReply {
        proto::cluster::ClusterReply::Error(Error::invalid(
            "this is a router: cluster messages go to the metadata service",
        ))
    }
}
