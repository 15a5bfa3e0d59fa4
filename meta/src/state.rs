//! The metadata service's state as a sans-I/O value: tables, nodes, the partition map and
//! the id counters, with pure planning functions and one `apply` for durable changes.
//!
//! The service ([`crate::service`]) drives it: it asks the state to plan a change (a
//! [`Command`] with every decision taken: ids, placements), makes the command durable in
//! the WAL, then applies it here, which answers the tree writes that mirror it
//! ([`TreeOp`]s). Queries (describe, list, lookup, table map, sync, nodes) read it directly.
//! Liveness is not durable: it comes from heartbeats, timed by the caller's clock
//! (milliseconds, any origin, passed in), so tests need no clock and no disk.

use std::collections::BTreeMap;

use proto::cluster::{
    Expansion as WireExpansion, NodeInfo, NodeStatus, PartitionStats, Placement,
    Prefix as WirePrefix, Route,
};
use proto::{CreateTable, Error, Field, TableDescription, TableStatus};
use routing::{route_key as trie_key, table_prefix, Trie};

use crate::limits::{
    CORES_PER_NODE_MAX, HEARTBEAT_STATS_MAX, NODES_MAX, NODE_TEXT_BYTES_MAX,
    PARTITIONS_PER_TABLE_MAX, TABLES_MAX,
};
use crate::records::{self, Command, Header, Record, RecordError, TreeOp};

/// Partitions per live core a table gets when its create asks for 0.
pub const PARTITIONS_PER_CORE_DEFAULT: u32 = 2;

/// What meta knows of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    /// What it said when it registered (durable).
    pub info: NodeInfo,
    /// When it was last heard from (register or heartbeat), on the caller's clock; `None`
    /// since this process started.
    pub last_seen_ms: Option<u64>,
    /// Its last heartbeat's per-partition statistics.
    pub stats: Vec<PartitionStats>,
}

/// A command that does not fit the state (a bug, or a damaged log): applying it would
/// break the map, so nothing is changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyError(pub String);

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a command does not fit the map: {}", self.0)
    }
}

impl std::error::Error for ApplyError {}

/// What one node holds of one table: where to tell it, and its routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeShare {
    /// The node.
    pub node: u64,
    /// Its core 0's address, where assignments go.
    pub addr: String,
    /// Its routes of the table.
    pub routes: Vec<Route>,
}

/// Tables, nodes, the partition map and the counters (see the module doc).
#[derive(Debug)]
pub struct MetaState {
    /// Tables by name.
    tables: BTreeMap<String, TableDescription>,
    /// Table names by id.
    names: BTreeMap<u64, String>,
    nodes: BTreeMap<u64, NodeEntry>,
    /// Every route, keyed by (table id, range start): floor queries and the Merkle sync.
    routes: Trie<Route>,
    next_table_id: u64,
    next_partition_id: u64,
    node_timeout_ms: u64,
}

impl MetaState {
    /// An empty map; a node unheard of for `node_timeout_ms` is dead.
    pub fn new(node_timeout_ms: u64) -> MetaState {
        MetaState {
            tables: BTreeMap::new(),
            names: BTreeMap::new(),
            nodes: BTreeMap::new(),
            routes: Trie::new(),
            next_table_id: 1,
            next_partition_id: 1,
            node_timeout_ms,
        }
    }

    /// Rebuilds the state from the tree's records (any order), checking that they fit
    /// together; returns it with the header's applied index.
    pub fn from_records(
        node_timeout_ms: u64,
        records: impl IntoIterator<Item = Result<Record, RecordError>>,
    ) -> Result<(MetaState, u64), String> {
        let mut s = MetaState::new(node_timeout_ms);
        let mut header = None;
        let mut routes = Vec::new();
        for r in records {
            match r.map_err(|e| e.to_string())? {
                Record::Header(h) => header = Some(h),
                Record::Node(n) => {
                    s.nodes.insert(
                        n.node,
                        NodeEntry {
                            info: n,
                            last_seen_ms: None,
                            stats: Vec::new(),
                        },
                    );
                }
                Record::Table(t) => {
                    if s.names.insert(t.id, t.name.clone()).is_some() {
                        return Err(format!("table id {} is recorded twice", t.id));
                    }
                    if let Some(old) = s.tables.insert(t.name.clone(), t) {
                        return Err(format!("table name {:?} is recorded twice", old.name));
                    }
                }
                Record::Route(r) => routes.push(r),
            }
        }
        for r in routes {
            let Some(t) = s.names.get(&r.table_id).and_then(|n| s.tables.get(n)) else {
                return Err(format!(
                    "route of partition {} names table id {}, which is not recorded",
                    r.partition_id, r.table_id
                ));
            };
            if r.partitions != t.partitions || r.index >= t.partitions || r.table != t.name {
                return Err(format!(
                    "route of partition {} does not fit table {:?}",
                    r.partition_id, t.name
                ));
            }
            s.routes
                .try_insert(trie_key(r.table_id, r.start()), r)
                .map_err(|e| e.to_string())?;
        }
        for t in s.tables.values() {
            let have = s.routes.summary(&table_prefix(t.id)).1;
            if have != t.partitions as u64 {
                return Err(format!(
                    "table {:?} has {} partitions but {have} routes are recorded",
                    t.name, t.partitions
                ));
            }
        }
        let applied = match header {
            Some(h) => {
                s.next_table_id = h.next_table_id;
                s.next_partition_id = h.next_partition_id;
                h.applied_index
            }
            None if s.tables.is_empty() && s.nodes.is_empty() => 0,
            None => return Err("the tree holds records but no header".into()),
        };
        s.check_counters().map_err(|e| e.0)?;
        Ok((s, applied))
    }

    fn check_counters(&self) -> Result<(), ApplyError> {
        let top_table = self.names.keys().next_back().copied().unwrap_or(0);
        let top_partition = self
            .routes
            .iter()
            .map(|(_, r)| r.partition_id)
            .max()
            .unwrap_or(0);
        if self.next_table_id <= top_table || self.next_partition_id <= top_partition {
            return Err(ApplyError(format!(
                "id counters (table {}, partition {}) are not above the ids in use ({top_table}, {top_partition})",
                self.next_table_id, self.next_partition_id
            )));
        }
        Ok(())
    }

    /// The tree header for a tree applied up to `applied_index`.
    pub fn header(&self, applied_index: u64) -> Header {
        Header {
            applied_index,
            next_table_id: self.next_table_id,
            next_partition_id: self.next_partition_id,
        }
    }

    /// Whether `node` is alive at `now_ms`.
    fn alive(&self, node: &NodeEntry, now_ms: u64) -> bool {
        node.last_seen_ms
            .is_some_and(|t| now_ms.saturating_sub(t) <= self.node_timeout_ms)
    }

    // ---- planning (pure) ----

    /// Plans a table: a fresh id, `partitions` (0: two per live core) ranges placed
    /// round-robin over the live nodes' cores, node-major (consecutive partitions on
    /// different nodes).
    pub fn plan_create(
        &self,
        create: &CreateTable,
        now_ms: u64,
        now_unix_ms: u64,
    ) -> Result<Command, Error> {
        proto::check_table_name(&create.name)?;
        if self.tables.contains_key(&create.name) {
            return Err(Error::TableExists {
                name: create.name.clone(),
            });
        }
        if self.tables.len() >= TABLES_MAX {
            return Err(Error::invalid(format!(
                "the cluster holds {TABLES_MAX} tables, its limit; delete one first"
            )));
        }
        let live: Vec<&NodeEntry> = self
            .nodes
            .values()
            .filter(|n| self.alive(n, now_ms))
            .collect();
        if live.is_empty() {
            return Err(Error::unavailable(if self.nodes.is_empty() {
                "no node has registered with the metadata service: there is nowhere to place the table".to_string()
            } else {
                format!(
                    "none of the {} known nodes has sent a heartbeat in the last {} ms: there is nowhere to place the table",
                    self.nodes.len(),
                    self.node_timeout_ms
                )
            }));
        }
        let cores_max = live
            .iter()
            .map(|n| n.info.core_addrs.len())
            .max()
            .unwrap_or(0);
        let mut slots = Vec::new();
        for core in 0..cores_max {
            for n in &live {
                if core < n.info.core_addrs.len() {
                    slots.push((n.info.node, core as u32));
                }
            }
        }
        let n = if create.partitions == 0 {
            (slots.len() as u32).saturating_mul(PARTITIONS_PER_CORE_DEFAULT)
        } else {
            create.partitions
        };
        if n == 0 || n > PARTITIONS_PER_TABLE_MAX {
            return Err(Error::TooLarge {
                field: Field::Partitions,
                bytes: n as u64,
                max: PARTITIONS_PER_TABLE_MAX as u64,
            });
        }
        if self.routes.len() + n as usize > routing::ROUTES_MAX {
            return Err(Error::invalid(format!(
                "the map holds {} routes; {n} more would pass its limit of {}",
                self.routes.len(),
                routing::ROUTES_MAX
            )));
        }
        let placements = (0..n as usize).map(|i| slots[i % slots.len()]).collect();
        Ok(Command::CreateTable {
            table: TableDescription {
                name: create.name.clone(),
                id: self.next_table_id,
                key_schema: create.key_schema.clone(),
                capacity: create.capacity,
                partitions: n,
                status: TableStatus::Active,
                created_unix_ms: now_unix_ms,
            },
            first_partition_id: self.next_partition_id,
            placements,
        })
    }

    /// Checks a registration; the command to persist when the node is new or changed.
    pub fn plan_register(&self, info: &NodeInfo) -> Result<Option<Command>, Error> {
        if info.core_addrs.is_empty() || info.core_addrs.len() > CORES_PER_NODE_MAX {
            return Err(Error::invalid(format!(
                "node {} reports {} cores; a node has 1 to {CORES_PER_NODE_MAX}",
                info.node,
                info.core_addrs.len()
            )));
        }
        for a in &info.core_addrs {
            if a.is_empty() || a.len() > NODE_TEXT_BYTES_MAX || !a.contains(':') {
                return Err(Error::invalid(format!(
                    "node {} reports the core address {:?}; expected host:port of at most {NODE_TEXT_BYTES_MAX} bytes",
                    info.node,
                    proto::bounded(a.clone())
                )));
            }
        }
        if info.zone.len() > NODE_TEXT_BYTES_MAX {
            return Err(Error::invalid(format!(
                "node {}'s zone is {} bytes; at most {NODE_TEXT_BYTES_MAX}",
                info.node,
                info.zone.len()
            )));
        }
        match self.nodes.get(&info.node) {
            Some(n) if n.info == *info => Ok(None),
            Some(_) => Ok(Some(Command::PutNode(info.clone()))),
            None if self.nodes.len() >= NODES_MAX => Err(Error::invalid(format!(
                "the cluster has {NODES_MAX} nodes, its limit"
            ))),
            None => Ok(Some(Command::PutNode(info.clone()))),
        }
    }

    /// Plans moving partition `partition_id` to `to_core` of `to_node` (alive): its route
    /// now, and the command switching it there under the next epoch.
    pub fn plan_move(
        &self,
        partition_id: u64,
        to_node: u64,
        to_core: u32,
        now_ms: u64,
    ) -> Result<(Route, Command), Error> {
        let old = self
            .routes
            .iter()
            .map(|(_, r)| r)
            .find(|r| r.partition_id == partition_id)
            .cloned()
            .ok_or_else(|| Error::invalid(format!("no partition has id {partition_id}")))?;
        if self.tables.get(&old.table).map(|t| t.status) != Some(TableStatus::Active) {
            return Err(Error::invalid(format!(
                "partition {partition_id}'s table {:?} is being deleted",
                old.table
            )));
        }
        let node = self
            .nodes
            .get(&to_node)
            .ok_or_else(|| Error::invalid(format!("no node has id {to_node}")))?;
        if !self.alive(node, now_ms) {
            return Err(Error::unavailable(format!(
                "node {to_node} has not sent a heartbeat in the last {} ms: a partition cannot move there",
                self.node_timeout_ms
            )));
        }
        let addr = node
            .info
            .core_addrs
            .get(to_core as usize)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "node {to_node} has {} cores; there is no core {to_core}",
                    node.info.core_addrs.len()
                ))
            })?
            .clone();
        if old
            .replicas
            .iter()
            .any(|p| p.node == to_node && p.core == to_core)
        {
            return Err(Error::invalid(format!(
                "partition {partition_id} is on node {to_node} core {to_core} already"
            )));
        }
        let new = Route {
            epoch: old.epoch + 1,
            replicas: vec![Placement {
                node: to_node,
                core: to_core,
                addr,
            }],
            leader: 0,
            ..old.clone()
        };
        Ok((old, Command::MoveRoute { route: new }))
    }

    // ---- liveness (not durable) ----

    /// A registered node was heard from.
    pub fn touch(&mut self, node: u64, now_ms: u64) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.last_seen_ms = Some(now_ms);
        }
    }

    /// A heartbeat: the node must have registered (with this process: a restarted meta
    /// asks it to register again, which is what its agent does on any error).
    pub fn heartbeat(
        &mut self,
        node: u64,
        mut stats: Vec<PartitionStats>,
        now_ms: u64,
    ) -> Result<(), Error> {
        let Some(n) = self.nodes.get_mut(&node) else {
            return Err(Error::invalid(format!(
                "node {node} has not registered with this metadata service; register first"
            )));
        };
        if n.last_seen_ms.is_none() {
            return Err(Error::invalid(format!(
                "node {node} has not registered since the metadata service started; register again"
            )));
        }
        stats.truncate(HEARTBEAT_STATS_MAX);
        n.last_seen_ms = Some(now_ms);
        n.stats = stats;
        Ok(())
    }

    // ---- applying durable changes ----

    /// Applies a durable command; answers the tree writes that mirror it. A command that
    /// does not fit changes nothing.
    pub fn apply(&mut self, command: &Command) -> Result<Vec<TreeOp>, ApplyError> {
        let mut ops = Vec::new();
        match command {
            Command::PutNode(info) => {
                let entry = self.nodes.entry(info.node).or_insert_with(|| NodeEntry {
                    info: info.clone(),
                    last_seen_ms: None,
                    stats: Vec::new(),
                });
                entry.info = info.clone();
                ops.push(TreeOp::Put(
                    records::node_key(info.node),
                    records::encode(info),
                ));
                // Routes on this node follow its (possibly new) core addresses.
                let changed: Vec<Route> = self
                    .routes
                    .iter()
                    .filter_map(|(_, r)| {
                        let mut r = r.clone();
                        let mut hit = false;
                        for p in r.replicas.iter_mut().filter(|p| p.node == info.node) {
                            if let Some(a) = info.core_addrs.get(p.core as usize) {
                                if *a != p.addr {
                                    p.addr = a.clone();
                                    hit = true;
                                }
                            }
                        }
                        hit.then_some(r)
                    })
                    .collect();
                for r in changed {
                    ops.push(TreeOp::Put(
                        records::route_key(r.table_id, r.index),
                        records::encode(&r),
                    ));
                    self.routes.insert(trie_key(r.table_id, r.start()), r);
                }
            }
            Command::CreateTable {
                table,
                first_partition_id,
                placements,
            } => {
                if self.tables.contains_key(&table.name) || self.names.contains_key(&table.id) {
                    return Err(ApplyError(format!(
                        "table {:?} (id {}) exists already",
                        table.name, table.id
                    )));
                }
                if placements.len() != table.partitions as usize || placements.is_empty() {
                    return Err(ApplyError(format!(
                        "table {:?} has {} partitions but {} placements",
                        table.name,
                        table.partitions,
                        placements.len()
                    )));
                }
                if table.id < self.next_table_id || *first_partition_id < self.next_partition_id {
                    return Err(ApplyError(format!(
                        "table {:?} reuses an id (table {}, first partition {}; next are {}, {})",
                        table.name,
                        table.id,
                        first_partition_id,
                        self.next_table_id,
                        self.next_partition_id
                    )));
                }
                let mut routes = Vec::with_capacity(placements.len());
                for (i, &(node, core)) in placements.iter().enumerate() {
                    let addr = self
                        .nodes
                        .get(&node)
                        .and_then(|n| n.info.core_addrs.get(core as usize))
                        .ok_or_else(|| {
                            ApplyError(format!(
                                "partition {i} of {:?} is placed on node {node} core {core}, which is not known",
                                table.name
                            ))
                        })?;
                    routes.push(Route {
                        table_id: table.id,
                        table: table.name.clone(),
                        index: i as u32,
                        partitions: table.partitions,
                        partition_id: first_partition_id + i as u64,
                        epoch: 1,
                        replicas: vec![Placement {
                            node,
                            core,
                            addr: addr.clone(),
                        }],
                        leader: 0,
                    });
                }
                if self.routes.len() + routes.len() > routing::ROUTES_MAX {
                    return Err(ApplyError(format!(
                        "table {:?} would take the map past {} routes",
                        table.name,
                        routing::ROUTES_MAX
                    )));
                }
                self.next_table_id = table.id + 1;
                self.next_partition_id = first_partition_id + routes.len() as u64;
                self.tables.insert(table.name.clone(), table.clone());
                self.names.insert(table.id, table.name.clone());
                ops.push(TreeOp::Put(
                    records::table_key(table.id),
                    records::encode(table),
                ));
                for r in routes {
                    ops.push(TreeOp::Put(
                        records::route_key(r.table_id, r.index),
                        records::encode(&r),
                    ));
                    self.routes.insert(trie_key(r.table_id, r.start()), r);
                }
            }
            Command::SetStatus { table_id, status } => {
                let t = self.table_by_id_mut(*table_id)?;
                t.status = *status;
                let t = t.clone();
                ops.push(TreeOp::Put(records::table_key(t.id), records::encode(&t)));
            }
            Command::MoveRoute { route } => {
                let key = trie_key(route.table_id, route.start());
                let fits = self.routes.get(&key).is_some_and(|old| {
                    old.partition_id == route.partition_id
                        && old.index == route.index
                        && old.partitions == route.partitions
                        && old.table == route.table
                        && route.epoch > old.epoch
                });
                let placed = !route.replicas.is_empty()
                    && route.leader().is_some()
                    && route.replicas.iter().all(|p| {
                        self.nodes
                            .get(&p.node)
                            .is_some_and(|n| (p.core as usize) < n.info.core_addrs.len())
                    });
                if !fits || !placed {
                    return Err(ApplyError(format!(
                        "the move of partition {} (epoch {}) does not fit its route or its placement is unknown",
                        route.partition_id, route.epoch
                    )));
                }
                ops.push(TreeOp::Put(
                    records::route_key(route.table_id, route.index),
                    records::encode(route),
                ));
                self.routes.insert(key, route.clone());
            }
            Command::RemoveTable { table_id } => {
                let name = self
                    .names
                    .remove(table_id)
                    .ok_or_else(|| ApplyError(format!("no table has id {table_id}")))?;
                let t = self.tables.remove(&name).expect("names and tables agree");
                ops.push(TreeOp::Delete(records::table_key(t.id)));
                for i in 0..t.partitions {
                    ops.push(TreeOp::Delete(records::route_key(t.id, i)));
                }
                let removed = self.routes.remove_prefix(&table_prefix(t.id));
                debug_assert_eq!(removed, t.partitions as usize);
            }
        }
        #[cfg(debug_assertions)]
        self.check_invariants();
        Ok(ops)
    }

    fn table_by_id_mut(&mut self, table_id: u64) -> Result<&mut TableDescription, ApplyError> {
        let name = self
            .names
            .get(&table_id)
            .ok_or_else(|| ApplyError(format!("no table has id {table_id}")))?;
        Ok(self.tables.get_mut(name).expect("names and tables agree"))
    }

    /// Checks that tables, names, routes and counters agree (tests, debug builds).
    pub fn check_invariants(&self) {
        assert_eq!(self.tables.len(), self.names.len());
        let mut routes = 0u64;
        for (name, t) in &self.tables {
            assert_eq!(&t.name, name);
            assert_eq!(self.names.get(&t.id), Some(name));
            let mine: Vec<&Route> = self
                .routes
                .iter_prefix(&table_prefix(t.id))
                .map(|(_, r)| r)
                .collect();
            assert_eq!(mine.len(), t.partitions as usize, "table {name}'s routes");
            for (i, r) in mine.iter().enumerate() {
                assert_eq!(r.index, i as u32);
                assert_eq!(r.partitions, t.partitions);
                assert!(r.leader().is_some());
            }
            routes += mine.len() as u64;
        }
        assert_eq!(routes, self.routes.len() as u64, "no route without a table");
        self.check_counters().expect("counters");
    }

    // ---- queries ----

    /// The table named `name`.
    pub fn table(&self, name: &str) -> Option<&TableDescription> {
        self.tables.get(name)
    }

    /// Describes a table.
    pub fn describe(&self, name: &str) -> Result<TableDescription, Error> {
        self.tables
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTable {
                name: name.to_string(),
            })
    }

    /// A page of table names after `start_after`, at most `limit` (0: the page maximum),
    /// and the last name when more may follow (the node's semantics).
    pub fn list(&self, start_after: Option<&str>, limit: u32) -> (Vec<String>, Option<String>) {
        let limit = match limit {
            0 => proto::limits::LIST_TABLES_PAGE_MAX,
            l => l.min(proto::limits::LIST_TABLES_PAGE_MAX),
        } as usize;
        let mut it = match start_after {
            Some(s) => self
                .tables
                .range::<str, _>((std::ops::Bound::Excluded(s), std::ops::Bound::Unbounded)),
            None => self.tables.range::<str, _>(..),
        };
        let names: Vec<String> = it.by_ref().take(limit).map(|(n, _)| n.clone()).collect();
        let last = if it.next().is_some() {
            names.last().cloned()
        } else {
            None
        };
        (names, last)
    }

    /// Tables being deleted (a restart finishes their deletion).
    pub fn deleting(&self) -> Vec<TableDescription> {
        self.tables
            .values()
            .filter(|t| t.status == TableStatus::Deleting)
            .cloned()
            .collect()
    }

    /// The route of the partition of `table` holding `hash`: a floor query.
    pub fn lookup(&self, table: &str, hash: u128) -> Result<Route, Error> {
        let t = self.describe(table)?;
        match self.routes.floor(&trie_key(t.id, hash)) {
            Some((_, r)) if r.table_id == t.id => Ok(r.clone()),
            _ => Err(Error::internal(format!(
                "table {table:?} (id {}) has no route at or below hash {hash:#034x}",
                t.id
            ))),
        }
    }

    /// Every route of `table`, in hash order.
    pub fn table_map(&self, table: &str) -> Result<Vec<Route>, Error> {
        let t = self.describe(table)?;
        Ok(self.routes_of(t.id))
    }

    fn routes_of(&self, table_id: u64) -> Vec<Route> {
        self.routes
            .iter_prefix(&table_prefix(table_id))
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The map's Merkle hash and number of routes.
    pub fn sync_root(&self) -> (u128, u64) {
        self.routes.root()
    }

    /// One level of the map under each prefix, in the order asked.
    pub fn sync_expand(&self, prefixes: &[WirePrefix]) -> Result<Vec<WireExpansion>, Error> {
        let prefixes = routing::prefixes_from_wire(prefixes)
            .map_err(|e| Error::invalid(format!("sync: {e}")))?;
        Ok(prefixes
            .iter()
            .map(|p| routing::expansion_to_wire(self.routes.expand(p)))
            .collect())
    }

    /// Every table with the routes a node holds of it (what a registering node is told):
    /// tables being deleted are left out, so the node drops them.
    pub fn assigned(&self, node: u64) -> Vec<(TableDescription, Vec<Route>)> {
        self.tables
            .values()
            .filter(|t| t.status == TableStatus::Active)
            .filter_map(|t| {
                let mine: Vec<Route> = self
                    .routes
                    .iter_prefix(&table_prefix(t.id))
                    .filter(|(_, r)| r.replicas.iter().any(|p| p.node == node))
                    .map(|(_, r)| r.clone())
                    .collect();
                (!mine.is_empty()).then(|| (t.clone(), mine))
            })
            .collect()
    }

    /// Per node holding some of `table_id`: where to tell it and its routes.
    pub fn shares(&self, table_id: u64) -> Vec<NodeShare> {
        let mut by_node: BTreeMap<u64, Vec<Route>> = BTreeMap::new();
        for r in self.routes_of(table_id) {
            for p in &r.replicas {
                by_node.entry(p.node).or_default().push(r.clone());
            }
        }
        by_node
            .into_iter()
            .map(|(node, routes)| NodeShare {
                node,
                addr: self
                    .nodes
                    .get(&node)
                    .and_then(|n| n.info.core_addrs.first().cloned())
                    .unwrap_or_default(),
                routes,
            })
            .collect()
    }

    /// A node's core 0 address (where assignments go).
    pub fn node_addr(&self, node: u64) -> Option<String> {
        self.nodes
            .get(&node)
            .and_then(|n| n.info.core_addrs.first().cloned())
    }

    /// Every node, with liveness at `now_ms` and how many partitions the map puts on it.
    pub fn list_nodes(&self, now_ms: u64) -> Vec<NodeStatus> {
        let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
        for (_, r) in self.routes.iter() {
            for p in &r.replicas {
                *counts.entry(p.node).or_default() += 1;
            }
        }
        self.nodes
            .values()
            .map(|n| NodeStatus {
                info: n.info.clone(),
                alive: self.alive(n, now_ms),
                last_heartbeat_ms_ago: n
                    .last_seen_ms
                    .map_or(u64::MAX, |t| now_ms.saturating_sub(t)),
                partitions: counts.get(&n.info.node).copied().unwrap_or(0),
            })
            .collect()
    }

    /// Tables in the map.
    pub fn table_count(&self) -> usize {
        self.tables.len()
    }

    /// Routes in the map.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{CapacityMode, KeySchema};

    fn node(id: u64, cores: usize) -> NodeInfo {
        NodeInfo {
            node: id,
            core_addrs: (0..cores)
                .map(|c| format!("127.0.0.1:{}", 8000 + id * 10 + c as u64))
                .collect(),
            zone: "z".into(),
        }
    }

    fn create(name: &str, partitions: u32) -> CreateTable {
        CreateTable {
            name: name.into(),
            key_schema: KeySchema {
                partition_key: "pk".into(),
                sort_key: None,
            },
            capacity: CapacityMode::OnDemand,
            partitions,
        }
    }

    /// Registers and applies like the service does.
    fn register(s: &mut MetaState, info: NodeInfo, now: u64) -> Vec<TreeOp> {
        let mut ops = Vec::new();
        if let Some(c) = s.plan_register(&info).unwrap() {
            ops = s.apply(&c).unwrap();
        }
        s.touch(info.node, now);
        ops
    }

    fn created(s: &mut MetaState, name: &str, partitions: u32, now: u64) -> TableDescription {
        let c = s.plan_create(&create(name, partitions), now, 1234).unwrap();
        s.apply(&c).unwrap();
        s.describe(name).unwrap()
    }

    #[test]
    fn create_places_round_robin_node_major_over_live_cores() {
        let mut s = MetaState::new(3000);
        register(&mut s, node(1, 2), 0);
        register(&mut s, node(2, 1), 0);
        let t = created(&mut s, "alpha", 0, 10);
        // Three live cores, two partitions each.
        assert_eq!(t.partitions, 6);
        assert_eq!(
            (t.id, t.status, t.created_unix_ms),
            (1, TableStatus::Active, 1234)
        );
        let map = s.table_map("alpha").unwrap();
        let placed: Vec<(u64, u32)> = map
            .iter()
            .map(|r| (r.replicas[0].node, r.replicas[0].core))
            .collect();
        assert_eq!(placed, vec![(1, 0), (2, 0), (1, 1), (1, 0), (2, 0), (1, 1)]);
        for (i, r) in map.iter().enumerate() {
            assert_eq!(
                (r.index, r.epoch, r.leader, r.partition_id),
                (i as u32, 1, 0, 1 + i as u64)
            );
            assert_eq!(
                r.replicas[0].addr,
                node(r.replicas[0].node, 2).core_addrs[r.replicas[0].core as usize]
            );
        }
    }

    #[test]
    fn create_refuses_taken_names_and_no_live_node() {
        let mut s = MetaState::new(3000);
        let e = s.plan_create(&create("alpha", 1), 0, 0).unwrap_err();
        assert!(matches!(e, Error::Unavailable { .. }), "{e}");
        register(&mut s, node(1, 1), 0);
        // Dead after the timeout.
        let e = s.plan_create(&create("alpha", 1), 3001, 0).unwrap_err();
        assert!(
            matches!(&e, Error::Unavailable { reason } if reason.contains("heartbeat")),
            "{e}"
        );
        created(&mut s, "alpha", 1, 100);
        assert_eq!(
            s.plan_create(&create("alpha", 1), 100, 0).unwrap_err(),
            Error::TableExists {
                name: "alpha".into()
            }
        );
        assert!(matches!(
            s.plan_create(&create("x", 1), 100, 0),
            Err(Error::InvalidRequest { .. })
        ));
        assert!(matches!(
            s.plan_create(&create("big", PARTITIONS_PER_TABLE_MAX + 1), 100, 0),
            Err(Error::TooLarge {
                field: Field::Partitions,
                ..
            })
        ));
    }

    #[test]
    fn placement_skips_dead_nodes() {
        let mut s = MetaState::new(3000);
        register(&mut s, node(1, 1), 0);
        register(&mut s, node(2, 1), 5000);
        s.heartbeat(2, vec![], 5000).unwrap();
        let t = created(&mut s, "beta", 0, 5000);
        assert_eq!(t.partitions, 2);
        assert!(s
            .table_map("beta")
            .unwrap()
            .iter()
            .all(|r| r.replicas[0].node == 2));
        let nodes = s.list_nodes(5000);
        assert_eq!(
            nodes
                .iter()
                .map(|n| (n.info.node, n.alive, n.partitions))
                .collect::<Vec<_>>(),
            vec![(1, false, 0), (2, true, 2)]
        );
    }

    #[test]
    fn ids_are_never_reused_and_delete_removes_routes() {
        let mut s = MetaState::new(3000);
        register(&mut s, node(1, 1), 0);
        let a = created(&mut s, "alpha", 3, 0);
        s.apply(&Command::SetStatus {
            table_id: a.id,
            status: TableStatus::Deleting,
        })
        .unwrap();
        assert_eq!(s.describe("alpha").unwrap().status, TableStatus::Deleting);
        assert_eq!(s.deleting().len(), 1);
        assert!(s.assigned(1).is_empty(), "a deleting table is not assigned");
        let ops = s.apply(&Command::RemoveTable { table_id: a.id }).unwrap();
        assert_eq!(ops.len(), 4);
        assert_eq!(s.route_count(), 0);
        assert!(matches!(
            s.describe("alpha"),
            Err(Error::UnknownTable { .. })
        ));
        let b = created(&mut s, "alpha", 2, 0);
        assert_eq!(b.id, a.id + 1);
        assert_eq!(s.table_map("alpha").unwrap()[0].partition_id, 4);
        // A command that does not fit changes nothing.
        assert!(s.apply(&Command::RemoveTable { table_id: 99 }).is_err());
        assert_eq!(s.table_count(), 1);
    }

    #[test]
    fn lookup_is_a_floor_query_within_the_table() {
        let mut s = MetaState::new(3000);
        register(&mut s, node(1, 2), 0);
        created(&mut s, "alpha", 4, 0);
        created(&mut s, "gamma", 3, 0);
        for t in ["alpha", "gamma"] {
            let map = s.table_map(t).unwrap();
            for h in [
                0u128,
                1,
                u128::MAX / 3,
                u128::MAX / 2,
                u128::MAX - 1,
                u128::MAX,
            ] {
                let r = s.lookup(t, h).unwrap();
                assert_eq!(r.index, proto::partition_index(h, map.len() as u32));
                assert_eq!(r.table, t);
            }
        }
        assert!(matches!(
            s.lookup("nope", 0),
            Err(Error::UnknownTable { .. })
        ));
    }

    #[test]
    fn registration_says_what_a_node_holds_and_new_addresses_follow() {
        let mut s = MetaState::new(3000);
        register(&mut s, node(1, 1), 0);
        register(&mut s, node(2, 1), 0);
        created(&mut s, "alpha", 4, 0);
        let held = s.assigned(2);
        assert_eq!(held.len(), 1);
        assert_eq!(
            held[0].1.iter().map(|r| r.index).collect::<Vec<_>>(),
            vec![1, 3]
        );
        // Same info: nothing to persist.
        assert_eq!(s.plan_register(&node(2, 1)).unwrap(), None);
        let mut moved = node(2, 1);
        moved.core_addrs[0] = "10.0.0.2:7701".into();
        let ops = register(&mut s, moved, 10);
        assert_eq!(ops.len(), 3, "the node and its two routes");
        assert!(s
            .table_map("alpha")
            .unwrap()
            .iter()
            .filter(|r| r.replicas[0].node == 2)
            .all(|r| r.replicas[0].addr == "10.0.0.2:7701"));
        let shares = s.shares(1);
        assert_eq!(
            shares
                .iter()
                .map(|x| (x.node, x.routes.len()))
                .collect::<Vec<_>>(),
            vec![(1, 2), (2, 2)]
        );
        assert_eq!(shares[1].addr, "10.0.0.2:7701");
        // Bad registrations.
        let mut bad = node(3, 1);
        bad.core_addrs.clear();
        assert!(s.plan_register(&bad).is_err());
        bad.core_addrs.push("x".repeat(400));
        assert!(s.plan_register(&bad).is_err());
        assert!(s.heartbeat(9, vec![], 0).is_err(), "unknown node");
    }

    #[test]
    fn a_move_switches_one_route_under_a_higher_epoch() {
        let mut s = MetaState::new(3000);
        register(&mut s, node(1, 1), 0);
        register(&mut s, node(2, 2), 0);
        created(&mut s, "alpha", 3, 0);
        let before = s.table_map("alpha").unwrap();
        let p = before[0].partition_id;
        assert_eq!(before[0].replicas[0].node, 1);
        let (old, c) = s.plan_move(p, 2, 1, 10).unwrap();
        assert_eq!(old, before[0]);
        let root = s.sync_root();
        assert_eq!(s.apply(&c).unwrap().len(), 1);
        assert_ne!(s.sync_root(), root, "the Merkle root follows the move");
        let after = s.table_map("alpha").unwrap();
        assert_eq!(
            (
                after[0].epoch,
                after[0].replicas[0].node,
                after[0].replicas[0].core
            ),
            (2, 2, 1)
        );
        assert_eq!(after[0].replicas[0].addr, node(2, 2).core_addrs[1]);
        assert_eq!(after[1..], before[1..]);
        // The same command again does not fit (the epoch is not higher).
        assert!(s.apply(&c).is_err());
        // Bad moves.
        assert!(s.plan_move(999, 2, 0, 10).is_err());
        assert!(s.plan_move(p, 2, 1, 10).is_err(), "already there");
        assert!(s.plan_move(p, 2, 5, 10).is_err(), "no such core");
        assert!(s.plan_move(p, 3, 0, 10).is_err(), "no such node");
        assert!(
            matches!(s.plan_move(p, 1, 0, 99_999), Err(Error::Unavailable { .. })),
            "dead"
        );
    }

    #[test]
    fn list_pages_in_name_order() {
        let mut s = MetaState::new(3000);
        register(&mut s, node(1, 1), 0);
        for n in ["ccc", "aaa", "bbb"] {
            created(&mut s, n, 1, 0);
        }
        assert_eq!(
            s.list(None, 2),
            (vec!["aaa".into(), "bbb".into()], Some("bbb".into()))
        );
        assert_eq!(s.list(Some("bbb"), 2), (vec!["ccc".into()], None));
        assert_eq!(s.list(None, 0).0.len(), 3);
    }

    #[test]
    fn sync_expand_converts_and_refuses_bad_prefixes() {
        let mut s = MetaState::new(3000);
        register(&mut s, node(1, 1), 0);
        created(&mut s, "alpha", 2, 0);
        assert_eq!(s.sync_root().1, 2);
        let root = routing::prefix_to_wire(&routing::Prefix::ROOT);
        let e = s.sync_expand(&[root]).unwrap();
        assert!(matches!(e[0], WireExpansion::Split { .. }));
        let bad = WirePrefix {
            key: vec![1, 2, 3],
            bits: 3,
        };
        assert!(matches!(
            s.sync_expand(&[bad]),
            Err(Error::InvalidRequest { .. })
        ));
        // A router's trie synced from the expansions ends equal to the map.
        let mut local: Trie<Route> = Trie::new();
        let mut session = routing::SyncSession::start(&local, s.sync_root());
        while let Some(ask) = session.next_request() {
            let reply = s.sync_expand(&routing::prefixes_to_wire(&ask)).unwrap();
            let reply = routing::expansions_from_wire(reply).unwrap();
            session.on_reply(&mut local, reply).unwrap();
        }
        assert_eq!(local.root(), s.sync_root());
    }

    #[test]
    fn records_rebuild_the_same_state() {
        let mut s = MetaState::new(3000);
        let mut tree: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let put = |ops: Vec<TreeOp>, tree: &mut BTreeMap<Vec<u8>, Vec<u8>>| {
            for op in ops {
                match op {
                    TreeOp::Put(k, v) => {
                        tree.insert(k, v);
                    }
                    TreeOp::Delete(k) => {
                        tree.remove(&k);
                    }
                }
            }
        };
        put(register(&mut s, node(1, 2), 0), &mut tree);
        put(register(&mut s, node(2, 1), 0), &mut tree);
        for (name, n) in [("alpha", 3), ("beta", 0), ("gamma", 1)] {
            let c = s.plan_create(&create(name, n), 0, 7).unwrap();
            put(s.apply(&c).unwrap(), &mut tree);
        }
        let id = s.describe("beta").unwrap().id;
        put(
            s.apply(&Command::RemoveTable { table_id: id }).unwrap(),
            &mut tree,
        );
        tree.insert(records::KEY_HEADER.to_vec(), records::encode(&s.header(42)));
        let (back, applied) =
            MetaState::from_records(3000, tree.iter().map(|(k, v)| records::decode_record(k, v)))
                .unwrap();
        assert_eq!(applied, 42);
        assert_eq!(back.sync_root(), s.sync_root());
        assert_eq!(back.list(None, 0), s.list(None, 0));
        assert_eq!(back.header(0), s.header(0));
        assert_eq!(back.list_nodes(0).len(), 2);
        back.check_invariants();
        // A route without its table is refused.
        tree.remove(&records::table_key(s.describe("alpha").unwrap().id));
        assert!(MetaState::from_records(
            3000,
            tree.iter().map(|(k, v)| records::decode_record(k, v))
        )
        .is_err());
    }
}
