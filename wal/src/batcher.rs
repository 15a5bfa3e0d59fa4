//! The group-commit batcher: a state machine that does no I/O and reads no clock.
//!
//! Like raft-rs's `RawNode`, it is driven by its host. The host calls [`Batcher::append`]
//! (each record gets the next LSN and joins the open batch), then takes I/O to start with
//! [`Batcher::poll_action`] (which batch to write where, which segment file to allocate,
//! retire or remove), does it, and reports each outcome with [`Batcher::complete`]. The
//! batcher answers which LSNs are durable ([`Batcher::durable_lsn`]): always a prefix of
//! the log, because recovery stops at the first hole.
//!
//! Because it owns every decision and no I/O, the property tests drive it directly with
//! completions in any order and crashes at any point, and `Wal` is only glue.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::format::{
    batch_bytes, encode_batch_header, encode_record, encode_segment_header, frame_bytes,
    records_crc, BatchHeader, RecordView, SegmentHeader,
};
use crate::limits::{BATCHES_QUEUED_MAX, BATCH_HEADER_BYTES, BLOCK_BYTES};
use crate::recovery::{IndexRange, Recovered};
use crate::sim::SimRng;
use crate::{Config, FileId, Lsn, WalError};

/// Names one I/O the batcher asked for, so that its completion can be matched.
pub type IoId = u64;

/// One I/O the host must start, then report with [`Batcher::complete`].
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Write `bytes` (whole blocks) at `offset` of `file` and make them durable.
    Write {
        /// The completion key.
        id: IoId,
        /// The segment file.
        file: FileId,
        /// A multiple of the block size.
        offset: u64,
        /// Whole blocks: a batch, preceded by the segment header block when it opens a segment.
        bytes: Vec<u8>,
    },
    /// Create `file` with `bytes` zero bytes, durable (data, size and directory entry).
    Allocate {
        /// The completion key.
        id: IoId,
        /// The new file.
        file: FileId,
        /// Its size.
        bytes: u64,
    },
    /// Durably zero the header block of `file`: the segment leaves the log and the file
    /// becomes a spare.
    Retire {
        /// The completion key.
        id: IoId,
        /// The segment file.
        file: FileId,
    },
    /// Delete `file` (an already retired spare beyond the number kept).
    Remove {
        /// The completion key.
        id: IoId,
        /// The file.
        file: FileId,
    },
}

/// What an append could not do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendRefused {
    /// Every batch slot is taken: wait for a write to be submitted, then retry.
    Full,
    /// The log has failed (or the record is invalid): the error says why.
    Error(WalError),
}

#[derive(Debug)]
struct Segment {
    file: FileId,
    number: u64,
    salt: u64,
    first_lsn: Lsn,
    /// One past the last LSN placed in this segment.
    end_lsn: Lsn,
    /// Where the next batch goes.
    write_offset: u64,
    segment_bytes: u64,
    streams: BTreeMap<u64, IndexRange>,
}

#[derive(Debug, Default)]
struct OpenBatch {
    /// `BATCH_HEADER_BYTES` reserved for the header, then frames.
    buf: Vec<u8>,
    first_lsn: Lsn,
    count: u32,
    streams: BTreeMap<u64, IndexRange>,
}

#[derive(Debug)]
struct InFlight {
    id: IoId,
    end_lsn: Lsn,
    done: bool,
}

#[derive(Debug)]
enum Pending {
    Write,
    Allocate(FileId),
    Retire(FileId),
    Remove,
}

/// A snapshot of the batcher's counters, for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatcherStats {
    /// Records appended since open.
    pub records_appended: u64,
    /// Batches submitted since open.
    pub batches_written: u64,
    /// Bytes submitted since open (headers and padding included).
    pub bytes_written: u64,
    /// Batch writes in flight now.
    pub batches_in_flight: usize,
    /// Segments in the log now.
    pub segments_live: usize,
    /// Zero-filled spare files ready now.
    pub segments_spare: usize,
    /// The stream that keeps the oldest segment in the log, and the segments held.
    pub held_by: Option<(u64, usize)>,
    /// How many times a stream was found holding back the configured number of segments.
    pub held_warnings: u64,
    /// Rollovers that found no spare segment and waited for one to be zero-filled (the
    /// log's writes wait meanwhile: each is a stall a p99 shows).
    pub rollover_waits: u64,
}

/// The group-commit state machine (see the module doc).
#[derive(Debug)]
pub struct Batcher {
    config: Config,
    next_lsn: Lsn,
    durable_lsn: Lsn,
    open: OpenBatch,
    queued: VecDeque<OpenBatch>,
    in_flight: VecDeque<InFlight>,
    segments: VecDeque<Segment>,
    /// True once this batcher has opened a segment: only then is the last one writable
    /// (a recovered tail may end in a torn batch and is never written again).
    writable_tail: bool,
    spares: Vec<FileId>,
    /// Whether the next batch waits for a spare to roll over into (counted once per wait).
    waiting_for_spare: bool,
    next_segment: u64,
    next_file: FileId,
    allocating: usize,
    /// Spares to keep: `spare_segments` while `Wal::open` preallocates, then 1.
    spares_wanted: usize,
    retiring: bool,
    pending: HashMap<IoId, Pending>,
    next_io: IoId,
    released: HashMap<u64, u64>,
    removals: VecDeque<Action>,
    failed: Option<WalError>,
    salts: SimRng,
    stats: BatcherStats,
    warned_holder: Option<u64>,
}

impl Batcher {
    /// A batcher continuing the log that `recovered` describes. `next_file` must be above
    /// every file id in use. Leftovers and misfits must have been dealt with by the host.
    /// `salt_seed` seeds the salts of new segment lives: it must differ from run to run
    /// (the host passes fresh randomness; tests a seed they can replay).
    pub fn new(
        config: Config,
        recovered: &Recovered,
        next_file: FileId,
        salt_seed: u64,
    ) -> Batcher {
        config.validate().expect("config validated by the host");
        let segments = recovered
            .segments
            .iter()
            .map(|s| Segment {
                file: s.file,
                number: s.number,
                salt: s.salt,
                first_lsn: s.first_lsn,
                end_lsn: s.end_lsn,
                write_offset: s.end_offset,
                segment_bytes: s.segment_bytes,
                streams: s.streams.clone(),
            })
            .collect();
        let batcher = Batcher {
            next_lsn: recovered.next_lsn,
            durable_lsn: recovered.next_lsn,
            open: OpenBatch::new(recovered.next_lsn, config.batch_bytes_target),
            queued: VecDeque::new(),
            in_flight: VecDeque::new(),
            segments,
            writable_tail: false,
            spares: recovered.spares.clone(),
            waiting_for_spare: false,
            next_segment: recovered.next_segment,
            next_file,
            allocating: 0,
            spares_wanted: 1,
            retiring: false,
            pending: HashMap::new(),
            next_io: 1,
            released: HashMap::new(),
            removals: VecDeque::new(),
            failed: None,
            salts: SimRng::new(salt_seed),
            stats: BatcherStats::default(),
            warned_holder: None,
            config,
        };
        batcher.check_invariants();
        batcher
    }

    /// Gives `record` the next LSN and adds it to the open batch (closing that batch first
    /// if the record would take it past the batch target).
    pub fn append(
        &mut self,
        stream: u64,
        index: u64,
        kind: u8,
        payload: &[u8],
    ) -> Result<Lsn, AppendRefused> {
        if let Some(e) = &self.failed {
            return Err(AppendRefused::Error(e.clone()));
        }
        if payload.len() > self.config.record_payload_bytes_max {
            return Err(AppendRefused::Error(WalError::RecordTooLarge {
                payload_bytes: payload.len(),
                max_bytes: self.config.record_payload_bytes_max,
            }));
        }
        let frame = frame_bytes(payload.len());
        if self.open.count > 0 && self.open.buf.len() + frame > self.config.batch_bytes_target {
            if self.queued.len() >= BATCHES_QUEUED_MAX {
                return Err(AppendRefused::Full);
            }
            let next = OpenBatch::new(self.next_lsn, self.config.batch_bytes_target);
            self.queued
                .push_back(std::mem::replace(&mut self.open, next));
        }
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        encode_record(
            &mut self.open.buf,
            &RecordView {
                lsn,
                stream,
                index,
                kind,
                payload,
            },
        );
        self.open.count += 1;
        let r = self.open.streams.entry(stream).or_insert((index, index));
        r.0 = r.0.min(index);
        r.1 = r.1.max(index);
        self.stats.records_appended += 1;
        #[cfg(debug_assertions)]
        self.check_invariants();
        Ok(lsn)
    }

    /// The next I/O to start, or `None` when there is nothing to do until an append or a
    /// completion. Call it until it returns `None`.
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.failed.is_some() {
            return None;
        }
        let action = self.next_write().or_else(|| self.next_housekeeping());
        #[cfg(debug_assertions)]
        self.check_invariants();
        action
    }

    fn io_id(&mut self, what: Pending) -> IoId {
        let id = self.next_io;
        self.next_io += 1;
        self.pending.insert(id, what);
        id
    }

    fn next_write(&mut self) -> Option<Action> {
        if self.in_flight.len() >= self.config.batches_in_flight_max {
            return None;
        }
        let batch_len = match self.queued.front() {
            Some(b) => b.buf.len(),
            None if self.open.count > 0 => self.open.buf.len(),
            None => return None,
        };
        let on_disk = batch_bytes(batch_len - BATCH_HEADER_BYTES) as u64;
        let fits = self.writable_tail
            && self
                .segments
                .back()
                .is_some_and(|s| s.write_offset + on_disk <= s.segment_bytes);
        if !fits && self.spares.is_empty() {
            if !self.waiting_for_spare {
                self.waiting_for_spare = true;
                self.stats.rollover_waits += 1;
            }
            return None; // housekeeping allocates one
        }
        self.waiting_for_spare = false;
        let mut batch = match self.queued.pop_front() {
            Some(b) => b,
            None => {
                let next = OpenBatch::new(self.next_lsn, self.config.batch_bytes_target);
                std::mem::replace(&mut self.open, next)
            }
        };
        let end_lsn = batch.first_lsn + batch.count as u64;
        let mut prefix = Vec::new();
        if !fits {
            let file = self.spares.pop().expect("checked above");
            let number = self.next_segment;
            self.next_segment += 1;
            let salt = self.salts.next_u64();
            let mut block = vec![0; BLOCK_BYTES];
            let segment_bytes = self.config.segment_bytes;
            encode_segment_header(
                &mut block,
                &SegmentHeader {
                    number,
                    first_lsn: batch.first_lsn,
                    segment_bytes,
                    salt,
                },
            );
            prefix = block;
            self.segments.push_back(Segment {
                file,
                number,
                salt,
                first_lsn: batch.first_lsn,
                end_lsn: batch.first_lsn,
                write_offset: 0,
                segment_bytes,
                streams: BTreeMap::new(),
            });
            self.writable_tail = true;
        }
        let seg = self.segments.back_mut().expect("a writable segment");
        let records_bytes = (batch.buf.len() - BATCH_HEADER_BYTES) as u32;
        batch.buf.resize(batch_bytes(records_bytes as usize), 0);
        let on_disk = batch.buf.len() as u32;
        let records_crc = records_crc(
            &batch.buf[BATCH_HEADER_BYTES..BATCH_HEADER_BYTES + records_bytes as usize],
        );
        encode_batch_header(
            &mut batch.buf,
            &BatchHeader {
                salt: seg.salt,
                first_lsn: batch.first_lsn,
                durable_lsn: self.durable_lsn,
                batch_bytes: on_disk,
                record_count: batch.count,
                records_bytes,
                records_crc,
            },
        );
        let bytes = if prefix.is_empty() {
            batch.buf
        } else {
            prefix.extend_from_slice(&batch.buf);
            prefix
        };
        let offset = seg.write_offset;
        seg.write_offset += bytes.len() as u64;
        seg.end_lsn = end_lsn;
        for (stream, (lo, hi)) in batch.streams {
            let r = seg.streams.entry(stream).or_insert((lo, hi));
            r.0 = r.0.min(lo);
            r.1 = r.1.max(hi);
        }
        let file = seg.file;
        let id = self.io_id(Pending::Write);
        self.in_flight.push_back(InFlight {
            id,
            end_lsn,
            done: false,
        });
        self.stats.batches_written += 1;
        self.stats.bytes_written += bytes.len() as u64;
        Some(Action::Write {
            id,
            file,
            offset,
            bytes,
        })
    }

    fn next_housekeeping(&mut self) -> Option<Action> {
        if let Some(remove) = self.removals.pop_front() {
            return Some(remove);
        }
        // While running, allocate only when no spare is left: a segment that rolls over is
        // normally replaced by the head retiring, and a 64 MiB zero-fill competing with the
        // log's own writes is what a p99 notices. `Wal::open` fills the pool up front
        // (`preallocate`).
        if self.spares.len() + self.allocating < self.spares_wanted {
            let file = self.next_file;
            self.next_file += 1;
            self.allocating += 1;
            let id = self.io_id(Pending::Allocate(file));
            return Some(Action::Allocate {
                id,
                file,
                bytes: self.config.segment_bytes,
            });
        }
        if !self.retiring && self.head_retirable() {
            self.retiring = true;
            let file = self.segments[0].file;
            let id = self.io_id(Pending::Retire(file));
            return Some(Action::Retire { id, file });
        }
        None
    }

    /// The oldest segment may leave the log when a later one exists (so the chain keeps its
    /// LSN continuity), all its records are durable, and every stream in it has released them.
    fn head_retirable(&mut self) -> bool {
        if self.segments.len() < 2 || self.segments[1].first_lsn > self.durable_lsn {
            return false;
        }
        let holder = self.segments[0]
            .streams
            .iter()
            .find(|(stream, (_, hi))| self.released.get(stream).is_none_or(|below| hi >= below))
            .map(|(stream, _)| *stream);
        match holder {
            None => {
                self.warned_holder = None;
                true
            }
            Some(stream) => {
                let held = self.segments.len() - 1;
                if held >= self.config.segments_held_warn && self.warned_holder != Some(stream) {
                    self.warned_holder = Some(stream);
                    self.stats.held_warnings += 1;
                    log::warn!(
                        "wal: stream {stream} holds back {held} segments (it has not released \
                         index {} in segment {})",
                        self.segments[0].streams[&stream].1,
                        self.segments[0].number
                    );
                }
                false
            }
        }
    }

    /// Reports the outcome of the I/O `id`. An error fails the log for good (fail-stop: a
    /// write whose outcome is unknown cannot be retried safely).
    pub fn complete(&mut self, id: IoId, result: Result<(), String>) {
        let what = self
            .pending
            .remove(&id)
            .expect("completion of an I/O the batcher started");
        if let Err(reason) = result {
            if self.failed.is_none() {
                self.failed = Some(WalError::Failed { reason });
            }
            return;
        }
        match what {
            Pending::Write => {
                let entry = self
                    .in_flight
                    .iter_mut()
                    .find(|f| f.id == id)
                    .expect("a write in flight");
                entry.done = true;
                while self.in_flight.front().is_some_and(|f| f.done) {
                    let f = self.in_flight.pop_front().expect("front exists");
                    debug_assert!(f.end_lsn > self.durable_lsn);
                    self.durable_lsn = f.end_lsn;
                }
            }
            Pending::Allocate(file) => {
                self.allocating -= 1;
                self.spares.push(file);
            }
            Pending::Retire(file) => {
                self.retiring = false;
                let head = self.segments.pop_front().expect("the retired head");
                debug_assert_eq!(head.file, file);
                self.spares.push(file);
                let keep = self
                    .config
                    .spare_segments
                    .max(self.config.recycled_segments_max);
                if self.spares.len() > keep {
                    let file = self.spares.remove(0);
                    let id = self.io_id(Pending::Remove);
                    self.removals.push_back(Action::Remove { id, file });
                }
            }
            Pending::Remove => {}
        }
        #[cfg(debug_assertions)]
        self.check_invariants();
    }

    /// The next allocation needed to fill the spare pool to `spare_segments` (the host calls
    /// this at open, completing each, until it returns `None`).
    pub fn preallocate(&mut self) -> Option<Action> {
        self.spares_wanted = self.config.spare_segments.max(1);
        let action = self.next_housekeeping();
        self.spares_wanted = 1;
        action
    }

    /// Records that `stream` no longer needs its records below `below_index` (its tree has
    /// checkpointed them). Never lowers an earlier release.
    pub fn release(&mut self, stream: u64, below_index: u64) {
        let r = self.released.entry(stream).or_insert(0);
        *r = (*r).max(below_index);
    }

    /// Every LSN below this is durable (a prefix of the log: nothing after a hole counts).
    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    /// The LSN the next append will get.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Fails the log for good from outside (the host lost the means to drive it): appends
    /// and waits get `reason` instead of waiting for a write that will never come.
    pub fn fail(&mut self, reason: String) {
        if self.failed.is_none() {
            self.failed = Some(WalError::Failed { reason });
        }
    }

    /// The error that failed the log, if it has failed.
    pub fn failed(&self) -> Option<&WalError> {
        self.failed.as_ref()
    }

    /// Records are waiting for a write slot or a segment.
    pub fn has_unsubmitted(&self) -> bool {
        self.open.count > 0 || !self.queued.is_empty()
    }

    /// No I/O of any kind is outstanding.
    pub fn is_quiet(&self) -> bool {
        self.pending.is_empty() && self.removals.is_empty()
    }

    /// The segments that may hold records of `stream` at `from_index` or above, oldest
    /// first, as (file, salt, first LSN, bytes written).
    pub fn segments_for(&self, stream: u64, from_index: u64) -> Vec<(FileId, u64, Lsn, u64)> {
        // From the first segment that holds the range on, every segment with the stream:
        // a later rewrite of a lower index still truncates what the range would return.
        self.segments
            .iter()
            .skip_while(|s| {
                s.streams
                    .get(&stream)
                    .is_none_or(|(_, hi)| *hi < from_index)
            })
            .filter(|s| s.streams.contains_key(&stream))
            .map(|s| (s.file, s.salt, s.first_lsn, s.write_offset))
            .collect()
    }

    /// Whether `stream` has records it has not released in a segment older than the newest:
    /// records that keep, or will keep, a segment in the log after everything else in it
    /// is released. Asked of any one stream, unlike [`BatcherStats::held_by`], which names
    /// only the first holder of the oldest segment, so that every such stream can move on.
    pub fn holds_back(&self, stream: u64) -> bool {
        let Some(below) = self.segments.len().checked_sub(1) else {
            return false;
        };
        self.segments.iter().take(below).any(|segment| {
            segment
                .streams
                .get(&stream)
                .is_some_and(|(_, hi)| self.released.get(&stream).is_none_or(|b| hi >= b))
        })
    }

    /// Counters and gauges for metrics.
    pub fn stats(&self) -> BatcherStats {
        let mut stats = self.stats.clone();
        stats.batches_in_flight = self.in_flight.len();
        stats.segments_live = self.segments.len();
        stats.segments_spare = self.spares.len();
        stats.held_by = self.segments.front().and_then(|head| {
            head.streams
                .iter()
                .find(|(stream, (_, hi))| self.released.get(stream).is_none_or(|b| hi >= b))
                .map(|(stream, _)| (*stream, self.segments.len()))
        });
        stats
    }

    /// Asserts what must always hold; called after every mutation in debug builds and tests.
    pub fn check_invariants(&self) {
        assert!(self.durable_lsn <= self.next_lsn, "durable beyond appended");
        assert!(self.in_flight.len() <= self.config.batches_in_flight_max);
        assert!(self.queued.len() <= BATCHES_QUEUED_MAX);
        let mut lsn = self.durable_lsn;
        for f in &self.in_flight {
            assert!(f.end_lsn > lsn, "in-flight batches out of LSN order");
            lsn = f.end_lsn;
        }
        for b in self.queued.iter().chain(std::iter::once(&self.open)) {
            assert_eq!(b.first_lsn, lsn, "batches must cover the LSNs without gap");
            assert!(b.buf.len() >= BATCH_HEADER_BYTES);
            lsn += b.count as u64;
        }
        assert_eq!(
            lsn, self.next_lsn,
            "every appended LSN is in exactly one batch"
        );
        let mut prev: Option<&Segment> = None;
        for s in &self.segments {
            assert!(s.write_offset <= s.segment_bytes);
            assert!(
                s.write_offset % BLOCK_BYTES as u64 == 0,
                "batches start on blocks"
            );
            assert!(s.end_lsn >= s.first_lsn);
            if let Some(p) = prev {
                assert!(s.number > p.number, "segment numbers increase");
                assert!(
                    s.first_lsn >= p.end_lsn,
                    "segments follow each other in LSN order"
                );
            }
            prev = Some(s);
        }
        if let Some(last) = self.segments.back() {
            assert!(self.next_segment > last.number);
            if self.writable_tail {
                let submitted = self
                    .queued
                    .front()
                    .map_or(self.open.first_lsn, |b| b.first_lsn);
                assert_eq!(
                    last.end_lsn, submitted,
                    "the tail segment ends where unsubmitted begin"
                );
            }
        }
        let mut files: Vec<FileId> = self.segments.iter().map(|s| s.file).collect();
        files.extend(&self.spares);
        let n = files.len();
        files.sort_unstable();
        files.dedup();
        assert_eq!(files.len(), n, "a file is in one role only");
    }
}

impl OpenBatch {
    fn new(first_lsn: Lsn, bytes_target: usize) -> OpenBatch {
        // Room for a full batch up front: growing by doubling from a few bytes cost more
        // copying than the records themselves.
        let mut buf = Vec::with_capacity(bytes_target.min(64 * 1024));
        buf.resize(BATCH_HEADER_BYTES, 0);
        OpenBatch {
            buf,
            first_lsn,
            count: 0,
            streams: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The batcher at its boundary: a script of appends, polls and completions in, a trace
    //! of what it asked for and what became durable out.

    use super::*;

    fn run(script: &str) -> String {
        run_with(Config::test_min(), script)
    }

    fn run_with(config: Config, script: &str) -> String {
        let recovered = Recovered {
            next_lsn: 1,
            next_segment: 1,
            ..Recovered::default()
        };
        let mut b = Batcher::new(config, &recovered, 1, 7);
        let mut out = String::new();
        for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let n = |i: usize| words[i].parse::<u64>().expect("number");
            let said = match words[0] {
                "append" => match b.append(n(1), n(2), 0, &vec![7; n(3) as usize]) {
                    Ok(lsn) => format!("lsn {lsn}"),
                    Err(AppendRefused::Full) => "full".into(),
                    Err(AppendRefused::Error(e)) => format!("error {e}"),
                },
                "poll" => {
                    let mut acts = Vec::new();
                    while let Some(a) = b.poll_action() {
                        acts.push(match a {
                            Action::Write {
                                id,
                                file,
                                offset,
                                bytes,
                            } => format!("write#{id} file {file} @{offset} {}B", bytes.len()),
                            Action::Allocate { id, file, .. } => {
                                format!("allocate#{id} file {file}")
                            }
                            Action::Retire { id, file } => format!("retire#{id} file {file}"),
                            Action::Remove { id, file } => format!("remove#{id} file {file}"),
                        });
                    }
                    if acts.is_empty() {
                        "idle".into()
                    } else {
                        acts.join(", ")
                    }
                }
                "done" => {
                    b.complete(n(1), Ok(()));
                    format!("durable < {}", b.durable_lsn())
                }
                "fail" => {
                    b.complete(n(1), Err("boom".into()));
                    format!("failed: {}", b.failed().is_some())
                }
                "flush" => {
                    // Start and complete every I/O until the batcher asks for nothing more.
                    let mut kinds = Vec::new();
                    while let Some(a) = b.poll_action() {
                        let (id, kind) = match a {
                            Action::Write { id, .. } => (id, "write"),
                            Action::Allocate { id, .. } => (id, "allocate"),
                            Action::Retire { id, .. } => (id, "retire"),
                            Action::Remove { id, .. } => (id, "remove"),
                        };
                        b.complete(id, Ok(()));
                        kinds.push(kind);
                    }
                    format!("{} durable < {}", kinds.join(" "), b.durable_lsn())
                }
                "release" => {
                    b.release(n(1), n(2));
                    "ok".into()
                }
                "stats" => {
                    let s = b.stats();
                    format!(
                        "live {} spare {} in flight {} held by {:?}",
                        s.segments_live, s.segments_spare, s.batches_in_flight, s.held_by
                    )
                }
                "waits" => format!("rollover waits {}", b.stats().rollover_waits),
                other => panic!("unknown command {other}"),
            };
            b.check_invariants();
            out.push_str(&format!("{line:<20} -> {said}\n"));
        }
        out
    }

    fn check(script: &str, expected: &str) {
        let got = run(script);
        let want: String = expected
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        let norm = |text: &str| -> String {
            text.lines()
                .map(|l| {
                    let (a, b) = l.split_once("->").unwrap_or((l, ""));
                    format!("{} -> {}\n", a.trim(), b.trim())
                })
                .collect()
        };
        assert_eq!(norm(&got), norm(&want), "\n--- got ---\n{got}");
    }

    #[test]
    fn lone_append_is_written_at_once_with_the_segment_header() {
        check(
            "poll
             done 1
             append 1 1 100
             poll
             done 2
             poll",
            "poll -> allocate#1 file 1
             done 1 -> durable < 1
             append 1 1 100 -> lsn 1
             poll -> write#2 file 1 @0 8192B, allocate#3 file 2
             done 2 -> durable < 2
             poll -> idle",
        );
    }

    #[test]
    fn appends_during_a_write_join_the_next_batch_which_starts_on_a_fresh_block() {
        check(
            "poll
             done 1
             append 1 1 100
             poll
             append 1 2 100
             append 2 1 100
             poll
             done 4
             done 2
             poll",
            "poll -> allocate#1 file 1
             done 1 -> durable < 1
             append 1 1 100 -> lsn 1
             poll -> write#2 file 1 @0 8192B, allocate#3 file 2
             append 1 2 100 -> lsn 2
             append 2 1 100 -> lsn 3
             poll -> write#4 file 1 @8192 4096B
             done 4 -> durable < 1
             done 2 -> durable < 4
             poll -> idle",
        );
    }

    #[test]
    fn writes_in_flight_are_bounded_and_a_full_queue_refuses() {
        // test_min: 4 writes in flight, a batch closes past 8 KiB, 4 sealed batches queue.
        check(
            "flush
             append 1 1 10
             poll
             append 1 2 10
             poll
             append 1 3 10
             poll
             append 1 4 10
             poll
             append 1 5 4000
             append 1 6 4000
             append 1 7 4000
             append 1 8 4000
             append 1 9 4000
             append 1 10 4000
             append 1 11 4000
             append 1 12 4000
             append 1 13 4000
             append 1 14 4000
             append 1 15 4000
             stats",
            "flush -> allocate durable < 1
             append 1 1 10 -> lsn 1
             poll -> write#2 file 1 @0 8192B, allocate#3 file 2
             append 1 2 10 -> lsn 2
             poll -> write#4 file 1 @8192 4096B
             append 1 3 10 -> lsn 3
             poll -> write#5 file 1 @12288 4096B
             append 1 4 10 -> lsn 4
             poll -> write#6 file 1 @16384 4096B
             append 1 5 4000 -> lsn 5
             append 1 6 4000 -> lsn 6
             append 1 7 4000 -> lsn 7
             append 1 8 4000 -> lsn 8
             append 1 9 4000 -> lsn 9
             append 1 10 4000 -> lsn 10
             append 1 11 4000 -> lsn 11
             append 1 12 4000 -> lsn 12
             append 1 13 4000 -> lsn 13
             append 1 14 4000 -> lsn 14
             append 1 15 4000 -> full
             stats -> live 1 spare 0 in flight 4 held by Some((1, 1))",
        );
    }

    #[test]
    fn a_failed_write_fails_the_log_for_good() {
        check(
            "poll
             done 1
             append 1 1 10
             poll
             append 1 2 10
             poll
             done 4
             fail 2
             append 1 3 10
             poll",
            "poll -> allocate#1 file 1
             done 1 -> durable < 1
             append 1 1 10 -> lsn 1
             poll -> write#2 file 1 @0 8192B, allocate#3 file 2
             append 1 2 10 -> lsn 2
             poll -> write#4 file 1 @8192 4096B
             done 4 -> durable < 1
             fail 2 -> failed: true
             append 1 3 10 -> error wal: failed by an earlier error: boom
             poll -> idle",
        );
    }

    #[test]
    fn a_record_over_the_limit_is_refused_naming_its_size() {
        check(
            "append 1 1 8193",
            "append 1 1 8193 -> error wal: record payload of 8193 bytes exceeds the 8192-byte maximum",
        );
    }

    /// Sixteen one-block batches over two streams (64 KiB segments: a header block and 15
    /// batches each, so the log rolls over once), then the streams release them; returns
    /// the trace's last `lines` lines.
    fn roll_over_and_release(config: Config, lines: usize) -> Vec<String> {
        let mut script = String::from("flush\n");
        for i in 1..=16 {
            script.push_str(&format!("append {} {i} 1000\nflush\n", i % 2));
        }
        script.push_str(
            "stats\nrelease 0 100\nflush\nstats\nrelease 1 15\nflush\nrelease 1 16\nflush\nstats\nwaits\n",
        );
        let got = run_with(config, &script);
        let mut tail: Vec<String> = got
            .lines()
            .rev()
            .take(lines)
            .map(|l| {
                let (a, b) = l.split_once("->").expect("a trace line");
                format!("{} -> {}", a.trim(), b.trim())
            })
            .collect();
        tail.reverse();
        tail
    }

    #[test]
    fn segments_roll_over_and_the_head_is_recycled_once_every_stream_released_it() {
        let want = [
            "stats -> live 2 spare 1 in flight 0 held by Some((0, 2))",
            "release 0 100 -> ok",
            "flush -> durable < 17",
            "stats -> live 2 spare 1 in flight 0 held by Some((1, 2))",
            "release 1 15 -> ok",
            "flush -> durable < 17", // stream 1 still needs index 15
            "release 1 16 -> ok",
            "flush -> retire remove durable < 17", // one spare is kept, the other removed
            "stats -> live 1 spare 1 in flight 0 held by None",
            // The spare allocated after the first rollover was ready before the second.
            "waits -> rollover waits 0",
        ];
        assert_eq!(roll_over_and_release(Config::test_min(), want.len()), want);
    }

    #[test]
    fn retired_segments_are_kept_for_reuse_up_to_the_recycling_bound() {
        let config = Config {
            recycled_segments_max: 2,
            ..Config::test_min()
        };
        let want = [
            "release 1 16 -> ok",
            "flush -> retire durable < 17", // kept: two spares now, none removed
            "stats -> live 1 spare 2 in flight 0 held by None",
            "waits -> rollover waits 0",
        ];
        assert_eq!(roll_over_and_release(config, want.len()), want);
    }

    #[test]
    fn a_rollover_that_finds_no_spare_waits_and_is_counted_once() {
        // A new log has no spare: its first batch waits for the first segment's
        // allocation, however often it is polled meanwhile, and that is one wait.
        check(
            "append 1 1 100
             waits
             poll
             waits
             poll
             waits
             done 1
             poll
             waits",
            "append 1 1 100 -> lsn 1
             waits -> rollover waits 0
             poll -> allocate#1 file 1
             waits -> rollover waits 1
             poll -> idle
             waits -> rollover waits 1
             done 1 -> durable < 1
             poll -> write#2 file 1 @0 8192B, allocate#3 file 2
             waits -> rollover waits 1",
        );
    }
}
