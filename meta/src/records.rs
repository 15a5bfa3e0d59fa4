//! What meta writes down: the commands in its WAL and the records in its tree, with their
//! byte layouts and a typed error for anything read back that does not decode.
//!
//! # Layout
//!
//! Every value (a WAL payload or a tree value) is one format byte ([`RECORD_FORMAT`]) and an
//! rkyv archive, validated on read (`rkyv::access` via `from_bytes`). Tree keys:
//!
//! ```text
//! 0x00                                  -> Header (applied WAL index, id counters)
//! 0x01 ‖ node id (u64 BE)               -> NodeInfo
//! 0x02 ‖ table id (u64 BE)              -> TableDescription
//! 0x03 ‖ table id (u64 BE) ‖ index (u32 BE) -> Route
//! ```
//!
//! Big-endian ids keep a table's routes together and in index order in the tree.

use proto::cluster::{NodeInfo, Route};
use proto::{TableDescription, TableStatus};
use rkyv::rancor::BoxedError;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// The format byte in front of every record this build writes. A new layout is a new
/// value; an unknown one is refused by name, never guessed at.
pub const RECORD_FORMAT: u8 = 1;

/// The WAL stream meta's commands go in (meta has the log to itself).
pub const WAL_STREAM: u64 = 0;

/// The WAL record kind of a [`Command`].
pub const WAL_KIND_COMMAND: u8 = 1;

/// The tree key of the [`Header`].
pub const KEY_HEADER: [u8; 1] = [0x00];
/// The first byte of a node's key.
pub const KEY_NODE: u8 = 0x01;
/// The first byte of a table's key.
pub const KEY_TABLE: u8 = 0x02;
/// The first byte of a route's key.
pub const KEY_ROUTE: u8 = 0x03;

/// One durable change to the map: what the WAL holds, applied in order to the state and
/// the tree. Commands carry decisions already taken (ids, placements), so replaying one
/// does the same thing every time.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A node registered for the first time, or with new addresses or zone.
    PutNode(NodeInfo),
    /// A table is created: partition `i` gets id `first_partition_id + i` and lives on
    /// `placements[i]` = (node, core), epoch 1, one replica.
    CreateTable {
        /// The table (id, schema, capacity, partitions, status, creation time).
        table: TableDescription,
        /// Its first partition's id; the others follow.
        first_partition_id: u64,
        /// Where each partition lives, in index order.
        placements: Vec<(u64, u32)>,
    },
    /// A table's status changes (to `Deleting` when its deletion starts).
    SetStatus {
        /// The table.
        table_id: u64,
        /// Its new status.
        status: TableStatus,
    },
    /// A partition changed owner: its route, whole, under a higher epoch.
    MoveRoute {
        /// The route after the move.
        route: Route,
    },
    /// A table and its routes are gone (its partitions were dropped, or will be when their
    /// nodes register again).
    RemoveTable {
        /// The table.
        table_id: u64,
    },
}

/// The tree's header record: how far the tree is applied and the id counters (ids are never
/// reused, so the counters are kept, not derived from what exists).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// The WAL index of the last command applied to the tree.
    pub applied_index: u64,
    /// The next table id to give.
    pub next_table_id: u64,
    /// The next partition id to give.
    pub next_partition_id: u64,
}

/// A record read back that does not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The value is empty (no format byte).
    Empty {
        /// What it was meant to be.
        what: &'static str,
    },
    /// The format byte is not one this build reads.
    UnknownFormat {
        /// What it was meant to be.
        what: &'static str,
        /// The byte found.
        got: u8,
    },
    /// The archive does not validate.
    Invalid {
        /// What it was meant to be.
        what: &'static str,
        /// rkyv's reason.
        reason: String,
    },
    /// A tree key of an unknown shape.
    BadKey {
        /// The key's bytes.
        key: Vec<u8>,
    },
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Empty { what } => write!(f, "an empty {what} record"),
            RecordError::UnknownFormat { what, got } => write!(
                f,
                "a {what} record of format {got} (this build reads {RECORD_FORMAT})"
            ),
            RecordError::Invalid { what, reason } => {
                write!(f, "a {what} record does not decode: {reason}")
            }
            RecordError::BadKey { key } => write!(f, "a tree key of unknown shape {key:02x?}"),
        }
    }
}

impl std::error::Error for RecordError {}

/// Encodes a value: the format byte, then its archive.
pub fn encode<T>(value: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    // Serialising owned, in-memory values cannot fail (no shared pointers, no limits).
    let archive = rkyv::to_bytes::<rkyv::rancor::Error>(value).expect("serialising in memory");
    let mut out = Vec::with_capacity(1 + archive.len());
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&archive);
    out
}

/// Decodes a value written by [`encode`], validating it; `what` names it in errors.
pub fn decode<T>(bytes: &[u8], what: &'static str) -> Result<T, RecordError>
where
    T: Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, BoxedError>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<BoxedError>>,
{
    let (&format, archive) = bytes.split_first().ok_or(RecordError::Empty { what })?;
    if format != RECORD_FORMAT {
        return Err(RecordError::UnknownFormat { what, got: format });
    }
    // The archive needs its alignment: copy it into an aligned buffer of exactly its size.
    let mut aligned = AlignedVec::<16>::with_capacity(archive.len());
    aligned.extend_from_slice(archive);
    rkyv::from_bytes::<T, BoxedError>(&aligned).map_err(|e| RecordError::Invalid {
        what,
        reason: e.to_string(),
    })
}

/// A node's tree key.
pub fn node_key(node: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(KEY_NODE);
    k.extend_from_slice(&node.to_be_bytes());
    k
}

/// A table's tree key.
pub fn table_key(table_id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(KEY_TABLE);
    k.extend_from_slice(&table_id.to_be_bytes());
    k
}

/// A route's tree key.
pub fn route_key(table_id: u64, index: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(13);
    k.push(KEY_ROUTE);
    k.extend_from_slice(&table_id.to_be_bytes());
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// One record of the tree, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The header.
    Header(Header),
    /// A node.
    Node(NodeInfo),
    /// A table.
    Table(TableDescription),
    /// A route.
    Route(Route),
}

/// Decodes one (key, value) of the tree.
pub fn decode_record(key: &[u8], value: &[u8]) -> Result<Record, RecordError> {
    match (key.first(), key.len()) {
        (Some(0x00), 1) => Ok(Record::Header(decode(value, "header")?)),
        (Some(&KEY_NODE), 9) => Ok(Record::Node(decode(value, "node")?)),
        (Some(&KEY_TABLE), 9) => Ok(Record::Table(decode(value, "table")?)),
        (Some(&KEY_ROUTE), 13) => Ok(Record::Route(decode(value, "route")?)),
        _ => Err(RecordError::BadKey { key: key.to_vec() }),
    }
}

/// One write to the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeOp {
    /// Put a key.
    Put(Vec<u8>, Vec<u8>),
    /// Delete a key.
    Delete(Vec<u8>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_garbage_is_a_typed_error() {
        let c = Command::SetStatus {
            table_id: 7,
            status: TableStatus::Deleting,
        };
        let bytes = encode(&c);
        assert_eq!(decode::<Command>(&bytes, "command").unwrap(), c);
        assert!(matches!(
            decode::<Command>(&[], "command"),
            Err(RecordError::Empty { .. })
        ));
        assert!(matches!(
            decode::<Command>(&[9, 1, 2], "command"),
            Err(RecordError::UnknownFormat { got: 9, .. })
        ));
        assert!(matches!(
            decode::<Command>(&[RECORD_FORMAT, 1, 2, 3], "command"),
            Err(RecordError::Invalid { .. })
        ));
        assert!(matches!(
            decode_record(&[0x09], &bytes),
            Err(RecordError::BadKey { .. })
        ));
    }

    #[test]
    fn route_keys_sort_by_table_then_index() {
        assert!(route_key(1, 9) < route_key(2, 0));
        assert!(route_key(1, 1) < route_key(1, 256));
        assert!(node_key(u64::MAX) < table_key(0));
    }
}
