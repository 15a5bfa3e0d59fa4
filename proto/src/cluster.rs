//! The cluster's own messages: nodes and routers talking to the metadata service, and the
//! metadata service telling nodes what they own.
//!
//! They travel in the same frames as client requests, under their own frame kinds
//! ([`crate::FrameKind::Cluster`] and [`crate::FrameKind::ClusterReply`]), so that a client
//! port never mistakes one for the other and one connection type serves both. Table admin
//! (create, describe, list, delete) is not here: a router forwards those client requests to
//! the metadata service unchanged, as native [`crate::Request`]s.
//!
//! Vocabulary (ARCHITECTURE.md): a *route* is one partition's entry in the partition map:
//! its hash range's start, its id and epoch, and where its replicas live.

use rkyv::{Archive, Deserialize, Serialize};

use crate::{Error, TableDescription};

/// Where one replica of a partition lives: a node's core, and how to reach that core.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Placement {
    /// The node's id.
    pub node: u64,
    /// The core within the node (an index into the node's cores, not a CPU number).
    pub core: u32,
    /// That core's own port, as `host:port`.
    pub addr: String,
}

/// One partition of the partition map.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// The table's id.
    pub table_id: u64,
    /// The table's name.
    pub table: String,
    /// The partition's index within its table (0-based, in hash order).
    pub index: u32,
    /// How many partitions the table has: with `index`, this gives the hash range
    /// (`crate::partition_start`).
    pub partitions: u32,
    /// The partition's global id, never reused.
    pub partition_id: u64,
    /// Raised whenever the partition changes owner: an older epoch is stale.
    pub epoch: u64,
    /// Its replicas (one until replication arrives).
    pub replicas: Vec<Placement>,
    /// Which replica leads, as an index into `replicas` (a hint: it may have changed).
    pub leader: u32,
}

impl Route {
    /// The first hash of this partition's range.
    pub fn start(&self) -> u128 {
        crate::partition_start(self.index, self.partitions)
    }

    /// The replica believed to lead, if the hint is in range.
    pub fn leader(&self) -> Option<&Placement> {
        self.replicas.get(self.leader as usize)
    }
}

/// What a node says about itself when it registers.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its id, unique in the cluster (from its config).
    pub node: u64,
    /// Each core's own port, as `host:port`, in core order.
    pub core_addrs: Vec<String>,
    /// The failure domain it runs in.
    pub zone: String,
}

/// What a node reports about one of its partitions with each heartbeat.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PartitionStats {
    /// The partition.
    pub partition_id: u64,
    /// The epoch the node holds it under.
    pub epoch: u64,
    /// Items in it.
    pub items: u64,
    /// Requests it served since the last report.
    pub requests: u64,
}

/// A set of routing-trie keys sharing their first `bits` bits: the unit the Merkle sync
/// compares (see the `routing` crate).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// The key bytes; bits past `bits` are zero.
    pub key: Vec<u8>,
    /// How many leading bits count.
    pub bits: u32,
}

/// What the metadata service's trie holds under one prefix, one level down.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Expansion {
    /// No route under this prefix.
    Empty,
    /// Exactly one route, whole.
    Leaf {
        /// Its trie key.
        key: Vec<u8>,
        /// The route.
        route: Route,
    },
    /// More than one: the two halves at the first bit where they differ, each with the
    /// Merkle hash and number of routes under it.
    Split {
        /// The keys starting with a 0 at the critical bit.
        left: (Prefix, u128, u64),
        /// The keys starting with a 1 there.
        right: (Prefix, u128, u64),
    },
}

/// A request to the metadata service, or from it to a node.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ClusterRequest {
    /// Node → meta, at start-up: here I am. Answered with [`ClusterReply::Assigned`]: every
    /// partition the map gives it, so that a restarted node knows what it owns.
    Register(NodeInfo),
    /// Node → meta, every heartbeat period: still alive, and how its partitions do.
    Heartbeat {
        /// The node.
        node: u64,
        /// Its partitions.
        stats: Vec<PartitionStats>,
    },
    /// Router → meta: the route of the partition holding `hash` in `table` (a floor query
    /// over the range starts).
    Lookup {
        /// The table's name.
        table: String,
        /// The partition-key hash.
        hash: u128,
    },
    /// Router → meta: every route of a table.
    TableMap {
        /// The table's name.
        table: String,
    },
    /// Router → meta: the Merkle hash and size of the whole map (the sync's first step).
    SyncRoot,
    /// Router → meta: one level of the trie under each prefix (the sync's next steps).
    SyncExpand {
        /// The prefixes whose hashes differed at the router.
        prefixes: Vec<Prefix>,
    },
    /// Admin → meta: move a partition to another node's core.
    MovePartition {
        /// The partition.
        partition_id: u64,
        /// The node to move it to.
        to_node: u64,
        /// The core on that node.
        to_core: u32,
    },
    /// Admin → meta: the nodes it knows.
    ListNodes,
    /// Meta → node: hold these partitions (create what is missing, empty), under these
    /// epochs; `table` says how to create them.
    Assign {
        /// The table they belong to.
        table: TableDescription,
        /// The partitions this node is to hold.
        routes: Vec<Route>,
    },
    /// Meta → node: drop these partitions and their data (a deleted table).
    Drop {
        /// The partitions.
        partition_ids: Vec<u64>,
    },
    /// Meta → the core holding a partition (its own port): stop taking writes to it, wait
    /// for those in flight, and ship its snapshot to `to` (with [`ClusterRequest::ReceiveBegin`]
    /// and [`ClusterRequest::ReceiveChunk`]). Answered once `to` holds it all; the partition
    /// stays frozen here until an assignment takes it away (or [`ClusterRequest::Thaw`]).
    MoveOut {
        /// The partition.
        partition_id: u64,
        /// Where it goes (the target core's own port in `addr`).
        to: Placement,
        /// The epoch it will have there.
        epoch: u64,
    },
    /// Meta → the core holding a frozen partition: a move was abandoned, take writes again.
    Thaw {
        /// The partition.
        partition_id: u64,
    },
    /// Source core → target core: a partition's snapshot follows. `table` and `route` (with
    /// the target's placement and the new epoch) say what it is.
    ReceiveBegin {
        /// Its table.
        table: TableDescription,
        /// Its route after the move.
        route: Route,
    },
    /// Source core → target core: the next chunk of the snapshot (`btree`'s ship format).
    ReceiveChunk {
        /// The partition.
        partition_id: u64,
        /// The chunk.
        bytes: Vec<u8>,
    },
}

impl ClusterRequest {
    /// The message's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            ClusterRequest::Register(_) => "Register",
            ClusterRequest::Heartbeat { .. } => "Heartbeat",
            ClusterRequest::Lookup { .. } => "Lookup",
            ClusterRequest::TableMap { .. } => "TableMap",
            ClusterRequest::SyncRoot => "SyncRoot",
            ClusterRequest::SyncExpand { .. } => "SyncExpand",
            ClusterRequest::MovePartition { .. } => "MovePartition",
            ClusterRequest::ListNodes => "ListNodes",
            ClusterRequest::Assign { .. } => "Assign",
            ClusterRequest::Drop { .. } => "Drop",
            ClusterRequest::MoveOut { .. } => "MoveOut",
            ClusterRequest::Thaw { .. } => "Thaw",
            ClusterRequest::ReceiveBegin { .. } => "ReceiveBegin",
            ClusterRequest::ReceiveChunk { .. } => "ReceiveChunk",
        }
    }
}

/// What a node looks like to the metadata service.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// What it said when it registered.
    pub info: NodeInfo,
    /// Whether its heartbeats arrive.
    pub alive: bool,
    /// Milliseconds since its last heartbeat.
    pub last_heartbeat_ms_ago: u64,
    /// Partitions the map places on it.
    pub partitions: u32,
}

/// The answer to a [`ClusterRequest`].
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ClusterReply {
    /// Done, nothing to tell.
    Ok,
    /// The partitions a registering node holds, with their tables.
    Assigned {
        /// Per table, its description and this node's routes of it.
        tables: Vec<(TableDescription, Vec<Route>)>,
    },
    /// One route.
    Route(Route),
    /// A table's routes, in hash order.
    Routes(Vec<Route>),
    /// The map's Merkle hash and number of routes.
    SyncRoot {
        /// The root hash (0 for an empty map).
        hash: u128,
        /// Routes in the map.
        count: u64,
    },
    /// One level under each asked prefix, in the order asked.
    Expansions(Vec<Expansion>),
    /// The nodes.
    Nodes(Vec<NodeStatus>),
    /// It failed.
    Error(Error),
}
