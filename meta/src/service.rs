//! The service: answers table admin (native frames) and cluster messages, drives the durable
//! store and tells nodes what they hold.
//!
//! Every change goes the same way: plan it on the [`MetaState`] (a pure function), make the
//! [`Command`] durable and apply it ([`Store::commit`], one at a time behind the store's
//! lock), then tell the nodes concerned. Creates and deletes are serialised by the admin
//! lock, so the plan and its commit see the same map; registrations only take the store's
//! lock (when the node is new or changed). Queries read the state directly and never wait
//! for a change in progress.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use client::ClusterConn;
use glommio::sync::{RwLock, Semaphore};
use proto::cluster::{ClusterReply, ClusterRequest, NodeInfo};
use proto::{Error, Request, Response, TableDescription, TableStatus};

use crate::limits::{MOVE_CALL_TIMEOUT_MS, NODE_CALL_TIMEOUT_MS};
use crate::records::Command;
use crate::state::{MetaState, NodeShare};
use crate::store::Store;
use daemon::server::Service;

/// The metadata service on its executor (see the module doc).
pub struct Meta {
    state: RefCell<MetaState>,
    /// `None` once closed.
    store: RwLock<Option<Store>>,
    /// Serialises creates and deletes.
    admin: Semaphore,
    /// The origin of the liveness clock.
    started: Instant,
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Meta {
    /// The service over a recovered store and state.
    pub fn new(store: Store, state: MetaState) -> Meta {
        Meta {
            state: RefCell::new(state),
            store: RwLock::new(Some(store)),
            admin: Semaphore::new(1),
            started: Instant::now(),
        }
    }

    /// Milliseconds since the service started: the liveness clock.
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A read of the state.
    pub fn with_state<R>(&self, f: impl FnOnce(&MetaState) -> R) -> R {
        f(&self.state.borrow())
    }

    async fn commit(&self, command: &Command) -> Result<(), Error> {
        let mut store = self
            .store
            .write()
            .await
            .map_err(|e| Error::internal(format!("store lock: {e}")))?;
        match store.as_mut() {
            Some(s) => s.commit(&self.state, command).await,
            None => Err(Error::unavailable("the metadata service is stopping")),
        }
    }

    /// Checkpoints if one is due (the periodic task).
    pub async fn checkpoint_if_due(&self) -> Result<(), String> {
        let mut store = self
            .store
            .write()
            .await
            .map_err(|e| format!("store lock: {e}"))?;
        match store.as_mut() {
            Some(s) if s.checkpoint_due() => s.checkpoint().await,
            _ => Ok(()),
        }
    }

    /// Checkpoints and closes the store; later changes are refused.
    pub async fn close(&self) -> Result<(), String> {
        let mut store = self
            .store
            .write()
            .await
            .map_err(|e| format!("store lock: {e}"))?;
        match store.take() {
            Some(s) => s.close().await,
            None => Ok(()),
        }
    }

    async fn create_table(&self, create: proto::CreateTable) -> Result<Response, Error> {
        let _turn = self
            .admin
            .acquire_permit(1)
            .await
            .map_err(|e| Error::internal(format!("admin lock: {e}")))?;
        let command = self
            .state
            .borrow()
            .plan_create(&create, self.now_ms(), now_unix_ms())?;
        self.commit(&command).await?;
        let (table, shares) = self.with_state(|s| {
            let t = s.describe(&create.name).expect("just created");
            let shares = s.shares(t.id);
            (t, shares)
        });
        tracing::info!(table = %table.name, id = table.id, partitions = table.partitions, nodes = shares.len(), "table created; assigning");
        let calls = shares
            .into_iter()
            .map(|share| {
                let request = ClusterRequest::Assign {
                    table: table.clone(),
                    routes: share.routes.clone(),
                };
                (share, request)
            })
            .collect();
        let failed = tell_nodes(calls, NODE_CALL_TIMEOUT_MS).await;
        if !failed.is_empty() {
            tracing::warn!(table = %table.name, ?failed, "nodes did not confirm the assignment");
            return Err(Error::unavailable(format!(
                "table {:?} is in the map, but {} did not confirm holding its partitions ({}); they learn them when they register again",
                table.name,
                if failed.len() == 1 { "a node" } else { "some nodes" },
                failed.join("; ")
            )));
        }
        Ok(Response::Table(table))
    }

    async fn delete_table(&self, name: String) -> Result<Response, Error> {
        let _turn = self
            .admin
            .acquire_permit(1)
            .await
            .map_err(|e| Error::internal(format!("admin lock: {e}")))?;
        let table = self.state.borrow().describe(&name)?;
        if table.status != TableStatus::Deleting {
            self.commit(&Command::SetStatus {
                table_id: table.id,
                status: TableStatus::Deleting,
            })
            .await?;
        }
        let described = TableDescription {
            status: TableStatus::Deleting,
            ..table.clone()
        };
        self.finish_delete(&table).await?;
        Ok(Response::Table(described))
    }

    /// Tells the live nodes holding `table` to drop it, then removes it from the map. A node
    /// that does not confirm keeps the table in `Deleting` (retried by
    /// [`Meta::finish_deletions`]); a dead node is not waited for: it drops the table when
    /// it registers again, since the map no longer gives it.
    async fn finish_delete(&self, table: &TableDescription) -> Result<(), Error> {
        let now = self.now_ms();
        let (shares, live) = self.with_state(|s| {
            let live: Vec<u64> = s
                .list_nodes(now)
                .into_iter()
                .filter(|n| n.alive)
                .map(|n| n.info.node)
                .collect();
            (s.shares(table.id), live)
        });
        let calls = shares
            .into_iter()
            .filter(|s| live.contains(&s.node))
            .map(|share| {
                let request = ClusterRequest::Drop {
                    partition_ids: share.routes.iter().map(|r| r.partition_id).collect(),
                };
                (share, request)
            })
            .collect();
        let failed = tell_nodes(calls, NODE_CALL_TIMEOUT_MS).await;
        if !failed.is_empty() {
            tracing::warn!(table = %table.name, ?failed, "nodes did not confirm dropping the table; it stays Deleting and is retried");
            return Ok(());
        }
        self.commit(&Command::RemoveTable { table_id: table.id })
            .await?;
        tracing::info!(table = %table.name, id = table.id, "table deleted");
        Ok(())
    }

    /// Finishes the deletions left in `Deleting` (a node that did not confirm, or a restart
    /// in the middle of one): the periodic task.
    pub async fn finish_deletions(&self) {
        let deleting = self.with_state(|s| s.deleting());
        for t in deleting {
            let Ok(_turn) = self.admin.acquire_permit(1).await else {
                return;
            };
            // Still there and still deleting (a concurrent delete may have finished it).
            let now = self.with_state(|s| s.describe(&t.name).ok());
            if now.as_ref().is_some_and(|n| n.id == t.id) {
                if let Err(e) = self.finish_delete(&t).await {
                    tracing::warn!(table = %t.name, error = %e, "finishing a deletion failed");
                }
            }
        }
    }

    /// Moves a partition: the source core freezes it and ships its snapshot to the target
    /// core (`MoveOut`, answered once the target holds it all, so no acknowledged write is
    /// left behind); then the route switches under the next epoch (durable), the target is
    /// assigned it and the source's assignment leaves it out. A failed ship thaws the
    /// source and changes nothing.
    async fn move_partition(
        &self,
        partition_id: u64,
        to_node: u64,
        to_core: u32,
    ) -> Result<ClusterReply, Error> {
        let _turn = self
            .admin
            .acquire_permit(1)
            .await
            .map_err(|e| Error::internal(format!("admin lock: {e}")))?;
        let (old, command) =
            self.state
                .borrow()
                .plan_move(partition_id, to_node, to_core, self.now_ms())?;
        let Command::MoveRoute { route: new } = &command else {
            unreachable!("plan_move plans a MoveRoute")
        };
        let source = old
            .leader()
            .cloned()
            .ok_or_else(|| Error::internal(format!("partition {partition_id} has no leader")))?;
        tracing::info!(partition_id, table = %old.table, from = source.node, to = to_node, epoch = new.epoch, "moving a partition");
        let at_source = |request| {
            (
                NodeShare {
                    node: source.node,
                    addr: source.addr.clone(),
                    routes: Vec::new(),
                },
                request,
            )
        };
        let shipped = tell_nodes(
            vec![at_source(ClusterRequest::MoveOut {
                partition_id,
                to: new.replicas[0].clone(),
                epoch: new.epoch,
            })],
            MOVE_CALL_TIMEOUT_MS,
        )
        .await;
        if !shipped.is_empty() {
            let thawed = tell_nodes(
                vec![at_source(ClusterRequest::Thaw { partition_id })],
                NODE_CALL_TIMEOUT_MS,
            )
            .await;
            tracing::warn!(partition_id, failed = ?shipped, ?thawed, "a move failed at its source");
            return Err(Error::unavailable(format!(
                "partition {partition_id} did not move; it stays on node {} core {}: {}",
                source.node,
                source.core,
                shipped.join("; ")
            )));
        }
        self.commit(&command).await?;
        // The target first (it opens the received tree), then the source (it gives it up).
        let (table, shares, source_addr) = self.with_state(|s| {
            let t = s.describe(&old.table).expect("the table of a planned move");
            let shares = s.shares(t.id);
            let addr = s.node_addr(source.node).unwrap_or_default();
            (t, shares, addr)
        });
        let mut failed = Vec::new();
        for node in [to_node, source.node] {
            let share = shares
                .iter()
                .find(|s| s.node == node)
                .cloned()
                .unwrap_or(NodeShare {
                    node,
                    addr: source_addr.clone(),
                    routes: Vec::new(),
                });
            let request = ClusterRequest::Assign {
                table: table.clone(),
                routes: share.routes.clone(),
            };
            failed.extend(tell_nodes(vec![(share, request)], NODE_CALL_TIMEOUT_MS).await);
        }
        if !failed.is_empty() {
            tracing::warn!(
                partition_id,
                ?failed,
                "a moved partition's nodes did not confirm"
            );
            return Err(Error::unavailable(format!(
                "partition {partition_id} moved to node {to_node} core {to_core} at epoch {} in the map, but {}; they learn it when they register again",
                new.epoch,
                failed.join("; ")
            )));
        }
        tracing::info!(
            partition_id,
            to = to_node,
            epoch = new.epoch,
            "partition moved"
        );
        Ok(ClusterReply::Ok)
    }

    async fn register(&self, info: NodeInfo) -> Result<ClusterReply, Error> {
        let command = self.state.borrow().plan_register(&info)?;
        if let Some(c) = command {
            self.commit(&c).await?;
            tracing::info!(node = info.node, cores = info.core_addrs.len(), zone = %info.zone, "node recorded");
        }
        let now = self.now_ms();
        let tables = {
            let mut s = self.state.borrow_mut();
            s.touch(info.node, now);
            s.assigned(info.node)
        };
        tracing::info!(node = info.node, tables = tables.len(), "node registered");
        Ok(ClusterReply::Assigned { tables })
    }
}

/// Sends each request to the address in its share concurrently, each bounded by
/// `timeout_ms`; the failures, one line each.
async fn tell_nodes(calls: Vec<(NodeShare, ClusterRequest)>, timeout_ms: u64) -> Vec<String> {
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|(share, request)| {
            glommio::spawn_local(async move {
                let timeout = Duration::from_millis(timeout_ms);
                let call = async {
                    let addr: SocketAddr = share.addr.parse().map_err(|e| {
                        format!("its address {:?} is not host:port ({e})", share.addr)
                    })?;
                    let mut conn = ClusterConn::connect(addr, timeout)
                        .await
                        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
                    match conn.call(&request).await {
                        Ok(ClusterReply::Ok) => Ok(()),
                        Ok(ClusterReply::Error(e)) => Err(format!("it refused: {e}")),
                        Ok(other) => Err(format!("it answered {other:?}")),
                        Err(e) => Err(format!("the call to {addr} failed: {e}")),
                    }
                };
                let timed = async {
                    glommio::timer::sleep(timeout).await;
                    Err(format!("no answer within {timeout_ms} ms"))
                };
                futures_lite::future::or(call, timed)
                    .await
                    .map_err(|e| format!("node {}: {e}", share.node))
            })
        })
        .collect();
    let mut failed = Vec::new();
    for t in tasks {
        if let Err(e) = t.await {
            failed.push(e);
        }
    }
    failed
}

impl Service for Meta {
    async fn serve(self: &Rc<Self>, request: Request) -> Response {
        if let Err(e) = proto::validate(&request) {
            return Response::Error(e);
        }
        let result = match request {
            Request::CreateTable(c) => self.create_table(c).await,
            Request::DeleteTable { name } => self.delete_table(name).await,
            Request::DescribeTable { name } => self
                .with_state(|s| s.describe(&name))
                .map(Response::Table),
            Request::ListTables { start_after, limit } => {
                let (names, last) = self.with_state(|s| s.list(start_after.as_deref(), limit));
                Ok(Response::Tables { names, last })
            }
            other => Err(Error::invalid(format!(
                "percore-meta serves table admin only (create, describe, list, delete); send {} requests to a router or the owning node",
                request_name(&other)
            ))),
        };
        result.unwrap_or_else(Response::Error)
    }

    async fn serve_cluster(self: &Rc<Self>, request: ClusterRequest) -> ClusterReply {
        let now = self.now_ms();
        let result = match request {
            ClusterRequest::Register(info) => self.register(info).await,
            ClusterRequest::Heartbeat { node, stats } => self
                .state
                .borrow_mut()
                .heartbeat(node, stats, now)
                .map(|()| ClusterReply::Ok),
            ClusterRequest::Lookup { table, hash } => self
                .with_state(|s| s.lookup(&table, hash))
                .map(ClusterReply::Route),
            ClusterRequest::TableMap { table } => self
                .with_state(|s| s.table_map(&table))
                .map(ClusterReply::Routes),
            ClusterRequest::SyncRoot => {
                let (hash, count) = self.with_state(|s| s.sync_root());
                Ok(ClusterReply::SyncRoot { hash, count })
            }
            ClusterRequest::SyncExpand { prefixes } => self
                .with_state(|s| s.sync_expand(&prefixes))
                .map(ClusterReply::Expansions),
            ClusterRequest::ListNodes => {
                Ok(ClusterReply::Nodes(self.with_state(|s| s.list_nodes(now))))
            }
            ClusterRequest::MovePartition {
                partition_id,
                to_node,
                to_core,
            } => self.move_partition(partition_id, to_node, to_core).await,
            other => Err(Error::invalid(format!(
                "percore-meta does not answer {}: the metadata service sends it to nodes",
                other.name()
            ))),
        };
        result.unwrap_or_else(ClusterReply::Error)
    }
}

fn request_name(r: &Request) -> &'static str {
    match r {
        Request::CreateTable(_) => "CreateTable",
        Request::DescribeTable { .. } => "DescribeTable",
        Request::ListTables { .. } => "ListTables",
        Request::DeleteTable { .. } => "DeleteTable",
        Request::Put(_) => "Put",
        Request::Get(_) => "Get",
        Request::Delete(_) => "Delete",
        Request::Query(_) => "Query",
        Request::Scan(_) => "Scan",
        Request::BatchGet(_) => "BatchGet",
        Request::BatchWrite(_) => "BatchWrite",
    }
}
