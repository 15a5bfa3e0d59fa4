//! The tail cache: the most recent records' payloads, so that reads of recent records (a
//! follower one heartbeat behind) never touch the disk.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use crate::Lsn;

/// Bytes charged per cached record on top of its payload (map and queue entries).
const ENTRY_OVERHEAD_BYTES: usize = 64;

#[derive(Clone, Debug)]
pub(crate) struct Cached {
    pub lsn: Lsn,
    pub kind: u8,
    pub payload: Rc<[u8]>,
}

/// Per stream, a suffix of its records in index order (eviction goes in LSN order, and
/// within a stream a higher index always has a higher LSN, since a rewrite of index `i`
/// drops every index from `i` up): so a `VecDeque` per stream, pushed at the back, evicted
/// at the front, with no tree to descend on the hot path.
#[derive(Debug, Default)]
pub(crate) struct TailCache {
    bytes_max: usize,
    bytes: usize,
    streams: HashMap<u64, VecDeque<(u64, Cached)>>,
    /// (LSN, stream) of every insert, oldest first; entries a rewrite dropped are skipped.
    order: VecDeque<(Lsn, u64)>,
}

impl TailCache {
    pub fn new(bytes_max: usize) -> TailCache {
        TailCache {
            bytes_max,
            ..TailCache::default()
        }
    }

    pub fn insert(&mut self, lsn: Lsn, stream: u64, index: u64, kind: u8, payload: &[u8]) {
        let entries = self.streams.entry(stream).or_default();
        // A rewrite of index i drops i and above (a raft log conflict).
        while entries.back().is_some_and(|(i, _)| *i >= index) {
            let (_, gone) = entries.pop_back().expect("back exists");
            self.bytes -= gone.payload.len() + ENTRY_OVERHEAD_BYTES;
        }
        entries.push_back((
            index,
            Cached {
                lsn,
                kind,
                payload: payload.into(),
            },
        ));
        self.bytes += payload.len() + ENTRY_OVERHEAD_BYTES;
        self.order.push_back((lsn, stream));
        while self.bytes > self.bytes_max || self.order.len() > 4 * (self.bytes_max / 64 + 1) {
            let Some((lsn, stream)) = self.order.pop_front() else {
                break;
            };
            let Some(entries) = self.streams.get_mut(&stream) else {
                continue;
            };
            if entries.front().is_some_and(|(_, c)| c.lsn == lsn) {
                let (_, gone) = entries.pop_front().expect("front exists");
                self.bytes -= gone.payload.len() + ENTRY_OVERHEAD_BYTES;
                if entries.is_empty() {
                    self.streams.remove(&stream);
                }
            }
        }
    }

    /// The lowest index cached for `stream`: everything of the stream from there on is here.
    pub fn first_index(&self, stream: u64) -> Option<u64> {
        self.streams
            .get(&stream)
            .and_then(|e| e.front().map(|(i, _)| *i))
    }

    pub fn range(&self, stream: u64, from: u64, to: u64) -> Vec<(u64, Cached)> {
        let Some(entries) = self.streams.get(&stream) else {
            return Vec::new();
        };
        let start = entries.partition_point(|(i, _)| *i < from);
        entries
            .range(start..)
            .take_while(|(i, _)| *i < to)
            .cloned()
            .collect()
    }

    pub fn check_invariants(&self) {
        let mut bytes = 0;
        for entries in self.streams.values() {
            assert!(!entries.is_empty(), "no empty stream is kept");
            let mut prev: Option<(u64, Lsn)> = None;
            for (i, c) in entries {
                if let Some((pi, pl)) = prev {
                    assert!(
                        *i > pi && c.lsn > pl,
                        "indexes and LSNs increase within a stream"
                    );
                }
                prev = Some((*i, c.lsn));
                bytes += c.payload.len() + ENTRY_OVERHEAD_BYTES;
            }
        }
        assert_eq!(bytes, self.bytes, "the byte count matches the entries");
        assert!(
            self.bytes <= self.bytes_max,
            "the cache stays within its budget"
        );
    }
}
