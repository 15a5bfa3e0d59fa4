//! The tail cache: the most recent records' payloads, so that reads of recent records (a
//! follower one heartbeat behind) never touch the disk.

use std::collections::{BTreeMap, HashMap, VecDeque};
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

/// Per stream, a suffix of its records (eviction goes in LSN order, and within a stream a
/// higher index always has a higher LSN, since a rewrite of index `i` drops every index
/// above `i`).
#[derive(Debug, Default)]
pub(crate) struct TailCache {
    bytes_max: usize,
    bytes: usize,
    streams: HashMap<u64, BTreeMap<u64, Cached>>,
    order: VecDeque<(Lsn, u64, u64)>,
}

impl TailCache {
    pub fn new(bytes_max: usize) -> TailCache {
        TailCache {
            bytes_max,
            ..TailCache::default()
        }
    }

    pub fn insert(&mut self, lsn: Lsn, stream: u64, index: u64, kind: u8, payload: &[u8]) {
        let map = self.streams.entry(stream).or_default();
        for (_, gone) in map.split_off(&index) {
            self.bytes -= gone.payload.len() + ENTRY_OVERHEAD_BYTES;
        }
        map.insert(
            index,
            Cached {
                lsn,
                kind,
                payload: payload.into(),
            },
        );
        self.bytes += payload.len() + ENTRY_OVERHEAD_BYTES;
        self.order.push_back((lsn, stream, index));
        while self.bytes > self.bytes_max || self.order.len() > 4 * (self.bytes_max / 64 + 1) {
            let Some((lsn, stream, index)) = self.order.pop_front() else {
                break;
            };
            let Some(map) = self.streams.get_mut(&stream) else {
                continue;
            };
            if map.get(&index).is_some_and(|c| c.lsn == lsn) {
                let gone = map.remove(&index).expect("present");
                self.bytes -= gone.payload.len() + ENTRY_OVERHEAD_BYTES;
                if map.is_empty() {
                    self.streams.remove(&stream);
                }
            }
        }
    }

    /// The lowest index cached for `stream`: everything of the stream from there on is here.
    pub fn first_index(&self, stream: u64) -> Option<u64> {
        self.streams
            .get(&stream)
            .and_then(|m| m.keys().next().copied())
    }

    pub fn range(&self, stream: u64, from: u64, to: u64) -> Vec<(u64, Cached)> {
        self.streams.get(&stream).map_or_else(Vec::new, |m| {
            m.range(from..to).map(|(i, c)| (*i, c.clone())).collect()
        })
    }

    pub fn check_invariants(&self) {
        let mut bytes = 0;
        for map in self.streams.values() {
            let mut prev = 0;
            for c in map.values() {
                assert!(
                    c.lsn > prev,
                    "a higher index has a higher LSN within a stream"
                );
                prev = c.lsn;
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
