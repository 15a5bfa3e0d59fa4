//! Snapshot shipping: a snapshot streamed out as checksummed chunks, and a tree built from
//! such a stream (how a new replica gets its data).
//!
//! # Chunk layout
//! ```text
//! 0  u32 magic "PCSH"   4 u8 version   5 u8 last (1 on the final chunk)   6 u16 zero
//! 8  u64 sequence number (0, 1, 2, ...)
//! 16 u32 entry count
//! 20 entries: u32 key length, u32 value length, key, value
//! .. u32 crc32 of everything before it
//! ```

use crate::error::Error;
use crate::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::store::PageStore;
use crate::tree::{Cursor, Direction, Snapshot, Tree, WriteBatch};
use std::ops::Bound;

const SHIP_MAGIC: u32 = u32::from_le_bytes(*b"PCSH");
const SHIP_VERSION: u8 = 1;
const SHIP_HEADER_BYTES: usize = 20;

/// Streams a snapshot out, one chunk at a time.
pub struct ShipStream<S: PageStore> {
    cursor: Cursor<S>,
    seq: u64,
    chunk_bytes: usize,
    done: bool,
}

impl<S: PageStore> Snapshot<S> {
    /// A stream of chunks of about `chunk_bytes` each (at least one item per chunk).
    pub async fn ship(&self, chunk_bytes: usize) -> Result<ShipStream<S>, Error> {
        let cursor = self
            .range::<(Bound<&[u8]>, Bound<&[u8]>)>(
                (Bound::Unbounded, Bound::Unbounded),
                Direction::Forward,
            )
            .await?;
        Ok(ShipStream {
            cursor,
            seq: 0,
            chunk_bytes,
            done: false,
        })
    }
}

impl<S: PageStore> ShipStream<S> {
    /// The next chunk, or None after the last one.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        if self.done {
            return Ok(None);
        }
        let mut out = vec![0u8; SHIP_HEADER_BYTES];
        let mut count = 0u32;
        let mut last = true;
        while out.len() < self.chunk_bytes {
            match self.cursor.next().await? {
                None => break,
                Some((k, v)) => {
                    out.extend_from_slice(&(k.len() as u32).to_le_bytes());
                    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    out.extend_from_slice(&k);
                    out.extend_from_slice(&v);
                    count += 1;
                }
            }
            if out.len() >= self.chunk_bytes {
                last = false;
            }
        }
        // A chunk that stopped on size may still be the last; the receiver learns the end
        // from a final (possibly empty) chunk with `last` set.
        out[0..4].copy_from_slice(&SHIP_MAGIC.to_le_bytes());
        out[4] = SHIP_VERSION;
        out[5] = last as u8;
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..20].copy_from_slice(&count.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        self.seq += 1;
        self.done = last;
        Ok(Some(out))
    }
}

/// Builds a tree from a shipped stream, checking order, sequence and checksums.
#[derive(Debug, Default)]
pub struct ShipReceiver {
    next_seq: u64,
    finished: bool,
    last_key: Option<Vec<u8>>,
}

impl ShipReceiver {
    /// A receiver expecting chunk 0 next.
    pub fn new() -> Self {
        Self::default()
    }

    /// True once the last chunk was applied.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Applies one chunk to `tree` (empty before chunk 0). Returns true after the last chunk;
    /// the caller checkpoints when it likes.
    pub async fn apply<S: PageStore>(
        &mut self,
        tree: &mut Tree<S>,
        chunk: &[u8],
    ) -> Result<bool, Error> {
        let bad = |reason| Error::BadShipChunk { reason };
        if self.finished {
            return Err(bad("chunk after the last one"));
        }
        if chunk.len() < SHIP_HEADER_BYTES + 4 {
            return Err(bad("chunk shorter than its header"));
        }
        let (body, crc) = chunk.split_at(chunk.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(bad("checksum mismatch"));
        }
        if u32::from_le_bytes(body[0..4].try_into().expect("4")) != SHIP_MAGIC
            || body[4] != SHIP_VERSION
        {
            return Err(bad("not a snapshot chunk of a known version"));
        }
        let seq = u64::from_le_bytes(body[8..16].try_into().expect("8"));
        if seq != self.next_seq {
            return Err(bad("chunk out of sequence"));
        }
        if seq == 0 && !tree.is_empty() {
            return Err(bad("receiving tree is not empty"));
        }
        let count = u32::from_le_bytes(body[16..20].try_into().expect("4"));
        let mut at = SHIP_HEADER_BYTES;
        let mut batch = WriteBatch::new();
        for _ in 0..count {
            if at + 8 > body.len() {
                return Err(bad("entry header past the end"));
            }
            let kl = u32::from_le_bytes(body[at..at + 4].try_into().expect("4")) as usize;
            let vl = u32::from_le_bytes(body[at + 4..at + 8].try_into().expect("4")) as usize;
            at += 8;
            if kl > KEY_BYTES_MAX || vl > VALUE_BYTES_MAX || at + kl + vl > body.len() {
                return Err(bad("entry past the end or over the limits"));
            }
            let k = &body[at..at + kl];
            if self.last_key.as_deref().is_some_and(|l| l >= k) {
                return Err(bad("keys out of order"));
            }
            self.last_key = Some(k.to_vec());
            batch.put(k, &body[at + kl..at + kl + vl]);
            at += kl + vl;
        }
        if at != body.len() {
            return Err(bad("trailing bytes"));
        }
        tree.apply(&batch).await?;
        self.next_seq += 1;
        self.finished = body[5] == 1;
        Ok(self.finished)
    }
}
