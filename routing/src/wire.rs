//! Conversions between this crate's types and `proto::cluster`'s wire types.
//!
//! On the wire a key is a `Vec<u8>`: anything can arrive. Every conversion from the wire
//! checks lengths and canonical form and says what was wrong; none panics.

use std::fmt;

use proto::cluster::{Expansion as WireExpansion, Prefix as WirePrefix, Route};

use crate::limits::SYNC_PREFIXES_PER_REQUEST_MAX;
use crate::trie::{Expansion, Key, Prefix, KEY_BITS, KEY_BYTES};

/// A wire value that is not a valid trie key, prefix or expansion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    /// A key or prefix is not [`KEY_BYTES`] long.
    KeyLength {
        /// Its length.
        bytes: usize,
    },
    /// A prefix claims more bits than a key has.
    PrefixBits {
        /// What it claims.
        bits: u32,
    },
    /// A prefix has bits set past its length.
    PrefixTrailingBits {
        /// Its length in bits.
        bits: u32,
    },
    /// More prefixes or expansions than one request may carry.
    TooMany {
        /// How many came.
        count: usize,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::KeyLength { bytes } => {
                write!(f, "a routing key has {bytes} bytes, not {KEY_BYTES}")
            }
            WireError::PrefixBits { bits } => {
                write!(f, "a routing prefix has {bits} bits, more than {KEY_BITS}")
            }
            WireError::PrefixTrailingBits { bits } => {
                write!(
                    f,
                    "a routing prefix of {bits} bits has bits set past its length"
                )
            }
            WireError::TooMany { count } => write!(
                f,
                "{count} routing prefixes in one sync request \
                 (SYNC_PREFIXES_PER_REQUEST_MAX = {SYNC_PREFIXES_PER_REQUEST_MAX})"
            ),
        }
    }
}

impl std::error::Error for WireError {}

fn key_from_wire(bytes: &[u8]) -> Result<Key, WireError> {
    <Key>::try_from(bytes).map_err(|_| WireError::KeyLength { bytes: bytes.len() })
}

/// A prefix as it travels.
pub fn prefix_to_wire(prefix: &Prefix) -> WirePrefix {
    WirePrefix {
        key: prefix.key.to_vec(),
        bits: prefix.bits,
    }
}

/// A prefix from the wire: 24 bytes, at most [`KEY_BITS`] bits, nothing set past them.
pub fn prefix_from_wire(wire: &WirePrefix) -> Result<Prefix, WireError> {
    let key = key_from_wire(&wire.key)?;
    if wire.bits > KEY_BITS {
        return Err(WireError::PrefixBits { bits: wire.bits });
    }
    let prefix = Prefix {
        key,
        bits: wire.bits,
    };
    if !prefix.is_canonical() {
        return Err(WireError::PrefixTrailingBits { bits: wire.bits });
    }
    Ok(prefix)
}

/// A `SyncExpand` request's prefixes, as they travel.
pub fn prefixes_to_wire(prefixes: &[Prefix]) -> Vec<WirePrefix> {
    prefixes.iter().map(prefix_to_wire).collect()
}

/// A `SyncExpand` request's prefixes from the wire: at most
/// [`SYNC_PREFIXES_PER_REQUEST_MAX`], each valid.
pub fn prefixes_from_wire(wire: &[WirePrefix]) -> Result<Vec<Prefix>, WireError> {
    if wire.len() > SYNC_PREFIXES_PER_REQUEST_MAX {
        return Err(WireError::TooMany { count: wire.len() });
    }
    wire.iter().map(prefix_from_wire).collect()
}

/// An expansion as it travels.
pub fn expansion_to_wire(expansion: Expansion<Route>) -> WireExpansion {
    let half = |(prefix, hash, count): (Prefix, u128, u64)| (prefix_to_wire(&prefix), hash, count);
    match expansion {
        Expansion::Empty => WireExpansion::Empty,
        Expansion::Leaf(key, route) => WireExpansion::Leaf {
            key: key.to_vec(),
            route,
        },
        Expansion::Split { left, right } => WireExpansion::Split {
            left: half(left),
            right: half(right),
        },
    }
}

/// An expansion from the wire, its keys and prefixes checked. Whether it fits the prefix it
/// answers is [`crate::SyncSession::on_reply`]'s to check.
pub fn expansion_from_wire(wire: WireExpansion) -> Result<Expansion<Route>, WireError> {
    let half = |(prefix, hash, count): (WirePrefix, u128, u64)| {
        Ok::<_, WireError>((prefix_from_wire(&prefix)?, hash, count))
    };
    Ok(match wire {
        WireExpansion::Empty => Expansion::Empty,
        WireExpansion::Leaf { key, route } => Expansion::Leaf(key_from_wire(&key)?, route),
        WireExpansion::Split { left, right } => Expansion::Split {
            left: half(left)?,
            right: half(right)?,
        },
    })
}

/// A `ClusterReply::Expansions` payload, as it travels.
pub fn expansions_to_wire(expansions: Vec<Expansion<Route>>) -> Vec<WireExpansion> {
    expansions.into_iter().map(expansion_to_wire).collect()
}

/// A `ClusterReply::Expansions` payload from the wire: at most
/// [`SYNC_PREFIXES_PER_REQUEST_MAX`] expansions, each valid.
pub fn expansions_from_wire(wire: Vec<WireExpansion>) -> Result<Vec<Expansion<Route>>, WireError> {
    if wire.len() > SYNC_PREFIXES_PER_REQUEST_MAX {
        return Err(WireError::TooMany { count: wire.len() });
    }
    wire.into_iter().map(expansion_from_wire).collect()
}

impl From<&Prefix> for WirePrefix {
    fn from(prefix: &Prefix) -> Self {
        prefix_to_wire(prefix)
    }
}

impl TryFrom<&WirePrefix> for Prefix {
    type Error = WireError;

    fn try_from(wire: &WirePrefix) -> Result<Self, WireError> {
        prefix_from_wire(wire)
    }
}

impl From<Expansion<Route>> for WireExpansion {
    fn from(expansion: Expansion<Route>) -> Self {
        expansion_to_wire(expansion)
    }
}

impl TryFrom<WireExpansion> for Expansion<Route> {
    type Error = WireError;

    fn try_from(wire: WireExpansion) -> Result<Self, WireError> {
        expansion_from_wire(wire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route_key;

    #[test]
    fn check(/* data-driven: wire prefix in, expected result out */) {
        let k = route_key(1, 1 << 127).to_vec();
        let cases: Vec<(WirePrefix, Result<u32, WireError>)> = vec![
            (
                WirePrefix {
                    key: k.clone(),
                    bits: 65,
                },
                Ok(65),
            ),
            (
                WirePrefix {
                    key: k.clone(),
                    bits: 64,
                },
                Err(WireError::PrefixTrailingBits { bits: 64 }),
            ),
            (
                WirePrefix {
                    key: k.clone(),
                    bits: 193,
                },
                Err(WireError::PrefixBits { bits: 193 }),
            ),
            (
                WirePrefix {
                    key: vec![0; 23],
                    bits: 0,
                },
                Err(WireError::KeyLength { bytes: 23 }),
            ),
            (
                WirePrefix {
                    key: vec![],
                    bits: 0,
                },
                Err(WireError::KeyLength { bytes: 0 }),
            ),
            (
                WirePrefix {
                    key: vec![0; 24],
                    bits: 0,
                },
                Ok(0),
            ),
            (
                WirePrefix {
                    key: k.clone(),
                    bits: 192,
                },
                Ok(192),
            ),
        ];
        for (wire, expected) in cases {
            let got = prefix_from_wire(&wire).map(|p| p.bits);
            assert_eq!(got, expected, "{wire:?}");
            if let Ok(p) = prefix_from_wire(&wire) {
                assert_eq!(prefix_to_wire(&p), wire);
            }
        }
    }
}
