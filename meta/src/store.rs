//! Meta's durable state on disk: its own WAL and B-tree, on glommio DMA files.
//!
//! ```text
//! data_dir/wal/        the WAL (devices::DmaBlockDevice): one stream of Commands
//! data_dir/meta.tree   the B-tree (devices::DmaPageStore): the state as records
//! ```
//!
//! A change is a [`Command`]: appended to the WAL at the next index and durable before
//! anything else happens; then applied to the in-memory [`MetaState`] and, as the
//! [`TreeOp`]s the state answers plus a new header (applied index, counters), to the tree in
//! one batch. Every [`CHECKPOINT_EVERY_RECORDS`] records, or [`CHECKPOINT_INTERVAL_MS`] after
//! the first unsaved one, the tree is checkpointed and the WAL released below the header's
//! applied index. Start-up opens the tree at its last checkpoint, rebuilds the state from its
//! records, and replays the WAL records above the applied index through the same path.
//!
//! Only one task uses the store at a time (the service keeps it behind a lock), so it takes
//! `&mut self`.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use btree::{Direction, Tree, WriteBatch};
use devices::block_device::DmaBlockDevice;
use devices::page_store::DmaPageStore;
use glommio::task::JoinHandle;
use wal::{Wal, WalError};

use crate::limits::{
    CHECKPOINT_EVERY_RECORDS, CHECKPOINT_INTERVAL_MS, TREE_CACHE_BYTES, TREE_PAGE_BYTES,
    WAL_BATCHES_IN_FLIGHT, WAL_SEGMENT_BYTES, WAL_SPARE_SEGMENTS, WAL_TAIL_CACHE_BYTES,
};
use crate::records::{self, Command, TreeOp, WAL_KIND_COMMAND, WAL_STREAM};
use crate::state::MetaState;

/// The tree's file name in the data directory.
pub const TREE_FILE_NAME: &str = "meta.tree";

/// The WAL's directory in the data directory.
pub const WAL_DIR_NAME: &str = "wal";

/// What recovery found, for the start-up log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The tree's applied index at its last checkpoint.
    pub checkpoint_index: u64,
    /// WAL records replayed above it.
    pub replayed: u64,
}

/// The WAL and the tree (see the module doc).
pub struct Store {
    wal: Rc<Wal<DmaBlockDevice>>,
    flusher: Option<JoinHandle<Result<(), WalError>>>,
    tree: Tree<DmaPageStore>,
    /// The index the next command gets.
    next_index: u64,
    /// The index covered by the last durable checkpoint.
    checkpointed: u64,
    /// When the first command after the last checkpoint was applied.
    dirty_since: Option<Instant>,
    /// Set when the tree or the WAL failed: every later change is refused (restart to
    /// recover from the WAL).
    failed: Option<String>,
}

fn wal_config() -> wal::Config {
    wal::Config {
        segment_bytes: WAL_SEGMENT_BYTES,
        batches_in_flight_max: WAL_BATCHES_IN_FLIGHT,
        spare_segments: WAL_SPARE_SEGMENTS,
        tail_cache_bytes: WAL_TAIL_CACHE_BYTES,
        ..wal::Config::default()
    }
}

impl Store {
    /// Opens (creating if new) the store in `data_dir` and recovers the state: the tree's
    /// records, then the WAL above them. Runs on the executor that will use it.
    pub async fn open(
        data_dir: &Path,
        node_timeout_ms: u64,
    ) -> Result<(Store, MetaState, Recovered), String> {
        // Pitfall 1: a non-empty file is opened first on this executor, before the WAL.
        devices::dma::prime_device(data_dir)
            .await
            .map_err(|e| format!("priming {}: {e}", data_dir.display()))?;
        let wal_dir = data_dir.join(WAL_DIR_NAME);
        std::fs::create_dir_all(&wal_dir)
            .map_err(|e| format!("creating {}: {e}", wal_dir.display()))?;
        let tree_path = data_dir.join(TREE_FILE_NAME);
        let page_store = DmaPageStore::open(&tree_path, TREE_PAGE_BYTES)
            .await
            .map_err(|e| format!("opening {}: {e}", tree_path.display()))?;
        let tree_config = btree::Config {
            page_size_bytes: TREE_PAGE_BYTES,
            cache_bytes_max: TREE_CACHE_BYTES,
            ..btree::Config::default()
        };
        let tree = Tree::open(page_store, tree_config)
            .await
            .map_err(|e| format!("opening the tree {}: {e}", tree_path.display()))?;

        let mut records = Vec::new();
        let mut cursor = tree
            .range::<std::ops::RangeFull>(.., Direction::Forward)
            .await
            .map_err(|e| format!("reading the tree: {e}"))?;
        while let Some((k, v)) = cursor
            .next()
            .await
            .map_err(|e| format!("reading the tree: {e}"))?
        {
            records.push(records::decode_record(&k, &v));
        }
        drop(cursor);
        let (state, applied) = MetaState::from_records(node_timeout_ms, records).map_err(|e| {
            format!(
                "the tree {} does not hold a valid map: {e}",
                tree_path.display()
            )
        })?;

        let device = DmaBlockDevice::open(&wal_dir)
            .await
            .map_err(|e| format!("opening the WAL directory {}: {e}", wal_dir.display()))?;
        let (wal, report) = Wal::open(device, wal_config())
            .await
            .map_err(|e| format!("recovering the WAL in {}: {e}", wal_dir.display()))?;
        let wal = Rc::new(wal);
        let flusher = {
            let wal = wal.clone();
            glommio::spawn_local(async move { wal.run().await }).detach()
        };
        let mut store = Store {
            wal,
            flusher: Some(flusher),
            tree,
            next_index: applied + 1,
            checkpointed: applied,
            dirty_since: None,
            failed: None,
        };
        let state = RefCell::new(state);
        let mut replayed = 0;
        if let Some(stream) = report.streams.get(&WAL_STREAM) {
            if stream.last_index > applied {
                if stream.first_index > applied + 1 {
                    return Err(format!(
                        "the WAL starts at index {} but the tree is applied only up to {applied}: records are missing",
                        stream.first_index
                    ));
                }
                let log = store
                    .wal
                    .read(WAL_STREAM, applied + 1, stream.last_index + 1)
                    .await
                    .map_err(|e| format!("reading the WAL: {e}"))?;
                for r in log {
                    let command: Command = records::decode(&r.payload, "command")
                        .map_err(|e| format!("WAL record {}: {e}", r.index))?;
                    store
                        .apply(&state, r.index, &command)
                        .await
                        .map_err(|e| format!("replaying WAL record {}: {e}", r.index))?;
                    replayed += 1;
                }
                store.next_index = stream.last_index + 1;
            }
        }
        if replayed > 0 {
            store.checkpoint().await?;
        }
        let recovered = Recovered {
            checkpoint_index: applied,
            replayed,
        };
        Ok((store, state.into_inner(), recovered))
    }

    /// Makes `command` durable, then applies it to `state` and the tree. On an error
    /// nothing was applied to `state` unless the error says the store failed.
    pub async fn commit(
        &mut self,
        state: &RefCell<MetaState>,
        command: &Command,
    ) -> Result<(), proto::Error> {
        if let Some(f) = &self.failed {
            return Err(proto::Error::internal(format!(
                "the metadata store failed earlier ({f}); restart the service"
            )));
        }
        let payload = records::encode(command);
        let index = self.next_index;
        self.wal
            .append(WAL_STREAM, index, WAL_KIND_COMMAND, &payload)
            .await
            .map_err(|e| {
                let e = format!("appending to the WAL: {e}");
                self.failed = Some(e.clone());
                proto::Error::internal(e)
            })?;
        self.next_index += 1;
        self.apply(state, index, command).await.map_err(|e| {
            self.failed = Some(e.clone());
            proto::Error::internal(e)
        })?;
        if self.checkpoint_due() {
            self.checkpoint().await.map_err(proto::Error::internal)?;
        }
        Ok(())
    }

    async fn apply(
        &mut self,
        state: &RefCell<MetaState>,
        index: u64,
        command: &Command,
    ) -> Result<(), String> {
        let (ops, header) = {
            let mut s = state.borrow_mut();
            let ops = s.apply(command).map_err(|e| e.to_string())?;
            (ops, s.header(index))
        };
        let mut batch = WriteBatch::new();
        for op in &ops {
            match op {
                TreeOp::Put(k, v) => batch.put(k, v),
                TreeOp::Delete(k) => batch.delete(k),
            };
        }
        batch.put(&records::KEY_HEADER, &records::encode(&header));
        self.tree
            .apply(&batch)
            .await
            .map_err(|e| format!("applying WAL record {index} to the tree: {e}"))?;
        self.dirty_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Whether enough has changed, or long enough ago, to checkpoint.
    pub fn checkpoint_due(&self) -> bool {
        let applied = self.next_index - 1;
        applied - self.checkpointed >= CHECKPOINT_EVERY_RECORDS
            || self
                .dirty_since
                .is_some_and(|t| t.elapsed() >= Duration::from_millis(CHECKPOINT_INTERVAL_MS))
    }

    /// Checkpoints the tree if anything changed since the last one, then releases the WAL
    /// below what it covers.
    pub async fn checkpoint(&mut self) -> Result<(), String> {
        if self.dirty_since.is_none() {
            return Ok(());
        }
        if let Some(f) = &self.failed {
            return Err(format!("not checkpointing a failed store: {f}"));
        }
        let applied = self.next_index - 1;
        self.tree.checkpoint().await.map_err(|e| {
            let e = format!("checkpointing the tree: {e}");
            self.failed = Some(e.clone());
            e
        })?;
        self.checkpointed = applied;
        self.dirty_since = None;
        self.wal.release(WAL_STREAM, applied + 1);
        tracing::debug!(applied, "tree checkpointed, WAL released");
        Ok(())
    }

    /// Checkpoints and closes the WAL (waits until its flusher finished).
    pub async fn close(mut self) -> Result<(), String> {
        let r = self.checkpoint().await;
        self.wal.close();
        if let Some(f) = self.flusher.take() {
            match f.await {
                Some(Ok(())) | None => {}
                Some(Err(e)) => return Err(format!("closing the WAL: {e}")),
            }
        }
        r
    }

    /// The index of the last command applied.
    pub fn applied_index(&self) -> u64 {
        self.next_index - 1
    }
}
