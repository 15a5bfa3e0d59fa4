//! The on-disk layout: segment header, batch header and record frame (see `DESIGN.md`).
//!
//! Every structure carries a crc32 and is checked after reading; encoders and decoders live
//! side by side so that a field can never be written in one place and read in another.

use crate::limits::{
    round_up, BATCH_HEADER_BYTES, BLOCK_BYTES, RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES,
    RECORD_PAYLOAD_BYTES_MAX, SEGMENT_HEADER_BYTES,
};

/// The first eight bytes of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"PCWALSEG";
/// The segment format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The first four bytes of every batch.
pub const BATCH_MAGIC: [u8; 4] = *b"PCWB";

/// A segment's identity, from the header in its first block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Increasing along the log (orders the chain of segments).
    pub number: u64,
    /// Random, new for every life of a segment file: every batch written into this life
    /// carries it, so that a batch left over from an earlier life of the file (or from a
    /// life whose header a crash tore) can never validate in this one.
    pub salt: u64,
    /// The LSN of the first record written into this segment.
    pub first_lsn: u64,
    /// The size of the segment file.
    pub segment_bytes: u64,
}

/// The header at the start of every batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// The salt of the segment life this batch was written into: a batch left over from an
    /// earlier life of the file carries another salt and so never validates.
    pub salt: u64,
    /// The LSN of the batch's first record.
    pub first_lsn: u64,
    /// When the batch was submitted, every LSN below this was already durable: a batch whose
    /// `durable_lsn` is above a hole proves the hole was once durable (media corruption).
    pub durable_lsn: u64,
    /// Bytes the batch occupies on disk, header and padding included (whole blocks).
    pub batch_bytes: u32,
    /// Records in the batch.
    pub record_count: u32,
    /// Bytes of record frames after the header (before the padding).
    pub records_bytes: u32,
    /// crc32 of those `records_bytes`: tied by the header's own crc to this life's salt, it
    /// rejects a batch whose header sector landed but some record sectors did not, leaving
    /// an earlier life's records (valid on their own) in their place.
    pub records_crc: u32,
}

/// A decoded record frame, borrowing its payload from the buffer it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The record's position in the whole log.
    pub lsn: u64,
    /// The stream (consensus group) the record belongs to.
    pub stream: u64,
    /// The record's index within its stream.
    pub index: u64,
    /// An opaque tag for the host (entry, hard state, ...).
    pub kind: u8,
    /// The payload bytes.
    pub payload: &'a [u8],
}

/// Bytes a record frame of `payload_bytes` occupies, alignment padding included.
pub const fn frame_bytes(payload_bytes: usize) -> usize {
    round_up(RECORD_HEADER_BYTES + payload_bytes, RECORD_ALIGN_BYTES)
}

/// Bytes on disk of a batch whose frames take `records_bytes`: header plus whole blocks.
pub const fn batch_bytes(records_bytes: usize) -> usize {
    round_up(BATCH_HEADER_BYTES + records_bytes, BLOCK_BYTES)
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// Writes a segment header into the first `SEGMENT_HEADER_BYTES` of `block`.
pub fn encode_segment_header(block: &mut [u8], header: &SegmentHeader) {
    let b = &mut block[..SEGMENT_HEADER_BYTES];
    b.fill(0);
    b[0..8].copy_from_slice(&SEGMENT_MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&header.number.to_le_bytes());
    b[24..32].copy_from_slice(&header.first_lsn.to_le_bytes());
    b[32..40].copy_from_slice(&header.segment_bytes.to_le_bytes());
    b[40..44].copy_from_slice(&(BLOCK_BYTES as u32).to_le_bytes());
    b[48..56].copy_from_slice(&header.salt.to_le_bytes());
    let crc = segment_header_crc(b);
    b[12..16].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(decode_segment_header(block), Some(*header));
}

fn segment_header_crc(b: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&b[0..12]);
    h.update(&b[16..SEGMENT_HEADER_BYTES]);
    h.finalize()
}

/// Reads a segment header; `None` for anything that is not a valid one (zeros, another
/// version, a torn or stale header): such a file is a spare.
pub fn decode_segment_header(block: &[u8]) -> Option<SegmentHeader> {
    if block.len() < SEGMENT_HEADER_BYTES || block[0..8] != SEGMENT_MAGIC {
        return None;
    }
    if u32_at(block, 8) != FORMAT_VERSION || u32_at(block, 12) != segment_header_crc(block) {
        return None;
    }
    if u32_at(block, 40) as usize != BLOCK_BYTES {
        return None;
    }
    let header = SegmentHeader {
        number: u64_at(block, 16),
        first_lsn: u64_at(block, 24),
        segment_bytes: u64_at(block, 32),
        salt: u64_at(block, 48),
    };
    (header.number > 0 && header.first_lsn > 0).then_some(header)
}

/// Writes a batch header into the first `BATCH_HEADER_BYTES` of `buf`.
pub fn encode_batch_header(buf: &mut [u8], header: &BatchHeader) {
    let b = &mut buf[..BATCH_HEADER_BYTES];
    b.fill(0);
    b[0..4].copy_from_slice(&BATCH_MAGIC);
    b[8..16].copy_from_slice(&header.salt.to_le_bytes());
    b[16..24].copy_from_slice(&header.first_lsn.to_le_bytes());
    b[24..32].copy_from_slice(&header.durable_lsn.to_le_bytes());
    b[32..36].copy_from_slice(&header.batch_bytes.to_le_bytes());
    b[36..40].copy_from_slice(&header.record_count.to_le_bytes());
    b[40..44].copy_from_slice(&header.records_bytes.to_le_bytes());
    b[44..48].copy_from_slice(&header.records_crc.to_le_bytes());
    let crc = crc32fast::hash(&b[8..BATCH_HEADER_BYTES]);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(decode_batch_header(buf, header.salt), Some(*header));
}

/// Reads a batch header written into the segment life with `salt`; `None` unless it is
/// valid, belongs to that life and describes a well-formed extent.
pub fn decode_batch_header(buf: &[u8], salt: u64) -> Option<BatchHeader> {
    if buf.len() < BATCH_HEADER_BYTES || buf[0..4] != BATCH_MAGIC {
        return None;
    }
    if u32_at(buf, 4) != crc32fast::hash(&buf[8..BATCH_HEADER_BYTES]) {
        return None;
    }
    let header = BatchHeader {
        salt: u64_at(buf, 8),
        first_lsn: u64_at(buf, 16),
        durable_lsn: u64_at(buf, 24),
        batch_bytes: u32_at(buf, 32),
        record_count: u32_at(buf, 36),
        records_bytes: u32_at(buf, 40),
        records_crc: u32_at(buf, 44),
    };
    let well_formed = header.salt == salt
        && header.first_lsn > 0
        && header.durable_lsn <= header.first_lsn
        && header.record_count > 0
        && header.batch_bytes as usize == batch_bytes(header.records_bytes as usize)
        && header.records_bytes as usize >= header.record_count as usize * RECORD_HEADER_BYTES;
    well_formed.then_some(header)
}

/// The crc32 a batch header carries for its records region.
pub fn records_crc(records: &[u8]) -> u32 {
    crc32fast::hash(records)
}

/// Appends one record frame to `out`, padded to `RECORD_ALIGN_BYTES`.
pub fn encode_record(out: &mut Vec<u8>, record: &RecordView<'_>) {
    assert!(record.payload.len() <= RECORD_PAYLOAD_BYTES_MAX);
    let start = out.len();
    debug_assert_eq!(start % RECORD_ALIGN_BYTES, 0);
    out.extend_from_slice(&(record.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&record.lsn.to_le_bytes());
    out.extend_from_slice(&record.stream.to_le_bytes());
    out.extend_from_slice(&record.index.to_le_bytes());
    out.push(record.kind);
    out.extend_from_slice(&[0; 7]);
    out.extend_from_slice(record.payload);
    let crc = record_crc(&out[start..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.resize(start + frame_bytes(record.payload.len()), 0);
}

fn record_crc(frame: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&frame[0..4]);
    h.update(&frame[8..]);
    h.finalize()
}

/// Why a record frame did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordFault {
    /// The frame runs past the bytes available.
    Truncated,
    /// The length field is beyond the largest payload.
    BadLength,
    /// The crc32 does not match.
    BadChecksum,
}

/// Decodes the frame at the start of `buf`, returning it and the bytes it occupies.
pub fn decode_record(buf: &[u8]) -> Result<(RecordView<'_>, usize), RecordFault> {
    if buf.len() < RECORD_HEADER_BYTES {
        return Err(RecordFault::Truncated);
    }
    let len = u32_at(buf, 0) as usize;
    if len > RECORD_PAYLOAD_BYTES_MAX {
        return Err(RecordFault::BadLength);
    }
    let end = RECORD_HEADER_BYTES + len;
    if buf.len() < end {
        return Err(RecordFault::Truncated);
    }
    if u32_at(buf, 4) != record_crc(&buf[..end]) {
        return Err(RecordFault::BadChecksum);
    }
    let view = RecordView {
        lsn: u64_at(buf, 8),
        stream: u64_at(buf, 16),
        index: u64_at(buf, 24),
        kind: buf[32],
        payload: &buf[RECORD_HEADER_BYTES..end],
    };
    Ok((view, frame_bytes(len).min(buf.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_detects_any_flipped_bit() {
        let mut out = Vec::new();
        let rec = RecordView {
            lsn: 7,
            stream: 3,
            index: 9,
            kind: 2,
            payload: b"hello",
        };
        encode_record(&mut out, &rec);
        assert_eq!(out.len(), frame_bytes(5));
        assert_eq!(decode_record(&out), Ok((rec, out.len())));
        for bit in 0..(RECORD_HEADER_BYTES + 5) * 8 {
            let mut bad = out.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_record(&bad).is_err(), "bit {bit} flip undetected");
        }
    }

    #[test]
    fn headers_round_trip_and_reject_another_segment() {
        let mut block = vec![0; BLOCK_BYTES];
        let seg = SegmentHeader {
            number: 4,
            first_lsn: 100,
            segment_bytes: 1 << 20,
            salt: 0xfeed,
        };
        encode_segment_header(&mut block, &seg);
        assert_eq!(decode_segment_header(&block), Some(seg));
        block[20] ^= 1;
        assert_eq!(decode_segment_header(&block), None);

        let batch = BatchHeader {
            salt: 0xfeed,
            first_lsn: 100,
            durable_lsn: 90,
            batch_bytes: batch_bytes(48) as u32,
            record_count: 1,
            records_bytes: 48,
            records_crc: 0x1234,
        };
        encode_batch_header(&mut block, &batch);
        assert_eq!(decode_batch_header(&block, 0xfeed), Some(batch));
        assert_eq!(decode_batch_header(&block, 0xbeef), None);
        assert_eq!(decode_batch_header(&[0; 64], 0xfeed), None);
    }
}
