//! What a replica writes into the core's WAL: its raft entries and its hard state (see
//! `DESIGN.md`, "WAL records").
//!
//! Entries go to stream `2 * id` at their raft index (so a raft log conflict, which rewrites
//! an index, replaces the stream's records from there on, exactly as the WAL does); hard
//! states go to stream `2 * id + 1` at an increasing counter, and the newest wins.

use raft::eraftpb::{Entry, EntryType, HardState};

/// WAL record kind of a raft entry.
pub const KIND_ENTRY: u8 = 1;
/// WAL record kind of a hard state.
pub const KIND_HARD_STATE: u8 = 2;

/// The record format version (first payload byte), for both kinds.
pub const RECORD_FORMAT_VERSION: u8 = 1;

/// Payload bytes of an entry record in front of the entry's data: version u8, entry type u8,
/// term u64, context length u32, then the context.
pub const ENTRY_HEADER_BYTES: usize = 1 + 1 + 8 + 4;

/// Payload bytes of a hard-state record: version u8, term, vote, commit (u64 each).
pub const HARD_STATE_BYTES: usize = 1 + 3 * 8;

/// A record that is not what this build writes (only damage or a newer build can cause it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRecord {
    /// The stream.
    pub stream: u64,
    /// The record's index in it.
    pub index: u64,
    /// What was wrong.
    pub reason: &'static str,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wal stream {} record {}: {}",
            self.stream, self.index, self.reason
        )
    }
}

/// The payload of an entry's record.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENTRY_HEADER_BYTES + entry.context.len() + entry.data.len());
    out.push(RECORD_FORMAT_VERSION);
    out.push(entry.entry_type as u8);
    out.extend_from_slice(&entry.term.to_le_bytes());
    out.extend_from_slice(&(entry.context.len() as u32).to_le_bytes());
    out.extend_from_slice(&entry.context);
    out.extend_from_slice(&entry.data);
    out
}

/// Reads an entry record back (`index` is the record's stream index, which is the entry's).
pub fn decode_entry(stream: u64, index: u64, kind: u8, payload: &[u8]) -> Result<Entry, BadRecord> {
    let bad = |reason| BadRecord {
        stream,
        index,
        reason,
    };
    if kind != KIND_ENTRY {
        return Err(bad("not an entry record"));
    }
    if payload.len() < ENTRY_HEADER_BYTES {
        return Err(bad("shorter than an entry header"));
    }
    if payload[0] != RECORD_FORMAT_VERSION {
        return Err(bad("unknown record format version"));
    }
    let entry_type = match payload[1] {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        _ => return Err(bad("unknown entry type")),
    };
    let term = u64::from_le_bytes(payload[2..10].try_into().expect("8 bytes"));
    let context_len = u32::from_le_bytes(payload[10..14].try_into().expect("4 bytes")) as usize;
    let rest = &payload[ENTRY_HEADER_BYTES..];
    if rest.len() < context_len {
        return Err(bad("context runs past the end"));
    }
    let (context, data) = rest.split_at(context_len);
    Ok(Entry {
        entry_type: entry_type as i32,
        term,
        index,
        data: data.to_vec(),
        context: context.to_vec(),
        ..Default::default()
    })
}

/// The payload of a hard-state record.
pub fn encode_hard_state(hs: &HardState) -> [u8; HARD_STATE_BYTES] {
    let mut out = [0u8; HARD_STATE_BYTES];
    out[0] = RECORD_FORMAT_VERSION;
    out[1..9].copy_from_slice(&hs.term.to_le_bytes());
    out[9..17].copy_from_slice(&hs.vote.to_le_bytes());
    out[17..25].copy_from_slice(&hs.commit.to_le_bytes());
    out
}

/// Reads a hard-state record back.
pub fn decode_hard_state(
    stream: u64,
    index: u64,
    kind: u8,
    payload: &[u8],
) -> Result<HardState, BadRecord> {
    let bad = |reason| BadRecord {
        stream,
        index,
        reason,
    };
    if kind != KIND_HARD_STATE {
        return Err(bad("not a hard-state record"));
    }
    if payload.len() != HARD_STATE_BYTES {
        return Err(bad("a hard-state record is 25 bytes"));
    }
    if payload[0] != RECORD_FORMAT_VERSION {
        return Err(bad("unknown record format version"));
    }
    let word = |at: usize| u64::from_le_bytes(payload[at..at + 8].try_into().expect("8 bytes"));
    Ok(HardState {
        term: word(1),
        vote: word(9),
        commit: word(17),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let e = Entry {
            entry_type: EntryType::EntryNormal as i32,
            term: 3,
            index: 9,
            data: b"data".to_vec(),
            context: b"ctx".to_vec(),
            ..Default::default()
        };
        let p = encode_entry(&e);
        assert_eq!(decode_entry(4, 9, KIND_ENTRY, &p).unwrap(), e);
        assert!(decode_entry(4, 9, KIND_HARD_STATE, &p).is_err());
        for n in 0..ENTRY_HEADER_BYTES + 3 {
            assert!(decode_entry(4, 9, KIND_ENTRY, &p[..n]).is_err());
        }
        let mut bad_type = p.clone();
        bad_type[1] = 9;
        assert!(decode_entry(4, 9, KIND_ENTRY, &bad_type).is_err());

        let hs = HardState {
            term: 5,
            vote: 1,
            commit: 77,
        };
        let p = encode_hard_state(&hs);
        assert_eq!(decode_hard_state(5, 1, KIND_HARD_STATE, &p).unwrap(), hs);
        assert!(decode_hard_state(5, 1, KIND_HARD_STATE, &p[..24]).is_err());
    }
}
