//! Typed errors: each names what was wrong, never a bare string from deep inside.

use std::fmt;

/// An error from a page store (the I/O layer under the tree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The operating system refused an operation.
    Io {
        /// Which operation (`"read"`, `"write"`, `"sync"`, `"truncate"`).
        op: &'static str,
        /// The page involved, if any.
        page_id: Option<u64>,
        /// The OS error, as text.
        message: String,
    },
    /// A simulated fault (SimStore's countdown reached zero).
    Injected {
        /// Which operation failed.
        op: &'static str,
    },
    /// A read past the end of the store.
    OutOfRange {
        /// The page asked for.
        page_id: u64,
        /// The store's length in pages.
        page_count: u64,
    },
    /// A buffer whose length is not the page size.
    BadBufferLength {
        /// The buffer's length.
        len: usize,
        /// The page size.
        page_size: usize,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io {
                op,
                page_id,
                message,
            } => {
                write!(f, "{op} failed (page {page_id:?}): {message}")
            }
            StoreError::Injected { op } => write!(f, "injected fault on {op}"),
            StoreError::OutOfRange {
                page_id,
                page_count,
            } => {
                write!(f, "page {page_id} is past the end ({page_count} pages)")
            }
            StoreError::BadBufferLength { len, page_size } => {
                write!(f, "buffer of {len} bytes for pages of {page_size}")
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// An error from the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A key longer than `limits::KEY_BYTES_MAX`.
    KeyTooLarge {
        /// The key's length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A value longer than `limits::VALUE_BYTES_MAX`.
    ValueTooLarge {
        /// The value's length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A page that failed its checks (checksum, kind, id, bounds, order).
    CorruptPage {
        /// The page.
        page_id: u64,
        /// What was wrong.
        reason: &'static str,
    },
    /// The store is not empty but neither meta slot is valid.
    NoValidMeta {
        /// Why slot 0 was rejected.
        slot0: &'static str,
        /// Why slot 1 was rejected.
        slot1: &'static str,
    },
    /// A configuration that cannot work.
    BadConfig {
        /// What was wrong.
        reason: &'static str,
    },
    /// The page store failed.
    Store(StoreError),
    /// An earlier write or checkpoint failed half-way; the tree refuses to go on until it
    /// is reopened (its durable state is the last completed checkpoint).
    Poisoned,
    /// A checkpoint was asked for while another (a detached [`crate::CheckpointJob`] or a
    /// stepped one) is under way: finish that one first.
    CheckpointBusy,
    /// A snapshot-shipping chunk that cannot be applied.
    BadShipChunk {
        /// What was wrong.
        reason: &'static str,
    },
    /// The invariant checker found a broken rule.
    Invariant(InvariantError),
    /// A warm-up run whose page ids are not ascending or span more than
    /// `limits::WARM_RUN_PAGES_MAX` pages (the caller's mistake; nothing was read).
    WarmRun {
        /// The run's first id.
        first: u64,
        /// The run's last id.
        last: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::KeyTooLarge { len, max } => write!(f, "key of {len} bytes (max {max})"),
            Error::ValueTooLarge { len, max } => write!(f, "value of {len} bytes (max {max})"),
            Error::CorruptPage { page_id, reason } => write!(f, "page {page_id} corrupt: {reason}"),
            Error::NoValidMeta { slot0, slot1 } => {
                write!(f, "no valid meta slot (slot 0: {slot0}; slot 1: {slot1})")
            }
            Error::BadConfig { reason } => write!(f, "bad config: {reason}"),
            Error::Store(e) => write!(f, "page store: {e}"),
            Error::Poisoned => write!(f, "tree poisoned by an earlier failure; reopen it"),
            Error::CheckpointBusy => write!(f, "a checkpoint is already under way"),
            Error::BadShipChunk { reason } => write!(f, "bad snapshot chunk: {reason}"),
            Error::Invariant(e) => write!(f, "invariant broken: {e}"),
            Error::WarmRun { first, last } => write!(
                f,
                "warm-up run {first}..={last} is not ascending or spans more than {} pages",
                crate::limits::WARM_RUN_PAGES_MAX
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(e)
    }
}

impl From<InvariantError> for Error {
    fn from(e: InvariantError) -> Self {
        Error::Invariant(e)
    }
}

/// A broken structural rule, found by `Tree::check_invariants`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvariantError {
    /// The page where the rule broke, if one page is to blame.
    pub page_id: Option<u64>,
    /// Which rule, in words.
    pub what: String,
}

impl fmt::Display for InvariantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.page_id {
            Some(id) => write!(f, "page {id}: {}", self.what),
            None => write!(f, "{}", self.what),
        }
    }
}
