//! Placement: the partition-key hash and how a table's hash space is cut.
//!
//! The hash is xxh3-128 of the partition key's bytes, fixed forever: it decides where every
//! item lives, so changing it would move every item of every table. A table with `n`
//! partitions cuts the hash space into `n` contiguous ranges of (nearly) equal width;
//! partition `i` holds the hashes in `[partition_start(i, n), partition_start(i + 1, n))`.

/// The 128-bit hash of a partition key. Fixed forever.
pub fn partition_key_hash(partition_key: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(partition_key)
}

/// The partition of a table with `partitions` partitions that holds `hash`.
///
/// ```
/// let n = 7;
/// for key in [&b"a"[..], b"user#42", b"zzz"] {
///     let h = proto::partition_key_hash(key);
///     let i = proto::partition_index(h, n);
///     assert!(i < n);
///     assert!(proto::partition_start(i, n) <= h);
///     assert!(i + 1 == n || h < proto::partition_start(i + 1, n));
/// }
/// ```
pub fn partition_index(hash: u128, partitions: u32) -> u32 {
    assert!(partitions > 0, "a table has at least one partition");
    // The top 64 bits decide: floor(hi * n / 2^64) < n.
    let hi = (hash >> 64) as u64;
    ((hi as u128 * partitions as u128) >> 64) as u32
}

/// The lowest hash of partition `index` of `partitions` (`index == partitions` gives the end
/// of the space, as 0 would wrap: callers treat the last range as open-ended).
pub fn partition_start(index: u32, partitions: u32) -> u128 {
    assert!(partitions > 0 && index <= partitions);
    if index == 0 {
        return 0;
    }
    // The smallest hi with floor(hi * n / 2^64) >= index is ceil(index * 2^64 / n).
    let hi = ((index as u128) << 64).div_ceil(partitions as u128);
    if hi > u64::MAX as u128 {
        return u128::MAX;
    }
    hi << 64
}
