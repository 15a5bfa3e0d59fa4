//! The raft log as raft-rs sees it: the entries since the last checkpoint, in memory.
//!
//! raft-rs's `Storage` is synchronous, so every entry that raft may still ask for lives here
//! (GLOMMIO-NOTES, "raft-rs"): the entries above the index the newest complete checkpoint
//! covers. Their durable copy is in the WAL; at start-up they are read back from it. A
//! checkpoint compacts this log and releases the WAL below the same index.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

#[derive(Debug, Default)]
struct Log {
    hard_state: HardState,
    conf_state: ConfState,
    /// The index the log was compacted to (0: never) and its term.
    compacted_index: u64,
    compacted_term: u64,
    /// Entries `compacted_index + 1 ..`, consecutive.
    entries: VecDeque<Entry>,
    /// Data and context bytes of `entries`.
    bytes: usize,
}

impl Log {
    fn last_index(&self) -> u64 {
        self.compacted_index + self.entries.len() as u64
    }

    fn check_invariants(&self) {
        for (i, e) in self.entries.iter().enumerate() {
            assert_eq!(
                e.index,
                self.compacted_index + 1 + i as u64,
                "log entries are consecutive"
            );
        }
        let terms_ordered = self
            .entries
            .iter()
            .map(|e| e.term)
            .try_fold(self.compacted_term, |prev, t| (t >= prev).then_some(t))
            .is_some();
        assert!(terms_ordered, "log terms never decrease");
    }
}

fn entry_bytes(e: &Entry) -> usize {
    e.data.len() + e.context.len()
}

/// A raft-rs `Storage` shared between the `RawNode` (which owns one handle) and the replica
/// (which appends and compacts through another).
#[derive(Clone, Debug, Default)]
pub struct LogStore {
    log: Rc<RefCell<Log>>,
}

impl LogStore {
    /// A log compacted to `(index, term)` holding `entries` above it.
    pub fn new(
        hard_state: HardState,
        conf_state: ConfState,
        compacted: (u64, u64),
        entries: Vec<Entry>,
    ) -> LogStore {
        let bytes = entries.iter().map(entry_bytes).sum();
        let log = Log {
            hard_state,
            conf_state,
            compacted_index: compacted.0,
            compacted_term: compacted.1,
            entries: entries.into(),
            bytes,
        };
        log.check_invariants();
        LogStore {
            log: Rc::new(RefCell::new(log)),
        }
    }

    /// Appends entries handed out by a `Ready`, first dropping any at or above the first one's
    /// index (a raft log conflict).
    pub fn append(&self, entries: Vec<Entry>) {
        let Some(first) = entries.first() else { return };
        let mut log = self.log.borrow_mut();
        assert!(
            first.index > log.compacted_index && first.index <= log.last_index() + 1,
            "raft appends inside the log or right after it"
        );
        let keep = (first.index - log.compacted_index - 1) as usize;
        while log.entries.len() > keep {
            let e = log.entries.pop_back().expect("len > keep");
            log.bytes -= entry_bytes(&e);
        }
        for e in entries {
            log.bytes += entry_bytes(&e);
            log.entries.push_back(e);
        }
        #[cfg(debug_assertions)]
        log.check_invariants();
    }

    /// Records the hard state raft asked to persist.
    pub fn set_hard_state(&self, hs: HardState) {
        self.log.borrow_mut().hard_state = hs;
    }

    /// The hard state last recorded.
    pub fn hard_state(&self) -> HardState {
        self.log.borrow().hard_state.clone()
    }

    /// Drops the entries at or below `index` (it must be in the log), keeping its term.
    pub fn compact(&self, index: u64) {
        let mut log = self.log.borrow_mut();
        if index <= log.compacted_index {
            return;
        }
        assert!(index <= log.last_index(), "compacting beyond the log");
        while log.entries.front().is_some_and(|e| e.index <= index) {
            let e = log.entries.pop_front().expect("front exists");
            log.bytes -= entry_bytes(&e);
            log.compacted_term = e.term;
        }
        log.compacted_index = index;
    }

    /// Entries held and their data bytes.
    pub fn size(&self) -> (usize, usize) {
        let log = self.log.borrow();
        (log.entries.len(), log.bytes)
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let log = self.log.borrow();
        Ok(RaftState::new(
            log.hard_state.clone(),
            log.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let log = self.log.borrow();
        if low <= log.compacted_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > log.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = (low - log.compacted_index - 1) as usize;
        let to = (high - log.compacted_index - 1) as usize;
        let mut out: Vec<Entry> = log.entries.range(from..to).cloned().collect();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let log = self.log.borrow();
        if idx == log.compacted_index {
            return Ok(log.compacted_term);
        }
        if idx < log.compacted_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > log.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(log.entries[(idx - log.compacted_index - 1) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.log.borrow().compacted_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.log.borrow().last_index())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // Snapshots (a tree shipped to a lagging follower) arrive with replication; a single
        // voter never asks for one.
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![0; 3],
            ..Default::default()
        }
    }

    #[test]
    fn append_truncates_and_compact_keeps_the_term() {
        let s = LogStore::new(Default::default(), Default::default(), (5, 2), vec![]);
        assert_eq!(s.first_index().unwrap(), 6);
        assert_eq!(s.last_index().unwrap(), 5);
        assert_eq!(Storage::term(&s, 5).unwrap(), 2);
        s.append(vec![entry(6, 2), entry(7, 2), entry(8, 3)]);
        s.append(vec![entry(8, 4), entry(9, 4)]);
        assert_eq!(s.last_index().unwrap(), 9);
        assert_eq!(Storage::term(&s, 8).unwrap(), 4);
        assert_eq!(s.size(), (4, 12));
        let got = s
            .entries(6, 10, Some(0), GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.len(), 1, "max_size still returns one entry");
        s.compact(7);
        assert_eq!(Storage::term(&s, 7).unwrap(), 2);
        assert!(Storage::term(&s, 6).is_err());
        assert!(s
            .entries(7, 9, None, GetEntriesContext::empty(false))
            .is_err());
        assert_eq!(s.size(), (2, 6));
    }
}
