//! The request path on a core: validate, find the table and the partition, serve it here
//! if this core owns it, else forward it over the mesh and hand back the answer.
//!
//! - Point operations (put, get, delete) and queries touch one partition: hash the
//!   partition key, pick the partition (`proto::partition_index`), look at its core.
//! - A scan walks the table's partitions in order; a page may cover several partitions
//!   (each step runs on the partition's core), and its resume names the partition and the
//!   last key.
//! - Batch gets and batch writes are split per core (and, for writes, per partition: each
//!   partition's share is one atomic raft entry), run concurrently, and reassembled in the
//!   request's order.
//! - Table administration goes to core 0, the only core that changes the catalog.
//!
//! A request forwarded from another core is never forwarded again: if this core does not
//! own what it touches (which a single node never causes), it answers `WrongOwner`.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use partition::Command;
use proto::{Error, Key, Request, Response, ScanResume, TableStatus, WriteOutcome};

use crate::catalog::{self, TableEntry};
use crate::mesh::{Call, Reply, ScanStep, ScanStepPage};
use crate::shard::{LocalPartition, Shard};
use daemon::server::Service;

/// Partitions one scan page may visit. A page stops early at this many so that a scan of
/// a table of thousands of mostly empty partitions still answers each page promptly.
pub const SCAN_PARTITIONS_PER_PAGE_MAX: u32 = 64;

/// Bytes of items after which a scan page does not go on into the next partition. Each
/// partition's step is itself bounded by `QUERY_PAGE_BYTES_MAX` (plus one item), so a
/// page stays under twice that plus an item, far inside a frame.
pub const SCAN_PAGE_BYTES_TARGET: usize = proto::limits::QUERY_PAGE_BYTES_MAX;

/// Item bytes one batch-get answer carries at most; the keys beyond go back as
/// unprocessed (DynamoDB's rule: the client asks for them again).
pub const BATCH_GET_RESPONSE_BYTES_MAX: usize =
    proto::limits::FRAME_PAYLOAD_BYTES_MAX - proto::limits::FRAME_OVERHEAD_BYTES_MAX;

const _: () = assert!(
    2 * SCAN_PAGE_BYTES_TARGET
        + proto::limits::ITEM_BYTES_MAX
        + proto::limits::FRAME_OVERHEAD_BYTES_MAX
        <= proto::limits::FRAME_PAYLOAD_BYTES_MAX
);

fn item_bytes(item: &proto::Item) -> usize {
    item.key.bytes() + item.value.len()
}

fn unknown_table(name: &str) -> Error {
    Error::UnknownTable {
        name: name.to_string(),
    }
}

/// The answer for a key whose range another node holds (a cluster node knows only its own
/// share of a table): `WrongOwner` with owner node 0, which no node has, meaning "unknown
/// here: ask the metadata service". A router refreshes its route and retries.
fn not_here(table: &TableEntry, index: u32) -> Error {
    Error::WrongOwner {
        owner: proto::Owner {
            node: 0,
            core: 0,
            addr: format!(
                "partition {index} of table {:?} is not on this node",
                table.name
            ),
        },
        epoch: 0,
    }
}

/// The partition entry holding `key` in `t`, if it is on this node.
fn held(t: &TableEntry, key: &Key) -> Result<catalog::PartitionEntry, Error> {
    let index = t.partition_of(&key.partition);
    let p = t.partitions[index as usize];
    if p.remote {
        return Err(not_here(t, index));
    }
    Ok(p)
}

/// Refuses a sort key on a table that has none (what `proto::validate` cannot know).
fn check_schema(table: &TableEntry, key: &Key) -> Result<(), Error> {
    if table.sort_key.is_none() && !key.sort.is_empty() {
        return Err(Error::invalid(format!(
            "table {:?} has no sort key, but the key has a {}-byte one",
            table.name,
            key.sort.len()
        )));
    }
    Ok(())
}

/// Cuts one partition's share of a batch write into runs whose `Command::Batch` encodes in
/// at most `bytes_max` bytes (one WAL record), keeping the order. A single write always
/// fits: an item is at most `ITEM_BYTES_MAX`, far below a record.
fn chunk_writes(
    share: Vec<(usize, proto::WriteOp)>,
    bytes_max: usize,
) -> Vec<Vec<(usize, proto::WriteOp)>> {
    let mut chunks: Vec<Vec<(usize, proto::WriteOp)>> = Vec::new();
    let mut current = Command::Batch { writes: Vec::new() };
    let mut positions = Vec::new();
    for (i, w) in share {
        let Command::Batch { writes } = &mut current else {
            unreachable!("built as a batch")
        };
        writes.push(w);
        if writes.len() > 1 && current.encoded_len() > bytes_max {
            let Command::Batch { writes } = &mut current else {
                unreachable!("built as a batch")
            };
            let last = writes.pop().expect("just pushed");
            chunks.push(positions.drain(..).zip(writes.drain(..)).collect());
            writes.push(last);
        }
        positions.push(i);
    }
    let Command::Batch { writes } = current else {
        unreachable!("built as a batch")
    };
    if !writes.is_empty() {
        chunks.push(positions.into_iter().zip(writes).collect());
    }
    chunks
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Service for Shard {
    async fn serve(self: &Rc<Self>, request: Request) -> Response {
        self.stats.requests.set(self.stats.requests.get() + 1);
        if let Err(e) = proto::validate(&request) {
            return Response::Error(e);
        }
        self.route(request, false)
            .await
            .unwrap_or_else(Response::Error)
    }

    /// A get of a cached item of a partition on this core, answered without a task. Anything
    /// else (errors included) takes the waiting path, which answers it the same way.
    fn serve_now(self: &Rc<Self>, request: &Request) -> Option<Response> {
        let Request::Get(g) = request else {
            return None;
        };
        proto::validate(request).ok()?;
        let (id, core) = self.locate(&g.table, &g.key).ok()?;
        if core != self.index {
            return None;
        }
        let p = self.partition(id)?;
        let answer = p.replica.get_now(&g.key)?;
        p.requests.set(p.requests.get() + 1);
        self.stats.requests.set(self.stats.requests.get() + 1);
        Some(match answer {
            Ok(Some(item)) => Response::Item(item),
            Ok(None) => Response::Error(Error::NotFound),
            Err(e) => Response::Error(e),
        })
    }

    async fn serve_cluster(
        self: &Rc<Self>,
        request: proto::cluster::ClusterRequest,
    ) -> proto::cluster::ClusterReply {
        self.cluster_message(request).await
    }
}

impl Shard {
    /// The owner of something this core was asked for but does not hold.
    fn wrong_owner(&self, core: u32) -> Error {
        Error::WrongOwner {
            owner: proto::Owner {
                node: self.config.node_id,
                core,
                addr: format!(
                    "{}:{}",
                    self.config.listen_host,
                    self.config
                        .core_ports
                        .get(core as usize)
                        .copied()
                        .unwrap_or(0)
                ),
            },
            epoch: 0,
        }
    }

    /// The partition `id` of this core, counting the request it is about to serve.
    fn local(&self, id: u64) -> Result<Rc<LocalPartition>, Error> {
        let p = self.partition(id).ok_or_else(|| {
            Error::unavailable(format!("partition {id} is not open on core {}", self.index))
        })?;
        p.requests.set(p.requests.get() + 1);
        Ok(p)
    }

    /// The table, the partition id and the core that hold `key`.
    fn locate(&self, table: &str, key: &Key) -> Result<(u64, u32), Error> {
        let catalog = self.catalog();
        let t = catalog.table(table).ok_or_else(|| unknown_table(table))?;
        check_schema(t, key)?;
        let p = held(t, key)?;
        Ok((p.id, p.core))
    }

    /// Sends `request` to core `to`, which owns what it touches, and returns its answer.
    async fn forward(&self, to: u32, request: Request, forwarded: bool) -> Result<Response, Error> {
        if forwarded {
            return Err(self.wrong_owner(to));
        }
        self.stats
            .forwarded_out
            .set(self.stats.forwarded_out.get() + 1);
        match self.mesh.call(to, Call::Request(request)).await {
            Ok(Reply::Response(r)) => Ok(r),
            Ok(other) => Err(Error::internal(format!(
                "core {to} answered a request with {other:?}"
            ))),
            Err(e) => Err(Error::unavailable(e.to_string())),
        }
    }

    /// Serves a validated request (see the module doc). `forwarded`: it came over the mesh.
    pub(crate) async fn route(
        self: &Rc<Self>,
        request: Request,
        forwarded: bool,
    ) -> Result<Response, Error> {
        let me = self.index;
        match request {
            Request::CreateTable(_) | Request::DeleteTable { .. } if self.config.meta.is_some() => {
                Err(Error::invalid(
                    "this node is part of a cluster: create and delete tables through \
                     percore-router or the metadata service",
                ))
            }
            Request::CreateTable(c) => {
                if me != 0 {
                    return self.forward(0, Request::CreateTable(c), forwarded).await;
                }
                self.create_table(c).await
            }
            Request::DeleteTable { name } => {
                if me != 0 {
                    return self
                        .forward(0, Request::DeleteTable { name }, forwarded)
                        .await;
                }
                self.delete_table(name).await
            }
            Request::DescribeTable { name } => {
                let catalog = self.catalog();
                let t = catalog.table(&name).ok_or_else(|| unknown_table(&name))?;
                Ok(Response::Table(t.describe(TableStatus::Active)))
            }
            Request::ListTables { start_after, limit } => {
                let (names, last) = self.catalog().list(start_after.as_deref(), limit);
                Ok(Response::Tables { names, last })
            }
            Request::Put(p) => {
                let (id, core) = self.locate(&p.table, &p.key)?;
                if core != me {
                    return self.forward(core, Request::Put(p), forwarded).await;
                }
                let command = Command::Put {
                    key: p.key,
                    value: p.value,
                    condition: p.condition,
                };
                let outcome = self.local(id)?.replica.write(&command).await?;
                Ok(Response::Written {
                    version: outcome.version,
                })
            }
            Request::Delete(d) => {
                let (id, core) = self.locate(&d.table, &d.key)?;
                if core != me {
                    return self.forward(core, Request::Delete(d), forwarded).await;
                }
                let command = Command::Delete {
                    key: d.key,
                    condition: d.condition,
                };
                let outcome = self.local(id)?.replica.write(&command).await?;
                debug_assert!(
                    outcome.existed.is_some(),
                    "a delete looks at what it deletes"
                );
                Ok(Response::Deleted {
                    version: outcome.version,
                    existed: outcome.existed == Some(true),
                })
            }
            Request::Get(g) => {
                let (id, core) = self.locate(&g.table, &g.key)?;
                if core != me {
                    return self.forward(core, Request::Get(g), forwarded).await;
                }
                match self.local(id)?.replica.get(&g.key).await? {
                    Some(item) => Ok(Response::Item(item)),
                    None => Err(Error::NotFound),
                }
            }
            Request::Query(q) => {
                let key = Key::simple(q.partition_key.clone());
                let (id, core) = self.locate(&q.table, &key)?;
                if core != me {
                    return self.forward(core, Request::Query(q), forwarded).await;
                }
                let page = self.local(id)?.replica.query(&q).await?;
                Ok(Response::QueryPage {
                    items: page.items,
                    resume: page.resume,
                })
            }
            Request::Scan(s) => self.scan(s, forwarded).await,
            Request::BatchGet(b) => self.batch_get(b, forwarded).await,
            Request::BatchWrite(b) => self.batch_write(b, forwarded).await,
        }
    }

    /// Core 0: plan the table, make the catalog durable, have every core open its share.
    async fn create_table(self: &Rc<Self>, create: proto::CreateTable) -> Result<Response, Error> {
        let _turn = self
            .admin_lock
            .acquire_permit(1)
            .await
            .map_err(|e| Error::internal(format!("admin lock: {e}")))?;
        let (next, entry) = self.catalog().plan_create(
            &create,
            self.cores,
            self.config.partitions_per_core,
            self.config.page_size_bytes as u32,
            now_unix_ms(),
        )?;
        catalog::write_durable(&self.config.data_dir, &next)
            .await
            .map_err(|e| Error::internal(e.to_string()))?;
        self.broadcast(Arc::new(next)).await?;
        tracing::info!(table = %entry.name, partitions = entry.partitions.len(), "table created");
        Ok(Response::Table(entry.describe(TableStatus::Active)))
    }

    /// Core 0: drop the table from the durable catalog, then have every core drop its share.
    async fn delete_table(self: &Rc<Self>, name: String) -> Result<Response, Error> {
        let _turn = self
            .admin_lock
            .acquire_permit(1)
            .await
            .map_err(|e| Error::internal(format!("admin lock: {e}")))?;
        let (next, entry) = self.catalog().plan_delete(&name)?;
        catalog::write_durable(&self.config.data_dir, &next)
            .await
            .map_err(|e| Error::internal(e.to_string()))?;
        self.broadcast(Arc::new(next)).await?;
        tracing::info!(table = %entry.name, "table deleted");
        Ok(Response::Table(entry.describe(TableStatus::Deleting)))
    }

    /// Has every core (this one included) adopt `next`, concurrently; fails if any cannot.
    pub(crate) async fn broadcast(
        self: &Rc<Self>,
        next: Arc<crate::catalog::Catalog>,
    ) -> Result<(), Error> {
        let mut calls = Vec::new();
        for core in (0..self.cores).filter(|&c| c != self.index) {
            let (shard, next) = (self.clone(), next.clone());
            calls.push(glommio::spawn_local(async move {
                let r = match shard.mesh.call(core, Call::ApplyCatalog(next)).await {
                    Ok(Reply::CatalogApplied(r)) => r,
                    Ok(other) => Err(format!("unexpected answer {other:?}")),
                    Err(e) => Err(e.to_string()),
                };
                r.map_err(|e| format!("core {core}: {e}"))
            }));
        }
        let mut problems = Vec::new();
        if let Err(e) = self.apply_catalog(next).await {
            problems.push(format!("core {}: {e}", self.index));
        }
        for call in calls {
            if let Err(e) = call.await {
                problems.push(e);
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            tracing::error!(?problems, "a catalog change was not applied everywhere");
            Err(Error::internal(format!(
                "the catalog change is durable but not applied everywhere: {}",
                problems.join("; ")
            )))
        }
    }

    /// One scan step on a partition of this core.
    pub(crate) async fn scan_step_local(&self, step: &ScanStep) -> Result<ScanStepPage, Error> {
        let catalog = self.catalog();
        let t = catalog
            .table(&step.table)
            .ok_or_else(|| unknown_table(&step.table))?;
        let p = t.partitions.get(step.partition as usize).ok_or_else(|| {
            Error::invalid(format!(
                "table {:?} has no partition {}",
                t.name, step.partition
            ))
        })?;
        if p.remote {
            return Err(not_here(t, step.partition));
        }
        if p.core != self.index {
            return Err(self.wrong_owner(p.core));
        }
        let page = self
            .local(p.id)?
            .replica
            .scan_page(step.after.as_ref(), step.items_max)
            .await?;
        Ok(ScanStepPage {
            items: page.items,
            resume: page.resume,
        })
    }

    /// One page of a scan: partition after partition from the resume point, until the
    /// page is full, a partition stops mid-way, or the partitions run out.
    async fn scan(self: &Rc<Self>, scan: proto::Scan, forwarded: bool) -> Result<Response, Error> {
        // Per partition: its core, or None where another node holds it.
        let (partitions, cores, table): (u32, Vec<Option<u32>>, TableEntry) = {
            let catalog = self.catalog();
            let t = catalog
                .table(&scan.table)
                .ok_or_else(|| unknown_table(&scan.table))?;
            (
                t.partitions.len() as u32,
                t.partitions
                    .iter()
                    .map(|p| (!p.remote).then_some(p.core))
                    .collect(),
                t.clone(),
            )
        };
        let (mut partition, mut after) = match scan.resume {
            Some(ScanResume { partition, after }) => (partition, after),
            None => (0, None),
        };
        if partition >= partitions {
            return Err(Error::invalid(format!(
                "the scan resumes at partition {partition}, but table {:?} has {partitions}",
                scan.table
            )));
        }
        let items_max = match scan.limit {
            0 => crate::limits::SCAN_PAGE_ITEMS_MAX,
            l => l.min(crate::limits::SCAN_PAGE_ITEMS_MAX),
        };
        let mut items: Vec<proto::Item> = Vec::new();
        let mut bytes = 0usize;
        let mut visited = 0u32;
        loop {
            let step = ScanStep {
                table: scan.table.clone(),
                partition,
                after: after.take(),
                items_max: items_max - items.len() as u32,
            };
            let Some(core) = cores[partition as usize] else {
                if visited == 0 {
                    return Err(not_here(&table, partition));
                }
                // The next range is another node's: the page ends here, and the router
                // sends the rest to that node.
                return Ok(Response::ScanPage {
                    items,
                    resume: Some(ScanResume {
                        partition,
                        after: step.after,
                    }),
                });
            };
            let page = if core == self.index {
                self.scan_step_local(&step).await?
            } else if forwarded {
                return Err(self.wrong_owner(core));
            } else {
                self.stats
                    .forwarded_out
                    .set(self.stats.forwarded_out.get() + 1);
                match self.mesh.call(core, Call::Scan(step)).await {
                    Ok(Reply::Scan(r)) => r?,
                    Ok(other) => {
                        return Err(Error::internal(format!(
                            "core {core} answered a scan step with {other:?}"
                        )))
                    }
                    Err(e) => return Err(Error::unavailable(e.to_string())),
                }
            };
            bytes += page.items.iter().map(item_bytes).sum::<usize>();
            items.extend(page.items);
            visited += 1;
            if let Some(key) = page.resume {
                return Ok(Response::ScanPage {
                    items,
                    resume: Some(ScanResume {
                        partition,
                        after: Some(key),
                    }),
                });
            }
            partition += 1;
            if partition == partitions {
                return Ok(Response::ScanPage {
                    items,
                    resume: None,
                });
            }
            if items.len() as u32 >= items_max
                || bytes >= SCAN_PAGE_BYTES_TARGET
                || visited >= SCAN_PARTITIONS_PER_PAGE_MAX
            {
                return Ok(Response::ScanPage {
                    items,
                    resume: Some(ScanResume {
                        partition,
                        after: None,
                    }),
                });
            }
        }
    }

    /// Reads many keys: this core's directly, the others' through their cores, at once.
    async fn batch_get(
        self: &Rc<Self>,
        batch: proto::BatchGet,
        forwarded: bool,
    ) -> Result<Response, Error> {
        let mut by_core: BTreeMap<u32, Vec<(Key, u64)>> = BTreeMap::new();
        {
            let catalog = self.catalog();
            let t = catalog
                .table(&batch.table)
                .ok_or_else(|| unknown_table(&batch.table))?;
            for key in batch.keys {
                check_schema(t, &key)?;
                let p = held(t, &key)?;
                by_core.entry(p.core).or_default().push((key, p.id));
            }
        }
        let mut remote = Vec::new();
        for (&core, keys) in by_core.iter_mut().filter(|(&c, _)| c != self.index) {
            if forwarded {
                return Err(self.wrong_owner(core));
            }
            let keys: Vec<Key> = std::mem::take(keys).into_iter().map(|(k, _)| k).collect();
            let request = Request::BatchGet(proto::BatchGet {
                table: batch.table.clone(),
                keys: keys.clone(),
                consistency: batch.consistency,
            });
            let shard = self.clone();
            remote.push(glommio::spawn_local(async move {
                (keys, shard.forward(core, request, false).await)
            }));
        }

        let mut items = Vec::new();
        let mut unprocessed = Vec::new();
        for (key, id) in by_core.remove(&self.index).unwrap_or_default() {
            let got = match self.local(id) {
                Ok(p) => p.replica.get(&key).await,
                Err(e) => Err(e),
            };
            match got {
                Ok(Some(item)) => items.push(item),
                Ok(None) => {}
                Err(e) if e.is_retryable() => unprocessed.push(key),
                Err(e) => return Err(e),
            }
        }
        for task in remote {
            match task.await {
                (
                    _,
                    Ok(Response::BatchItems {
                        items: i,
                        unprocessed: u,
                    }),
                ) => {
                    items.extend(i);
                    unprocessed.extend(u);
                }
                (_, Ok(Response::Error(e))) | (_, Err(e)) if !e.is_retryable() => return Err(e),
                (keys, _) => unprocessed.extend(keys),
            }
        }
        // Keep the answer inside one frame: what does not fit is asked for again.
        let mut bytes = 0usize;
        let mut kept = Vec::with_capacity(items.len());
        for item in items {
            bytes += item_bytes(&item);
            if bytes > BATCH_GET_RESPONSE_BYTES_MAX {
                unprocessed.push(item.key);
            } else {
                kept.push(item);
            }
        }
        Ok(Response::BatchItems {
            items: kept,
            unprocessed,
        })
    }

    /// Writes many items: one raft entry per partition (atomic within it), every partition
    /// and every core at once; outcomes in the request's order.
    async fn batch_write(
        self: &Rc<Self>,
        batch: proto::BatchWrite,
        forwarded: bool,
    ) -> Result<Response, Error> {
        let n = batch.writes.len();
        // (core, partition id) -> the positions and writes of its share.
        let mut groups: BTreeMap<(u32, u64), Vec<(usize, proto::WriteOp)>> = BTreeMap::new();
        {
            let catalog = self.catalog();
            let t = catalog
                .table(&batch.table)
                .ok_or_else(|| unknown_table(&batch.table))?;
            for (i, w) in batch.writes.into_iter().enumerate() {
                check_schema(t, w.key())?;
                let p = held(t, w.key())?;
                groups.entry((p.core, p.id)).or_default().push((i, w));
            }
        }
        type Share = Vec<(usize, WriteOutcome)>;
        let mut tasks: Vec<glommio::Task<Share>> = Vec::new();
        let mut remote: BTreeMap<u32, Vec<(usize, proto::WriteOp)>> = BTreeMap::new();
        for ((core, id), share) in groups {
            if core != self.index {
                if forwarded {
                    return Err(self.wrong_owner(core));
                }
                remote.entry(core).or_default().extend(share);
                continue;
            }
            // A raft entry is one WAL record: a share larger than a record goes as several
            // entries (each write stays atomic on its own, the batch never was).
            let record_max =
                self.wal.config().record_payload_bytes_max - partition::records::ENTRY_HEADER_BYTES;
            for chunk in chunk_writes(share, record_max) {
                let shard = self.clone();
                tasks.push(glommio::spawn_local(async move {
                    let (positions, writes): (Vec<usize>, Vec<proto::WriteOp>) =
                        chunk.into_iter().unzip();
                    let outcome = match shard.local(id) {
                        Ok(p) => p.replica.write(&Command::Batch { writes }).await,
                        Err(e) => Err(e),
                    };
                    let outcome = match outcome {
                        Ok(o) => WriteOutcome::Written { version: o.version },
                        Err(e) => WriteOutcome::Failed(e),
                    };
                    positions
                        .into_iter()
                        .map(|i| (i, outcome.clone()))
                        .collect()
                }));
            }
        }
        for (core, share) in remote {
            let shard = self.clone();
            let table = batch.table.clone();
            tasks.push(glommio::spawn_local(async move {
                let (positions, writes): (Vec<usize>, Vec<proto::WriteOp>) =
                    share.into_iter().unzip();
                let request = Request::BatchWrite(proto::BatchWrite { table, writes });
                match shard.forward(core, request, false).await {
                    Ok(Response::BatchWritten { outcomes })
                        if outcomes.len() == positions.len() =>
                    {
                        positions.into_iter().zip(outcomes).collect()
                    }
                    Ok(Response::Error(e)) | Err(e) => positions
                        .into_iter()
                        .map(|i| (i, WriteOutcome::Failed(e.clone())))
                        .collect(),
                    Ok(other) => {
                        let e = Error::internal(format!(
                            "core {core} answered a batch write with {other:?}"
                        ));
                        positions
                            .into_iter()
                            .map(|i| (i, WriteOutcome::Failed(e.clone())))
                            .collect()
                    }
                }
            }));
        }
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; n];
        for task in tasks {
            for (i, o) in task.await {
                outcomes[i] = Some(o);
            }
        }
        Ok(Response::BatchWritten {
            outcomes: outcomes
                .into_iter()
                .map(|o| {
                    o.unwrap_or_else(|| {
                        WriteOutcome::Failed(Error::internal("a batch write lost track of a write"))
                    })
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(i: usize, value_bytes: usize) -> (usize, proto::WriteOp) {
        (
            i,
            proto::WriteOp::Put {
                key: Key::simple(format!("k{i}")),
                value: vec![0; value_bytes],
            },
        )
    }

    #[test]
    fn chunks_fit_a_record_and_keep_every_write_in_order() {
        let share: Vec<_> = (0..7).map(|i| put(i, 400 * 1024 - 16)).collect();
        let chunks = chunk_writes(share, 1024 * 1024 - 14);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 2, 2, 1]
        );
        let order: Vec<usize> = chunks.iter().flatten().map(|(i, _)| *i).collect();
        assert_eq!(order, (0..7).collect::<Vec<_>>());
        for c in &chunks {
            let writes = c.iter().map(|(_, w)| w.clone()).collect();
            assert!(Command::Batch { writes }.encoded_len() <= 1024 * 1024 - 14);
        }
        let small: Vec<_> = (0..25).map(|i| put(i, 10)).collect();
        assert_eq!(chunk_writes(small, 1024 * 1024).len(), 1);
        assert!(chunk_writes(Vec::new(), 100).is_empty());
    }
}
