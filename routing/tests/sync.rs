//! Two tries brought together by the Merkle sync end equal, and the sync's work is bounded
//! by their differences.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proto::cluster::{Placement, Route};
use routing::{
    expansions_from_wire, expansions_to_wire, prefixes_from_wire, prefixes_to_wire, route_key,
    Expansion, Key, SyncSession, SyncStats, Trie,
};

/// Runs a whole session of `local` against `remote`, in memory.
fn sync(local: &mut Trie<u64>, remote: &Trie<u64>) -> SyncStats {
    let mut session = SyncSession::start(local, remote.root());
    while let Some(prefixes) = session.next_request() {
        assert!(prefixes.len() <= routing::SYNC_PREFIXES_PER_REQUEST_MAX);
        let reply: Vec<Expansion<u64>> = prefixes.iter().map(|p| remote.expand(p)).collect();
        session.on_reply(local, reply).unwrap();
        local.check_invariants();
    }
    assert!(session.is_done() && !session.failed());
    session.stats()
}

/// Entries of a map: a few tables, starts drawn from a small set so that the two sides
/// overlap often.
fn entries() -> impl Strategy<Value = BTreeMap<Key, u64>> {
    let key = (0u64..3, 0u128..64)
        .prop_map(|(t, s)| route_key(t, s.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)));
    proptest::collection::btree_map(key, 0u64..4, 0..120)
}

fn trie_of(map: &BTreeMap<Key, u64>) -> Trie<u64> {
    let mut t = Trie::new();
    for (k, v) in map {
        t.insert(*k, *v);
    }
    t
}

/// Keys whose value differs between the two maps (present in one only, or with different
/// values).
fn differences(a: &BTreeMap<Key, u64>, b: &BTreeMap<Key, u64>) -> u64 {
    let keys: BTreeSet<&Key> = a.keys().chain(b.keys()).collect();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).count() as u64
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn two_random_tries_end_equal(local_map in entries(), remote_map in entries()) {
        let mut local = trie_of(&local_map);
        let remote = trie_of(&remote_map);
        let stats = sync(&mut local, &remote);
        prop_assert_eq!(local.root(), remote.root());
        prop_assert!(local.iter().eq(remote.iter()));
        let diff = differences(&local_map, &remote_map);
        prop_assert!(stats.routes_fetched + stats.routes_removed <= diff,
            "{:?} for {} differences", stats, diff);
        // Each round goes one level deeper at least.
        prop_assert!(stats.rounds <= u64::from(routing::KEY_BITS) + 1);
        if diff == 0 {
            prop_assert_eq!(stats, SyncStats::default());
        }
        // A second session finds nothing to do.
        prop_assert_eq!(sync(&mut local, &remote), SyncStats::default());
    }

    #[test]
    fn a_copy_with_a_few_changes_fetches_only_those(
        base in entries(),
        changes in proptest::collection::vec((0usize..200, 0u64..4, any::<bool>()), 0..6),
    ) {
        let mut remote_map = base.clone();
        let keys: Vec<Key> = base.keys().copied().collect();
        for (i, v, delete) in changes {
            if keys.is_empty() { break; }
            let k = keys[i % keys.len()];
            if delete { remote_map.remove(&k); } else { remote_map.insert(k, v + 10); }
        }
        let mut local = trie_of(&base);
        let remote = trie_of(&remote_map);
        let stats = sync(&mut local, &remote);
        prop_assert!(local.iter().eq(remote.iter()));
        let diff = differences(&base, &remote_map);
        prop_assert!(stats.routes_fetched + stats.routes_removed <= diff);
        // Asked prefixes: at most a path per difference, two children per level.
        prop_assert!(stats.prefixes_asked <= 1 + diff * 2 * u64::from(routing::KEY_BITS));
    }

    #[test]
    fn a_remote_changing_mid_session_still_converges_next_time(
        local_map in entries(), first in entries(), second in entries(), switch_after in 0u64..4,
    ) {
        let mut local = trie_of(&local_map);
        let (a, b) = (trie_of(&first), trie_of(&second));
        let mut session = SyncSession::start(&local, a.root());
        let mut round = 0;
        while let Some(prefixes) = session.next_request() {
            let remote = if round < switch_after { &a } else { &b };
            round += 1;
            let reply = prefixes.iter().map(|p| remote.expand(p)).collect();
            session.on_reply(&mut local, reply).unwrap();
            local.check_invariants();
        }
        sync(&mut local, &b);
        prop_assert!(local.iter().eq(b.iter()));
    }
}

fn route(table_id: u64, index: u32, partitions: u32, epoch: u64) -> Route {
    Route {
        table_id,
        table: format!("table-{table_id}"),
        index,
        partitions,
        partition_id: table_id * 1000 + u64::from(index),
        epoch,
        replicas: vec![Placement {
            node: 1,
            core: index % 4,
            addr: format!("127.0.0.1:{}", 7000 + index % 4),
        }],
        leader: 0,
    }
}

fn route_trie(routes: &[Route]) -> Trie<Route> {
    let mut t = Trie::new();
    for r in routes {
        t.insert(route_key(r.table_id, r.start()), r.clone());
    }
    t
}

/// The way meta and router use it: routes, through the wire conversions both ways.
#[test]
fn routes_sync_through_the_wire_types() {
    let mut meta_routes: Vec<Route> = (0..64).map(|i| route(1, i, 64, 1)).collect();
    meta_routes.extend((0..16).map(|i| route(2, i, 16, 1)));
    let mut router = route_trie(&meta_routes);
    // Meta moves two partitions (new epochs), drops table 2 and creates table 3.
    meta_routes[5].epoch = 2;
    meta_routes[40].epoch = 2;
    meta_routes.retain(|r| r.table_id != 2);
    meta_routes.extend((0..4).map(|i| route(3, i, 4, 1)));
    let meta = route_trie(&meta_routes);

    let mut session = SyncSession::start(&router, meta.root());
    while let Some(prefixes) = session.next_request() {
        // Router → meta.
        let asked = prefixes_from_wire(&prefixes_to_wire(&prefixes)).unwrap();
        assert_eq!(asked, prefixes);
        // Meta → router.
        let wire = expansions_to_wire(asked.iter().map(|p| meta.expand(p)).collect());
        let reply = expansions_from_wire(wire).unwrap();
        session.on_reply(&mut router, reply).unwrap();
    }
    assert_eq!(router.root(), meta.root());
    let stats = session.stats();
    assert_eq!(stats.routes_fetched, 2 + 4);
    assert_eq!(stats.routes_removed, 16);
    // The router finds a moved partition by floor.
    let moved = &meta_routes[40];
    let hash = moved.start() + 12345;
    let (_, found) = router.floor(&route_key(1, hash)).unwrap();
    assert_eq!((found.index, found.epoch), (40, 2));
}

#[test]
fn a_large_map_with_one_change_takes_few_rounds() {
    let routes: Vec<Route> = (0..4096).map(|i| route(7, i, 4096, 1)).collect();
    let mut router = route_trie(&routes);
    let mut changed = routes.clone();
    changed[1234].epoch = 9;
    let meta = route_trie(&changed);
    let mut session = SyncSession::start(&router, meta.root());
    while let Some(prefixes) = session.next_request() {
        let reply = prefixes.iter().map(|p| meta.expand(p)).collect();
        session.on_reply(&mut router, reply).unwrap();
    }
    let stats = session.stats();
    assert_eq!(router.root(), meta.root());
    assert_eq!(stats.routes_fetched, 1);
    // One path down a trie of 4,096 keys: 12 levels and the leaf; two prefixes per level.
    assert!(stats.rounds <= 14, "{stats:?}");
    assert!(stats.prefixes_asked <= 2 * 14, "{stats:?}");
}
