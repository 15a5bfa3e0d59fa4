//! The digest of a trie value: what the Merkle hash of a leaf covers besides its key.

use proto::cluster::Route;
use xxhash_rust::xxh3::xxh3_128;

/// A 128-bit hash of a value, stable across processes, machines and versions of this crate.
///
/// Two processes compare Merkle hashes computed from it, so it must depend only on the
/// value's contents, encoded canonically (fixed-width little-endian integers, lengths before
/// variable-sized fields), never on memory layout or a randomly seeded hasher.
pub trait Digest {
    /// The value's digest.
    fn digest(&self) -> u128;
}

/// The first byte of a route's canonical encoding: raise it if the encoding ever changes, so
/// that old and new digests never collide by accident.
const ROUTE_ENCODING_VERSION: u8 = 1;

impl Digest for Route {
    fn digest(&self) -> u128 {
        // Every field, in declaration order. 64 bytes covers a route with one short name
        // and one placement without reallocating.
        let mut bytes = Vec::with_capacity(64 + self.table.len());
        bytes.push(ROUTE_ENCODING_VERSION);
        bytes.extend_from_slice(&self.table_id.to_le_bytes());
        put_bytes(&mut bytes, self.table.as_bytes());
        bytes.extend_from_slice(&self.index.to_le_bytes());
        bytes.extend_from_slice(&self.partitions.to_le_bytes());
        bytes.extend_from_slice(&self.partition_id.to_le_bytes());
        bytes.extend_from_slice(&self.epoch.to_le_bytes());
        bytes.extend_from_slice(&(self.replicas.len() as u64).to_le_bytes());
        for placement in &self.replicas {
            bytes.extend_from_slice(&placement.node.to_le_bytes());
            bytes.extend_from_slice(&placement.core.to_le_bytes());
            put_bytes(&mut bytes, placement.addr.as_bytes());
        }
        bytes.extend_from_slice(&self.leader.to_le_bytes());
        xxh3_128(&bytes)
    }
}

/// A length-prefixed byte string: without the length, ("ab", "c") and ("a", "bc") would
/// encode alike.
fn put_bytes(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_le_bytes());
    out.extend_from_slice(field);
}

/// Plain integers as values: for tests, benchmarks and tries that map to an id.
impl Digest for u64 {
    fn digest(&self) -> u128 {
        xxh3_128(&self.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::cluster::Placement;

    fn route() -> Route {
        Route {
            table_id: 7,
            table: "orders".into(),
            index: 3,
            partitions: 8,
            partition_id: 42,
            epoch: 5,
            replicas: vec![Placement {
                node: 1,
                core: 2,
                addr: "127.0.0.1:7000".into(),
            }],
            leader: 0,
        }
    }

    #[test]
    fn route_digest_is_fixed_forever() {
        // Computed once by this code; a change here breaks every mixed-version cluster.
        assert_eq!(route().digest(), route().digest());
        assert_eq!(
            format!("{:032x}", route().digest()),
            "b7a4abd608206fd6727ff75dc3377218"
        );
    }

    #[test]
    fn every_field_changes_the_digest() {
        let base = route().digest();
        let mut changed = Vec::new();
        let mut r = route();
        r.table_id += 1;
        changed.push(r);
        let mut r = route();
        r.table.push('x');
        changed.push(r);
        let mut r = route();
        r.index += 1;
        changed.push(r);
        let mut r = route();
        r.partitions += 1;
        changed.push(r);
        let mut r = route();
        r.partition_id += 1;
        changed.push(r);
        let mut r = route();
        r.epoch += 1;
        changed.push(r);
        let mut r = route();
        r.replicas[0].node += 1;
        changed.push(r);
        let mut r = route();
        r.replicas[0].core += 1;
        changed.push(r);
        let mut r = route();
        r.replicas[0].addr.push('0');
        changed.push(r);
        let mut r = route();
        r.replicas.clear();
        changed.push(r);
        let mut r = route();
        r.leader += 1;
        changed.push(r);
        for r in changed {
            assert_ne!(r.digest(), base, "{r:?}");
        }
    }

    #[test]
    fn lengths_separate_adjacent_strings() {
        let mut a = route();
        a.table = "ab".into();
        a.replicas[0].addr = "c".into();
        let mut b = route();
        b.table = "a".into();
        b.replicas[0].addr = "bc".into();
        assert_ne!(a.digest(), b.digest());
    }
}
