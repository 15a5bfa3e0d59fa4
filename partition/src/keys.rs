//! The byte layout of the tree's keys and values (see `DESIGN.md`, "Tree keys").
//!
//! An item key is `0x01 ‖ hash(pk) u128 BE ‖ len(pk) u16 BE ‖ pk ‖ sk`, so one partition
//! key's items are contiguous and ordered by sort key, and every key of the partition sorts
//! after the meta keys, which start with `0x00`. A tree value is `version u64 LE ‖ value`.

use std::ops::Bound;

use crate::limits::{ITEM_KEY_OVERHEAD_BYTES, VERSION_BYTES};

/// The first byte of every meta key.
pub const META_TAG: u8 = 0x00;
/// The first byte of every item key.
pub const ITEM_TAG: u8 = 0x01;

/// Meta key holding the applied raft index and its term (`index u64 LE ‖ term u64 LE`). It is
/// written in the same tree batch as the entries it covers, so a checkpoint always carries the
/// index it covers.
pub const META_APPLIED_KEY: &[u8] = &[META_TAG, 0x01];

/// The smallest item key: every item key is at or above it.
pub const ITEMS_START: &[u8] = &[ITEM_TAG];
/// Just above every item key.
pub const ITEMS_END: &[u8] = &[ITEM_TAG + 1];

/// The partition-key hash placement uses (xxh3-128, fixed forever; `proto` owns it).
pub fn partition_key_hash(partition_key: &[u8]) -> u128 {
    proto::partition_key_hash(partition_key)
}

/// The prefix shared by every item of one partition key: tag, hash and length.
pub fn partition_prefix(partition_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ITEM_KEY_OVERHEAD_BYTES + partition_key.len());
    push_prefix(&mut out, partition_key);
    out
}

fn push_prefix(out: &mut Vec<u8>, partition_key: &[u8]) {
    debug_assert!(
        partition_key.len() <= u16::MAX as usize,
        "checked by validation"
    );
    out.push(ITEM_TAG);
    out.extend_from_slice(&partition_key_hash(partition_key).to_be_bytes());
    out.extend_from_slice(&(partition_key.len() as u16).to_be_bytes());
    out.extend_from_slice(partition_key);
}

/// The tree key of an item.
pub fn item_key(key: &proto::Key) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(ITEM_KEY_OVERHEAD_BYTES + key.partition.len() + key.sort.len());
    push_prefix(&mut out, &key.partition);
    out.extend_from_slice(&key.sort);
    out
}

/// Why a tree key is not an item key (only a damaged tree can hold one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadItemKey(pub &'static str);

/// Splits a tree item key back into the item's key, checking the stored hash.
pub fn decode_item_key(tree_key: &[u8]) -> Result<proto::Key, BadItemKey> {
    if tree_key.len() < ITEM_KEY_OVERHEAD_BYTES {
        return Err(BadItemKey("shorter than the item key header"));
    }
    if tree_key[0] != ITEM_TAG {
        return Err(BadItemKey("not an item key"));
    }
    let hash = u128::from_be_bytes(tree_key[1..17].try_into().expect("16 bytes"));
    let pk_len = u16::from_be_bytes([tree_key[17], tree_key[18]]) as usize;
    let rest = &tree_key[ITEM_KEY_OVERHEAD_BYTES..];
    if rest.len() < pk_len {
        return Err(BadItemKey("partition key runs past the end"));
    }
    let (pk, sk) = rest.split_at(pk_len);
    if partition_key_hash(pk) != hash {
        return Err(BadItemKey("stored hash does not match the partition key"));
    }
    Ok(proto::Key::new(pk, sk))
}

/// The smallest key above every key that starts with `prefix` (`None`: no such key).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last != 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

/// The tree-key range of one partition key's items with sort keys within `start..end`.
pub fn query_bounds(
    prefix: &[u8],
    start: &proto::SortBound,
    end: &proto::SortBound,
) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let with = |sk: &[u8]| {
        let mut k = prefix.to_vec();
        k.extend_from_slice(sk);
        k
    };
    let lo = match start {
        proto::SortBound::Unbounded => Bound::Included(prefix.to_vec()),
        proto::SortBound::Included(sk) => Bound::Included(with(sk)),
        proto::SortBound::Excluded(sk) => Bound::Excluded(with(sk)),
    };
    let hi = match end {
        proto::SortBound::Unbounded => match prefix_successor(prefix) {
            Some(s) => Bound::Excluded(s),
            None => Bound::Unbounded,
        },
        proto::SortBound::Included(sk) => Bound::Included(with(sk)),
        proto::SortBound::Excluded(sk) => Bound::Excluded(with(sk)),
    };
    (lo, hi)
}

/// The tighter of two lower bounds.
pub fn max_lower(a: Bound<Vec<u8>>, b: Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    use Bound::*;
    match (&a, &b) {
        (Unbounded, _) => b,
        (_, Unbounded) => a,
        (Included(x) | Excluded(x), Included(y) | Excluded(y)) => {
            if x != y {
                if x > y {
                    a
                } else {
                    b
                }
            } else if matches!(a, Excluded(_)) {
                a
            } else {
                b
            }
        }
    }
}

/// The tighter of two upper bounds.
pub fn min_upper(a: Bound<Vec<u8>>, b: Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    use Bound::*;
    match (&a, &b) {
        (Unbounded, _) => b,
        (_, Unbounded) => a,
        (Included(x) | Excluded(x), Included(y) | Excluded(y)) => {
            if x != y {
                if x < y {
                    a
                } else {
                    b
                }
            } else if matches!(a, Excluded(_)) {
                a
            } else {
                b
            }
        }
    }
}

/// A tree value: the item's version, then its value.
pub fn encode_value(version: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(VERSION_BYTES + value.len());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// The version stored in a tree value (`None` if the value is too short to hold one).
pub fn value_version(stored: &[u8]) -> Option<u64> {
    let head: [u8; VERSION_BYTES] = stored.get(..VERSION_BYTES)?.try_into().ok()?;
    Some(u64::from_le_bytes(head))
}

/// The item's value inside a tree value.
pub fn value_bytes(stored: &[u8]) -> &[u8] {
    stored.get(VERSION_BYTES..).unwrap_or(&[])
}

/// The applied meta value: `index u64 LE ‖ term u64 LE`.
pub fn encode_applied(index: u64, term: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&index.to_le_bytes());
    out[8..].copy_from_slice(&term.to_le_bytes());
    out
}

/// Reads the applied meta value (`None` if it is not 16 bytes).
pub fn decode_applied(stored: &[u8]) -> Option<(u64, u64)> {
    if stored.len() != 16 {
        return None;
    }
    let index = u64::from_le_bytes(stored[..8].try_into().ok()?);
    let term = u64::from_le_bytes(stored[8..].try_into().ok()?);
    Some((index, term))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_keys_round_trip_and_group_by_partition_key() {
        let a1 = item_key(&proto::Key::new("alpha", "1"));
        let a2 = item_key(&proto::Key::new("alpha", "2"));
        let prefix = partition_prefix(b"alpha");
        assert!(a1.starts_with(&prefix) && a2.starts_with(&prefix));
        assert!(a1 < a2);
        assert_eq!(decode_item_key(&a2).unwrap(), proto::Key::new("alpha", "2"));
        assert!(a1.as_slice() >= ITEMS_START && a1.as_slice() < ITEMS_END);
        assert!(META_APPLIED_KEY < ITEMS_START);
    }

    #[test]
    fn a_damaged_item_key_is_an_error() {
        let mut k = item_key(&proto::Key::new("alpha", "1"));
        k[3] ^= 1;
        assert!(decode_item_key(&k).is_err());
        assert!(decode_item_key(&k[..5]).is_err());
        assert!(decode_item_key(&[ITEM_TAG; 19]).is_err());
    }

    #[test]
    fn successor_skips_trailing_ff() {
        assert_eq!(prefix_successor(&[1, 0xff, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff]), None);
    }

    #[test]
    fn tighter_bounds() {
        use Bound::*;
        assert_eq!(
            max_lower(Included(vec![1]), Excluded(vec![1])),
            Excluded(vec![1])
        );
        assert_eq!(
            max_lower(Included(vec![2]), Excluded(vec![1])),
            Included(vec![2])
        );
        assert_eq!(
            min_upper(Included(vec![2]), Excluded(vec![2])),
            Excluded(vec![2])
        );
        assert_eq!(min_upper(Unbounded, Included(vec![2])), Included(vec![2]));
    }
}
