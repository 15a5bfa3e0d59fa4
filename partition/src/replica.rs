//! One partition replica: its raft group, its tree and its records in the core's WAL.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::ops::{Bound, RangeInclusive};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};

use btree::{PageStore, Tree, WriteBatch};
use proto::{Condition, Item, Key, WriteOp};
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Message};
use raft::{RawNode, StateRole};
use wal::{BlockDevice, Lsn, RecoveryReport, Wal, WalError};

use crate::command::Command;
use crate::keys::{self, META_APPLIED_KEY};
use crate::limits::*;
use crate::log_store::LogStore;
use crate::records::{self, BadRecord, ENTRY_HEADER_BYTES, KIND_ENTRY, KIND_HARD_STATE};
use crate::tree_slot::TreeSlot;

/// A partition's identity on its node, given by the host. It names the partition's two WAL
/// streams: entries in `2 * id`, hard states in `2 * id + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId(pub u64);

impl PartitionId {
    /// The largest id: its streams must fit a `u64`.
    pub const MAX: PartitionId = PartitionId(u64::MAX / 2 - 1);

    /// The WAL stream of the partition's raft entries (index = raft index).
    pub fn entries_stream(self) -> u64 {
        2 * self.0
    }

    /// The WAL stream of the partition's hard states (index = a counter; the newest wins).
    pub fn hard_state_stream(self) -> u64 {
        2 * self.0 + 1
    }
}

/// How a replica is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// The partition (names its WAL streams).
    pub partition: PartitionId,
    /// This replica's raft id: non-zero, unique within the group.
    pub raft_id: u64,
    /// The group's voters. A single voter (`[raft_id]`) campaigns as soon as it opens.
    pub voters: Vec<u64>,
    /// The partition-key hashes the partition owns; a key outside gets `InvalidRequest`.
    pub hash_range: RangeInclusive<u128>,
}

impl ReplicaConfig {
    /// A single-voter replica owning the whole hash space.
    pub fn single(partition: PartitionId) -> ReplicaConfig {
        ReplicaConfig {
            partition,
            raft_id: 1,
            voters: vec![1],
            hash_range: 0..=u128::MAX,
        }
    }

    fn validate(&self) -> Result<(), ReplicaError> {
        let problem = if self.partition > PartitionId::MAX {
            "partition id above PartitionId::MAX"
        } else if self.raft_id == 0 {
            "raft_id must not be zero"
        } else if !self.voters.contains(&self.raft_id) {
            "voters must contain raft_id (learners arrive with replication)"
        } else if self.hash_range.is_empty() {
            "hash_range is empty"
        } else {
            return Ok(());
        };
        Err(ReplicaError::Config(problem.into()))
    }
}

/// Why a replica cannot open or cannot go on. Once a replica has failed it answers every
/// request with `proto::Error::Internal`; the host reopens it (from its checkpoint and WAL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaError {
    /// The configuration cannot work.
    Config(String),
    /// The tree failed (an I/O error poisons it: its durable state is the last checkpoint).
    Tree(btree::Error),
    /// The WAL failed (a failed write fails the whole log: restart the core).
    Wal(WalError),
    /// A WAL record of this partition is not what this build writes.
    Record(BadRecord),
    /// What the tree and the WAL hold does not fit together.
    Corrupt(String),
    /// raft-rs refused something.
    Raft(String),
    /// Something this version does not do yet (snapshots, configuration changes).
    Unsupported(&'static str),
}

impl std::fmt::Display for ReplicaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicaError::Config(p) => write!(f, "replica config: {p}"),
            ReplicaError::Tree(e) => write!(f, "replica tree: {e}"),
            ReplicaError::Wal(e) => write!(f, "replica {e}"),
            ReplicaError::Record(e) => write!(f, "replica: {e}"),
            ReplicaError::Corrupt(p) => write!(f, "replica state corrupt: {p}"),
            ReplicaError::Raft(e) => write!(f, "replica raft: {e}"),
            ReplicaError::Unsupported(what) => write!(f, "replica: {what} not supported yet"),
        }
    }
}

impl std::error::Error for ReplicaError {}

impl From<btree::Error> for ReplicaError {
    fn from(e: btree::Error) -> ReplicaError {
        ReplicaError::Tree(e)
    }
}

impl From<WalError> for ReplicaError {
    fn from(e: WalError) -> ReplicaError {
        ReplicaError::Wal(e)
    }
}

impl From<BadRecord> for ReplicaError {
    fn from(e: BadRecord) -> ReplicaError {
        ReplicaError::Record(e)
    }
}

impl From<raft::Error> for ReplicaError {
    fn from(e: raft::Error) -> ReplicaError {
        ReplicaError::Raft(e.to_string())
    }
}

/// What an applied write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The raft index of the entry that carried the write: the version of every item it
    /// wrote.
    pub version: u64,
    /// Whether an item was there before (for a batch: under any of its keys), where the
    /// write had to look: a delete, a conditional write, or a batch holding a delete. `None`
    /// for an unconditional put or a batch of them: their answer does not say, and the look
    /// is a second descent of the tree per key (7 % of a node's profile under YCSB-A).
    pub existed: Option<bool>,
}

/// One page of a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryPage {
    /// Items in the query's order.
    pub items: Vec<Item>,
    /// Set when more may follow: the sort key to pass as `Query::resume`.
    pub resume: Option<Vec<u8>>,
}

/// One page of a scan over the whole partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage {
    /// Items in key order (partition-key hash, partition key, sort key).
    pub items: Vec<Item>,
    /// Set when more may follow: the key to pass as `after`.
    pub resume: Option<Key>,
}

/// Where a paced checkpoint stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointStep {
    /// More steps needed.
    InProgress {
        /// Pages written so far.
        pages_written: u64,
        /// Pages still to write.
        pages_left: u64,
    },
    /// Durable: the WAL is released and the raft log compacted below `covers_index + 1`.
    Done {
        /// The applied index the checkpoint carries.
        covers_index: u64,
        /// Pages written by the whole checkpoint (0 if nothing was dirty).
        pages_written: u64,
    },
}

/// Counters and gauges of one replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    /// Writes proposed.
    pub writes_proposed: u64,
    /// Writes refused at the in-flight limit.
    pub writes_throttled: u64,
    /// Entries applied (no-ops included).
    pub entries_applied: u64,
    /// Writes whose condition failed at apply time.
    pub conditions_failed: u64,
    /// Committed entries that did not decode (each answered with `Internal`).
    pub entries_undecodable: u64,
    /// Readies handled.
    pub readies: u64,
    /// WAL records appended (entries and hard states).
    pub wal_records: u64,
    /// Tree batches applied (one per ready with committed entries).
    pub apply_batches: u64,
    /// Checkpoints completed.
    pub checkpoints: u64,
    /// Hard states written again only because the old one held an older WAL segment.
    pub hard_state_rewrites: u64,
    /// Hard states not written because only their commit index changed: open clamps the
    /// commit index into `[applied, last index]` (DESIGN.md), so it need not be durable, and
    /// writing it cost a second WAL write per write at low load.
    pub hard_states_skipped: u64,
    /// Proposals in flight now.
    pub in_flight: usize,
    /// Their command bytes.
    pub in_flight_bytes: usize,
    /// Raft entries held in memory (since the last checkpoint) and their bytes.
    pub log_entries: usize,
    /// Bytes of those entries' data.
    pub log_bytes: usize,
}

/// A write waiting for its entry to be applied.
struct Pending {
    term: u64,
    bytes: usize,
    slot: Rc<RefCell<Slot>>,
}

#[derive(Default)]
struct Slot {
    result: Option<Result<WriteOutcome, proto::Error>>,
    waker: Option<Waker>,
}

fn resolve(slot: &Rc<RefCell<Slot>>, result: Result<WriteOutcome, proto::Error>) {
    let mut s = slot.borrow_mut();
    s.result = Some(result);
    if let Some(w) = s.waker.take() {
        w.wake();
    }
}

struct State {
    pending: BTreeMap<u64, Pending>,
    in_flight_bytes: usize,
    applied_index: u64,
    applied_term: u64,
    /// Set once leader: the replica serves reads when it has applied this index (the first
    /// entry of its term, so everything committed before it too).
    ready_index: Option<u64>,
    ready_waiters: Vec<Waker>,
    driver: Option<Waker>,
    kicked: bool,
    hs_next_counter: u64,
    /// Term and vote of the newest hard state written (or recovered): a Ready's hard state
    /// that differs from it only in its commit index is not written.
    hs_written: (u64, u64),
    hs_rewrite_wanted: bool,
    /// The applied (index, term) the checkpoint in progress carries.
    checkpoint_covers: Option<(u64, u64)>,
    checkpointed_index: u64,
    failed: Option<ReplicaError>,
    shutting_down: bool,
    /// Set while the partition moves to another node: writes are refused (unapplied, so a
    /// client may retry them anywhere), reads go on.
    frozen: bool,
    outbox: Vec<Message>,
    stats: ReplicaStats,
}

impl State {
    fn kick(&mut self) {
        self.kicked = true;
        if let Some(w) = self.driver.take() {
            w.wake();
        }
    }

    fn is_ready(&self) -> bool {
        self.failed.is_none() && self.ready_index.is_some_and(|i| self.applied_index >= i)
    }

    fn wake_ready(&mut self) {
        if self.is_ready() || self.failed.is_some() {
            self.ready_waiters.drain(..).for_each(Waker::wake);
        }
    }
}

/// A Ready's work, taken out of raft-rs synchronously (so that proposals may continue while
/// it is persisted and applied).
struct Work {
    number: u64,
    hard_state: Option<HardState>,
    /// (index, WAL payload) of each new entry.
    entries: Vec<(u64, Vec<u8>)>,
    committed: Vec<Entry>,
    persisted_messages: Vec<Message>,
}

/// A Ready (or a hard-state rewrite) whose records are in the WAL but maybe not durable yet.
struct Persist {
    number: Option<u64>,
    lsn: Option<Lsn>,
    hs_counter: Option<u64>,
    messages: Vec<Message>,
}

/// One partition replica (see the crate doc). Share it as `Rc<Replica>`: every method takes
/// `&self`, and no `RefCell` borrow is held across an await.
pub struct Replica<S: PageStore, D: BlockDevice> {
    config: ReplicaConfig,
    wal: Rc<Wal<D>>,
    tree: TreeSlot<S>,
    /// The checkpoint whose pages are being written, detached from the tree.
    checkpoint_job: RefCell<Option<btree::CheckpointJob<S>>>,
    raft: RefCell<RawNode<LogStore>>,
    log: LogStore,
    state: RefCell<State>,
}

impl<S: PageStore, D: BlockDevice> Replica<S, D> {
    /// Recovers the replica: the applied index from the tree, the hard state and the entries
    /// above the applied index from the WAL; then it campaigns (a single voter becomes leader
    /// at once) and returns. The committed entries not yet applied are applied by
    /// [`Replica::run`], which the host must spawn; [`Replica::ready`] resolves once they are.
    ///
    /// `recovered` is the report `Wal::open` returned for `wal`; open every replica before
    /// anything is appended to its streams.
    pub async fn open(
        config: ReplicaConfig,
        tree: Tree<S>,
        wal: Rc<Wal<D>>,
        recovered: &RecoveryReport,
    ) -> Result<Replica<S, D>, ReplicaError> {
        config.validate()?;
        let (applied_index, applied_term) = match tree.get(META_APPLIED_KEY).await? {
            Some(v) => keys::decode_applied(&v).ok_or_else(|| {
                ReplicaError::Corrupt("the applied meta value is not 16 bytes".into())
            })?,
            None => (0, 0),
        };
        let hs_stream = config.partition.hard_state_stream();
        let (mut hs, hs_next_counter) = match recovered.streams.get(&hs_stream) {
            Some(r) => {
                let recs = wal.read(hs_stream, r.last_index, r.last_index + 1).await?;
                let rec = recs.first().ok_or(WalError::Missing {
                    stream: hs_stream,
                    index: r.last_index,
                })?;
                let hs = records::decode_hard_state(hs_stream, rec.index, rec.kind, &rec.payload)?;
                (hs, r.last_index + 1)
            }
            // No hard state: a new partition, or one built from a shipped snapshot (a move),
            // whose tree already carries what it applied, under the term it applied it in.
            None => (
                HardState {
                    term: applied_term,
                    commit: applied_index,
                    ..HardState::default()
                },
                1,
            ),
        };
        let es = config.partition.entries_stream();
        let mut entries = Vec::new();
        if let Some(r) = recovered.streams.get(&es) {
            if r.last_index > applied_index {
                let from = applied_index + 1;
                if r.first_index > from {
                    return Err(ReplicaError::Corrupt(format!(
                        "the tree has applied up to {applied_index} but the WAL's entries start at {}",
                        r.first_index
                    )));
                }
                for rec in wal.read(es, from, r.last_index + 1).await? {
                    entries.push(records::decode_entry(
                        es,
                        rec.index,
                        rec.kind,
                        &rec.payload,
                    )?);
                }
            }
        }
        let mut term = applied_term;
        for e in &entries {
            if e.term < term {
                return Err(ReplicaError::Corrupt(format!(
                    "entry {} has term {} below {term}",
                    e.index, e.term
                )));
            }
            term = e.term;
        }
        if hs.term < term {
            return Err(ReplicaError::Corrupt(format!(
                "the hard state's term {} is below the log's {term}",
                hs.term
            )));
        }
        let last_index = applied_index + entries.len() as u64;
        // The hard state is written before the entries of its Ready, so a crash can leave a
        // commit index above the log's end (a follower's); applied entries were committed
        // even if the hard state that said so was lost. Neither bound loses anything.
        hs.commit = hs.commit.clamp(applied_index, last_index);
        let conf_state = ConfState {
            voters: config.voters.clone(),
            ..Default::default()
        };
        let (hs_term, hs_vote) = (hs.term, hs.vote);
        let log = LogStore::new(hs, conf_state, (applied_index, applied_term), entries);
        let raft_config = raft::Config {
            id: config.raft_id,
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            applied: applied_index,
            max_size_per_msg: RAFT_MESSAGE_BYTES_MAX,
            max_inflight_msgs: RAFT_MESSAGES_IN_FLIGHT_MAX,
            check_quorum: true,
            pre_vote: true,
            max_committed_size_per_ready: APPLY_BYTES_PER_READY_MAX,
            ..Default::default()
        };
        raft_config.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut node = RawNode::new(&raft_config, log.clone(), &logger)?;
        let mut ready_index = None;
        if config.voters == [config.raft_id] {
            node.campaign()?;
            if node.raft.state == StateRole::Leader {
                ready_index = Some(node.raft.raft_log.last_index());
            }
        }
        debug_assert_eq!(tree.dirty_bytes(), 0, "a fresh tree has nothing dirty");
        // Releases are not persisted: give back at once what the checkpoint and the newest
        // hard state make unnecessary, so that an idle replica never holds the log.
        wal.release(es, applied_index + 1);
        if hs_next_counter > 1 {
            wal.release(hs_stream, hs_next_counter - 1);
        }
        Ok(Replica {
            tree: TreeSlot::new(tree),
            checkpoint_job: RefCell::new(None),
            wal,
            raft: RefCell::new(node),
            log,
            state: RefCell::new(State {
                pending: BTreeMap::new(),
                in_flight_bytes: 0,
                applied_index,
                applied_term,
                ready_index,
                ready_waiters: Vec::new(),
                driver: None,
                kicked: true,
                hs_next_counter,
                hs_written: (hs_term, hs_vote),
                hs_rewrite_wanted: false,
                checkpoint_covers: None,
                checkpointed_index: applied_index,
                failed: None,
                shutting_down: false,
                frozen: false,
                outbox: Vec::new(),
                stats: ReplicaStats::default(),
            }),
            config,
        })
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// True when it serves strong reads and writes: leader, and everything committed before
    /// its term began is applied.
    pub fn is_ready(&self) -> bool {
        self.state.borrow().is_ready()
    }

    /// Resolves once [`Replica::is_ready`] (or with the error that failed the replica).
    pub async fn ready(&self) -> Result<(), proto::Error> {
        poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            if let Some(e) = &st.failed {
                return Poll::Ready(Err(failed_error(e)));
            }
            if st.is_ready() {
                return Poll::Ready(Ok(()));
            }
            st.ready_waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The index of the last entry applied to the tree.
    pub fn applied_index(&self) -> u64 {
        self.state.borrow().applied_index
    }

    /// The applied index the newest complete checkpoint carries.
    pub fn checkpointed_index(&self) -> u64 {
        self.state.borrow().checkpointed_index
    }

    /// Items in the partition as of the last apply (`None` in the middle of one).
    pub fn item_count(&self) -> Option<u64> {
        self.tree.items()
    }

    /// The tree's bytes not yet checkpointed (as of the last apply or checkpoint step).
    pub fn dirty_bytes(&self) -> u64 {
        self.tree.dirty_bytes()
    }

    /// Counters and gauges.
    pub fn stats(&self) -> ReplicaStats {
        let st = self.state.borrow();
        let mut s = st.stats.clone();
        s.in_flight = st.pending.len();
        s.in_flight_bytes = st.in_flight_bytes;
        let (n, bytes) = self.log.size();
        s.log_entries = n;
        s.log_bytes = bytes;
        s
    }

    /// The error that failed the replica, if it has failed.
    pub fn failure(&self) -> Option<ReplicaError> {
        self.state.borrow().failed.clone()
    }

    /// Advances raft's logical clock; the host calls it every `TICK_INTERVAL_MS_DEFAULT`.
    pub fn tick(&self) {
        let has_ready = {
            let mut raft = self.raft.borrow_mut();
            raft.tick();
            raft.has_ready()
        };
        if has_ready {
            self.state.borrow_mut().kick();
        }
    }

    /// Hands a message from another replica of the group to raft (replication: not used by a
    /// single voter).
    pub fn step(&self, message: Message) -> Result<(), proto::Error> {
        self.raft
            .borrow_mut()
            .step(message)
            .map_err(|e| proto::Error::internal(format!("raft step: {e}")))?;
        self.state.borrow_mut().kick();
        Ok(())
    }

    /// Messages for the group's other replicas, to send in order (replication: a single
    /// voter has none).
    pub fn take_messages(&self) -> Vec<Message> {
        std::mem::take(&mut self.state.borrow_mut().outbox)
    }

    /// Stops taking writes; [`Replica::run`] returns once every write in flight is answered
    /// and every record is durable. Close the WAL only after every replica's `run` returned:
    /// a driver that cannot append fails its replica.
    pub fn shutdown(&self) {
        let mut st = self.state.borrow_mut();
        st.shutting_down = true;
        st.kick();
    }

    /// Refuses new writes (they get `Unavailable`, never proposed) until [`Replica::thaw`]:
    /// the partition is about to move, and its snapshot must hold every write it took.
    pub fn freeze(&self) {
        self.state.borrow_mut().frozen = true;
    }

    /// Takes writes again after [`Replica::freeze`] (a move was abandoned).
    pub fn thaw(&self) {
        self.state.borrow_mut().frozen = false;
    }

    /// Writes proposed and not yet answered.
    pub fn writes_in_flight(&self) -> usize {
        self.state.borrow().pending.len()
    }

    /// A view of the tree with every write answered so far (for shipping it elsewhere).
    pub async fn view(&self) -> btree::Snapshot<S> {
        self.tree.view().await
    }

    fn check_owned(&self, key: &Key) -> Result<(), proto::Error> {
        let hash = keys::partition_key_hash(&key.partition);
        if self.config.hash_range.contains(&hash) {
            Ok(())
        } else {
            Err(proto::Error::invalid(format!(
                "the partition key's hash {hash:#034x} is not in partition {}",
                self.config.partition.0
            )))
        }
    }

    fn check_readable(&self) -> Result<(), proto::Error> {
        let st = self.state.borrow();
        if let Some(e) = &st.failed {
            return Err(failed_error(e));
        }
        if !st.is_ready() {
            return Err(proto::Error::unavailable(
                "the partition is recovering or has no leader here",
            ));
        }
        Ok(())
    }

    /// Proposes a write and resolves once its entry is durable in the WAL, committed and
    /// applied to the tree. Conditions are evaluated when the entry is applied; one that does
    /// not hold gives `ConditionFailed` with the item's current version. Over
    /// `PROPOSALS_IN_FLIGHT_MAX` (or `PROPOSAL_BYTES_IN_FLIGHT_MAX`) it is `Throttled` at
    /// once. Dropping the future does not withdraw the write.
    pub async fn write(&self, command: &Command) -> Result<WriteOutcome, proto::Error> {
        command.validate()?;
        for key in command.keys() {
            self.check_owned(key)?;
        }
        let data = command.encode();
        let max_bytes = self
            .wal
            .config()
            .record_payload_bytes_max
            .saturating_sub(ENTRY_HEADER_BYTES);
        if data.len() > max_bytes {
            return Err(proto::Error::TooLarge {
                field: match command {
                    Command::Batch { .. } => proto::Field::Frame,
                    _ => proto::Field::Item,
                },
                bytes: data.len() as u64,
                max: max_bytes as u64,
            });
        }
        let slot = Rc::new(RefCell::new(Slot::default()));
        {
            let mut st = self.state.borrow_mut();
            if let Some(e) = &st.failed {
                return Err(failed_error(e));
            }
            if st.shutting_down {
                return Err(proto::Error::unavailable("the partition is shutting down"));
            }
            if st.frozen {
                return Err(proto::Error::unavailable(
                    "the partition is moving to another node; retry shortly",
                ));
            }
            let over_count = st.pending.len() >= PROPOSALS_IN_FLIGHT_MAX;
            let over_bytes = !st.pending.is_empty()
                && st.in_flight_bytes + data.len() > PROPOSAL_BYTES_IN_FLIGHT_MAX;
            if over_count || over_bytes {
                st.stats.writes_throttled += 1;
                return Err(proto::Error::Throttled {
                    retry_after_ms: THROTTLE_RETRY_AFTER_MS,
                });
            }
            let mut raft = self.raft.borrow_mut();
            if raft.raft.state != StateRole::Leader {
                return Err(proto::Error::unavailable(
                    "this replica is not the partition's leader",
                ));
            }
            let bytes = data.len();
            raft.propose(Vec::new(), data)
                .map_err(|e| proto::Error::unavailable(format!("proposal dropped: {e}")))?;
            let index = raft.raft.raft_log.last_index();
            let term = raft.raft.term;
            debug_assert!(!st.pending.contains_key(&index));
            st.pending.insert(
                index,
                Pending {
                    term,
                    bytes,
                    slot: slot.clone(),
                },
            );
            st.in_flight_bytes += bytes;
            st.stats.writes_proposed += 1;
            st.kick();
        }
        poll_fn(|cx| {
            let mut s = slot.borrow_mut();
            match s.result.take() {
                Some(r) => Poll::Ready(r),
                None => {
                    s.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The item under `key`, read from the tree (strong: the leader, after it applied every
    /// write it acknowledged).
    pub async fn get(&self, key: &Key) -> Result<Option<Item>, proto::Error> {
        if let Some(answer) = self.get_now(key) {
            return answer;
        }
        let found = self
            .tree
            .view()
            .await
            .get_with(&keys::item_key(key), copy_out)
            .await
            .map_err(tree_read_error)?;
        item_of(key, found)
    }

    /// [`Replica::get`] without waiting: `None` when a page must be read (then call `get`).
    /// Checks come first, so an error is always answered at once.
    pub fn get_now(&self, key: &Key) -> Option<Result<Option<Item>, proto::Error>> {
        let checked = proto::check_key(key)
            .and_then(|()| self.check_owned(key))
            .and_then(|()| self.check_readable());
        if let Err(e) = checked {
            return Some(Err(e));
        }
        let found = self.tree.get_now(&keys::item_key(key), copy_out)?;
        Some(item_of(key, found))
    }

    /// One page of a partition key's items within the query's sort-key range, in its
    /// direction, from after its resume key: at most `limit` items (0: as many as fit; never
    /// above `QUERY_PAGE_ITEMS_MAX`) and `QUERY_PAGE_BYTES_MAX` bytes of items.
    pub async fn query(&self, query: &proto::Query) -> Result<QueryPage, proto::Error> {
        let pk = &query.partition_key;
        let pk_key = Key {
            partition: pk.clone(),
            sort: Vec::new(),
        };
        proto::check_key(&pk_key)?;
        for bound in [&query.start, &query.end] {
            if let proto::SortBound::Included(s) | proto::SortBound::Excluded(s) = bound {
                check_sort_key(s)?;
            }
        }
        if let Some(r) = &query.resume {
            check_sort_key(r)?;
        }
        self.check_owned(&pk_key)?;
        self.check_readable()?;
        let prefix = keys::partition_prefix(pk);
        let (mut lo, mut hi) = keys::query_bounds(&prefix, &query.start, &query.end);
        let forward = query.direction == proto::Direction::Forward;
        if let Some(r) = &query.resume {
            let mut after = prefix.clone();
            after.extend_from_slice(r);
            if forward {
                lo = keys::max_lower(lo, Bound::Excluded(after));
            } else {
                hi = keys::min_upper(hi, Bound::Excluded(after));
            }
        }
        let direction = if forward {
            btree::Direction::Forward
        } else {
            btree::Direction::Reverse
        };
        let page = self
            .read_page((lo, hi), direction, query.limit, |tree_key| {
                Ok(Key {
                    partition: pk.clone(),
                    sort: tree_key[prefix.len()..].to_vec(),
                })
            })
            .await?;
        Ok(QueryPage {
            resume: page.resume.map(|k| k.sort),
            items: page.items,
        })
    }

    /// One page of every item of the partition in key order, from after `after`: at most
    /// `limit` items (0: as many as fit) and `QUERY_PAGE_BYTES_MAX` bytes.
    pub async fn scan_page(
        &self,
        after: Option<&Key>,
        limit: u32,
    ) -> Result<ScanPage, proto::Error> {
        if let Some(k) = after {
            proto::check_key(k)?;
        }
        self.check_readable()?;
        let lo = match after {
            Some(k) => Bound::Excluded(keys::item_key(k)),
            None => Bound::Included(keys::ITEMS_START.to_vec()),
        };
        let hi = Bound::Excluded(keys::ITEMS_END.to_vec());
        self.read_page((lo, hi), btree::Direction::Forward, limit, |tree_key| {
            keys::decode_item_key(tree_key)
                .map_err(|e| proto::Error::internal(format!("a tree key is damaged: {}", e.0)))
        })
        .await
    }

    async fn read_page(
        &self,
        bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        direction: btree::Direction,
        limit: u32,
        key_of: impl Fn(&[u8]) -> Result<Key, proto::Error>,
    ) -> Result<ScanPage, proto::Error> {
        let limit = match limit {
            0 => proto::limits::QUERY_PAGE_ITEMS_MAX,
            n => n.min(proto::limits::QUERY_PAGE_ITEMS_MAX),
        } as usize;
        let view = self.tree.view().await;
        let mut cursor = view
            .into_range::<(Bound<&[u8]>, Bound<&[u8]>)>(
                (as_slice(&bounds.0), as_slice(&bounds.1)),
                direction,
            )
            .await
            .map_err(tree_read_error)?;
        let mut items: Vec<Item> = Vec::new();
        let mut bytes = 0usize;
        let mut resume = None;
        while let Some((tree_key, stored)) = cursor.next().await.map_err(tree_read_error)? {
            let key = key_of(&tree_key)?;
            let value = keys::value_bytes(&stored);
            let item_bytes = key.bytes() + value.len();
            if items.len() == limit || bytes + item_bytes > proto::limits::QUERY_PAGE_BYTES_MAX {
                // There is more: the page ends after its last item.
                resume = items.last().map(|i| i.key.clone());
                break;
            }
            let version = keys::value_version(&stored).ok_or_else(|| {
                proto::Error::internal("a stored value is shorter than its version")
            })?;
            bytes += item_bytes;
            items.push(Item {
                key,
                value: value.to_vec(),
                version,
            });
        }
        Ok(ScanPage { items, resume })
    }

    /// Advances a paced checkpoint of the tree by at most `page_budget` page writes. When one
    /// completes, the WAL is released below the index it carries and the in-memory raft log
    /// is compacted to it. Call it with nothing dirty too: an idle replica then still gives
    /// the WAL back (and rewrites its hard state if that holds the oldest segment).
    pub async fn checkpoint_step(
        &self,
        page_budget: usize,
    ) -> Result<CheckpointStep, ReplicaError> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        // One checkpoint at a time: a second caller while a step is in flight waits for the
        // next call rather than starting another (the tree would refuse it).
        let Some(mut job) = self.checkpoint_job.borrow_mut().take() else {
            if self.state.borrow().checkpoint_covers.is_some() {
                return Ok(CheckpointStep::InProgress {
                    pages_written: 0,
                    pages_left: 0,
                });
            }
            return self.checkpoint_begin().await;
        };
        // The job writes without the tree: applies (and so acknowledgements) go on while
        // its pages are in flight. Only beginning and finishing take the tree, briefly.
        let r = job.step(page_budget).await;
        match r {
            Ok(false) => {
                let step = CheckpointStep::InProgress {
                    pages_written: job.pages_written(),
                    pages_left: job.pages_left(),
                };
                *self.checkpoint_job.borrow_mut() = Some(job);
                Ok(step)
            }
            Ok(true) => {
                let mut guard = self.tree.lock(false).await;
                let finished = guard.checkpoint_finish(job);
                drop(guard);
                let (index, _term) = self
                    .state
                    .borrow_mut()
                    .checkpoint_covers
                    .take()
                    .expect("set when the checkpoint began");
                match finished {
                    Ok(stats) => {
                        self.after_checkpoint(index, true);
                        Ok(CheckpointStep::Done {
                            covers_index: index,
                            pages_written: stats.pages_written,
                        })
                    }
                    Err(e) => {
                        let e = ReplicaError::Tree(e);
                        self.fail(e.clone());
                        Err(e)
                    }
                }
            }
            Err(e) => {
                // Hand the failed job back: the tree is poisoned until reopened.
                let mut guard = self.tree.lock(false).await;
                let _ = guard.checkpoint_finish(job);
                drop(guard);
                self.state.borrow_mut().checkpoint_covers = None;
                let e = ReplicaError::Tree(e);
                self.fail(e.clone());
                Err(e)
            }
        }
    }

    /// Starts a checkpoint: captures the tree and the applied index it holds, together.
    async fn checkpoint_begin(&self) -> Result<CheckpointStep, ReplicaError> {
        let mut guard = self.tree.lock(false).await;
        // The guard excludes applies, so the tree holds exactly the entries up to here.
        let covers = {
            let st = self.state.borrow();
            (st.applied_index, st.applied_term)
        };
        match guard.checkpoint_begin() {
            Ok(None) => {
                drop(guard);
                self.after_checkpoint(covers.0, false);
                Ok(CheckpointStep::Done {
                    covers_index: covers.0,
                    pages_written: 0,
                })
            }
            Ok(Some(job)) => {
                let left = job.pages_left();
                drop(guard);
                self.state.borrow_mut().checkpoint_covers = Some(covers);
                *self.checkpoint_job.borrow_mut() = Some(job);
                Ok(CheckpointStep::InProgress {
                    pages_written: 0,
                    pages_left: left,
                })
            }
            Err(e) => {
                drop(guard);
                let e = ReplicaError::Tree(e);
                self.fail(e.clone());
                Err(e)
            }
        }
    }

    fn after_checkpoint(&self, index: u64, wrote: bool) {
        {
            let mut st = self.state.borrow_mut();
            st.checkpointed_index = st.checkpointed_index.max(index);
            if wrote {
                st.stats.checkpoints += 1;
            }
        }
        self.log.compact(index);
        let p = self.config.partition;
        // Only the entries: older hard states went as soon as a newer one was durable
        // (`collect_persisted`, and at open).
        self.wal.release(p.entries_stream(), index + 1);
        // A partition whose newest hard state sits in an older segment than the newest
        // writes it anew now, whichever stream the log names as holding it back: when only
        // the named one did, one at a time and each a checkpoint interval later than the
        // one before, they held the log for tens of seconds (43 segments, 2.7 GiB, under
        // YCSB-A at 110 K ops/s), and a rollover with no recycled segment left waits for a
        // fresh one to be zero-filled.
        if self.wal.holds_back(p.hard_state_stream()) {
            let mut st = self.state.borrow_mut();
            st.hs_rewrite_wanted = true;
            st.kick();
        }
    }

    fn fail(&self, e: ReplicaError) {
        let pending = {
            let mut st = self.state.borrow_mut();
            if st.failed.is_none() {
                log::error!("partition {}: {e}", self.config.partition.0);
                st.failed = Some(e.clone());
            }
            st.in_flight_bytes = 0;
            st.wake_ready();
            std::mem::take(&mut st.pending)
        };
        let err = failed_error(&e);
        for p in pending.into_values() {
            resolve(&p.slot, Err(err.clone()));
        }
    }

    /// The driver: persists raft's Readies into the WAL (a new Ready may be written while the
    /// previous one's write is in flight), tells raft what became durable, and applies
    /// committed entries to the tree. The host spawns it once per replica on the replica's
    /// core, next to `Wal::run`. It returns after [`Replica::shutdown`] once everything in
    /// flight is answered, or with the error that failed the replica.
    pub async fn run(self: Rc<Self>) -> Result<(), ReplicaError> {
        let r = self.drive().await;
        if let Err(e) = &r {
            self.fail(e.clone());
        }
        r
    }

    async fn drive(&self) -> Result<(), ReplicaError> {
        type DurableWait<'a> = Pin<Box<dyn Future<Output = Result<(), WalError>> + 'a>>;
        let mut persisting: VecDeque<Persist> = VecDeque::new();
        let mut waiting: Option<(Lsn, DurableWait<'_>)> = None;
        loop {
            if let Some(e) = self.failure() {
                return Err(e);
            }
            self.collect_persisted(&mut persisting);
            if let Some(work) = self.take_work()? {
                self.handle(work, &mut persisting).await?;
                continue;
            }
            let rewrite = std::mem::take(&mut self.state.borrow_mut().hs_rewrite_wanted);
            if rewrite {
                self.state.borrow_mut().stats.hard_state_rewrites += 1;
                let hs = self.log.hard_state();
                let (lsn, counter) = self.append_hard_state(&hs).await?;
                persisting.push_back(Persist {
                    number: None,
                    lsn: Some(lsn),
                    hs_counter: Some(counter),
                    messages: Vec::new(),
                });
                continue;
            }
            {
                let st = self.state.borrow();
                if st.shutting_down && st.pending.is_empty() && persisting.is_empty() {
                    return Ok(());
                }
            }
            let front = persisting.front().and_then(|p| p.lsn);
            if waiting.as_ref().map(|w| w.0) != front {
                waiting = front.map(|lsn| {
                    let fut: DurableWait<'_> = Box::pin(self.wal.wait_durable(lsn));
                    (lsn, fut)
                });
            }
            poll_fn(|cx| {
                {
                    let mut st = self.state.borrow_mut();
                    if st.kicked {
                        st.kicked = false;
                        return Poll::Ready(Ok(()));
                    }
                    st.driver = Some(cx.waker().clone());
                }
                if let Some((_, fut)) = &mut waiting {
                    if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                        waiting = None;
                        return Poll::Ready(r);
                    }
                }
                Poll::Pending
            })
            .await?;
        }
    }

    /// Pops the persists that are durable (in order) and tells raft.
    fn collect_persisted(&self, persisting: &mut VecDeque<Persist>) {
        let durable = self.wal.durable_lsn();
        let mut number = None;
        let mut messages = Vec::new();
        let mut hs_counter = None;
        while persisting
            .front()
            .is_some_and(|p| p.lsn.is_none_or(|lsn| lsn < durable))
        {
            let p = persisting.pop_front().expect("front exists");
            number = p.number.or(number);
            hs_counter = p.hs_counter.or(hs_counter);
            messages.extend(p.messages);
        }
        if let Some(n) = number {
            self.raft.borrow_mut().on_persist_ready(n);
        }
        let mut st = self.state.borrow_mut();
        if let Some(counter) = hs_counter {
            // The newest durable hard state is the only one recovery reads (as at open):
            // the older ones go now, so that a rewrite frees the oldest segment at once
            // instead of at the next checkpoint.
            self.wal
                .release(self.config.partition.hard_state_stream(), counter);
        }
        st.outbox.extend(messages);
    }

    /// Takes raft's next Ready, if any, out of raft-rs synchronously: the new entries go to
    /// the in-memory log, and raft is told they are on their way to disk
    /// (`advance_append_async`), so that proposals can go on while they are persisted.
    fn take_work(&self) -> Result<Option<Work>, ReplicaError> {
        let mut raft = self.raft.borrow_mut();
        if !raft.has_ready() {
            return Ok(None);
        }
        let mut rd = raft.ready();
        let mut st = self.state.borrow_mut();
        st.stats.readies += 1;
        if let Some(ss) = rd.ss() {
            if ss.raft_state == StateRole::Leader {
                let first = raft.raft.raft_log.last_index();
                st.ready_index = Some(st.ready_index.map_or(first, |i| i.max(first)));
            } else {
                st.ready_index = None;
                // Entries proposed here may still commit under the new leader, or not.
                let lost = std::mem::take(&mut st.pending);
                st.in_flight_bytes = 0;
                for p in lost.into_values() {
                    resolve(
                        &p.slot,
                        Err(proto::Error::internal(
                            "leadership was lost before the write applied: its outcome is unknown",
                        )),
                    );
                }
            }
        }
        if !rd.snapshot().is_empty() {
            return Err(ReplicaError::Unsupported("raft snapshots (replication)"));
        }
        st.outbox.extend(rd.take_messages());
        let new_entries = rd.take_entries();
        let entries = new_entries
            .iter()
            .map(|e| (e.index, records::encode_entry(e)))
            .collect();
        self.log.append(new_entries);
        let hard_state = rd.hs().cloned();
        if let Some(hs) = &hard_state {
            self.log.set_hard_state(hs.clone());
        }
        let work = Work {
            number: rd.number(),
            hard_state,
            entries,
            committed: rd.take_committed_entries(),
            persisted_messages: rd.take_persisted_messages(),
        };
        raft.advance_append_async(rd);
        Ok(Some(work))
    }

    async fn append_hard_state(&self, hs: &HardState) -> Result<(Lsn, u64), ReplicaError> {
        let counter = {
            let mut st = self.state.borrow_mut();
            let c = st.hs_next_counter;
            st.hs_next_counter += 1;
            st.hs_written = (hs.term, hs.vote);
            st.stats.wal_records += 1;
            c
        };
        let lsn = self
            .wal
            .enqueue(
                self.config.partition.hard_state_stream(),
                counter,
                KIND_HARD_STATE,
                &records::encode_hard_state(hs),
            )
            .await?;
        Ok((lsn, counter))
    }

    async fn handle(
        &self,
        work: Work,
        persisting: &mut VecDeque<Persist>,
    ) -> Result<(), ReplicaError> {
        // The hard state goes first: a crash may then keep it without the entries after it
        // (harmless: open clamps the commit index), never entries of a term the hard state
        // does not know (that would lose a vote). See DESIGN.md.
        let mut lsn = None;
        let mut hs_counter = None;
        if let Some(hs) = &work.hard_state {
            let commit_only = self.state.borrow().hs_written == (hs.term, hs.vote);
            if commit_only {
                self.state.borrow_mut().stats.hard_states_skipped += 1;
            } else {
                let (l, c) = self.append_hard_state(hs).await?;
                lsn = Some(l);
                hs_counter = Some(c);
            }
        }
        let stream = self.config.partition.entries_stream();
        for (index, payload) in &work.entries {
            lsn = Some(
                self.wal
                    .enqueue(stream, *index, KIND_ENTRY, payload)
                    .await?,
            );
        }
        self.state.borrow_mut().stats.wal_records += work.entries.len() as u64;
        persisting.push_back(Persist {
            number: Some(work.number),
            lsn,
            hs_counter,
            messages: work.persisted_messages,
        });
        if !work.committed.is_empty() {
            self.apply(work.committed).await?;
        }
        Ok(())
    }

    /// Applies committed entries to the tree in one batch, with the applied index, and
    /// answers their writers.
    async fn apply(&self, entries: Vec<Entry>) -> Result<(), ReplicaError> {
        let mut guard = self.tree.lock(false).await;
        let mut batch = WriteBatch::new();
        // Versions written earlier in this batch (None: deleted), so that a later entry's
        // condition sees them.
        let mut overlay: HashMap<Vec<u8>, Option<u64>> = HashMap::new();
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut undecodable = 0;
        let mut conditions_failed = 0;
        for e in &entries {
            match EntryType::from_i32(e.entry_type) {
                Some(EntryType::EntryNormal) => {}
                _ => {
                    return Err(ReplicaError::Unsupported(
                        "configuration-change entries (replication)",
                    ))
                }
            }
            if e.data.is_empty() {
                continue; // a new leader's empty entry
            }
            let outcome = match Command::decode(&e.data) {
                Err(err) => {
                    undecodable += 1;
                    Err(proto::Error::internal(format!("entry {}: {err}", e.index)))
                }
                Ok(command) => {
                    let r =
                        apply_command(&guard, &mut batch, &mut overlay, e.index, &command).await?;
                    if r.is_err() {
                        conditions_failed += 1;
                    }
                    r
                }
            };
            outcomes.push((e.index, e.term, outcome));
        }
        let last = entries.last().expect("apply is called with entries");
        batch.put(
            META_APPLIED_KEY,
            &keys::encode_applied(last.index, last.term),
        );
        guard.mark_changed();
        guard.apply(&batch).await?;
        {
            let mut st = self.state.borrow_mut();
            st.applied_index = last.index;
            st.applied_term = last.term;
            st.stats.entries_applied += entries.len() as u64;
            st.stats.apply_batches += 1;
            st.stats.entries_undecodable += undecodable;
            st.stats.conditions_failed += conditions_failed;
        }
        // The view is invalidated when the guard drops: only then are writers answered.
        drop(guard);
        self.raft.borrow_mut().advance_apply_to(last.index);
        let mut st = self.state.borrow_mut();
        for (index, term, outcome) in outcomes {
            if let Some(p) = st.pending.remove(&index) {
                st.in_flight_bytes -= p.bytes;
                let r = if p.term == term {
                    outcome
                } else {
                    Err(superseded())
                };
                resolve(&p.slot, r);
            }
        }
        // Proposals whose index now holds another leader's entry were never applied.
        let above = st.pending.split_off(&(last.index + 1));
        let gone = std::mem::replace(&mut st.pending, above);
        for p in gone.into_values() {
            st.in_flight_bytes -= p.bytes;
            resolve(&p.slot, Err(superseded()));
        }
        st.wake_ready();
        Ok(())
    }
}

fn superseded() -> proto::Error {
    proto::Error::unavailable("the write was superseded by another leader's entry: not applied")
}

/// Evaluates a command's conditions against the tree (and the batch being built) and adds
/// its writes to the batch if they hold.
async fn apply_command<S: PageStore>(
    tree: &Tree<S>,
    batch: &mut WriteBatch,
    overlay: &mut HashMap<Vec<u8>, Option<u64>>,
    index: u64,
    command: &Command,
) -> Result<Result<WriteOutcome, proto::Error>, ReplicaError> {
    let mut writes: Vec<(&Key, Option<&[u8]>, Condition)> = Vec::new();
    match command {
        Command::Put {
            key,
            value,
            condition,
        } => writes.push((key, Some(value), *condition)),
        Command::Delete { key, condition } => writes.push((key, None, *condition)),
        Command::Batch { writes: ops } => {
            for op in ops {
                match op {
                    WriteOp::Put { key, value } => writes.push((key, Some(value), Condition::None)),
                    WriteOp::Delete { key } => writes.push((key, None, Condition::None)),
                }
            }
        }
    }
    // Only a delete's answer and a condition need what is stored now; an unconditional put
    // overwrites without looking, and a later command of the same apply batch still sees
    // its version through `overlay`.
    let look = writes
        .iter()
        .any(|(_, value, condition)| value.is_none() || *condition != Condition::None);
    let mut tree_keys = Vec::with_capacity(writes.len());
    let mut existed = false;
    for (key, _, condition) in &writes {
        let tk = keys::item_key(key);
        if look {
            let current = match overlay.get(&tk) {
                Some(v) => *v,
                None => {
                    let found = tree.get_with(&tk, |v| v.map(keys::value_version)).await?;
                    match found {
                        None => None,
                        Some(Some(v)) => Some(v),
                        Some(None) => {
                            return Err(ReplicaError::Corrupt(
                                "a stored value is shorter than its version".into(),
                            ))
                        }
                    }
                }
            };
            let holds = match condition {
                Condition::None => true,
                Condition::IfAbsent => current.is_none(),
                Condition::IfPresent => current.is_some(),
                Condition::IfVersion(v) => current == Some(*v),
            };
            if !holds {
                return Ok(Err(proto::Error::ConditionFailed {
                    current_version: current,
                }));
            }
            existed |= current.is_some();
        }
        tree_keys.push(tk);
    }
    for ((_, value, _), tk) in writes.iter().zip(tree_keys) {
        match value {
            Some(v) => {
                batch.put(&tk, &keys::encode_value(index, v));
                overlay.insert(tk, Some(index));
            }
            None => {
                batch.delete(&tk);
                overlay.insert(tk, None);
            }
        }
    }
    Ok(Ok(WriteOutcome {
        version: index,
        existed: look.then_some(existed),
    }))
}

fn check_sort_key(sort: &[u8]) -> Result<(), proto::Error> {
    if sort.len() > proto::limits::SORT_KEY_BYTES_MAX {
        return Err(proto::Error::TooLarge {
            field: proto::Field::SortKey,
            bytes: sort.len() as u64,
            max: proto::limits::SORT_KEY_BYTES_MAX as u64,
        });
    }
    Ok(())
}

fn as_slice(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn tree_read_error(e: btree::Error) -> proto::Error {
    proto::Error::internal(format!("reading the partition's tree: {e}"))
}

fn failed_error(e: &ReplicaError) -> proto::Error {
    proto::Error::internal(format!("the partition replica failed: {e}"))
}

/// A stored value's version and bytes, copied out of the tree.
type Found = Option<(Option<u64>, Vec<u8>)>;

fn copy_out(v: Option<&[u8]>) -> Found {
    v.map(|v| (keys::value_version(v), keys::value_bytes(v).to_vec()))
}

fn item_of(key: &Key, found: Found) -> Result<Option<Item>, proto::Error> {
    match found {
        None => Ok(None),
        Some((None, _)) => Err(proto::Error::internal(
            "a stored value is shorter than its version",
        )),
        Some((Some(version), value)) => Ok(Some(Item {
            key: key.clone(),
            value,
            version,
        })),
    }
}
