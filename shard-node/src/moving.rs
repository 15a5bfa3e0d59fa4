//! Moving a partition between nodes: the source core ships a snapshot, the target core
//! builds a tree file from it.
//!
//! The metadata service drives a move (see `meta`): it asks the core holding the partition
//! to move it out (`MoveOut`), then switches the route under a new epoch and re-assigns:
//! the target's assignment opens the received tree, the source's drops the partition.
//!
//! The source freezes the partition first: new writes are refused with `Unavailable`
//! (never proposed, so a client or router may retry them anywhere), writes in flight are
//! answered, and only then is the snapshot taken — so it holds every acknowledged write and
//! no WAL tail is needed. Reads go on during the move. The snapshot goes in `btree`'s ship
//! chunks over one cluster connection to the target core's own port, each chunk
//! acknowledged before the next (the connection's one-at-a-time calls are the flow
//! control). The target writes a fresh tree file, checkpoints it whole and closes it; it
//! becomes a partition only when an assignment names it.
//!
//! The cost is a write pause as long as the copy (measured in the cluster test; a live copy
//! with a WAL-tail catch-up is the known next step).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use btree::{ShipReceiver, Tree};
use client::ClusterConn;
use devices::page_store::DmaPageStore;
use proto::cluster::{ClusterReply, ClusterRequest, Placement, Route};
use proto::{Error, TableDescription};

use crate::shard::{partition_path, Shard};

/// Bytes of items per shipped chunk: big enough that the per-chunk round trip is small
/// against the copy, far under the frame limit.
pub const MOVE_CHUNK_BYTES: usize = 1024 * 1024;

/// How long the source waits for each acknowledgement from the target (a chunk is written
/// into the target's tree before it is acknowledged).
pub const MOVE_CALL_TIMEOUT_MS: u64 = 30_000;

/// How long the source waits for the partition's writes in flight to be answered after
/// freezing it, before giving the move up.
pub const MOVE_DRAIN_TIMEOUT_MS: u64 = 10_000;

/// Partitions one core receives at once.
pub const RECEIVING_MAX: usize = 4;

/// A partition being received on this core.
pub struct Receiving {
    tree: Tree<DmaPageStore>,
    receiver: ShipReceiver,
    route: Route,
}

/// The partitions a core is receiving, by id.
#[derive(Default)]
pub struct Inbox(RefCell<HashMap<u64, Receiving>>);

impl Shard {
    /// Source: freeze, drain, ship (see the module doc).
    pub(crate) async fn move_out(
        self: &Rc<Self>,
        partition_id: u64,
        to: Placement,
        epoch: u64,
    ) -> Result<(), Error> {
        let p = self.partition(partition_id).ok_or_else(|| {
            Error::invalid(format!(
                "partition {partition_id} is not on core {} of this node",
                self.index
            ))
        })?;
        let (table, route) = {
            let catalog = self.catalog();
            let t = catalog.table(&p.table).ok_or_else(|| {
                Error::internal(format!("partition {partition_id}'s table is gone"))
            })?;
            let description = t.describe(proto::TableStatus::Active);
            let route = Route {
                table_id: t.id,
                table: t.name.clone(),
                index: p.index,
                partitions: t.partitions.len() as u32,
                partition_id,
                epoch,
                replicas: vec![to.clone()],
                leader: 0,
            };
            (description, route)
        };
        let target: SocketAddr = to
            .addr
            .parse()
            .map_err(|e| Error::invalid(format!("the target address {:?}: {e}", to.addr)))?;
        p.replica.freeze();
        let shipped = self.ship(&p.replica, target, table, route).await;
        if let Err(e) = &shipped {
            // The move is off: this node still owns the partition.
            p.replica.thaw();
            tracing::warn!(partition = partition_id, error = %e, "move abandoned; writes resume here");
        } else {
            tracing::info!(partition = partition_id, to = %to.addr, "partition shipped; frozen until reassigned");
        }
        shipped
    }

    async fn ship(
        &self,
        replica: &crate::shard::NodeReplica,
        target: SocketAddr,
        table: TableDescription,
        route: Route,
    ) -> Result<(), Error> {
        let partition_id = route.partition_id;
        let waited = std::time::Instant::now();
        while replica.writes_in_flight() > 0 {
            if waited.elapsed() > Duration::from_millis(MOVE_DRAIN_TIMEOUT_MS) {
                return Err(Error::unavailable(format!(
                    "partition {partition_id} still had writes in flight after {MOVE_DRAIN_TIMEOUT_MS} ms"
                )));
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        let view = replica.view().await;
        let mut conn = ClusterConn::connect(target, Duration::from_millis(MOVE_CALL_TIMEOUT_MS))
            .await
            .map_err(|e| Error::unavailable(format!("the target {target}: {e}")))?;
        call_ok(&mut conn, &ClusterRequest::ReceiveBegin { table, route }).await?;
        let mut stream = view
            .ship(MOVE_CHUNK_BYTES)
            .await
            .map_err(|e| Error::internal(format!("reading the snapshot: {e}")))?;
        while let Some(bytes) = stream
            .next_chunk()
            .await
            .map_err(|e| Error::internal(format!("reading the snapshot: {e}")))?
        {
            call_ok(
                &mut conn,
                &ClusterRequest::ReceiveChunk {
                    partition_id,
                    bytes,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Target: start a fresh tree file for a partition that is moving here.
    pub(crate) async fn receive_begin(
        self: &Rc<Self>,
        table: TableDescription,
        route: Route,
    ) -> Result<(), Error> {
        let id = route.partition_id;
        if !route
            .replicas
            .iter()
            .any(|p| p.node == self.config.node_id && p.core == self.index)
        {
            return Err(Error::invalid(format!(
                "partition {id} is not moving to core {} of node {}",
                self.index, self.config.node_id
            )));
        }
        if self.partition(id).is_some() {
            return Err(Error::invalid(format!("partition {id} is already here")));
        }
        if self.inbox.0.borrow().len() >= RECEIVING_MAX {
            return Err(Error::Throttled {
                retry_after_ms: 1000,
            });
        }
        // A table already here keeps its page size; a new one gets the node's.
        let page_size = self
            .catalog()
            .table(&table.name)
            .filter(|t| t.id == table.id)
            .map_or(self.config.page_size_bytes, |t| t.page_size_bytes as usize);
        let path = partition_path(&self.tables_dir(), id);
        // A leftover of an earlier, abandoned transfer.
        let _ = glommio::io::remove(&path).await;
        let store = DmaPageStore::open(&path, page_size)
            .await
            .map_err(|e| Error::internal(format!("creating {}: {e}", path.display())))?;
        let tree = Tree::open(
            store,
            btree::Config {
                page_size_bytes: page_size,
                ..btree::Config::default()
            },
        )
        .await
        .map_err(|e| Error::internal(format!("creating the tree {}: {e}", path.display())))?;
        tracing::info!(partition = id, table = %table.name, "receiving a partition");
        self.inbox.0.borrow_mut().insert(
            id,
            Receiving {
                tree,
                receiver: ShipReceiver::new(),
                route,
            },
        );
        Ok(())
    }

    /// Target: apply one chunk; after the last, checkpoint the tree whole and close it.
    pub(crate) async fn receive_chunk(
        self: &Rc<Self>,
        partition_id: u64,
        bytes: Vec<u8>,
    ) -> Result<(), Error> {
        // Taken out while it is written to (no borrow across an await); put back unless done.
        let mut r = self
            .inbox
            .0
            .borrow_mut()
            .remove(&partition_id)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "partition {partition_id} is not being received here"
                ))
            })?;
        let last = match r.receiver.apply(&mut r.tree, &bytes).await {
            Ok(last) => last,
            Err(e) => {
                return Err(Error::invalid(format!(
                    "a bad chunk of partition {partition_id}: {e}"
                )))
            }
        };
        if !last {
            self.inbox.0.borrow_mut().insert(partition_id, r);
            return Ok(());
        }
        r.tree.checkpoint().await.map_err(|e| {
            Error::internal(format!(
                "checkpointing received partition {partition_id}: {e}"
            ))
        })?;
        tracing::info!(
            partition = partition_id,
            items = r.tree.len(),
            epoch = r.route.epoch,
            "partition received; it serves once assigned"
        );
        Ok(())
    }

    /// Source: a move was abandoned; take writes again.
    pub(crate) fn thaw(&self, partition_id: u64) -> Result<(), Error> {
        let p = self.partition(partition_id).ok_or_else(|| {
            Error::invalid(format!("partition {partition_id} is not on this core"))
        })?;
        p.replica.thaw();
        Ok(())
    }
}

/// One call to the target; anything but `Ok` is the move's failure.
async fn call_ok(conn: &mut ClusterConn, message: &ClusterRequest) -> Result<(), Error> {
    let target = conn.addr();
    match conn.call(message).await {
        Ok(ClusterReply::Ok) => Ok(()),
        Ok(ClusterReply::Error(e)) => Err(e),
        Ok(other) => Err(Error::internal(format!("the target answered {other:?}"))),
        Err(e) => Err(Error::unavailable(format!("the target {target}: {e}"))),
    }
}
