//! The trie against a `BTreeMap` model: random sequences of inserts, removals, prefix
//! removals, floor and get lookups, with the invariants checked after every mutation.

use std::collections::BTreeMap;

use proptest::prelude::*;
use routing::{route_key, Key, Prefix, Trie, KEY_BITS};

#[derive(Clone, Debug)]
enum Op {
    Insert(Key, u64),
    Remove(Key),
    RemovePrefix(Key, u32),
    Floor(Key),
    Get(Key),
}

/// Keys crowded into a few tables and a few shapes of start, so that lookups hit, fall
/// between keys, and prefixes share long runs of bits.
fn key() -> impl Strategy<Value = Key> {
    let start = prop_oneof![
        any::<u128>(),
        0u128..16,
        (0u32..128).prop_map(|s| 1u128 << s),
        (0u32..8).prop_map(|i| proto::partition_start(i, 8)),
    ];
    (0u64..4, start).prop_map(|(table, start)| route_key(table, start))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key(), any::<u64>()).prop_map(|(k, v)| Op::Insert(k, v)),
        2 => key().prop_map(Op::Remove),
        1 => (key(), 0u32..=KEY_BITS + 8).prop_map(|(k, b)| Op::RemovePrefix(k, b)),
        3 => key().prop_map(Op::Floor),
        2 => key().prop_map(Op::Get),
    ]
}

fn check_equal(trie: &Trie<u64>, model: &BTreeMap<Key, u64>) {
    trie.check_invariants();
    assert_eq!(trie.len(), model.len());
    assert_eq!(trie.root().1, model.len() as u64);
    assert!(trie
        .iter()
        .map(|(k, v)| (*k, *v))
        .eq(model.iter().map(|(k, v)| (*k, *v))));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn trie_behaves_like_a_btreemap(ops in proptest::collection::vec(op(), 1..200)) {
        let mut trie: Trie<u64> = Trie::new();
        let mut model: BTreeMap<Key, u64> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Insert(k, v) => {
                    prop_assert_eq!(trie.insert(k, v), model.insert(k, v));
                    check_equal(&trie, &model);
                }
                Op::Remove(k) => {
                    prop_assert_eq!(trie.remove(&k), model.remove(&k));
                    check_equal(&trie, &model);
                }
                Op::RemovePrefix(k, bits) => {
                    let prefix = Prefix::of(&k, bits);
                    let doomed: Vec<Key> =
                        model.keys().filter(|k| prefix.contains(k)).copied().collect();
                    // What summary says before matches the model's count.
                    prop_assert_eq!(trie.summary(&prefix).1, doomed.len() as u64);
                    prop_assert_eq!(
                        trie.iter_prefix(&prefix).map(|(k, _)| *k).collect::<Vec<_>>(),
                        doomed.clone()
                    );
                    for k in &doomed {
                        model.remove(k);
                    }
                    prop_assert_eq!(trie.remove_prefix(&prefix), doomed.len());
                    check_equal(&trie, &model);
                }
                Op::Floor(k) => {
                    let want = model.range(..=k).next_back().map(|(k, v)| (*k, *v));
                    prop_assert_eq!(trie.floor(&k).map(|(k, v)| (*k, *v)), want);
                }
                Op::Get(k) => {
                    prop_assert_eq!(trie.get(&k), model.get(&k));
                }
            }
        }
        // The hashes depend on the contents alone: a trie built afresh, in reverse order,
        // has the same root.
        let mut fresh: Trie<u64> = Trie::new();
        for (k, v) in model.iter().rev() {
            fresh.insert(*k, *v);
        }
        prop_assert_eq!(fresh.root(), trie.root());
    }

    #[test]
    fn floor_is_btreemap_floor_on_dense_maps(
        keys in proptest::collection::btree_set(key(), 1..300),
        probes in proptest::collection::vec(key(), 1..300),
    ) {
        let model: BTreeMap<Key, u64> = keys.iter().enumerate().map(|(i, k)| (*k, i as u64)).collect();
        let mut trie: Trie<u64> = Trie::new();
        for (k, v) in &model {
            trie.insert(*k, *v);
        }
        trie.check_invariants();
        // Every key itself, its neighbours one below and one above, and the random probes.
        let mut all = probes;
        for k in &keys {
            all.push(*k);
            let (table, start) = routing::split_route_key(k);
            all.push(route_key(table, start.wrapping_sub(1)));
            all.push(route_key(table, start.wrapping_add(1)));
        }
        for k in all {
            let want = model.range(..=k).next_back().map(|(k, v)| (*k, *v));
            prop_assert_eq!(trie.floor(&k).map(|(k, v)| (*k, *v)), want);
        }
    }
}

#[test]
fn empty_trie_answers_nothing() {
    let mut trie: Trie<u64> = Trie::new();
    let k = route_key(1, 2);
    assert_eq!(trie.floor(&k), None);
    assert_eq!(trie.get(&k), None);
    assert_eq!(trie.remove(&k), None);
    assert_eq!(trie.remove_prefix(&Prefix::ROOT), 0);
    assert_eq!(trie.root(), (0, 0));
    assert_eq!(trie.summary(&Prefix::ROOT), (0, 0));
    assert_eq!(trie.expand(&Prefix::ROOT), routing::Expansion::Empty);
    assert_eq!(trie.iter().count(), 0);
    trie.check_invariants();
}

#[test]
fn slots_are_reused_after_removal() {
    let mut trie: Trie<u64> = Trie::new();
    for round in 0..3u64 {
        for i in 0..1000u128 {
            trie.insert(route_key(round, i << 64), i as u64);
        }
        assert_eq!(trie.remove_prefix(&routing::table_prefix(round)), 1000);
        trie.check_invariants();
        assert!(trie.is_empty());
    }
}
