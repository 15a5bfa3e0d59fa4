//! Recovery: rebuilding the log's state from the bytes of its segment files, with no I/O.
//!
//! The async `Wal::open` reads every file and hands the bytes here; the fuzz target and the
//! property tests call [`recover`] directly. The rules, and why they are safe, are in
//! `DESIGN.md` ("Recovery").

use std::collections::BTreeMap;

use crate::format::{
    decode_batch_header, decode_record, decode_segment_header, records_crc, RecordView,
};
use crate::limits::{BATCH_HEADER_BYTES, BLOCK_BYTES, SEGMENT_BYTES_MIN};
use crate::{FileId, Lsn, WalError};

/// The lowest and highest stream index a segment holds for one stream.
pub type IndexRange = (u64, u64);

/// One segment that recovery kept in the log, in chain order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredSegment {
    /// The file holding it.
    pub file: FileId,
    /// Its segment number.
    pub number: u64,
    /// The salt of its current life.
    pub salt: u64,
    /// Its first LSN.
    pub first_lsn: Lsn,
    /// One past its last valid record's LSN.
    pub end_lsn: Lsn,
    /// The offset just past its last valid batch.
    pub end_offset: u64,
    /// The size of the file.
    pub segment_bytes: u64,
    /// For each stream with records here, the lowest and highest index.
    pub streams: BTreeMap<u64, IndexRange>,
}

/// What recovery found: the chain to keep and what to do with every other file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The segments of the log, oldest first.
    pub segments: Vec<RecoveredSegment>,
    /// Files without a valid header: zero-filled or retired, ready to be reused.
    pub spares: Vec<FileId>,
    /// Files with a valid header beyond the cut (written by batches that were never
    /// acknowledged): their headers must be zeroed before anything new is written.
    pub leftovers: Vec<FileId>,
    /// Files whose size cannot be a segment (an allocation cut short): to be removed.
    pub misfits: Vec<FileId>,
    /// The LSN the next append gets.
    pub next_lsn: Lsn,
    /// The number the next segment gets: above every number seen in any header.
    pub next_segment: u64,
    /// (segment, offset) where recovery found the chain broken and cut everything after,
    /// if it did; a torn batch at the very end of the last segment is cut silently.
    pub cut_at: Option<(u64, u64)>,
}

/// Scans batches of the segment life `salt` in `bytes` from `offset`, expecting LSN `expected`,
/// calling `visit` for every record of every complete, valid batch; returns where the scan
/// stopped and the next expected LSN.
pub fn scan_batches(
    bytes: &[u8],
    salt: u64,
    mut offset: usize,
    mut expected: Lsn,
    visit: &mut dyn FnMut(&RecordView<'_>),
) -> (usize, Lsn) {
    let mut records = Vec::new();
    while offset + BATCH_HEADER_BYTES <= bytes.len() {
        let Some(h) = decode_batch_header(&bytes[offset..], salt) else {
            break;
        };
        let end = offset + h.batch_bytes as usize;
        if h.first_lsn != expected || end > bytes.len() {
            break;
        }
        let region = &bytes
            [offset + BATCH_HEADER_BYTES..offset + BATCH_HEADER_BYTES + h.records_bytes as usize];
        if records_crc(region) != h.records_crc {
            break; // torn: some record sectors are not this batch's
        }
        records.clear();
        let mut at = 0;
        let mut ok = true;
        while at < region.len() {
            match decode_record(&region[at..]) {
                Ok((rec, used)) if rec.lsn == expected + records.len() as u64 => {
                    records.push(rec);
                    at += used;
                }
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok || records.len() != h.record_count as usize {
            break;
        }
        for rec in &records {
            visit(rec);
        }
        expected += records.len() as u64;
        offset = end;
    }
    (offset, expected)
}

/// Looks for a batch of the segment life `salt` at or after `from` whose writer already knew LSN
/// `hole` to be durable: proof that the hole is damage to acknowledged data.
fn find_durable_beyond(bytes: &[u8], salt: u64, from: usize, hole: Lsn) -> Option<usize> {
    let start = from.next_multiple_of(BLOCK_BYTES).max(BLOCK_BYTES);
    (start..bytes.len().saturating_sub(BATCH_HEADER_BYTES - 1))
        .step_by(BLOCK_BYTES)
        .find(|&o| decode_batch_header(&bytes[o..], salt).is_some_and(|h| h.durable_lsn > hole))
}

/// Recovery as a state machine: [`Recovery::new`] sorts the files by their headers, then the
/// host feeds the segments' bytes one at a time in the order [`Recovery::next_file`] asks
/// for, so that only one segment is in memory at once; [`Recovery::finish`] says what to keep.
#[derive(Debug)]
pub struct Recovery {
    out: Recovered,
    /// Segments with a valid header not yet fed, in number order.
    queue: std::collections::VecDeque<(FileId, u64, Lsn, u64)>,
    /// (segment, offset, expected LSN) once the chain has ended.
    cut: Option<(u64, u64, Lsn)>,
    expected: Option<Lsn>,
}

impl Recovery {
    /// Classifies every file from its size and header block (at least its first
    /// `SEGMENT_HEADER_BYTES`): segment, spare or misfit.
    pub fn new(files: &[(FileId, u64, &[u8])]) -> Result<Recovery, WalError> {
        let mut out = Recovered {
            next_lsn: 1,
            next_segment: 1,
            ..Recovered::default()
        };
        let mut headed = Vec::new();
        for &(file, len, block) in files {
            if len < SEGMENT_BYTES_MIN || len % BLOCK_BYTES as u64 != 0 {
                out.misfits.push(file);
                continue;
            }
            match decode_segment_header(block) {
                None => out.spares.push(file),
                Some(h) if h.segment_bytes != len => {
                    return Err(WalError::Corruption {
                        segment: h.number,
                        offset: 0,
                        reason: format!(
                            "segment header says {} bytes, file {file} has {len}",
                            h.segment_bytes
                        ),
                    })
                }
                Some(h) => headed.push((h.number, file, h.first_lsn, h.salt)),
            }
        }
        headed.sort_unstable();
        if let Some(w) = headed.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(WalError::Corruption {
                segment: w[0].0,
                offset: 0,
                reason: format!("segment number in two files, {} and {}", w[0].1, w[1].1),
            });
        }
        out.next_segment = headed.last().map_or(1, |(n, _, _, _)| n + 1);
        Ok(Recovery {
            out,
            queue: headed
                .into_iter()
                .map(|(n, f, l, s)| (f, n, l, s))
                .collect(),
            cut: None,
            expected: None,
        })
    }

    /// The file whose whole bytes [`Recovery::feed`] wants next, or `None` when done.
    pub fn next_file(&self) -> Option<FileId> {
        self.queue.front().map(|(f, _, _, _)| *f)
    }

    /// Takes the whole bytes of the file [`Recovery::next_file`] named, calling `visit` for
    /// every record kept, in LSN order.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        visit: &mut dyn FnMut(&RecordView<'_>),
    ) -> Result<(), WalError> {
        let (file, number, first, salt) = self.queue.pop_front().expect("feed after next_file");
        if let Some((segment, offset, hole)) = self.cut {
            // A leftover: it must hold nothing its writer knew was durable.
            if let Some(at) = find_durable_beyond(bytes, salt, BLOCK_BYTES, hole) {
                return Err(corrupt(segment, offset, hole, number, at));
            }
            self.out.leftovers.push(file);
            return Ok(());
        }
        if let Some(hole) = self.expected.filter(|e| *e != first) {
            let last = self
                .out
                .segments
                .last()
                .expect("expected is set by a kept segment");
            let (segment, offset) = (last.number, last.end_offset);
            self.cut = Some((segment, offset, hole));
            if let Some(at) = find_durable_beyond(bytes, salt, BLOCK_BYTES, hole) {
                return Err(corrupt(segment, offset, hole, number, at));
            }
            self.out.leftovers.push(file);
            return Ok(());
        }
        let mut streams: BTreeMap<u64, IndexRange> = BTreeMap::new();
        let (end, next) = scan_batches(bytes, salt, BLOCK_BYTES, first, &mut |rec| {
            let r = streams.entry(rec.stream).or_insert((rec.index, rec.index));
            r.0 = r.0.min(rec.index);
            r.1 = r.1.max(rec.index);
            visit(rec);
        });
        if let Some(at) = find_durable_beyond(bytes, salt, end, next) {
            return Err(corrupt(number, end as u64, next, number, at));
        }
        self.expected = Some(next);
        self.out.segments.push(RecoveredSegment {
            file,
            number,
            salt,
            first_lsn: first,
            end_lsn: next,
            end_offset: end as u64,
            segment_bytes: bytes.len() as u64,
            streams,
        });
        Ok(())
    }

    /// What recovery decided, once every file was fed.
    pub fn finish(mut self) -> Recovered {
        assert!(self.queue.is_empty(), "finish before every segment was fed");
        if let Some(last) = self.out.segments.last() {
            self.out.next_lsn = last.end_lsn;
        }
        self.out.cut_at = self.cut.map(|(s, o, _)| (s, o));
        self.out
    }
}

/// Rebuilds the log from all its files' bytes at once (the fuzz target and the tests use
/// this; `Wal::open` feeds [`Recovery`] one segment at a time). Never panics on any input.
pub fn recover(
    files: &[(FileId, &[u8])],
    visit: &mut dyn FnMut(&RecordView<'_>),
) -> Result<Recovered, WalError> {
    let heads: Vec<(FileId, u64, &[u8])> =
        files.iter().map(|&(f, b)| (f, b.len() as u64, b)).collect();
    let mut recovery = Recovery::new(&heads)?;
    while let Some(file) = recovery.next_file() {
        let bytes = files
            .iter()
            .find(|(f, _)| *f == file)
            .map(|(_, b)| *b)
            .unwrap_or(&[]);
        recovery.feed(bytes, visit)?;
    }
    Ok(recovery.finish())
}

fn corrupt(segment: u64, offset: u64, hole: Lsn, later_segment: u64, at: usize) -> WalError {
    WalError::Corruption {
        segment,
        offset,
        reason: format!(
            "record {hole} is missing or damaged, but the batch at segment {later_segment} \
             offset {at} was written after it was acknowledged"
        ),
    }
}
