//! The node's side of the cluster: registering with the metadata service, heartbeating, and
//! holding what the service assigns.
//!
//! A node started with `meta` set does not plan tables itself. Core 0 registers (node id,
//! each core's own address, zone) and adopts the answer — every partition the map gives
//! this node — then heartbeats every `heartbeat_ms`. The metadata service sends `Assign`
//! when a table is created and `Drop` when one is deleted, to core 0's own port. Each
//! change goes the single node's way: core 0 plans the new catalog, makes it durable, then
//! has every core open or drop its share (`Shard::broadcast`).
//!
//! If the metadata service is unreachable the node serves what it holds and keeps trying:
//! a lost heartbeat costs nothing here (the service may mark the node dead, which only
//! stops new placements on it).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use client::ClusterConn;
use proto::cluster::{ClusterReply, ClusterRequest, NodeInfo, PartitionStats, Route};
use proto::{Error, TableDescription};

use crate::catalog;
use crate::shard::Shard;

/// How long one call to the metadata service may take before the node gives up on it and
/// connects again: a heartbeat that waits longer is already late.
pub const META_CALL_TIMEOUT_MS: u64 = 2000;

/// The pause before connecting again after the metadata service could not be reached:
/// short enough that a restarted service sees the node within a heartbeat or two.
pub const META_RETRY_PAUSE_MS: u64 = 500;

impl Shard {
    /// Each core's own address, in core order, as routers reach them.
    fn core_addrs(&self) -> Vec<String> {
        self.config
            .core_ports
            .iter()
            .map(|p| format!("{}:{p}", self.config.listen_host))
            .collect()
    }

    /// Core 0: the catalog holding exactly `routes` of `table` on this node, durable, then
    /// adopted by every core.
    pub(crate) async fn assign(
        self: &Rc<Self>,
        table: &TableDescription,
        routes: &[Route],
    ) -> Result<(), Error> {
        let _turn = self
            .admin_lock
            .acquire_permit(1)
            .await
            .map_err(|e| Error::internal(format!("admin lock: {e}")))?;
        let next = self.catalog().plan_assign(
            table,
            routes,
            self.config.node_id,
            self.cores,
            self.config.page_size_bytes as u32,
        )?;
        if next.table(&table.name) == self.catalog().table(&table.name) {
            return Ok(()); // already held exactly so (a repeated assignment)
        }
        catalog::write_durable(&self.config.data_dir, &next)
            .await
            .map_err(|e| Error::internal(e.to_string()))?;
        self.broadcast(Arc::new(next)).await?;
        tracing::info!(table = %table.name, partitions = routes.len(), "partitions assigned");
        Ok(())
    }

    /// Core 0: drops the tables holding any of `partition_ids`.
    pub(crate) async fn drop_partitions(
        self: &Rc<Self>,
        partition_ids: &[u64],
    ) -> Result<(), Error> {
        let _turn = self
            .admin_lock
            .acquire_permit(1)
            .await
            .map_err(|e| Error::internal(format!("admin lock: {e}")))?;
        let (next, dropped) = self.catalog().plan_drop(partition_ids);
        if dropped.is_empty() {
            return Ok(()); // already gone (a repeated drop)
        }
        catalog::write_durable(&self.config.data_dir, &next)
            .await
            .map_err(|e| Error::internal(e.to_string()))?;
        self.broadcast(Arc::new(next)).await?;
        tracing::info!(tables = ?dropped, "tables dropped");
        Ok(())
    }

    /// Answers a cluster message (see the module doc).
    pub(crate) async fn cluster_message(self: &Rc<Self>, message: ClusterRequest) -> ClusterReply {
        if self.config.meta.is_none() {
            return ClusterReply::Error(Error::invalid(
                "this node is not part of a cluster (it was started without --meta)",
            ));
        }
        let catalog_change = matches!(
            message,
            ClusterRequest::Assign { .. } | ClusterRequest::Drop { .. }
        );
        if catalog_change && self.index != 0 {
            return ClusterReply::Error(Error::invalid(format!(
                "assignments go to core 0's own port, not core {}'s",
                self.index
            )));
        }
        let result = match message {
            ClusterRequest::Assign { table, routes } => self.assign(&table, &routes).await,
            ClusterRequest::Drop { partition_ids } => self.drop_partitions(&partition_ids).await,
            // A move's messages go to the port of the core that holds (or will hold) it.
            ClusterRequest::MoveOut {
                partition_id,
                to,
                epoch,
            } => self.move_out(partition_id, to, epoch).await,
            ClusterRequest::Thaw { partition_id } => self.thaw(partition_id),
            ClusterRequest::ReceiveBegin { table, route } => self.receive_begin(table, route).await,
            ClusterRequest::ReceiveChunk {
                partition_id,
                bytes,
            } => self.receive_chunk(partition_id, bytes).await,
            other => Err(Error::invalid(format!(
                "a node does not answer {}",
                other.name()
            ))),
        };
        match result {
            Ok(()) => ClusterReply::Ok,
            Err(e) => ClusterReply::Error(e),
        }
    }

    /// Core 0, for the node's life: register, adopt the assignment, heartbeat; on any
    /// failure connect again after a pause.
    pub(crate) async fn cluster_agent(self: Rc<Self>, meta: SocketAddr) {
        let timeout = Duration::from_millis(META_CALL_TIMEOUT_MS);
        let mut warned = false;
        loop {
            match self.register_and_beat(meta, timeout).await {
                Ok(()) => return, // draining
                Err(e) => {
                    if !warned {
                        tracing::warn!(%meta, error = %e, "the metadata service is unreachable; serving what this node holds and trying again");
                        warned = true;
                    }
                }
            }
            glommio::timer::sleep(Duration::from_millis(META_RETRY_PAUSE_MS)).await;
            if self.draining() {
                return;
            }
        }
    }

    async fn register_and_beat(
        self: &Rc<Self>,
        meta: SocketAddr,
        timeout: Duration,
    ) -> Result<(), String> {
        let mut conn = ClusterConn::connect(meta, timeout)
            .await
            .map_err(|e| e.to_string())?;
        let info = NodeInfo {
            node: self.config.node_id,
            core_addrs: self.core_addrs(),
            zone: self.config.zone.clone(),
        };
        match conn.call(&ClusterRequest::Register(info)).await {
            Ok(ClusterReply::Assigned { tables }) => self.adopt(tables).await?,
            Ok(ClusterReply::Error(e)) => return Err(format!("registration refused: {e}")),
            Ok(other) => return Err(format!("registration answered with {other:?}")),
            Err(e) => return Err(e.to_string()),
        }
        tracing::info!(%meta, node = self.config.node_id, "registered with the metadata service");
        let period = Duration::from_millis(self.config.heartbeat_ms);
        loop {
            glommio::timer::sleep(period).await;
            if self.draining() {
                return Ok(());
            }
            let stats = self.partition_stats();
            let beat = ClusterRequest::Heartbeat {
                node: self.config.node_id,
                stats,
            };
            match conn.call(&beat).await {
                Ok(ClusterReply::Ok) => {}
                Ok(ClusterReply::Error(e)) => return Err(format!("heartbeat refused: {e}")),
                Ok(other) => return Err(format!("heartbeat answered with {other:?}")),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Adopts a registration's answer: each table as assigned, and the tables this node
    /// holds that the map no longer gives it (deleted while it was away) dropped.
    async fn adopt(
        self: &Rc<Self>,
        tables: Vec<(TableDescription, Vec<Route>)>,
    ) -> Result<(), String> {
        for (table, routes) in &tables {
            self.assign(table, routes)
                .await
                .map_err(|e| format!("adopting table {:?}: {e}", table.name))?;
        }
        let gone: Vec<u64> = self
            .catalog()
            .tables
            .iter()
            .filter(|t| !tables.iter().any(|(d, _)| d.id == t.id))
            .flat_map(|t| t.partitions.iter().filter(|p| !p.remote).map(|p| p.id))
            .collect();
        if !gone.is_empty() {
            tracing::warn!(partitions = ?gone, "the metadata service no longer maps these partitions here; dropping them");
            self.drop_partitions(&gone)
                .await
                .map_err(|e| format!("dropping unmapped partitions: {e}"))?;
        }
        Ok(())
    }

    /// What a heartbeat reports: this core's partitions, with the requests each served since
    /// the last report (core 0 reports its own; the other cores' come with the cluster's
    /// statistics work).
    fn partition_stats(&self) -> Vec<PartitionStats> {
        let catalog = self.catalog();
        catalog
            .partitions_of_core(self.index)
            .map(|(_, _, p)| {
                let local = self.partition(p.id);
                PartitionStats {
                    partition_id: p.id,
                    epoch: p.epoch,
                    items: local
                        .as_ref()
                        .and_then(|lp| lp.replica.item_count())
                        .unwrap_or(0),
                    requests: local.map_or(0, |lp| lp.requests.replace(0)),
                }
            })
            .collect()
    }
}
