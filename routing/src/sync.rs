//! The client side of the Merkle sync, as a sans-I/O state machine.
//!
//! The router holds a [`Trie`]; the metadata service holds the authoritative one. The router
//! asks for the remote root (`ClusterRequest::SyncRoot`), starts a [`SyncSession`] with it,
//! then loops: send [`SyncSession::next_request`]'s prefixes as `ClusterRequest::SyncExpand`,
//! feed the `ClusterReply::Expansions` back to [`SyncSession::on_reply`], until
//! [`SyncSession::is_done`]. Only prefixes whose (hash, count) differ between the two sides
//! are asked, so the work is proportional to the differences times the trie's depth, not to
//! the size of the map.
//!
//! What each answer does to the local trie, under the asked prefix `P`:
//! - `Empty`: every local key under `P` goes.
//! - `Leaf(k, v)`: the local keys under `P` become exactly `{k: v}`.
//! - `Split(left, right)`: local keys under `P` outside both halves go (the remote's keys
//!   all share a longer prefix than `P`); each half whose (hash, count) differs from the local
//!   one's is asked next.
//!
//! Both sides may change while a session runs; it then converges on some mix of old and new,
//! and the next session (the router runs one at a constant rate) picks up the rest.

use std::collections::VecDeque;
use std::fmt;

use crate::digest::Digest;
use crate::limits::{SYNC_PREFIXES_ASKED_MAX, SYNC_PREFIXES_PER_REQUEST_MAX};
use crate::trie::{first_diff_bit, leaf_hash, CapacityError, Expansion, Key, Prefix, Trie};
use crate::KEY_BITS;

/// How much a sync session did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Requests made (round trips).
    pub rounds: u64,
    /// Prefixes asked, over all requests.
    pub prefixes_asked: u64,
    /// Routes received whole (as `Leaf` answers) and written into the local trie because
    /// the local side lacked them or held a different route under the key.
    pub routes_fetched: u64,
    /// Local routes removed because the remote has no such key.
    pub routes_removed: u64,
}

/// A reply that does not fit the request it answers; the session is over (start another).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncError {
    /// A reply came with no request awaiting one.
    NoRequestInFlight,
    /// The reply does not answer each asked prefix exactly once.
    ReplyLength {
        /// Prefixes asked.
        asked: usize,
        /// Expansions received.
        got: usize,
    },
    /// A `Leaf` answer's key is not under the prefix asked.
    LeafOutsidePrefix {
        /// The prefix asked.
        prefix: Prefix,
        /// The key received.
        key: Key,
    },
    /// A `Split` answer's halves are not two non-empty, canonical prefixes under the one
    /// asked, one bit longer than a common prefix and differing only in that last bit (0 on
    /// the left).
    MalformedSplit {
        /// The prefix asked.
        prefix: Prefix,
        /// The left half received.
        left: Prefix,
        /// The right half received.
        right: Prefix,
    },
    /// The session asked [`SYNC_PREFIXES_ASKED_MAX`] prefixes without converging.
    TooManyPrefixes {
        /// Prefixes asked so far.
        asked: u64,
    },
    /// The local trie is full.
    Capacity(CapacityError),
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncError::NoRequestInFlight => {
                write!(f, "a sync reply arrived with no request in flight")
            }
            SyncError::ReplyLength { asked, got } => write!(
                f,
                "a sync reply has {got} expansions for {asked} prefixes asked"
            ),
            SyncError::LeafOutsidePrefix { prefix, key } => write!(
                f,
                "a sync reply's leaf {key:02x?} is not under the prefix asked ({} bits of {:02x?})",
                prefix.bits, prefix.key
            ),
            SyncError::MalformedSplit {
                prefix,
                left,
                right,
            } => write!(
                f,
                "a sync reply's split of {} bits of {:02x?} into {} bits of {:02x?} and {} bits \
                 of {:02x?} is not two halves under it",
                prefix.bits, prefix.key, left.bits, left.key, right.bits, right.key
            ),
            SyncError::TooManyPrefixes { asked } => write!(
                f,
                "a sync session asked {asked} prefixes without converging \
                 (SYNC_PREFIXES_ASKED_MAX = {SYNC_PREFIXES_ASKED_MAX})"
            ),
            SyncError::Capacity(e) => write!(f, "a sync could not store a route: {e}"),
        }
    }
}

impl std::error::Error for SyncError {}

/// One run of the Merkle sync from the client's side: which prefixes to ask next, and what
/// the answers do to the local trie. No I/O; see the module's doc for the loop.
#[derive(Clone, Debug)]
pub struct SyncSession {
    /// Prefixes known to differ, not yet asked.
    pending: VecDeque<Prefix>,
    /// The prefixes of the request awaiting its reply, in the order asked.
    in_flight: Vec<Prefix>,
    /// Set by an error: nothing more to ask.
    failed: bool,
    stats: SyncStats,
}

impl SyncSession {
    /// Starts a session bringing `local` to the remote trie whose root is `remote_root`
    /// (from `ClusterReply::SyncRoot`). Done at once if the roots are equal.
    pub fn start<V: Clone + Digest>(local: &Trie<V>, remote_root: (u128, u64)) -> SyncSession {
        let mut pending = VecDeque::new();
        if local.root() != remote_root {
            pending.push_back(Prefix::ROOT);
        }
        SyncSession {
            pending,
            in_flight: Vec::new(),
            failed: false,
            stats: SyncStats::default(),
        }
    }

    /// The prefixes to send as the next `SyncExpand` (at most
    /// [`SYNC_PREFIXES_PER_REQUEST_MAX`]), or `None` while a request awaits its reply or when
    /// nothing is left to ask.
    pub fn next_request(&mut self) -> Option<Vec<Prefix>> {
        if self.failed || !self.in_flight.is_empty() || self.pending.is_empty() {
            return None;
        }
        let n = self.pending.len().min(SYNC_PREFIXES_PER_REQUEST_MAX);
        self.in_flight = self.pending.drain(..n).collect();
        self.stats.rounds += 1;
        self.stats.prefixes_asked += n as u64;
        Some(self.in_flight.clone())
    }

    /// Applies the reply to the last request to `local`, and queues the prefixes that still
    /// differ. A reply that does not fit the request changes nothing and ends the session.
    pub fn on_reply<V: Clone + Digest>(
        &mut self,
        local: &mut Trie<V>,
        reply: Vec<Expansion<V>>,
    ) -> Result<(), SyncError> {
        let result = self.apply(local, reply);
        if result.is_err() {
            self.failed = true;
            self.pending.clear();
            self.in_flight.clear();
        }
        result
    }

    fn apply<V: Clone + Digest>(
        &mut self,
        local: &mut Trie<V>,
        reply: Vec<Expansion<V>>,
    ) -> Result<(), SyncError> {
        if self.in_flight.is_empty() {
            return Err(SyncError::NoRequestInFlight);
        }
        if reply.len() != self.in_flight.len() {
            return Err(SyncError::ReplyLength {
                asked: self.in_flight.len(),
                got: reply.len(),
            });
        }
        // Check the whole reply before touching the trie.
        for (prefix, expansion) in self.in_flight.iter().zip(&reply) {
            check_answer(prefix, expansion)?;
        }
        let asked = std::mem::take(&mut self.in_flight);
        for (prefix, expansion) in asked.iter().zip(reply) {
            match expansion {
                Expansion::Empty => {
                    self.stats.routes_removed += local.remove_prefix(prefix) as u64;
                }
                Expansion::Leaf(key, value) => {
                    if local.summary(prefix) == (leaf_hash(&key, value.digest()), 1) {
                        continue;
                    }
                    // Keep the local copy of `key` if it is the same route: then only keys
                    // the remote lacks go, and every write or removal is one difference.
                    let digest = value.digest();
                    match local.get(&key).map(|old| old.digest() == digest) {
                        Some(true) => {
                            let only = Prefix::of(&key, KEY_BITS);
                            self.stats.routes_removed += remove_outside(local, prefix, &only);
                        }
                        had => {
                            let removed = local.remove_prefix(prefix) as u64;
                            self.stats.routes_removed += removed - u64::from(had.is_some());
                            local.try_insert(key, value).map_err(SyncError::Capacity)?;
                            self.stats.routes_fetched += 1;
                        }
                    }
                }
                Expansion::Split { left, right } => {
                    let common = Prefix::of(&left.0.key, left.0.bits - 1);
                    self.stats.routes_removed += remove_outside(local, prefix, &common);
                    for (half, hash, count) in [left, right] {
                        if local.summary(&half) != (hash, count) {
                            self.pending.push_back(half);
                        }
                    }
                }
            }
        }
        let queued = self.stats.prefixes_asked + self.pending.len() as u64;
        if queued > SYNC_PREFIXES_ASKED_MAX as u64 {
            return Err(SyncError::TooManyPrefixes { asked: queued });
        }
        Ok(())
    }

    /// Whether the session has nothing more to do: the local trie matched the remote one as
    /// the session saw it, or an error ended the session.
    pub fn is_done(&self) -> bool {
        self.failed || (self.pending.is_empty() && self.in_flight.is_empty())
    }

    /// Whether an error ended the session.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// What the session did so far.
    pub fn stats(&self) -> SyncStats {
        self.stats
    }
}

/// Whether `answer` can be the remote's expansion of `prefix`.
fn check_answer<V>(prefix: &Prefix, answer: &Expansion<V>) -> Result<(), SyncError> {
    match answer {
        Expansion::Empty => Ok(()),
        Expansion::Leaf(key, _) => {
            if prefix.contains(key) {
                Ok(())
            } else {
                Err(SyncError::LeafOutsidePrefix {
                    prefix: *prefix,
                    key: *key,
                })
            }
        }
        Expansion::Split { left, right } => {
            let (l, r) = (&left.0, &right.0);
            let asked_bits = prefix.bits.min(KEY_BITS);
            let fits = l.bits == r.bits
                && l.bits > asked_bits
                && l.bits <= KEY_BITS
                && l.is_canonical()
                && r.is_canonical()
                && prefix.contains(&l.key)
                && first_diff_bit(&l.key, &r.key) == Some(l.bits - 1)
                && l.key < r.key
                && left.2 > 0
                && right.2 > 0;
            if fits {
                Ok(())
            } else {
                Err(SyncError::MalformedSplit {
                    prefix: *prefix,
                    left: *l,
                    right: *r,
                })
            }
        }
    }
}

/// Removes the keys of `local` under `outer` that are not under `inner` (a longer prefix
/// starting with `outer`), returning how many.
fn remove_outside<V: Clone + Digest>(local: &mut Trie<V>, outer: &Prefix, inner: &Prefix) -> u64 {
    if local.summary(outer).1 == local.summary(inner).1 {
        return 0;
    }
    let strays: Vec<Key> = local
        .iter_prefix(outer)
        .map(|(k, _)| *k)
        .filter(|k| !inner.contains(k))
        .collect();
    for key in &strays {
        local.remove(key);
    }
    strays.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route_key;

    /// Runs a whole session against `remote` in memory; returns its stats.
    fn sync(local: &mut Trie<u64>, remote: &Trie<u64>) -> SyncStats {
        let mut session = SyncSession::start(local, remote.root());
        while let Some(prefixes) = session.next_request() {
            let reply = prefixes.iter().map(|p| remote.expand(p)).collect();
            session.on_reply(local, reply).unwrap();
            local.check_invariants();
        }
        assert!(session.is_done() && !session.failed());
        session.stats()
    }

    fn trie(pairs: &[(u64, u128, u64)]) -> Trie<u64> {
        let mut t = Trie::new();
        for &(table, start, v) in pairs {
            t.insert(route_key(table, start), v);
        }
        t
    }

    #[test]
    fn equal_tries_need_no_round() {
        let a = trie(&[(1, 0, 1), (1, 5, 2)]);
        let mut b = a.clone();
        assert_eq!(sync(&mut b, &a), SyncStats::default());
    }

    #[test]
    fn empty_remote_empties_local() {
        let mut a = trie(&[(1, 0, 1), (2, 5, 2), (3, 9, 3)]);
        let stats = sync(&mut a, &Trie::new());
        assert!(a.is_empty());
        assert_eq!(stats.routes_removed, 3);
        assert_eq!(stats.rounds, 1);
    }

    #[test]
    fn a_changed_value_is_fetched_alone() {
        let pairs: Vec<(u64, u128, u64)> =
            (0..1000).map(|i| (i % 7, (i as u128) << 100, i)).collect();
        let remote = trie(&pairs);
        let mut local = remote.clone();
        local.insert(route_key(3, 10 << 100), 999_999);
        let stats = sync(&mut local, &remote);
        assert_eq!(local.root(), remote.root());
        assert_eq!(stats.routes_fetched, 1);
        assert_eq!(stats.routes_removed, 0);
    }

    #[test]
    fn strays_outside_the_remote_common_prefix_are_removed() {
        // The remote's keys share 64 + 127 bits; the local stray differs far above.
        let remote = trie(&[(1, 0, 1), (1, 1, 2)]);
        let mut local = trie(&[(1, 0, 1), (1, 1, 2), (9, 0, 3)]);
        let stats = sync(&mut local, &remote);
        assert_eq!(local.root(), remote.root());
        assert_eq!(stats.routes_removed, 1);
        assert_eq!(stats.routes_fetched, 0);
    }

    #[test]
    fn bad_replies_are_typed_errors() {
        let remote = trie(&[(1, 0, 1), (2, 0, 2)]);
        let mut local: Trie<u64> = Trie::new();
        let mut s = SyncSession::start(&local, remote.root());
        assert_eq!(
            s.on_reply(&mut local, vec![]),
            Err(SyncError::NoRequestInFlight)
        );
        let mut s = SyncSession::start(&local, remote.root());
        s.next_request().unwrap();
        assert_eq!(
            s.on_reply(&mut local, vec![]),
            Err(SyncError::ReplyLength { asked: 1, got: 0 })
        );
        assert!(s.is_done() && s.failed() && s.next_request().is_none());

        // A split whose halves do not differ at their last bit.
        let mut s = SyncSession::start(&local, remote.root());
        s.next_request().unwrap();
        let half = (Prefix::of(&route_key(1, 0), 10), 1, 1);
        let err = s.on_reply(
            &mut local,
            vec![Expansion::Split {
                left: half,
                right: half,
            }],
        );
        assert!(matches!(err, Err(SyncError::MalformedSplit { .. })));

        // A leaf outside the prefix asked.
        let mut local = trie(&[(1, 0, 1), (2, 0, 2), (2, 1, 3)]);
        let mut s = SyncSession::start(&local, remote.root());
        s.next_request().unwrap();
        let Expansion::Split { right, .. } = remote.expand(&Prefix::ROOT) else {
            panic!("two keys split")
        };
        s.on_reply(&mut local, vec![remote.expand(&Prefix::ROOT)])
            .unwrap();
        let asked = s.next_request().unwrap();
        assert_eq!(asked, vec![right.0]);
        let err = s.on_reply(&mut local, vec![Expansion::Leaf(route_key(1, 0), 1)]);
        assert!(matches!(err, Err(SyncError::LeafOutsidePrefix { .. })));
        local.check_invariants();
    }
}
