//! The typed errors a server answers with.

use std::fmt;

use rkyv::{Archive, Deserialize, Serialize};

use crate::limits::ERROR_REASON_BYTES_MAX;

/// Which part of a request broke a limit.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The partition key.
    PartitionKey,
    /// The sort key.
    SortKey,
    /// The whole item (partition key + sort key + value).
    Item,
    /// A batch write's number of writes.
    BatchWrites,
    /// A batch get's number of keys.
    BatchGets,
    /// A frame's payload.
    Frame,
    /// A table name.
    TableName,
    /// A table's number of partitions.
    Partitions,
}

/// Where a partition lives: the node and core that own it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The node's id.
    pub node: u64,
    /// The core within the node.
    pub core: u32,
    /// The address of that core's own port (`host:port`).
    pub addr: String,
}

/// A request's failure, as the server reports it. Every variant names what was wrong.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// No item has this key (a get), or a resource named in the request is gone.
    NotFound,
    /// The write's condition did not hold.
    ConditionFailed {
        /// The version of the item there now; `None` if there is none.
        current_version: Option<u64>,
    },
    /// A field is over its limit (or, for keys and names, under it).
    TooLarge {
        /// Which.
        field: Field,
        /// Its size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// No table has this name.
    UnknownTable {
        /// The name asked for.
        name: String,
    },
    /// A table with this name exists already.
    TableExists {
        /// The name.
        name: String,
    },
    /// Over capacity: try again after the hint. Never a queue that grows without bound.
    Throttled {
        /// How long to wait before retrying.
        retry_after_ms: u32,
    },
    /// The partition is owned elsewhere (or at a newer epoch): go there.
    WrongOwner {
        /// Who owns it.
        owner: Owner,
        /// The partition's current epoch.
        epoch: u64,
    },
    /// The partition cannot serve now (starting, stopping, no leader); retry later.
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The frame's payload could not be read (bad checksum, not a valid request).
    BadFrame {
        /// What was wrong.
        reason: String,
    },
    /// The frame's format version is not one this server reads.
    UnsupportedVersion {
        /// The version received.
        got: u16,
        /// The version this server speaks.
        supported: u16,
    },
    /// The request is well formed but makes no sense (empty partition key, a sort key on a
    /// table without one, a duplicate key in a batch, a bad table name...).
    InvalidRequest {
        /// What was wrong.
        reason: String,
    },
    /// A bug or an I/O failure on the server: the outcome of a write is unknown.
    Internal {
        /// What happened.
        reason: String,
    },
}

impl Error {
    /// An [`Error::InvalidRequest`] with this reason (cut to the reason limit).
    pub fn invalid(reason: impl Into<String>) -> Error {
        Error::InvalidRequest {
            reason: bounded(reason.into()),
        }
    }

    /// An [`Error::Internal`] with this reason (cut to the reason limit).
    pub fn internal(reason: impl Into<String>) -> Error {
        Error::Internal {
            reason: bounded(reason.into()),
        }
    }

    /// An [`Error::Unavailable`] with this reason (cut to the reason limit).
    pub fn unavailable(reason: impl Into<String>) -> Error {
        Error::Unavailable {
            reason: bounded(reason.into()),
        }
    }

    /// An [`Error::BadFrame`] with this reason (cut to the reason limit).
    pub fn bad_frame(reason: impl Into<String>) -> Error {
        Error::BadFrame {
            reason: bounded(reason.into()),
        }
    }

    /// Whether a client may retry the same request as it is: the server did nothing.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Throttled { .. } | Error::Unavailable { .. } | Error::WrongOwner { .. }
        )
    }
}

/// Cuts a reason to [`ERROR_REASON_BYTES_MAX`], on a character boundary, marking the cut:
/// an error must never itself be too large to send.
pub fn bounded(mut reason: String) -> String {
    if reason.len() > ERROR_REASON_BYTES_MAX {
        let mut cut = ERROR_REASON_BYTES_MAX - 3;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        reason.push_str("...");
    }
    reason
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound => write!(f, "not found"),
            Error::ConditionFailed {
                current_version: Some(v),
            } => {
                write!(f, "condition failed: the item is at version {v}")
            }
            Error::ConditionFailed {
                current_version: None,
            } => {
                write!(f, "condition failed: there is no item")
            }
            Error::TooLarge { field, bytes, max } => {
                write!(f, "{field:?} is {bytes} bytes; the limit is {max}")
            }
            Error::UnknownTable { name } => write!(f, "no table is named {name:?}"),
            Error::TableExists { name } => write!(f, "a table named {name:?} exists already"),
            Error::Throttled { retry_after_ms } => {
                write!(f, "throttled: retry after {retry_after_ms} ms")
            }
            Error::WrongOwner { owner, epoch } => write!(
                f,
                "wrong owner: node {} core {} ({}) owns it at epoch {epoch}",
                owner.node, owner.core, owner.addr
            ),
            Error::Unavailable { reason } => write!(f, "unavailable: {reason}"),
            Error::BadFrame { reason } => write!(f, "bad frame: {reason}"),
            Error::UnsupportedVersion { got, supported } => {
                write!(
                    f,
                    "frame format version {got} is not supported (this server speaks {supported})"
                )
            }
            Error::InvalidRequest { reason } => write!(f, "invalid request: {reason}"),
            Error::Internal { reason } => write!(f, "internal error: {reason}"),
        }
    }
}

impl std::error::Error for Error {}
